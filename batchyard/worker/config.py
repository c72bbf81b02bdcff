"""How a worker runs (``WorkerConfig``) and what one run of it did (``WorkerStats``)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a worker runs. The defaults suit a worker on the same machine as its store.

    ``concurrency`` items run at once in this process. A lease lasts ``lease`` seconds and
    is renewed every ``lease / 3``; a worker that stops answering loses its items to others
    once a sweep has seen its lease run out and stay unrenewed for one more ``lease``
    (``rules.LeaseWatch``): about two leases after it stopped. ``grace`` is how long a
    stopping worker lets running items finish before it gives them back.

    ``claim_chunk`` bounds one claim. Only short items fill it (a worker holds no more than
    its lanes start within 50 ms: ``InFlight.prefetch``); for them a bigger claim means
    fewer round trips between the event loop and the store thread, each of which waits for
    the other thread to be scheduled (2048 instead of 512: a quarter more no-op items a
    second on a busy machine).
    """

    concurrency: int = 64
    lease: float = 30.0
    poll_interval: float = 0.5
    flush_interval: float = 0.02
    claim_chunk: int = 2048
    prefetch: int | None = None
    grace: float = 30.0
    progress_interval: float = 1.0
    control_interval: float = 0.5
    tasks: tuple[str, ...] | None = None
    batches: tuple[str, ...] | None = None
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("worker concurrency must be at least 1")
        if self.lease <= 0 or self.grace < 0 or self.poll_interval <= 0:
            raise ValueError("lease and poll interval must be positive, grace not negative")


@dataclass(slots=True)
class WorkerStats:
    """What one run of a worker did."""

    claimed: int = 0
    recorded: int = 0
    rejected: int = 0
    released: int = 0
    batches_ended: list[str] = field(default_factory=list)
