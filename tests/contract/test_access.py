"""Tokens, sessions, owners and the batch list's filters, the same on every store."""

from __future__ import annotations

from collections import Counter

import pytest

from batchyard.access import Role, Session, Token, digest
from batchyard.errors import ConfigError, TokenExists
from batchyard.states import BatchState
from batchyard.states import ItemState as S
from batchyard.store.base import Store
from tests.contract.test_store import T0, submit


def test_a_token_is_found_by_its_digest_until_revoked(store: Store) -> None:
    kept = store.add_token(Token("ci", "team-a", Role.OPERATOR, T0), digest("s3cret"))
    assert (kept.name, kept.owner, kept.role, kept.revoked_at) == (
        "ci",
        "team-a",
        Role.OPERATOR,
        None,
    )
    assert store.token_by_digest(digest("s3cret")) == kept
    assert store.token_by_digest(digest("other")) is None
    store.touch_token("ci", T0 + 5)
    assert store.list_tokens()[0].last_used_at == T0 + 5
    revoked = store.revoke_token("ci", T0 + 9)
    assert revoked.revoked_at == T0 + 9
    assert store.revoke_token("ci", T0 + 20).revoked_at == T0 + 9  # again: no change


def test_a_token_name_is_never_reused(store: Store) -> None:
    store.add_token(Token("ci", "ci", Role.VIEWER, T0), digest("a"))
    store.revoke_token("ci", T0)
    with pytest.raises(TokenExists, match="'ci' exists already"):
        store.add_token(Token("ci", "ci", Role.ADMIN, T0), digest("b"))
    with pytest.raises(ConfigError, match="no token is named 'nope'"):
        store.revoke_token("nope", T0)


def test_a_session_lives_until_it_expires_its_token_is_revoked_or_it_is_dropped(
    store: Store,
) -> None:
    token = store.add_token(Token("ann", "ann", Role.ADMIN, T0), digest("t"))
    store.add_session(digest("cookie"), Session(token, "csrf1", T0 + 100), T0)
    found = store.session_by_digest(digest("cookie"), T0 + 1)
    assert found is not None and (found.token.name, found.csrf) == ("ann", "csrf1")
    assert store.session_by_digest(digest("cookie"), T0 + 100) is None  # expired
    store.add_session(digest("two"), Session(token, "csrf2", T0 + 100), T0)
    store.drop_session(digest("two"))
    assert store.session_by_digest(digest("two"), T0 + 1) is None
    store.add_session(digest("three"), Session(token, "csrf3", T0 + 100), T0)
    store.revoke_token("ann", T0 + 2)
    assert store.session_by_digest(digest("three"), T0 + 3) is None


def test_batches_record_their_owner_and_list_by_it_and_by_the_other_filters(store: Store) -> None:
    submit(store, "b1", 1, owner="team-a", name="Leads Q3", now=T0)
    submit(store, "b2", 1, owner="team-b", name="leads_q4", now=T0 + 10)
    submit(store, "b3", 1, name="100% done", now=T0 + 20)
    assert store.get_batch("b1").owner == "team-a"
    assert store.get_batch("b3").owner is None

    def ids(**filters: object) -> list[str]:
        return [s.id for s in store.list_batches(**filters).rows]  # type: ignore[arg-type]

    assert ids(owner="team-a") == ["b1"]
    assert ids(text="LEADS") == ["b2", "b1"]
    assert ids(text="_q") == ["b2"]  # '_' is literal, not a wildcard
    assert ids(text="100%") == ["b3"]
    assert ids(text="b2") == ["b2"]  # the id too
    assert ids(created_after=T0 + 10) == ["b3", "b2"]
    assert ids(created_after=T0, created_before=T0 + 20) == ["b2", "b1"]
    assert ids(state=BatchState.QUEUED, owner="team-b") == ["b2"]
    first = store.list_batches(limit=1, text="leads")
    assert [s.id for s in first.rows] == ["b2"] and first.next is not None
    assert [s.id for s in store.list_batches(limit=1, text="leads", after=first.next).rows] == [
        "b1"
    ]


def test_totals_sum_the_kept_counters_of_every_batch(store: Store) -> None:
    from batchyard.models import Usage
    from tests.contract.test_store import claim, finish, outcome

    assert store.totals(T0).batches == {} and store.totals(T0).items["pending"] == 0
    submit(store, "b1", 3)
    submit(store, "b2", 2)
    taken = claim(store, 3)
    finish(store, taken[:2])
    store.record([outcome(taken[2], S.FAILED, usage=Usage(tokens_in=7, cost=0.5))], T0 + 1)
    totals = store.totals(T0 + 2)
    states = Counter(store.get_batch(b).state.value for b in ("b1", "b2"))
    assert totals.batches == dict(states) and sum(states.values()) == 2
    assert (totals.items["succeeded"], totals.items["failed"], totals.items["pending"]) == (2, 1, 2)
    assert (totals.usage.tokens_in, totals.usage.cost) == (7, 0.5)
    assert sum(totals.reruns.values()) == 0 and totals.waiting == 0
