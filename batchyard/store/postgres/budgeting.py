"""Budgeting: a batch's cost cap, the holds calls in flight take on it, and the response
cache.

A budget hold locks its batch's row (``FOR UPDATE``) and then only budget holds; it does
not take the feed row lock. A group commit that records costs locks the feed row and then
the batch rows, so a hold waits for any commit of its batch in progress and then sees its
recorded cost; the two never wait for each other in a cycle.
"""

from __future__ import annotations

from batchyard.models import BatchStatus
from batchyard.store.base import BudgetCheck
from batchyard.store.postgres.connection import PostgresBase
from batchyard.store.rules import check_budget, fits


class Budgeting(PostgresBase):
    """Budgets and holds per batch; cached responses by content key."""

    def set_budget(self, batch_id: str, budget: float | None, now: float) -> BatchStatus:
        check_budget(budget)
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            tx.run(
                "UPDATE batches SET budget = %s, updated_at = %s WHERE pk = %s",
                (budget, now, row[0]),
            )
            tx.event(batch_id, "batch.budget", {"budget": budget}, now)
        return self.get_batch(batch_id)

    def hold_budget(
        self, batch_pk: int, item_id: int, attempt: int, amount: float, now: float
    ) -> BudgetCheck:
        # Most batches have no budget: answer those from a read, taking no write lock.
        spent, budget = self._read("SELECT cost, budget FROM batches WHERE pk = %s", (batch_pk,))[0]
        if budget is None:
            return BudgetCheck(True, None, spent, 0.0)
        with self._write(feed=False) as tx:
            spent, budget = tx.one(
                "SELECT cost, budget FROM batches WHERE pk = %s FOR UPDATE", (batch_pk,)
            )
            if budget is None:
                return BudgetCheck(True, None, spent, 0.0)
            tx.run(
                "DELETE FROM budget_holds h WHERE h.batch_pk = %s AND NOT EXISTS (SELECT 1 "
                "FROM items i WHERE i.id = h.item_id AND i.attempts = h.attempt "
                "AND i.state = 'running')",
                (batch_pk,),
            )
            held = tx.one(
                "SELECT COALESCE(SUM(amount), 0) FROM budget_holds WHERE batch_pk = %s",
                (batch_pk,),
            )[0]
            if not fits(spent, held, amount, budget):
                return BudgetCheck(False, budget, spent, held)
            tx.run(
                "INSERT INTO budget_holds (item_id, attempt, batch_pk, amount) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (item_id, attempt) "
                "DO UPDATE SET amount = budget_holds.amount + excluded.amount",
                (item_id, attempt, batch_pk, amount),
            )
            return BudgetCheck(True, budget, spent, held)

    def cache_get(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM response_cache WHERE key = %s", (key,))
        return str(rows[0][0]) if rows else None

    def cache_put(self, key: str, value: str, now: float) -> None:
        with self._write(feed=False) as tx:
            tx.run(
                "INSERT INTO response_cache (key, value, created_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (key) DO NOTHING",
                (key, value, now),
            )

    def cache_prune(self, kept_before: float) -> int:
        with self._write(feed=False) as tx:
            return tx.run("DELETE FROM response_cache WHERE created_at < %s", (kept_before,))
