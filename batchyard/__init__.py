"""batchyard: run a function over many items, durably and in the open.

``Yard`` is the entry point: ``Yard("sqlite:///work.db")``, ``@yard.task``,
``yard.submit(task, items)``, ``yard.run_until_idle()``.
"""

from batchyard.clock import Clock, FakeClock, SystemClock
from batchyard.context import TaskContext
from batchyard.errors import (
    BatchNotFound,
    BatchyardError,
    Cancelled,
    ConfigError,
    Conflict,
    DuplicateKey,
    Fail,
    InputError,
    InvalidItem,
    InvalidTransition,
    ItemNotFound,
    NotSerializable,
    Retry,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
    TaskNotRegistered,
    TaskSignal,
)
from batchyard.models import BatchStatus, Counts, Event, Item, LogLine, Page, Usage
from batchyard.retry import RetryPolicy
from batchyard.states import BatchState, ItemState
from batchyard.tasks import TaskSpec, task
from batchyard.worker import Worker, WorkerConfig, WorkerStats
from batchyard.yard import Batch, Yard

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "BatchNotFound",
    "BatchState",
    "BatchStatus",
    "BatchyardError",
    "Cancelled",
    "Clock",
    "ConfigError",
    "Conflict",
    "Counts",
    "DuplicateKey",
    "Event",
    "Fail",
    "FakeClock",
    "InputError",
    "InvalidItem",
    "InvalidTransition",
    "Item",
    "ItemNotFound",
    "ItemState",
    "LogLine",
    "NotSerializable",
    "Page",
    "Retry",
    "RetryPolicy",
    "SchemaTooNew",
    "StoreError",
    "StoreUnavailable",
    "SystemClock",
    "TaskContext",
    "TaskNotRegistered",
    "TaskSignal",
    "TaskSpec",
    "Usage",
    "Worker",
    "WorkerConfig",
    "WorkerStats",
    "Yard",
    "__version__",
    "task",
]
