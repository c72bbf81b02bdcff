"""What makes two submissions the same, for idempotency keys: the task and every option of
the batch, and its items (key and payload, in order), hashed as they stream past."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator

from batchyard.models import BatchOptions
from batchyard.store.base import Chunk, NewItems, as_chunk


class Fingerprint:
    """A running SHA-256 of a submission."""

    def __init__(self, options: BatchOptions) -> None:
        self._hash = hashlib.sha256()
        self._hash.update(
            json.dumps(dataclasses.asdict(options), sort_keys=True, default=str).encode()
        )

    def add(self, chunk: Chunk) -> None:
        # The chunk's members, each followed by a comma, whatever chunks they came in: the
        # same text for the same items, and (being JSON) never for other items.
        if chunk:
            self._hash.update(chunk.json[1:-1].encode())
            self._hash.update(b",")

    def note(self, text: str) -> None:
        """Add what else makes the submission (a dataset batch's selection)."""
        data = text.encode()
        self._hash.update(b"%d:" % len(data) + data)

    def digest(self) -> str:
        return self._hash.hexdigest()

    def over(self, chunks: Iterable[NewItems]) -> Fingerprinted:
        return Fingerprinted(self, iter(chunks))


class Fingerprinted(Iterator[Chunk]):
    """Chunks passed through as Chunks, each added to the fingerprint as it goes by."""

    def __init__(self, fingerprint: Fingerprint, chunks: Iterator[NewItems]) -> None:
        self.fingerprint = fingerprint
        self._chunks = chunks

    def __next__(self) -> Chunk:
        chunk = as_chunk(next(self._chunks))
        self.fingerprint.add(chunk)
        return chunk

    def ready(self) -> bool:
        """Whether the next chunk is at hand (see ``rules.readiness``)."""
        ready = getattr(self._chunks, "ready", None)
        return bool(ready()) if callable(ready) else False
