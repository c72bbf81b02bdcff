"""``Templates`` (``yard.templates``): create, update, read, diff and archive template
versions, each checked by its task before it is written, and pick the version a batch runs
with."""

from __future__ import annotations

import builtins
import difflib
import getpass
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from batchyard.errors import ConfigError, TemplateArchived, TemplateNotFound, TemplateUnchanged
from batchyard.models import JSON, UNSET, BatchOptions, TemplateRef
from batchyard.templates.diff import TemplateDiff
from batchyard.templates.values import NewVersion, Template, VersionUsage

if TYPE_CHECKING:
    from batchyard.clock import Clock
    from batchyard.store.base import Store
    from batchyard.tasks import TaskRegistry

#: Versions of templates (an alias: ``Templates.list`` hides the builtin in its class).
Versions = list[Template]
#: A template's name: what ``NAME@N`` and a command line can carry without quoting.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def as_ref(ref: str | TemplateRef) -> TemplateRef:
    """A TemplateRef from ``NAME`` or ``NAME@N``; ConfigError for anything else."""
    if isinstance(ref, TemplateRef):
        return ref
    try:
        return TemplateRef.parse(ref)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"{name!r} is not a template name: up to 100 letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return name


class Templates:
    """The templates of a store. Every version is checked by its task (its ``prepare``
    hook: for the llm task, unknown parameters and prompts that do not compile) before it
    is written, and never changes afterwards."""

    def __init__(self, store: Store, registry: TaskRegistry, clock: Clock) -> None:
        self._store = store
        self._registry = registry
        self._clock = clock

    def create(
        self,
        name: str,
        task: str,
        params: Mapping[str, JSON],
        *,
        description: str | None = None,
        author: str | None = None,
    ) -> Template:
        """Write version 1 of a new template. Raises TemplateExists for a name in use,
        ConfigError (naming the parameter, or the prompt's line and column) for parameters
        the task refuses, TaskNotRegistered for an unknown task."""
        spec_name = self._check(check_name(name), task, dict(params))
        new = NewVersion(name, 0, spec_name, dict(params), description, _author(author))
        return self._store.add_template_version(new, self._clock.now())

    def update(
        self,
        name: str,
        params: Mapping[str, JSON] | None = None,
        *,
        unset: Iterable[str] = (),
        description: str | None = UNSET,
        author: str | None = None,
    ) -> Template:
        """Write the next version of a template: the newest version's parameters with
        ``params`` set and ``unset`` removed (only what changes is given). Raises
        TemplateNotFound, ConfigError for a version that changes nothing or that the task
        refuses, StoreError when another update wrote a version meanwhile."""
        base = self.versions(name)[-1]
        merged = {**base.params, **(params or {})}
        for key in unset:
            if key not in merged:
                raise ConfigError(f"template {name!r} has no parameter {key!r} to unset")
            del merged[key]
        text = base.description if description is UNSET else description
        if merged == base.params and text == base.description:
            raise TemplateUnchanged(f"{base.ref} has these parameters already: nothing to update")
        self._check(name, base.task, merged)
        new = NewVersion(name, base.version, base.task, merged, text, _author(author))
        return self._store.add_template_version(new, self._clock.now())

    def get(self, ref: str | TemplateRef) -> Template:
        """``NAME@N``, archived or not; ``NAME``: its latest version not archived (the
        newest if all are). Raises TemplateNotFound."""
        wanted = as_ref(ref)
        versions = self.versions(wanted.name)
        if wanted.version is None:
            live = [v for v in versions if not v.archived]
            return (live or versions)[-1]
        for version in versions:
            if version.version == wanted.version:
                return version
        raise TemplateNotFound(
            wanted.name,
            wanted.version,
            f"template {wanted.name!r} has no version "
            f"{wanted.version}{_latest_hint(wanted.name, versions)}",
        )

    def runnable(self, ref: str | TemplateRef) -> Template:
        """The version a batch runs with: ``NAME@N``, or for ``NAME`` the latest version
        not archived. Raises TemplateNotFound for a missing one and TemplateArchived for an
        archived one, naming the latest version to use instead."""
        wanted = as_ref(ref)
        versions = self.versions(wanted.name)
        live = [v for v in versions if not v.archived]
        if wanted.version is None and not live:
            raise TemplateArchived(
                wanted.name, None, f"every version of template {wanted.name!r} is archived"
            )
        found = self.get(wanted)
        if found.archived:
            raise TemplateArchived(
                found.name,
                found.version,
                f"template {found.name!r} version {found.version} "
                f"is archived{_latest_hint(found.name, versions)}",
            )
        return found

    def versions(self, name: str) -> Versions:
        """Every version of a template, oldest first; raises TemplateNotFound (with the
        closest name, if any) when there is none."""
        versions = self._store.template_versions(name)
        if not versions:
            names = sorted({t.name for t in self._store.list_templates()})
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TemplateNotFound(name, None, f"no template {name!r}{hint}")
        return versions

    def list(self, *, archived: bool = False) -> Versions:
        """The latest version of each template by name (versions archived left out unless
        ``archived``; a template with every version archived then shows its newest)."""
        latest: dict[str, Template] = {}
        for version in self._store.list_templates():
            if archived or not version.archived:
                latest[version.name] = version
        return [latest[name] for name in sorted(latest)]

    def diff(self, name: str, old: int, new: int) -> TemplateDiff:
        """What changed from version ``old`` to ``new`` (TemplateNotFound for either)."""
        return TemplateDiff(self.get(TemplateRef(name, old)), self.get(TemplateRef(name, new)))

    def archive(self, ref: str | TemplateRef) -> Template:
        """Hide ``NAME@N`` from ``NAME`` and listings; batches that ran with it still read
        it, and nothing deletes it. Raises ConfigError for a ref without a version."""
        wanted = as_ref(ref)
        if wanted.version is None:
            raise ConfigError(f"archive one version: {wanted.name}@N")
        self.get(wanted)
        return self._store.archive_template(wanted.name, wanted.version, self._clock.now())

    def usage(self, name: str) -> builtins.list[VersionUsage]:
        """What the batches of each version did (versions no batch ran with left out)."""
        self.versions(name)
        return self._store.template_usage(name)

    def _check(self, name: str, task: str, params: dict[str, JSON]) -> str:
        """The task's name, once its ``prepare`` hook accepts ``params``."""
        spec = self._registry.resolve(task)
        if spec.prepare is not None:
            try:
                spec.prepare(BatchOptions(task=spec.name, params=params), False)
            except ConfigError as exc:
                raise ConfigError(f"template {name!r}: {exc}") from None
        return spec.name


def merged_params(template: Template, overrides: Mapping[str, Any] | None) -> dict[str, JSON]:
    """A template's parameters with a submission's own on top: what the batch records."""
    return {**template.params, **(overrides or {})}


def _latest_hint(name: str, versions: Versions) -> str:
    live = [v for v in versions if not v.archived]
    if not live:
        return f"; every version of {name!r} is archived"
    latest = live[-1].version
    return f"; the latest is {latest}: use {name}@{latest} or {name}"


def _author(given: str | None) -> str | None:
    if given is not None:
        return given
    try:
        return getpass.getuser()
    except Exception:  # NOTE: no user name in this environment (a bare container): unknown
        return None
