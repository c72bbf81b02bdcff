"""What the store keeps of templates: a version (``Template``), a version to write
(``NewVersion``) and what the batches of a version did (``VersionUsage``). Pure values."""

from __future__ import annotations

from dataclasses import dataclass

from batchyard.models import JSON, TemplateRef


@dataclass(frozen=True, slots=True)
class Template:
    """One version of a template: a task and its parameters, never changed once written.

    ``archived`` hides it from ``submit --template NAME`` and listings; batches that ran
    with it still read it."""

    name: str
    version: int
    task: str
    params: dict[str, JSON]
    description: str | None
    author: str | None
    archived: bool
    created_at: float

    @property
    def ref(self) -> TemplateRef:
        return TemplateRef(self.name, self.version)

    def as_dict(self) -> dict[str, JSON]:
        return {
            "name": self.name,
            "version": self.version,
            "ref": str(self.ref),
            "task": self.task,
            "params": self.params,
            "description": self.description,
            "author": self.author,
            "archived": self.archived,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A version to write: ``base`` is the version it follows (0 for a new template); the
    store refuses it when the template's newest version is no longer ``base``."""

    name: str
    base: int
    task: str
    params: dict[str, JSON]
    description: str | None
    author: str | None


@dataclass(frozen=True, slots=True)
class VersionUsage:
    """What the batches of one template version did, summed from their batch rows.

    Per-item figures are over the items that did not come from the response cache
    (``paid``): a free re-run would otherwise make a version look cheaper than it is."""

    version: int
    batches: int
    items: int
    succeeded: int
    failed: int
    cancelled: int
    tokens_in: int
    tokens_out: int
    cost: float
    calls: int
    cache_hits: int
    unpriced_calls: int

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @property
    def success_rate(self) -> float | None:
        """Succeeded over finished items (as reports count it); None before any ended."""
        return self.succeeded / self.finished if self.finished else None

    @property
    def paid(self) -> int:
        """Items that ran and were not answered by the response cache."""
        return max(self.succeeded + self.failed - self.cache_hits, 0)

    @property
    def tokens_per_item(self) -> float | None:
        return (self.tokens_in + self.tokens_out) / self.paid if self.paid else None

    @property
    def cost_per_item(self) -> float | None:
        """None when no item was paid for, or some calls had no price."""
        if not self.paid or self.unpriced_calls:
            return None
        return self.cost / self.paid

    def as_dict(self) -> dict[str, JSON]:
        return {
            "version": self.version,
            "batches": self.batches,
            "items": self.items,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "success_rate": self.success_rate,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost": None
            if self.unpriced_calls and self.unpriced_calls >= self.calls
            else self.cost,
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "tokens_per_item": self.tokens_per_item,
            "cost_per_item": self.cost_per_item,
        }
