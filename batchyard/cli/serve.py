"""``batchyard serve``: the HTTP API (and worker lanes) over a store; ``batchyard token``:
the tokens it takes."""

from __future__ import annotations

import argparse
import ipaddress
import signal
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from batchyard.cli.common import (
    RAW,
    add_json,
    command,
    console,
    db_url,
    open_yard,
    print_json,
    when,
    wrap,
)

if TYPE_CHECKING:
    from batchyard.web.settings import ServerSettings
    from batchyard.yard import Yard

ROLES = ("viewer", "operator", "admin")


def register(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the HTTP API (REST, live streams, metrics) with worker lanes",
        description=wrap(
            "Serve the store over HTTP: the REST API under /api/v1, live streams (SSE and "
            "WebSocket), Prometheus metrics, and N worker lanes running batches in this "
            "process. Settings come from these flags, then BATCHYARD_* environment "
            "variables, then batchyard.toml (or --config). On the first start with no "
            "token, an admin token is made and shown once."
        ),
        formatter_class=RAW,
    )
    serve.add_argument("--host", help="the address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="the port (default 8000; 0 picks a free one)")
    serve.add_argument(
        "--workers", type=int, metavar="N", help="worker lanes in this process (default 4; 0: none)"
    )
    serve.add_argument(
        "--allow-task",
        action="append",
        metavar="MODULE:FUNCTION",
        help="a task clients may submit besides the built-in ones (repeat for more)",
    )
    serve.add_argument("--config", metavar="FILE", help="a toml file of settings")
    serve.add_argument(
        "--cors-origin", action="append", metavar="ORIGIN", help="allow CORS from this origin"
    )
    serve.add_argument("--ssl-certfile", metavar="FILE")
    serve.add_argument("--ssl-keyfile", metavar="FILE")
    serve.add_argument(
        "--metrics-host", metavar="HOST", help="serve /metrics here, without a token"
    )
    serve.add_argument("--metrics-port", type=int, metavar="PORT")
    serve.add_argument(
        "--confirm-cost",
        type=float,
        metavar="DOLLARS",
        help="the dashboard asks to accept a new batch's cost above this estimate (default 1.00)",
    )
    serve.set_defaults(run=run_serve)

    token = commands.add_parser(
        "token",
        help="make, list and revoke the server's tokens",
        description=wrap(
            "Tokens let people and programs use 'batchyard serve'. A viewer reads; an "
            "operator also submits and controls its batches; an admin also sees every "
            "owner's batches and manages tokens. A token is shown once, when it is made."
        ),
        formatter_class=RAW,
    )
    actions = token.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="make a token and show it once")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--role", choices=ROLES, default="operator", help="(default operator)")
    create.add_argument(
        "--owner", help="whose batches it submits and sees (default: NAME; share it to share)"
    )
    create.add_argument(
        "-q", "--quiet", action="store_true", help="print the token alone (TOKEN=$(batchyard ...))"
    )
    add_json(create)
    create.set_defaults(run=run_token_create)
    listing = actions.add_parser("list", help="every token (never their secrets)")
    add_json(listing)
    listing.set_defaults(run=run_token_list)
    revoke = actions.add_parser("revoke", help="revoke a token and end its sessions")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(run=run_token_revoke)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from batchyard.web import ServerSettings, create_app
    from batchyard.web.limits import HEAD_LIMIT

    _Server = _server_class()
    from batchyard.yard import Yard

    settings = ServerSettings.load(
        args.config,
        db=args.db,
        host=args.host,
        port=args.port,
        workers=args.workers,
        allow_task=args.allow_task,
        cors_origin=args.cors_origin,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        confirm_cost=args.confirm_cost,
    )
    sock = _bind(settings.host, settings.port)
    settings = settings.model_copy(update={"port": sock.getsockname()[1]})
    with Yard(settings.db, webhooks=settings.webhooks) as yard:
        config = uvicorn.Config(
            create_app(yard, settings),
            host=settings.host,
            port=settings.port,
            ssl_certfile=settings.ssl_certfile,
            ssl_keyfile=settings.ssl_keyfile,
            log_level="warning",
            ws_ping_interval=None,  # the app pings its WebSockets itself
            h11_max_incomplete_event_size=HEAD_LIMIT,
        )
        server = _Server(config)
        _announce(server, settings, yard)
        server.run(sockets=[sock])
    console().print("batchyard serve: stopped", style="dim")
    return 0


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, except that a SIGTERM or Ctrl-C that stopped it gracefully
        is not raised again afterwards (uvicorn does, so the process would die of it with
        status -15 instead of exiting 0 once everything is closed)."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            # uvicorn waits for open responses before it stops the app: end the live
            # streams now, or it would wait for ever.
            feed = getattr(getattr(self.config.app, "state", None), "feed", None)
            if feed is not None:
                feed.end_streams()

    return Server


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is printed (so --port 0's port is
    known, and a port in use is one clear line)."""
    from batchyard.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _announce(server: Any, settings: ServerSettings, yard: Yard) -> None:
    """What `serve` prints before it serves: where, over what, and a first admin token."""
    out = console()
    scheme = "https" if settings.ssl_certfile else "http"
    base = f"{scheme}://{settings.host}:{settings.port}"
    lanes = f"{settings.workers} worker lane{'s' * (settings.workers != 1)}"
    out.print(
        f"batchyard serve: {base}  (store {public_url(settings.db)}, {lanes})", highlight=False
    )
    if not _is_loopback(settings.host) and not settings.ssl_certfile:
        print(
            f"warning: serving on {settings.host} without TLS: tokens cross the network in "
            "the clear (give --ssl-certfile and --ssl-keyfile, or put a TLS proxy in front)",
            file=sys.stderr,
        )
    if not yard.tokens.list():
        _, secret = yard.tokens.create("admin", "admin")
        out.print("first start: an admin token was created and is shown once:", highlight=False)
        out.print(
            f"  {secret}   (log in: {base}/login?token={secret})", highlight=False, soft_wrap=True
        )
    out.print("Ctrl-C stops it (running items get a few seconds to finish)", style="dim")


def public_url(url: str) -> str:
    """A store URL fit to print: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_token_create(args: argparse.Namespace) -> int:
    with open_yard(args) as yard:
        token, secret = yard.tokens.create(args.name, args.role, owner=args.owner)
    if args.json:
        print_json({**token.as_dict(), "token": secret})
        return 0
    if args.quiet:
        print(secret)
        return 0
    out = console()
    out.print(f"token {token.name} ({token.role.value}, owner {token.owner}), shown once:")
    out.print(f"  {secret}", highlight=False, soft_wrap=True)
    return 0


def run_token_list(args: argparse.Namespace) -> int:
    with open_yard(args, create=False) as yard:
        tokens = yard.tokens.list()
    if args.json:
        print_json([t.as_dict() for t in tokens])
        return 0
    if not tokens:
        print(
            f"no tokens in {db_url(args)} yet: '{command(args)} token create NAME --role operator'"
        )
        return 0
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in ("name", "role", "owner", "created", "last used", "revoked"):
        table.add_column(column)
    for t in tokens:
        table.add_row(
            t.name,
            t.role.value,
            t.owner,
            when(t.created_at),
            when(t.last_used_at),
            when(t.revoked_at) if t.revoked_at else "",
        )
    console().print(table)
    return 0


def run_token_revoke(args: argparse.Namespace) -> int:
    with open_yard(args, create=False) as yard:
        token = yard.tokens.revoke(args.name)
    console().print(f"revoked {token.name}: its requests and sessions are refused from now on")
    return 0
