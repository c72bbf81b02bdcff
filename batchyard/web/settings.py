"""The server's settings: command-line flags over ``BATCHYARD_*`` environment variables
over a ``batchyard.toml`` over the defaults (pydantic-settings)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from batchyard.errors import ConfigError
from batchyard.yard import DEFAULT_URL

#: The largest upload taken by default (a file of items; bigger is a 413).
MAX_UPLOAD = 1 << 30


class ServerSettings(BaseSettings):
    """Everything ``batchyard serve`` can be told. In a toml file the names are the same
    (``port = 8080``); in the environment they are upper case with ``BATCHYARD_`` before
    them (``BATCHYARD_PORT=8080``; lists as JSON: ``BATCHYARD_ALLOW_TASK='["tasks:x"]'``)."""

    model_config = SettingsConfigDict(env_prefix="BATCHYARD_", extra="forbid")
    #: The toml file read, if any (set by ``load``).
    toml_path: ClassVar[Path | None] = None

    db: str = DEFAULT_URL
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    #: Worker lanes run inside the server (0: workers run elsewhere on the same store).
    workers: int = Field(4, ge=0, le=1000)
    #: ``module:function`` tasks that clients may submit, beside the built-in ones.
    allow_task: list[str] = []
    #: Serve the dashboard (False: the API alone).
    ui: bool = True
    #: Log every message sent on a live stream.
    debug_streams: bool = False
    #: Origins allowed by CORS (none: no CORS headers at all).
    cors_origin: list[str] = []
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    #: Serve /metrics on its own address, without a token (None: on the API, with one).
    metrics_host: str | None = None
    metrics_port: int | None = Field(None, ge=0, le=65535)
    #: The largest upload of items, in bytes.
    max_upload_bytes: int = Field(MAX_UPLOAD, ge=1)
    #: The largest generation batch (``count``) a client may ask for: a few bytes of JSON
    #: would otherwise make up to 10,000,000 items.
    max_count: int = Field(10_000_000, ge=1, le=10_000_000)
    #: Seconds between a WebSocket's pings, and between an SSE stream's keep-alives.
    heartbeat: float = Field(15.0, gt=0)
    #: URLs every batch submitted through the server notifies (beside its own).
    webhooks: list[str] = []
    #: Batches one owner may have uploading, queued, processing or retrying at once (None:
    #: no limit); one more is refused with a 409 naming one of them.
    max_active_batches: int | None = Field(None, ge=1)
    #: Dollars: a batch the dashboard's new-batch page estimates above this is made only
    #: once its cost is accepted on the form (0: every batch with a cost asks).
    confirm_cost: float = Field(1.0, ge=0, allow_inf_nan=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_path))
        return tuple(sources)

    @classmethod
    def load(cls, config: Path | str | None = None, **given: Any) -> ServerSettings:
        """Settings from ``given`` (the flags a user gave; None values are left out), the
        environment, then ``config`` (or ./batchyard.toml when it exists). Raises
        ConfigError naming the file and the setting that is wrong."""
        path = Path(config) if config is not None else Path("batchyard.toml")
        if config is not None and not path.is_file():
            raise ConfigError(f"{path}: no such configuration file")
        source = path if path.is_file() else None
        bound = type("Settings", (cls,), {"toml_path": source})
        try:
            return cls.model_validate(
                bound(**{k: v for k, v in given.items() if v is not None}).model_dump()
            )
        except ValidationError as exc:
            raise ConfigError(_explain(exc, source, list(cls.model_fields))) from None
        except ValueError as exc:  # a toml file that does not parse
            raise ConfigError(f"{source}: {exc}") from None


def _explain(exc: ValidationError, source: Path | None, names: list[str]) -> str:
    where = f" ({source}, the environment or the flags)" if source else ""
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "settings"
        if error["type"] == "extra_forbidden":  # only a toml file can name one
            close = difflib.get_close_matches(field, names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the settings: {', '.join(names)}"
            lines.append(f"{field}: not a setting; {hint}")
        else:
            lines.append(f"{field}: {error['msg']}")
    return f"bad setting{where}: " + "; ".join(lines)
