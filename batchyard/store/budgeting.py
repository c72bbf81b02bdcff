"""Budgeting: a batch's cost cap, the holds calls in flight take on it, and the response
cache.

A budget hold locks its batch's row (where the database locks rows) and then only budget
holds; it changes nothing the feed shows. A group commit that records costs changes the
batch rows too, so a hold waits for any commit of its batch in progress and then sees its
recorded cost; the two never wait for each other in a cycle.
"""

from __future__ import annotations

from batchyard.models import BatchStatus
from batchyard.store.base import BudgetCheck
from batchyard.store.rules import S, check_budget, fits
from batchyard.store.sqlbase import SqlBase

_SPENT = "SELECT cost, budget FROM batches WHERE pk = ?"


class Budgeting(SqlBase):
    """Budgets and holds per batch; cached responses by content key."""

    def set_budget(self, batch_id: str, budget: float | None, now: float) -> BatchStatus:
        check_budget(budget)
        with self._write() as tx:
            row = tx.batch(batch_id)
            tx.run(
                "UPDATE batches SET budget = ?, updated_at = ? WHERE pk = ?", (budget, now, row.pk)
            )
            tx.event(batch_id, "batch.budget", {"budget": budget}, now)
        return self.get_batch(batch_id)

    def hold_budget(
        self, batch_pk: int, item_id: int, attempt: int, amount: float, now: float
    ) -> BudgetCheck:
        # Most batches have no budget: answer those from a read, taking no write lock.
        spent, budget = self._read(_SPENT, (batch_pk,))[0]
        if budget is None:
            return BudgetCheck(True, None, spent, 0.0)
        with self._write() as tx:
            spent, budget = tx.one(_SPENT + self.dialect.for_update, (batch_pk,))
            if budget is None:
                return BudgetCheck(True, None, spent, 0.0)
            # Holds of attempts no longer running have lapsed.
            tx.run(
                "DELETE FROM budget_holds WHERE batch_pk = ? AND NOT EXISTS (SELECT 1 FROM "
                "items i WHERE i.id = budget_holds.item_id AND i.attempts = budget_holds.attempt "
                f"AND i.state = '{S.RUNNING}')",
                (batch_pk,),
            )
            held = tx.one(
                "SELECT COALESCE(SUM(amount), 0) FROM budget_holds WHERE batch_pk = ?", (batch_pk,)
            )[0]
            if not fits(spent, held, amount, budget):
                return BudgetCheck(False, budget, spent, held)
            tx.run(
                "INSERT INTO budget_holds (item_id, attempt, batch_pk, amount) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (item_id, attempt) "
                "DO UPDATE SET amount = budget_holds.amount + excluded.amount",
                (item_id, attempt, batch_pk, amount),
            )
            return BudgetCheck(True, budget, spent, held)

    def cache_get(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM response_cache WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def cache_put(self, key: str, value: str, now: float) -> None:
        with self._write() as tx:
            tx.run(
                "INSERT INTO response_cache (key, value, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO NOTHING",
                (key, value, now),
            )

    def cache_prune(self, kept_before: float) -> int:
        with self._write() as tx:
            return tx.run("DELETE FROM response_cache WHERE created_at < ?", (kept_before,))
