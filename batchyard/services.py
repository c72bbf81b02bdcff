"""What a running task may ask of the store through its context (``ctx.services``): budget
holds, the response cache and shared rate limiters. The built-in llm task is built on these;
any task may use them.

The methods are blocking store calls: a sync task calls them from its thread, an async task
through ``asyncio.to_thread`` (the limiter is async already).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchyard.clock import Clock
from batchyard.store.base import BudgetCheck, Store
from batchyard.waits import Waits

if TYPE_CHECKING:
    from batchyard.ratelimit import SharedLimiter


@dataclass(frozen=True, slots=True)
class Hub:
    """What a worker shares with every item it runs: its store, its clock, and the
    register of items waiting for a limiter (None outside a worker)."""

    store: Store
    clock: Clock
    waits: Waits | None = None


@dataclass(frozen=True, slots=True)
class Services:
    """The store, as one attempt of one item may use it."""

    hub: Hub
    batch_pk: int
    item_id: int
    attempt: int

    @property
    def store(self) -> Store:
        return self.hub.store

    def hold_budget(self, amount: float) -> BudgetCheck:
        """Reserve ``amount`` of the batch's budget for a call this attempt is about to make
        (see ``Store.hold_budget``); ``granted`` False means the call must not be made."""
        return self.hub.store.hold_budget(
            self.batch_pk, self.item_id, self.attempt, amount, self.hub.clock.now()
        )

    def cache_get(self, key: str) -> str | None:
        return self.hub.store.cache_get(key)

    def cache_put(self, key: str, value: str) -> None:
        self.hub.store.cache_put(key, value, self.hub.clock.now())

    def limiter(self, key: str, **limits: Any) -> SharedLimiter:
        """A limiter shared by every worker of the store under ``key`` (the keywords of
        ``SharedLimiter``: rpm, tpm, concurrency, burst, token_burst, lease). While this
        attempt waits for it, its worker counts the item as waiting, not running."""
        from batchyard.ratelimit import SharedLimiter

        waits = self.hub.waits
        if waits is not None and "on_wait" not in limits:
            limits["on_wait"] = waits.observer(self.batch_pk, self.item_id)
        return SharedLimiter(self.hub.store, key, **limits)
