"""Budgeting: a batch's cost cap, the holds calls in flight take on it, and the response
cache. Budget holds take one short ``BEGIN IMMEDIATE`` transaction; none touches the feed
except setting a budget."""

from __future__ import annotations

from batchyard.models import BatchStatus
from batchyard.store.base import BudgetCheck
from batchyard.store.rules import check_budget, fits
from batchyard.store.sqlite.connection import SqliteBase


class Budgeting(SqliteBase):
    """Budgets and holds per batch; cached responses by content key."""

    def set_budget(self, batch_id: str, budget: float | None, now: float) -> BatchStatus:
        check_budget(budget)
        with self._write() as tx:
            row = tx.batch_row(batch_id)
            tx.conn.execute(
                "UPDATE batches SET budget = ?, updated_at = ? WHERE pk = ?", (budget, now, row[0])
            )
            tx.event(batch_id, "batch.budget", {"budget": budget}, now)
        return self.get_batch(batch_id)

    def hold_budget(
        self, batch_pk: int, item_id: int, attempt: int, amount: float, now: float
    ) -> BudgetCheck:
        # Most batches have no budget: answer those from a read, taking no write lock.
        spent, budget = self._read("SELECT cost, budget FROM batches WHERE pk = ?", (batch_pk,))[0]
        if budget is None:
            return BudgetCheck(True, None, spent, 0.0)
        with self._write() as tx:
            spent, budget = tx.conn.execute(
                "SELECT cost, budget FROM batches WHERE pk = ?", (batch_pk,)
            ).fetchone()
            if budget is None:
                return BudgetCheck(True, None, spent, 0.0)
            tx.conn.execute(
                "DELETE FROM budget_holds WHERE batch_pk = ? AND NOT EXISTS (SELECT 1 FROM "
                "items i WHERE i.id = budget_holds.item_id AND i.attempts = budget_holds.attempt "
                "AND i.state = 'running')",
                (batch_pk,),
            )
            held = tx.conn.execute(
                "SELECT COALESCE(SUM(amount), 0) FROM budget_holds WHERE batch_pk = ?",
                (batch_pk,),
            ).fetchone()[0]
            if not fits(spent, held, amount, budget):
                return BudgetCheck(False, budget, spent, held)
            tx.conn.execute(
                "INSERT INTO budget_holds (item_id, attempt, batch_pk, amount) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (item_id, attempt) DO UPDATE SET amount = amount + excluded.amount",
                (item_id, attempt, batch_pk, amount),
            )
            return BudgetCheck(True, budget, spent, held)

    def cache_get(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM response_cache WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def cache_put(self, key: str, value: str, now: float) -> None:
        with self._write() as tx:
            tx.conn.execute(
                "INSERT INTO response_cache (key, value, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO NOTHING",
                (key, value, now),
            )

    def cache_prune(self, kept_before: float) -> int:
        with self._write() as tx:
            return int(
                tx.conn.execute(
                    "DELETE FROM response_cache WHERE created_at < ?", (kept_before,)
                ).rowcount
            )
