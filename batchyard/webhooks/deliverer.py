"""The ``Deliverer``: sends due webhook deliveries from a daemon thread of its own, with its
own asyncio loop and one ``httpx.AsyncClient``, so a receiver that is down, slow or failing
never holds up the worker or server that started it. Deliveries are leased in the store, so
processes sending at once never send one twice (but a process that dies mid-send lets
another send it again after the lease: receivers drop repeats by ``Batchyard-Delivery``)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from batchyard.clock import Clock
from batchyard.deliveries import Attempt, Backoff, Delivery
from batchyard.errors import BatchyardError
from batchyard.store.base import Store
from batchyard.webhooks.signing import headers, signing_secret

log = logging.getLogger("batchyard.webhooks")

#: An answer's first bytes kept as the try's error when it is not 2xx.
_ANSWER_BYTES = 200


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """How a Deliverer works: ``poll`` seconds between looks for due deliveries, a
    ``lease`` per try (longer than a try can take), at most ``in_flight`` tries at once,
    ``connect`` and ``total`` timeouts of a try, and the ``backoff`` of failed ones."""

    poll: float = 1.0
    lease: float = 60.0
    in_flight: int = 20
    connect: float = 5.0
    total: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)


class Deliverer:
    """Sends a store's due webhook deliveries until stopped (``start``, ``stop``)."""

    def __init__(
        self, store: Store, config: DeliveryConfig | None = None, *, clock: Clock | None = None
    ) -> None:
        self.store = store
        self.config = config or DeliveryConfig()
        self.clock = clock or store.clock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._secret: str | None = None
        self._sending: set[asyncio.Task[None]] = set()
        #: Set when a try ends: there is room to send one more.
        self._room = asyncio.Event()
        self._drain_until = 0.0

    def start(self) -> None:
        """Start the thread; returns once its loop runs."""
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main()), name="batchyard-webhooks", daemon=True
        )
        self._thread.start()
        self._started.wait(10)

    def stop(self, drain: float = 0.0) -> None:
        """Stop sending. With ``drain``, first send what is due for up to that many seconds
        (a process about to exit). Tries cut short keep their lease: another process sends
        them once it lapses."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is None or stop is None or thread is None:
            return
        self._loop = None  # a second stop does nothing
        self._drain_until = time.monotonic() + drain
        loop.call_soon_threadsafe(stop.set)
        thread.join(drain + self.config.total + 5)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        # The store's calls on two threads of this loop's own: never the caller's executor.
        self._loop.set_default_executor(ThreadPoolExecutor(2, "batchyard-webhooks-store"))
        timeout = httpx.Timeout(self.config.total, connect=self.config.connect)
        self._started.set()
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            while not self._stop.is_set():
                self._room.clear()
                try:
                    await self.send_due(client)
                except Exception:  # a bug or a driver's raw error: sending must go on
                    log.exception("webhooks: a look for due deliveries failed")
                await self._idle(self._stop)
            while time.monotonic() < self._drain_until and await self.send_due(client):
                await asyncio.sleep(0.05)  # NOTE: polls the drain; the tries are tasks
            for task in self._sending:
                task.cancel()
            await asyncio.gather(*self._sending, return_exceptions=True)

    async def _idle(self, stop: asyncio.Event) -> None:
        """Wait for the next look: a poll interval, or less when a try ends (room for one
        more, and a backlog goes out at the receivers' pace), or a stop."""
        waits = {asyncio.create_task(stop.wait()), asyncio.create_task(self._room.wait())}
        _, pending = await asyncio.wait(
            waits, timeout=self.config.poll, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._room.set()

    async def send_due(self, client: httpx.AsyncClient) -> int:
        """Claim due deliveries (as many as there is room for) and start sending them;
        returns how many are being sent now."""
        room = self.config.in_flight - len(self._sending)
        if room > 0:
            try:
                if self._secret is None:
                    self._secret = await asyncio.to_thread(signing_secret, self.store)
                claimed = await asyncio.to_thread(
                    self.store.claim_deliveries, self.clock.now(), self.config.lease, room
                )
            except BatchyardError as exc:  # the store is away: look again next poll
                log.warning("webhooks: could not claim deliveries: %s", exc)
                claimed = []
            for delivery in claimed:
                task = asyncio.create_task(self._send(client, delivery, self._secret or ""))
                self._sending.add(task)
                task.add_done_callback(self._done)
        return len(self._sending)

    async def _send(self, client: httpx.AsyncClient, delivery: Delivery, secret: str) -> None:
        attempt = await self._try(client, delivery, secret)
        now = self.clock.now()
        retry_at = None
        if not attempt.is_ok:
            retry_at = self.config.backoff.next_try(delivery.attempts, delivery.created_at, now)
        try:
            kept = await asyncio.to_thread(
                self.store.finish_delivery, delivery, attempt, now, retry_at
            )
        except BatchyardError as exc:  # the lease lapses and the delivery is tried again
            log.warning("webhooks: could not record delivery %s: %s", delivery.id, exc)
            return
        if not kept:
            log.info("webhooks: delivery %s: its lease was lost meanwhile", delivery.id)
        elif not attempt.is_ok:
            then = "given up" if retry_at is None else f"next try in {retry_at - now:.0f}s"
            log.info("webhooks: %s to %s: %s; %s", delivery.event, delivery.url, attempt, then)

    async def _try(self, client: httpx.AsyncClient, delivery: Delivery, secret: str) -> Attempt:
        """POST the delivery once; how it went (never raises but CancelledError)."""
        body = delivery.payload.encode()
        sent = headers(secret, delivery, body, int(self.clock.now()))
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.config.total):
                async with client.stream("POST", delivery.url, content=body, headers=sent) as r:
                    answer = b""
                    if not 200 <= r.status_code < 300:
                        async for chunk in r.aiter_bytes():
                            answer += chunk
                            if len(answer) >= _ANSWER_BYTES:
                                break
        except TimeoutError:
            took = time.monotonic() - started
            return Attempt(None, f"no answer within {self.config.total:g}s", took)
        except Exception as exc:  # any failure of a try is its outcome (InvalidURL is no
            # HTTPError), recorded and retried; only CancelledError goes through
            took = time.monotonic() - started
            return Attempt(None, f"{type(exc).__name__}: {exc}"[:500], took)
        took = time.monotonic() - started
        if 200 <= r.status_code < 300:
            return Attempt(r.status_code, None, took)
        text = answer[:_ANSWER_BYTES].decode(errors="replace").strip()
        return Attempt(r.status_code, f"HTTP {r.status_code}" + (f": {text}" if text else ""), took)


def start_deliveries(
    store: Store, config: DeliveryConfig | None = None, *, clock: Clock | None = None
) -> Callable[..., None]:
    """Send ``store``'s webhook deliveries from a daemon thread of this process until the
    returned function is called (``stop(drain=0.0)``: ``drain`` seconds to send what is
    due first). For workers and servers: what it sends never holds up their own work."""
    deliverer = Deliverer(store, config, clock=clock)
    deliverer.start()
    return deliverer.stop
