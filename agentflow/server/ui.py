"""The web UI's static files: ``GET /`` redirects to ``/ui/``, ``/ui/`` is ``index.html``, ``/ui/{path}``
any other file of the UI folder (``web/`` of the source tree, else the copy a wheel install put under
``share/agentflow/web``, or ``ServerConfig.ui_dir``).

The files need no API key (they hold no data; every API call the page makes carries the key), are
sent with ``Cache-Control: no-cache`` and an ``ETag`` (so a reload revalidates and an edited file is
seen at once), and a path that leaves the folder (``..``, encoded or not, absolute, a symlink out) or
names a hidden file is a 404, like a file that does not exist. These routes are not API operations:
they are left out of ``/openapi.json``.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import sysconfig
from pathlib import Path

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from agentflow.server.config import ServerConfig
from agentflow.server.errors import ApiError

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parents[2] / "web"
"""``web/`` beside the ``agentflow`` package in the source tree (editable installs, checkouts)."""


def installed_dirs() -> list[Path]:
    """Where a wheel install puts the UI (``share/agentflow/web`` under the install scheme's data
    directory: the environment's prefix, or the user's for ``pip install --user``)."""
    found = []
    for scheme in dict.fromkeys([sysconfig.get_default_scheme(), f"{os.name}_user"]):
        try:
            found.append(Path(sysconfig.get_path("data", scheme)) / "share" / "agentflow" / "web")
        except KeyError:  # pragma: no cover - a platform without that scheme
            continue
    return found


def default_dir(source: Path = SOURCE_DIR, installed: list[Path] | None = None) -> Path:
    """The source tree's ``web/`` when it is there, else the first installed copy, else ``source``
    (whose absence the server then reports)."""
    for folder in [source, *(installed_dirs() if installed is None else installed)]:
        if (folder / "index.html").is_file():
            return folder
    return source

PREFIX = "/ui/"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon",
                 ".txt": "text/plain; charset=utf-8", ".map": "application/json"}
"""Explicit, since ``mimetypes`` reads the system's tables (some map ``.js`` to ``text/plain``, which
browsers refuse for ES modules)."""

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
"""The page's policy: its own scripts only, no inline handlers, so markup that slipped into the page
could not run even if it were ever parsed."""


def routes(config: ServerConfig) -> list[BaseRoute]:
    """The UI's routes (none when ``config.ui`` is false). A missing folder is logged once, here, and
    answered with a 404 that says so."""
    if not config.ui:
        return []
    folder = (config.ui_dir or default_dir()).resolve()
    if not (folder / "index.html").is_file():
        log.warning("the web UI is not served: %s has no index.html (set ui_dir, or ui: false)", folder)
    files = _Files(folder)
    return [Route("/", _to_ui, methods=["GET"], name="ui_root"),
            Route("/ui", _to_ui, methods=["GET"], name="ui_redirect"),
            Route(PREFIX, files.index, methods=["GET"], name="ui_index"),
            Route(PREFIX + "{path:path}", files.file, methods=["GET"], name="ui_file")]


async def _to_ui(request: Request) -> Response:
    return RedirectResponse(PREFIX, status_code=302)


class _Files:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def index(self, request: Request) -> Response:
        return await self._send(request, "index.html")

    async def file(self, request: Request) -> Response:
        return await self._send(request, request.path_params["path"])

    async def _send(self, request: Request, relative: str) -> Response:
        path = self._resolve(relative)
        try:
            data, stat = await anyio.to_thread.run_sync(_read, path)
        except OSError:
            raise self._missing(relative) from None
        etag = '"' + hashlib.sha256(f"{stat.st_mtime_ns}:{stat.st_size}:{path}".encode()).hexdigest()[:20] + '"'
        headers = {"Cache-Control": "no-cache", "ETag": etag, "X-Content-Type-Options": "nosniff"}
        if path.suffix == ".html":
            headers["Content-Security-Policy"] = CSP
            headers["Referrer-Policy"] = "no-referrer"
        if etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=_content_type(path), headers=headers)

    def _resolve(self, relative: str) -> Path:
        """The file ``relative`` names inside the folder; 404 for anything that is not a plain name path."""
        parts = relative.split("/")
        if "\\" in relative or "\x00" in relative or any(not part or part.startswith(".") for part in parts):
            raise self._missing(relative)  # empty (`a//b`, absolute), `.`, `..` and hidden names
        path = (self.folder / Path(*parts)).resolve()
        if not path.is_relative_to(self.folder):  # a symlink pointing out of the folder
            raise self._missing(relative)
        return path

    def _missing(self, relative: str) -> ApiError:
        if not (self.folder / "index.html").is_file():  # the log at start names the folder; clients are not told
            return ApiError(404, "the web UI is not installed on this server (its folder is missing; see the "
                            "server's log)", code="ui_not_found")
        return ApiError(404, f"no file {relative[:200]!r} in the web UI", code="not_found")


def _read(path: Path) -> tuple[bytes, os.stat_result]:
    if not path.is_file():
        raise FileNotFoundError(path)
    return path.read_bytes(), path.stat()


def _content_type(path: Path) -> str:
    known = CONTENT_TYPES.get(path.suffix.lower())
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


__all__ = ["SOURCE_DIR", "default_dir", "installed_dirs", "routes"]
