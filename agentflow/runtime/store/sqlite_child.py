"""The SQLite store's writer process: the child side of ``sqlite_process``. Run as a script
(``python -S sqlite_child.py PATH SYNCHRONOUS RETENTION_DAYS FINISHED SPIN_US``), it loads only the
standard library and its sibling ``sqlite_ops``, owns the write connection, and commits what its parent
sends.

Wire format, both ways: frames of a 4-byte little-endian length and a ``marshal``-ed list.

- Parent -> child: ``[(op_id, kind, args), ...]``. Kind ``"stop"``: commit what came before, answer, exit.
- Child -> parent, after every batch: ``[(op_id, result, failure), ...]`` for each op of the batch
  (``failure``: ``None`` or ``(code, message)``, see ``sqlite_ops``); op id 0 carries a log record:
  ``(0, (levelno, message), None)``.

End of input without a stop means the parent died: whatever was read but not yet committed is dropped,
as the writer thread's queue would have died with its process; the next process to open the file
resumes from what was committed. The child never blocks on its output (it buffers it and keeps reading
its input), so a parent that is slow to read can't make the two processes wait on each other.
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentflow.runtime.store import sqlite_ops
else:  # run as a script: the package is not imported (it would load pydantic), only this sibling
    import sqlite_ops

HEADER = 4


class Child:
    def __init__(self, path: str, synchronous: str, retention_days: float | None, finished: list[str],
                 spin_s: float) -> None:
        self.retention_days, self.finished, self.spin_s = retention_days, finished, spin_s
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.ops: list[tuple[int, str, tuple[Any, ...]]] = []
        self.stopping = False
        self.eof = False
        self.conn = None
        try:
            self.conn = sqlite_ops.connect(path, synchronous=synchronous)
        except Exception as exc:  # every op will get this error rather than hang
            self.log(logging.ERROR, f"run store: cannot open {path} for writing: {exc}")
        self.next_purge = time.monotonic() if retention_days is not None else None

    def log(self, level: int, message: str) -> None:
        self.emit([(0, (level, message), None)])

    def emit(self, entries: list[Any]) -> None:
        payload = marshal.dumps(entries)
        self.outbuf += len(payload).to_bytes(HEADER, "little") + payload

    def serve(self) -> None:
        while True:
            self.purge_if_due()
            if not self.ops and not self.stopping and not self.wait_for_input():
                return  # the parent died
            self.parse()
            if self.ops:
                batch, self.ops = self.ops[:sqlite_ops.MAX_BATCH_OPS], self.ops[sqlite_ops.MAX_BATCH_OPS:]
                outcomes = sqlite_ops.commit_batch(self.conn, [(kind, args) for _, kind, args in batch])
                answers = zip(batch, outcomes, strict=True)
                self.emit([(op_id, result, failure) for (op_id, _, _), (result, failure) in answers])
                if any(failure is not None and failure[0] == "batch" for _, failure in outcomes):
                    self.log(logging.ERROR, f"run store: commit of {len(batch)} ops failed: {outcomes[0][1]}")
            self.drain_output(block=self.stopping and not self.ops)
            if self.stopping and not self.ops:
                return

    def wait_for_input(self) -> bool:
        """Read until at least one whole frame is in (or a purge is due); False at the end of input."""
        deadline = time.monotonic() + self.spin_s
        while True:
            self.read_available()
            if self.whole_frame():
                return True
            if self.eof:
                return False
            if self.spin_s and time.monotonic() < deadline:
                continue  # a short poll before sleeping: the next op often follows within a few 100 µs
            timeout = None if self.next_purge is None else max(0.0, self.next_purge - time.monotonic())
            readable, writable, _ = select.select([0], [1] if self.outbuf else [], [], timeout)
            if writable:
                self.drain_output(block=False)
            if not readable and not writable:
                return True  # a purge is due

    def read_available(self) -> None:
        """Move what stdin holds now into the buffer; notes the end of input."""
        while not self.eof:
            try:
                chunk = os.read(0, 1 << 20)
            except BlockingIOError:
                return
            if not chunk:
                self.eof = True
                return
            self.inbuf += chunk

    def whole_frame(self) -> bool:
        if len(self.inbuf) < HEADER:
            return False
        return len(self.inbuf) >= HEADER + int.from_bytes(self.inbuf[:HEADER], "little")

    def take_frames(self) -> None:
        while not self.stopping and self.whole_frame():
            size = int.from_bytes(self.inbuf[:HEADER], "little")
            entries = marshal.loads(bytes(self.inbuf[HEADER:HEADER + size]))
            del self.inbuf[:HEADER + size]
            for op_id, kind, args in entries:
                if kind == "stop":
                    self.stopping = True
                    self.ops.append((op_id, "barrier", ()))
                    break
                self.ops.append((op_id, kind, args))

    def parse(self) -> None:
        """Queue the ops of every whole frame. Before a batch is committed, one more look at the input:
        if it ended without a stop, the parent died, and what it sent is dropped uncommitted."""
        self.take_frames()
        if not self.stopping and len(self.ops) < sqlite_ops.MAX_BATCH_OPS:
            self.read_available()
            self.take_frames()
            if self.eof and not self.stopping:
                raise SystemExit(0)

    def purge_if_due(self) -> None:
        if self.next_purge is None or time.monotonic() < self.next_purge:
            return
        self.next_purge = time.monotonic() + sqlite_ops.PURGE_INTERVAL_S
        outcome = sqlite_ops.commit_batch(self.conn, [("purge", (self.retention_days or 0.0, self.finished))])[0]
        if outcome[1] is not None:
            self.log(logging.ERROR, f"run store housekeeping failed: {outcome[1][1]}")
        elif outcome[0]:
            self.log(logging.INFO, f"run store: retention purged {outcome[0]} event/node rows of finished runs")

    def drain_output(self, *, block: bool) -> None:
        while self.outbuf:
            try:
                written = os.write(1, self.outbuf)
            except BlockingIOError:
                if not block:
                    return
                select.select([], [1], [])
                continue
            except BrokenPipeError:  # the parent is gone: nobody to answer
                self.outbuf.clear()
                return
            del self.outbuf[:written]


def main(argv: list[str]) -> None:
    path, synchronous, retention, finished, spin_us = argv
    os.set_blocking(0, False)
    os.set_blocking(1, False)
    child = Child(path, synchronous, float(retention) if retention else None, finished.split(","),
                  float(spin_us) / 1e6)
    try:
        child.serve()
    finally:
        if child.conn is not None:
            child.conn.close()


if __name__ == "__main__":
    main(sys.argv[1:])
