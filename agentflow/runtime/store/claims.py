"""Which process executes a run: one claim per run, so that two processes on one store never both run it.

A runtime claims a run before it executes it (a new run, a run it recovers after a crash, a run it
resumes from an interrupt, a run it cancels from the store) and releases the claim when the run stops
executing there (finished, paused at an interrupt it no longer holds in memory, or the runtime
closed). A second runtime that finds the run claimed leaves it alone: ``agentflow serve`` started
twice on one store, ``agentflow run --run-id`` started while another terminal still runs it, or two
``agentflow resume`` answers to the same interrupt.

On an SQLite store the claim is an OS record lock (``fcntl.lockf``) on one byte of the file
``<store>.lock`` beside the database, at an offset hashed from the run id. The kernel drops a lock
when its process dies, however it dies (``kill -9`` included), so a crashed process never leaves a
stale claim behind and its runs can be recovered at once. Record locks do not conflict within one
process, and closing any descriptor of the file drops all of the process's locks on it; so every
store of one process on one file shares one descriptor and one table of claims, which also catches
two runtimes of the same process. Where ``fcntl`` is missing (Windows), claims hold within the
process only. A network file system is no more supported here than by SQLite itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_OFFSET_BITS = 62
"""Lock offsets are 62-bit hashes of run ids: collisions are out of reach, and off_t holds them."""


class _LockFile:
    """One process's descriptor of a lock file and the run ids it holds there."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.fd: int | None = None
        if path is not None and fcntl is not None:
            try:
                self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:  # a read-only folder, say: other processes cannot see this one's claims
                log.warning("cannot open the run lock file %s (%s): runs are claimed within this process only",
                            path, exc)
        self.held: dict[str, object] = {}  # run id -> the Claims object holding it
        self.users = 0


_lock = threading.Lock()
_files: dict[str, _LockFile] = {}


def _offset(run_id: str) -> int:
    digest = hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - _OFFSET_BITS)


class Claims:
    """The runs one store object has claimed. ``path``: the lock file (None: within this process only,
    keyed by ``key``)."""

    def __init__(self, path: Path | None, key: str | None = None) -> None:
        self._key = str(path.resolve()) if path is not None else (key or f"memory:{id(self)}")
        with _lock:
            file = _files.get(self._key)
            if file is None:
                file = _files[self._key] = _LockFile(path)
            file.users += 1
        self._file = file
        self._closed = False

    def claim(self, run_id: str) -> bool:
        """Take ``run_id`` for this store; False when it is held already, by another process, another
        store of this process or this store itself (each claim is released once, by its taker)."""
        with _lock:
            if self._closed or run_id in self._file.held:
                return False
            if self._file.fd is not None:
                try:
                    fcntl.lockf(self._file.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _offset(run_id), os.SEEK_SET)
                except OSError:
                    return False
            self._file.held[run_id] = self
            return True

    def release(self, run_id: str) -> None:
        with _lock:
            self._release(run_id)

    def _release(self, run_id: str) -> None:
        if self._file.held.get(run_id) is not self:
            return
        del self._file.held[run_id]
        if self._file.fd is not None:
            try:
                fcntl.lockf(self._file.fd, fcntl.LOCK_UN, 1, _offset(run_id), os.SEEK_SET)
            except OSError:  # pragma: no cover - unlocking a lock we hold does not fail
                log.exception("releasing the claim on run %s failed", run_id)

    def held(self) -> list[str]:
        with _lock:
            return [run_id for run_id, holder in self._file.held.items() if holder is self]

    def close(self) -> None:
        """Release every claim of this store; the last store of the file closes its descriptor."""
        with _lock:
            if self._closed:
                return
            self._closed = True
            for run_id in [r for r, holder in self._file.held.items() if holder is self]:
                self._release(run_id)
            self._file.users -= 1
            if self._file.users == 0:
                _files.pop(self._key, None)
                if self._file.fd is not None:
                    os.close(self._file.fd)
                    self._file.fd = None


def lock_path(database: Path) -> Path:
    """The lock file of an SQLite store: ``runs.db`` -> ``runs.db.lock``."""
    return database.with_name(database.name + ".lock")


__all__ = ["Claims", "lock_path"]
