"""The Python SDK: a client for an agentflow server (``agentflow serve``), sync and async.

    from agentflow.client import Client

    with Client("http://127.0.0.1:8000") as af:            # api_key=... or $AGENTFLOW_API_KEY
        af.workflows.register(Path("workflows/support_triage.yaml"))
        run = af.runs.create("support_triage", {"ticket": "...", "customer_id": "C-1001"})
        for event in af.runs.events(run.run_id):           # typed events, live, until the run ends
            if event.event == "llm.delta":
                print(event.text, end="")
        run = af.runs.get(run.run_id)                      # status, output or error

:class:`AsyncClient` has the same methods, awaited (``async for`` over events and run lists).

What the client does for you:

- **Safe retries.** ``runs.create`` always sends an ``Idempotency-Key`` (a fresh one unless you give
  yours), so a request retried after a dropped connection starts the run once. Reads are retried on
  network errors; every request is retried on 429/503 after the server's ``Retry-After``.
- **Streams that survive reconnects.** ``runs.events`` reconnects with ``Last-Event-ID`` when the
  connection drops, so no event is missed or repeated, and ends after the run's terminal event.
- **Errors with their cause.** A non-2xx answer raises :class:`APIError` (a subclass per status)
  with the server's ``message``, stable ``code`` and ``param``; validation problems in ``details``.

It imports httpx, the API's response models (:mod:`agentflow.api`) and the event models; never the
server, the engine or torch.
"""

from agentflow.client.aio import AsyncClient, AsyncRuns, AsyncWorkflows
from agentflow.client.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    OverloadedError,
    RateLimitError,
    ServerError,
    StreamError,
)
from agentflow.client.requests import DEFAULT_URL
from agentflow.client.sync import Client, Runs, Workflows

__all__ = [
    "DEFAULT_URL", "APIConnectionError", "APIError", "AsyncClient", "AsyncRuns", "AsyncWorkflows",
    "AuthenticationError", "BadRequestError", "Client", "ConflictError", "NotFoundError", "OverloadedError",
    "RateLimitError", "Runs", "ServerError", "StreamError", "Workflows",
]
