"""Asking on the terminal for the value of the interrupt a run waits at (``agentflow run`` / ``resume``)."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from agentflow.live_view import View
from agentflow.runtime import RunRecord


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


async def ask(record: RunRecord, view: View) -> Any:
    """Ask on the terminal for the interrupt's value; UNSET at end of input."""
    info = record.interrupt or {}
    schema = info.get("schema")
    err = sys.stderr
    view.pause()
    try:
        prompt = f": {info['prompt']}" if info.get("prompt") else ""
        err.write(f"\nrun {record.run_id} waits at {info.get('node')!r}{prompt}\n")
        if schema:
            err.write(f"value schema: {json.dumps(schema, ensure_ascii=False)}\n")
        while True:
            err.write("value (JSON; Ctrl-D leaves the run waiting)> ")
            err.flush()
            line = await read_line()
            if line is None:
                err.write("\n")
                return UNSET
            if not line.strip():
                continue
            try:
                return json.loads(line)
            except json.JSONDecodeError as exc:
                if schema is None or schema.get("type") == "string":
                    return line.rstrip("\n")  # free text is fine where any value or a string is wanted
                err.write(f"not valid JSON ({exc.msg} at column {exc.colno}); try again\n")
    finally:
        view.resume()


async def read_line() -> str | None:
    """One line of stdin (None at its end), read on a daemon thread so a pending read never blocks exit."""
    done = anyio.Event()
    box: list[str] = []
    token = anyio.lowlevel.current_token()

    def read() -> None:
        box.append(sys.stdin.readline())
        with contextlib.suppress(Exception):  # the loop is gone: nobody waits any more
            anyio.from_thread.run_sync(done.set, token=token)

    threading.Thread(target=read, name="agentflow-stdin", daemon=True).start()
    await done.wait()
    return box[0] or None


__all__ = ["UNSET", "ask", "read_line"]
