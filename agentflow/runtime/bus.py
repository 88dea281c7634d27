"""Live event fan-out to subscribers of a run (replay from the store is the orchestrator's part)."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from agentflow.runtime.events import EventBase

log = logging.getLogger(__name__)

Listener = Callable[[EventBase], None]
"""Called synchronously with every published event (of every run); must be quick and must not block."""


class EventBus:
    """Per-run sets of unbounded in-memory streams; ``publish`` never blocks. Listeners
    (:meth:`add_listener`) see every event of every run, e.g. to count them for metrics."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[MemoryObjectSendStream[EventBase]]] = defaultdict(set)
        self._listeners: tuple[Listener, ...] = ()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every event published from now on. An exception it raises is
        logged and swallowed: a listener never breaks a run."""
        self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners = tuple(known for known in self._listeners if known != listener)

    def subscribe(self, run_id: str) -> tuple[MemoryObjectSendStream[EventBase], MemoryObjectReceiveStream[EventBase]]:
        send, receive = anyio.create_memory_object_stream[EventBase](math.inf)
        self._subscribers[run_id].add(send)
        return send, receive

    def unsubscribe(self, run_id: str, send: MemoryObjectSendStream[EventBase]) -> None:
        subscribers = self._subscribers.get(run_id)
        if subscribers is not None:
            subscribers.discard(send)
            if not subscribers:
                del self._subscribers[run_id]
        send.close()

    def publish(self, event: EventBase) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %s", listener, type(event).__name__)
        subscribers = self._subscribers.get(event.run_id)
        if not subscribers:
            return
        for send in list(subscribers):
            try:
                send.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers[event.run_id].discard(send)

    def close(self, run_id: str) -> None:
        """End every subscription of a run (after its terminal event, or when the runtime stops)."""
        for send in self._subscribers.pop(run_id, set()):
            send.close()

    def close_all(self) -> None:
        """End every subscription (the runtime stops; followers of runs paused in the store included)."""
        for run_id in list(self._subscribers):
            self.close(run_id)


__all__ = ["EventBus"]
