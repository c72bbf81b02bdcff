"""Every exception batchyard raises, and the signals a task raises to steer its own item.

::

    BatchyardError
    ├── ConfigError                  bad options, a bad store URL
    │   ├── TaskNotRegistered        a task name nothing can resolve
    │   ├── TaskNotImportable        a task function no worker could import by name
    │   └── ClusterNotFound          no error cluster of a batch has this id (or prefix)
    │   ├── TemplateNotFound         no such template or version, or not one to run
    │   │   └── TemplateArchived     a version archived: readable, not runnable
    │   ├── TemplateExists           creating a template whose name is taken
    │   ├── TemplateUnchanged        a template update that would change nothing
    │   └── TokenExists              creating a token whose name is taken
    ├── InputError                   a bad item; nothing was written
    │   ├── InvalidItem              not a dict, a bad key, too large
    │   │   └── ItemTooLarge         over the size limit of an item
    │   ├── DuplicateKey             two items with one key in a batch
    │   └── NotSerializable          a payload that is not JSON
    ├── BatchNotFound
    ├── ItemNotFound
    ├── DatasetNotFound
    ├── InvalidTransition            a state change the lifecycle forbids
    ├── StoreError                   the database failed
    │   ├── StoreUnavailable         it cannot be reached
    │   │   └── DiskFull             its disk is full (an outage too)
    │   ├── TemplateChanged          a template got a version while one was being added
    │   ├── Conflict                 the batch is not in a state for that
    │   │   └── IdempotencyConflict  a key used before with other input
    │   └── SchemaTooNew             the file was made by a newer batchyard
    ├── CommandError                 a command line used wrongly (exit status 2)
    ├── SignatureError               a webhook's signature does not check out
    └── TaskSignal                   raised by a task about its own item
        ├── Retry                    try again, after a delay
        ├── Fail                     fail now, no further attempts
        ├── PauseBatch               pause the whole batch, with a reason
        └── Cancelled                stop: the item ends cancelled
"""

from __future__ import annotations

from typing import Any


class BatchyardError(Exception):
    """The root of every error batchyard raises."""


class ConfigError(BatchyardError):
    """An option, a URL or a task definition is not usable as given."""


class TaskNotRegistered(ConfigError):
    """A task name that is neither registered nor importable as ``module:function``."""

    def __init__(self, name: str, reason: str = "") -> None:
        self.name = name
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"unknown task {name!r}{detail}. Register it with @yard.task or name it "
            f"as 'module:function' with the module importable"
        )


class TaskNotImportable(ConfigError):
    """A task function submitted without being registered on the Yard that no worker could
    import by its name: a lambda, a nested function, or a function of the script being run
    (a worker would reach it only by running the script again). ``name`` is the task's name
    and ``reason`` says which of those it is."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(
            f"task {name} cannot be run by a worker: {reason}. Move it into a module "
            "(tasks.py beside this script) and import it from there, or register it on "
            "this Yard (@yard.task) and run the batch in this process (yard.run_until_idle())"
        )


class TemplateNotFound(ConfigError):
    """A template (``name``) or one of its versions (``version``) that the store does not
    hold, or that cannot be run; the message names the latest version to use instead."""

    def __init__(self, name: str, version: int | None, message: str) -> None:
        self.name = name
        self.version = version
        super().__init__(message)


class TemplateArchived(TemplateNotFound):
    """A template version that was archived: batches that ran with it read it, nothing new
    runs with it."""


class TemplateUnchanged(ConfigError):
    """``templates.update`` that would change nothing: the newest version has these
    parameters and this description already."""


class TemplateExists(ConfigError):
    """``templates.create`` with a name that has versions already (``update`` adds one)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"template {name!r} exists already; update it to add a version")


class TokenExists(ConfigError):
    """``tokens.create`` with a name a token has (or had: a revoked name is not reused)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a token named {name!r} exists already (revoked ones count too)")


class InputError(BatchyardError):
    """An item cannot be accepted; the submission wrote nothing.

    ``position`` is the 1-based place of the item in its submission and ``key`` its key
    when one is known; ``source`` and ``line`` name a file and line when the items came
    from one.
    """

    def __init__(
        self,
        reason: str,
        *,
        position: int | None = None,
        key: str | None = None,
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        self.reason = reason
        self.position = position
        self.key = key
        self.source = source
        self.line = line
        super().__init__(self._describe())

    def _describe(self) -> str:
        where: list[str] = []
        if self.source is not None:
            where.append(f"{self.source}:{self.line}" if self.line else self.source)
        elif self.position is not None:
            where.append(f"item {self.position}")
        if self.key is not None:
            where.append(f"key {self.key!r}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


class InvalidItem(InputError):
    """An item is not a JSON object, its key field is unusable, or it is too large."""


class ItemTooLarge(InvalidItem):
    """An item whose JSON is over the limit (``items.MAX_ITEM_BYTES``)."""


class DuplicateKey(InputError):
    """Two items of one batch have the same key; ``first_position`` is the earlier one's."""

    def __init__(self, reason: str, *, first_position: int | None = None, **where: Any) -> None:
        self.first_position = first_position
        super().__init__(reason, **where)


