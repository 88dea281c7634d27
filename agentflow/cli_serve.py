"""``agentflow serve``: the HTTP server (runs API with SSE, webhooks, OpenAI-compatible API, /generate).

    agentflow serve --model demo --workflows workflows/              # http://127.0.0.1:8000
    agentflow serve --config server.yaml --port 9000                 # flags win over the file
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentflow.runtime.errors import StoreError

log = logging.getLogger(__name__)


def add_command(sub: Any) -> None:
    serve = sub.add_parser("serve", help="serve workflows and the local model over HTTP",
                           description=__doc__.splitlines()[0] if __doc__ else None)
    serve.add_argument("--config", type=Path, help="a YAML server config (see docs/server.md); flags win over it")
    serve.add_argument("--model", help="local model: 'demo', a checkpoint directory, or 'none' (default: demo)")
    serve.add_argument("--workflows", type=Path, action="append",
                       help="a workflow file or folder of *.yaml (repeatable; a tools.py beside them is loaded)")
    serve.add_argument("--tools", action="append", help="a Python tools module (file or module name; repeatable)")
    serve.add_argument("--store", help="run store: an SQLite file (default agentflow-runs.db) or :memory:")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from agentflow.runtime.loop import choose_loop
    from agentflow.server import ServerConfig, create_app

    given = {"host": args.host, "port": args.port, "store": args.store, "workflows": args.workflows,
             "tools": args.tools, "model": args.model}
    flags: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if str(flags.get("model", "")).lower() == "none":
        flags["model"] = None
    try:
        config = ServerConfig.from_file(args.config, **flags) if args.config is not None \
            else ServerConfig.model_validate(flags)
    except (OSError, ValueError, ValidationError) as exc:
        sys.stderr.write(f"error: bad server configuration: {exc}\n")
        return 2
    problem = _preflight(config)
    if problem is not None:
        sys.stderr.write(f"error: {problem}\n")
        return 2
    if not config.api_keys and config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without API keys: anyone who can reach it can start runs", config.host)
    logging.getLogger("agentflow").setLevel(args.log_level.upper())
    try:  # the port first: a second server on a taken port stops here, before it touches the store's runs
        sock = _listen(config.host, config.port)
    except OSError as exc:
        sys.stderr.write(f"error: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}\n")
        return 2
    app = create_app(config)
    port = sock.getsockname()[1]
    sys.stderr.write(f"agentflow serving on http://{config.host}:{port} (model: {config.model or 'none'}, "
                     f"store: {config.store}); API docs at /docs\n")
    if config.ui:
        sys.stderr.write(f"web UI at http://{config.host}:{port}/ui/\n")
    server = _Server(app, uvicorn.Config(app, host=config.host, port=port, log_level=args.log_level,
                                         timeout_graceful_shutdown=10, loop=choose_loop()))
    server.run(sockets=[sock])  # AGENTFLOW_LOOP, as for `agentflow run` (checked by main)
    return 0 if server.started else 3


def _Server(app: Any, config: Any) -> Any:  # a class made here: uvicorn is imported only to serve
    import uvicorn

    class Server(uvicorn.Server):
        """Ends the open event streams when the shutdown begins (``ServerState.draining``); uvicorn would
        wait for them until ``timeout_graceful_shutdown``, then cancel them with a traceback."""

        async def shutdown(self, sockets: Any = None) -> None:
            state = getattr(app.state, "agentflow", None)
            if state is not None:
                state.draining.set()
            await super().shutdown(sockets=sockets)

    return Server(config)


def _preflight(config: Any) -> str | None:
    """What would fail the server's start-up, said in one line before it starts: a store it cannot open,
    an API key whose variable is unset, a model or workflow folder that is not there."""
    from agentflow.cli_run import UsageError, check_model_path
    from agentflow.runtime.store import check_store

    try:
        for key in config.api_keys:
            key.digest()
    except ValueError as exc:
        return f"bad server configuration: {exc}"
    if config.model is not None:
        try:
            check_model_path(config.model)
        except UsageError as exc:
            return str(exc)
    for path in config.workflows:
        if not Path(path).exists():
            return f"--workflows {path}: no such file or folder"
    try:
        check_store(config.store)
    except (OSError, StoreError) as exc:
        return f"--store {config.store}: {exc}"
    return None


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when ``host`` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


__all__ = ["add_command"]
