"""The server's workflow registry: every version of every workflow, with the source it came from.

The newest version of a name is what new runs use (the runtime's registry points at it); a run
keeps the IR it started with, so updating a workflow never changes runs already going.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from agentflow.dsl.ir import WorkflowSpec
from agentflow.runtime import Runtime


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

    def names(self) -> list[str]:
        return sorted(self._versions)

    def latest(self, name: str) -> Version | None:
        versions = self._versions.get(name)
        return versions[-1] if versions else None

    def versions(self, name: str) -> list[Version]:
        return list(self._versions.get(name, ()))

    def add(self, spec: WorkflowSpec, *, source: str | None, origin: str) -> Version:
        """Register ``spec`` as the next version of its name (its own ``version`` if that is higher)."""
        previous = self._versions.get(spec.name, [])
        number = max(spec.version, previous[-1].version + 1) if previous else spec.version
        if number != spec.version:
            spec = spec.model_copy(update={"version": number})
        entry = Version(spec, number, source, origin)
        self._versions.setdefault(spec.name, []).append(entry)
        self._runtime.register(spec)
        return entry

    def remove(self, name: str) -> bool:
        """Forget every version; runs of it keep going (each holds its own IR)."""
        self._runtime.workflows.pop(name, None)
        return self._versions.pop(name, None) is not None


__all__ = ["Registry", "Version"]
