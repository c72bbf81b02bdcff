"""batchyard: run a function over many items, durably and in the open.

``Yard`` is the entry point: ``Yard("sqlite:///work.db")``, ``@yard.task``,
``yard.submit(task, items)``, ``yard.run_until_idle()``.

Names are imported on first use (PEP 562), so ``import batchyard`` and the command line
start fast; ``from batchyard import Yard`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchyard.access import Role, Token
    from batchyard.batch import Batch
    from batchyard.clock import Clock, FakeClock, SystemClock
    from batchyard.clusters import ErrorCluster
    from batchyard.context import TaskContext
    from batchyard.errors import (
        BatchNotFound,
        BatchyardError,
        Cancelled,
        ClusterNotFound,
        ConfigError,
        Conflict,
        DatasetNotFound,
        DiskFull,
        DuplicateKey,
        Fail,
        IdempotencyConflict,
        InputError,
        InvalidItem,
        InvalidTransition,
        ItemNotFound,
        NotSerializable,
        Retry,
        SchemaTooNew,
        StoreError,
        StoreUnavailable,
        TaskNotImportable,
        TaskNotRegistered,
        TaskSignal,
        TemplateArchived,
        TemplateExists,
        TemplateNotFound,
        TemplateUnchanged,
        TokenExists,
    )
    from batchyard.models import (
        BatchStatus,
        Counts,
        Event,
        Item,
        LogLine,
        Page,
        TemplateRef,
        Usage,
    )
    from batchyard.records import Dataset, Record, RecordPage
    from batchyard.report import Report
    from batchyard.retry import RetryPolicy
    from batchyard.states import BatchState, ItemState
    from batchyard.tasks import TaskSpec, task
    from batchyard.templates import Template, TemplateDiff, Templates, VersionUsage
    from batchyard.worker import Worker, WorkerConfig, WorkerStats
    from batchyard.yard import Yard

__version__ = "0.1.0"

# Where each public name lives.
_HOME = {
    "Batch": "batchyard.batch",
    "BatchNotFound": "batchyard.errors",
    "BatchState": "batchyard.states",
    "BatchStatus": "batchyard.models",
    "BatchyardError": "batchyard.errors",
    "Cancelled": "batchyard.errors",
    "Clock": "batchyard.clock",
    "ClusterNotFound": "batchyard.errors",
    "ConfigError": "batchyard.errors",
    "Conflict": "batchyard.errors",
    "Counts": "batchyard.models",
    "Dataset": "batchyard.records",
    "DatasetNotFound": "batchyard.errors",
    "DiskFull": "batchyard.errors",
    "DuplicateKey": "batchyard.errors",
    "ErrorCluster": "batchyard.clusters",
    "Event": "batchyard.models",
    "Fail": "batchyard.errors",
    "FakeClock": "batchyard.clock",
    "IdempotencyConflict": "batchyard.errors",
    "InputError": "batchyard.errors",
    "InvalidItem": "batchyard.errors",
    "InvalidTransition": "batchyard.errors",
    "Item": "batchyard.models",
    "ItemNotFound": "batchyard.errors",
    "ItemState": "batchyard.states",
    "LogLine": "batchyard.models",
    "NotSerializable": "batchyard.errors",
    "Page": "batchyard.models",
    "Record": "batchyard.records",
    "RecordPage": "batchyard.records",
    "Report": "batchyard.report",
    "Retry": "batchyard.errors",
    "RetryPolicy": "batchyard.retry",
    "SchemaTooNew": "batchyard.errors",
    "StoreError": "batchyard.errors",
    "StoreUnavailable": "batchyard.errors",
    "SystemClock": "batchyard.clock",
    "TaskContext": "batchyard.context",
    "TaskNotImportable": "batchyard.errors",
    "TaskNotRegistered": "batchyard.errors",
    "TaskSignal": "batchyard.errors",
    "TaskSpec": "batchyard.tasks",
    "Template": "batchyard.templates",
    "TemplateArchived": "batchyard.errors",
    "TemplateDiff": "batchyard.templates",
    "TemplateExists": "batchyard.errors",
    "TemplateNotFound": "batchyard.errors",
    "TemplateRef": "batchyard.models",
    "TemplateUnchanged": "batchyard.errors",
    "Templates": "batchyard.templates",
    "Role": "batchyard.access",
    "Token": "batchyard.access",
    "TokenExists": "batchyard.errors",
    "Usage": "batchyard.models",
    "VersionUsage": "batchyard.templates",
    "Worker": "batchyard.worker",
    "WorkerConfig": "batchyard.worker",
    "WorkerStats": "batchyard.worker",
    "Yard": "batchyard.yard",
    "task": "batchyard.tasks",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'batchyard' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Batch",
    "BatchNotFound",
    "BatchState",
    "BatchStatus",
    "BatchyardError",
    "Cancelled",
    "Clock",
    "ClusterNotFound",
    "ConfigError",
    "Conflict",
    "Counts",
    "Dataset",
    "DatasetNotFound",
    "DiskFull",
    "DuplicateKey",
    "ErrorCluster",
    "Event",
    "Fail",
    "FakeClock",
    "IdempotencyConflict",
    "InputError",
    "InvalidItem",
    "InvalidTransition",
    "Item",
    "ItemNotFound",
    "ItemState",
    "LogLine",
    "NotSerializable",
    "Page",
    "Record",
    "RecordPage",
    "Report",
    "Retry",
    "RetryPolicy",
    "Role",
    "SchemaTooNew",
    "StoreError",
    "StoreUnavailable",
    "SystemClock",
    "TaskContext",
    "TaskNotImportable",
    "TaskNotRegistered",
    "TaskSignal",
    "TaskSpec",
    "Template",
    "TemplateArchived",
    "TemplateDiff",
    "TemplateExists",
    "TemplateNotFound",
    "TemplateRef",
    "TemplateUnchanged",
    "Templates",
    "Token",
    "TokenExists",
    "Usage",
    "VersionUsage",
    "Worker",
    "WorkerConfig",
    "WorkerStats",
    "Yard",
    "__version__",
    "task",
]