class NotSerializable(InputError):
    """An item payload cannot be encoded as JSON."""


class BatchNotFound(BatchyardError):
    """No batch has this id."""

    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        super().__init__(f"no batch {batch_id!r}")


class ItemNotFound(BatchyardError):
    """The batch has no item with this key."""

    def __init__(self, batch_id: str, key: str) -> None:
        self.batch_id = batch_id
        self.key = key
        super().__init__(f"batch {batch_id!r} has no item with key {key!r}")


class ClusterNotFound(ConfigError):
    """No error cluster of the batch has an id starting with ``cluster``, or more than one
    has (``matches`` then names them)."""

    def __init__(self, batch_id: str, cluster: str, matches: tuple[str, ...] = ()) -> None:
        self.batch_id = batch_id
        self.cluster = cluster
        self.matches = matches
        if matches:
            text = f"{cluster!r} is the start of {len(matches)} error clusters of batch "
            text += f"{batch_id!r} ({', '.join(matches)}): give more of the id"
        else:
            text = f"batch {batch_id!r} has no error cluster {cluster!r} (batchyard errors "
            text += f"{batch_id} lists them)"
        super().__init__(text)


class DatasetNotFound(BatchyardError):
    """No dataset has this name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no dataset {name!r} (batchyard dataset list shows them)")


class InvalidTransition(BatchyardError):
    """A state change the lifecycle does not allow (see ``batchyard.states``)."""

    def __init__(self, kind: str, current: str, new: str) -> None:
        self.kind = kind
        self.current = current
        self.new = new
        super().__init__(f"a {kind} cannot go from {current!r} to {new!r}")


class StoreError(BatchyardError):
    """The store failed to carry out an operation."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or opened."""


class DiskFull(StoreUnavailable):
    """The store's disk (or the database server's) has no room for a write. Nothing was
    written; a worker keeps what it holds and carries on when there is room again."""


class TemplateChanged(StoreError):
    """Adding a version on top of one that is no longer the newest: another writer added
    one meanwhile. Read the template again and retry."""


class Conflict(StoreError):
    """The batch is not in a state that allows this operation."""

    def __init__(self, batch_id: str, message: str) -> None:
        self.batch_id = batch_id
        super().__init__(f"batch {batch_id}: {message}")


class IdempotencyConflict(Conflict):
    """An idempotency key was used before, for a batch made from other input."""

    def __init__(self, key: str, batch_id: str) -> None:
        self.key = key
        super().__init__(
            batch_id,
            f"was submitted with idempotency key {key!r} and other input (task, options or "
            "items differ); nothing was written. Use a new key for a new submission",
        )


class SchemaTooNew(StoreError):
    """The database was made by a newer batchyard than this one."""


class CommandError(BatchyardError):
    """A command was used wrongly (a bad option value, a missing file): the command line
    exits with status 2."""


class SignatureError(BatchyardError):
    """A webhook delivery's ``Batchyard-Signature`` is missing, malformed, too old or too
    new, or matches no signature of its body with the secret (``webhooks.verify``)."""


class TaskSignal(BatchyardError):
    """Raised by a task to decide the outcome of its own item."""


class Retry(TaskSignal):
    """Try this item again after ``after`` seconds (if attempts remain)."""

    def __init__(self, after: float = 0.0, reason: str = "retry requested") -> None:
        if after < 0:
            raise ValueError("Retry(after=...) must not be negative")
        self.after = after
        super().__init__(reason)


class Fail(TaskSignal):
    """Fail this item now; it is not retried whatever attempts remain."""


class PauseBatch(TaskSignal):
    """Pause this item's whole batch, with ``reason`` shown in its status; this item goes
    back to the queue without spending its attempt. For what no retry can mend: a spent
    budget, a provider's exhausted quota. ``batchyard resume`` carries on."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Cancelled(TaskSignal):
    """Stop this item; it ends ``cancelled``."""
