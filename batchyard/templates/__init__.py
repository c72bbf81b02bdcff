"""Templates: named, versioned, immutable parameter sets of a task (docs/templates.md).

``values`` holds what the store keeps (a version, what its batches did), ``library`` the
``Templates`` API (``yard.templates``), ``diff`` what changed between two versions."""

from __future__ import annotations

from batchyard.templates.diff import TemplateDiff
from batchyard.templates.library import Templates
from batchyard.templates.values import NewVersion, Template, VersionUsage

__all__ = ["NewVersion", "Template", "TemplateDiff", "Templates", "VersionUsage"]
