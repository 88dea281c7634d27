"""``agentflow serve``: the HTTP server (runs API with SSE, webhooks, OpenAI-compatible API, /generate).

    agentflow serve --model demo --workflows workflows/              # http://127.0.0.1:8000
    agentflow serve --config server.yaml --port 9000                 # flags win over the file
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

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
    if not config.api_keys and config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without API keys: anyone who can reach it can start runs", config.host)
    logging.getLogger("agentflow").setLevel(args.log_level.upper())
    app = create_app(config)
    sys.stderr.write(f"agentflow serving on http://{config.host}:{config.port} (model: {config.model or 'none'}, "
                     f"store: {config.store}); API docs at /docs\n")
    if config.ui:
        sys.stderr.write(f"web UI at http://{config.host}:{config.port}/ui/\n")
    uvicorn.run(app, host=config.host, port=config.port, log_level=args.log_level, timeout_graceful_shutdown=10,
                loop=choose_loop())  # AGENTFLOW_LOOP, as for `agentflow run` (checked by main)
    return 0


__all__ = ["add_command"]
