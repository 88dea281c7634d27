"""The server's workflow registry: every version of every workflow, with the source it came from.

The newest version of a name is what new runs use (the runtime's registry points at it); a run
keeps the IR it started with, so updating a workflow never changes runs already going. Versions
registered over the API are kept in the run store (``persist`` / ``restore``), so they outlive a
restart; workflows served from files are read from the files at each start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from pydantic import ValidationError

from agentflow.dsl.ir import WorkflowSpec
from agentflow.runtime import Runtime
from agentflow.runtime.store import RunStore, WorkflowRecord

log = logging.getLogger(__name__)


@dataclass
class Version:
    spec: WorkflowSpec
    version: int
    source: str | None
    """The YAML text it was registered from (None for a workflow given as IR JSON)."""
    origin: str
    """``file:PATH`` or ``api``."""
    created_at: float = field(default_factory=time.time)


class Registry:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._versions: dict[str, list[Version]] = {}
        self._lock = anyio.Lock()

    def names(self) -> list[str]:
        return sorted(self._versions)

    def latest(self, name: str) -> Version | None:
        versions = self._versions.get(name)
        return versions[-1] if versions else None

    def versions(self, name: str) -> list[Version]:
        return list(self._versions.get(name, ()))

    def add(self, spec: WorkflowSpec, *, source: str | None, origin: str,
            created_at: float | None = None) -> Version:
        """Register ``spec`` as the next version of its name (its own ``version`` if that is higher)."""
        entry = self._next(spec, source, origin, created_at)
        self._commit(entry)
        return entry

    async def register(self, spec: WorkflowSpec, store: RunStore, *, source: str | None) -> Version:
        """A version registered over the API: stored first (:meth:`persist`), then served, so a version the
        store refuses is not served either. One registration at a time, so each gets its own number."""
        async with self._lock:
            entry = self._next(spec, source, "api", None)
            await self.persist(entry, store)
            self._commit(entry)
            return entry

    def _next(self, spec: WorkflowSpec, source: str | None, origin: str, created_at: float | None) -> Version:
        previous = self._versions.get(spec.name, [])
        number = max(spec.version, previous[-1].version + 1) if previous else spec.version
        if number != spec.version:
            spec = spec.model_copy(update={"version": number})
        return Version(spec, number, source, origin, created_at=time.time() if created_at is None else created_at)

    def _commit(self, entry: Version) -> None:
        self._versions.setdefault(entry.spec.name, []).append(entry)
        self._runtime.register(entry.spec)

    def remove(self, name: str) -> bool:
        """Forget every version; runs of it keep going (each holds its own IR)."""
        self._runtime.workflows.pop(name, None)
        return self._versions.pop(name, None) is not None


    async def persist(self, entry: Version, store: RunStore) -> None:
        """Store a version registered over the API, so the next server start serves it again."""
        spec = entry.spec.model_dump(mode="json", by_alias=True)
        await store.put_workflow(WorkflowRecord(entry.spec.name, entry.version, spec, entry.source, entry.created_at))

    async def restore(self, store: RunStore, accept: Callable[[WorkflowSpec], bool] = lambda spec: True) -> int:
        """Register the versions stored by :meth:`persist` (after the files, so they win); a stored
        version that no longer validates, or that ``accept`` refuses, is skipped with a warning."""
        restored = 0
        for record in await store.workflows():
            try:
                spec = WorkflowSpec.model_validate(record.spec)
            except ValidationError as exc:
                log.warning("stored workflow %s v%d no longer validates; skipped: %s", record.name, record.version,
                            exc.errors()[0]["msg"] if exc.errors() else exc)
                continue
            if not accept(spec):
                continue
            self.add(spec, source=record.source, origin="api", created_at=record.created_at)
            restored += 1
        return restored


__all__ = ["Registry", "Version"]
