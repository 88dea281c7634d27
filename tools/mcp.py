"""Tools of MCP (Model Context Protocol) servers, exposed as agentflow :class:`~agentflow.tool.Tool`\\ s.

A server is configured with :class:`MCPServer` — a command to run (stdio transport) or a URL
(Streamable HTTP) — and reached through an :class:`MCPConnection`, which owns one live client
session. Each MCP tool becomes a ``Tool`` named ``PREFIX + mcp_name`` (the prefix defaults to
``"SERVER_"``; names are sanitised to OpenAI's ``^[a-zA-Z0-9_-]{1,64}$``), described by the MCP
description, with the MCP ``inputSchema`` as its parameters (arguments are checked against it with
jsonschema before the call). A tool annotated ``readOnlyHint: true`` gets ``side_effects=False``
(eligible for streamed dispatch and automatic retry) unless the configuration says otherwise.

    async with anyio.create_task_group() as tg:
        manager = MCPManager({"weather": MCPServer("weather", command=["python", "weather.py"])}, tg)
        tools = await manager.tools_for("mcp:weather/get_*")
        ...
        await manager.aclose()

The MCP SDK's transports and sessions are anyio context managers that must be entered and exited in
one task, so a connection is run by an owner task (``await tg.start(connection.run)``) that keeps
the contexts open until :meth:`MCPConnection.aclose` (or cancellation) ends it. Needs ``mcp>=2.3``.

Results: an MCP error result raises :class:`~agentflow.tool.ToolError` with the server's text;
otherwise a call returns the ``structuredContent`` when there is one (unwrapping the SDK's
``{"result": value}`` wrapper of non-object returns), else the text of a single text item, else a
list of dicts describing each item (images and audio by MIME type and size, never their data).
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import hashlib
import logging
import math
import os
import re
import shlex
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import IO, Any, TextIO, cast

import anyio
import anyio.abc
import mcp.types as mcp_types
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from agentflow.tool import Tool, ToolError, ToolRetry, ToolTimeoutError

log = logging.getLogger(__name__)

__all__ = ["MCPConnection", "MCPManager", "MCPServer", "convert_result", "parse_reference"]

REFERENCE_PREFIX = "mcp:"
_SERVER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_MAX_NAME = 64
_STDERR_TAIL = 2000


@dataclass
class MCPServer:
    """How to reach one MCP server, and how its tools are exposed.

    Give either ``command`` (the server runs as a subprocess and speaks stdio; ``env`` is merged over
    a minimal inherited environment, ``cwd`` is its working directory) or ``url`` (a Streamable HTTP
    endpoint, e.g. ``http://127.0.0.1:8000/mcp``; ``headers`` are sent with every request).
    """

    name: str
    """Used in ``mcp:NAME/pattern`` references and in the default prefix."""
    command: list[str] | None = None
    env: dict[str, str] | None = None
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] | None = None
    prefix: str | None = None
    """Prepended to each MCP tool name (sanitised); None: ``f"{name}_"``; ``""``: no prefix."""
    include: list[str] | None = None
    """fnmatch patterns on the MCP tool names; None: all tools."""
    timeout: float = 60.0
    """Seconds a tool call (or a tool listing) may take."""
    connect_timeout: float = 20.0
    """Seconds starting the server, connecting and initialising the session may take."""
    side_effects: bool | None = None
    """None: False for tools annotated ``readOnlyHint: true``, True for the others; a bool: for all tools."""
    requires_approval: bool = False
    """Whether calls of this server's tools pause for approval."""
    max_concurrency: int | None = None
    """Calls of each of this server's tools in flight at once (None: no limit)."""
    retry: ToolRetry | None = None
    """Retry policy of this server's tools; None: agentflow's default (retried only without side effects)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _SERVER_NAME.match(self.name):
            raise ValueError(f"MCP server name {self.name!r} must be 1-64 letters, digits, '_', '.' or '-'")
        if (self.command is None) == (self.url is None):
            raise ValueError(f"MCP server {self.name!r}: give exactly one of command (stdio) or url (Streamable HTTP)")
        if self.command is not None:
            if isinstance(self.command, str) or not self.command or not all(isinstance(a, str) for a in self.command):
                raise ValueError(f"MCP server {self.name!r}: command must be a non-empty list of strings, "
                                 f"got {self.command!r}")
            if self.headers:
                raise ValueError(f"MCP server {self.name!r}: headers apply to url servers only")
        if self.url is not None:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"MCP server {self.name!r}: url must start with http:// or https://, got {self.url!r}")
            if self.env or self.cwd:
                raise ValueError(f"MCP server {self.name!r}: env and cwd apply to command servers only")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError(f"MCP server {self.name!r}: timeout and connect_timeout must be positive")
        if self.include is not None and (isinstance(self.include, str)
                                         or not all(isinstance(p, str) for p in self.include)):
            raise ValueError(f"MCP server {self.name!r}: include must be a list of fnmatch patterns")

    @property
    def transport(self) -> str:
        """``"stdio"`` or ``"http"``."""
        return "stdio" if self.command is not None else "http"

    @property
    def tool_prefix(self) -> str:
        """The prefix of the exposed tool names, sanitised."""
        return _UNSAFE.sub("_", f"{self.name}_" if self.prefix is None else self.prefix)

    def includes(self, mcp_name: str) -> bool:
        """Whether the ``include`` filters let the MCP tool ``mcp_name`` through."""
        return self.include is None or any(fnmatch.fnmatchcase(mcp_name, p) for p in self.include)


def parse_reference(ref: str) -> tuple[str, str] | None:
    """``"mcp:SERVER/PATTERN"`` -> ``(SERVER, PATTERN)``; ``"mcp:SERVER"`` -> ``(SERVER, "*")``; None for a
    name that is not an MCP reference. Raises ValueError for a malformed one (``"mcp:"``, ``"mcp:/x"``)."""
    if not isinstance(ref, str) or not ref.startswith(REFERENCE_PREFIX):
        return None
    server, slash, pattern = ref[len(REFERENCE_PREFIX):].partition("/")
    expected = "expected 'mcp:SERVER' or 'mcp:SERVER/PATTERN', e.g. 'mcp:weather/get_*'"
    if not server:
        raise ValueError(f"malformed MCP tool reference {ref!r}: no server name; {expected}")
    if not _SERVER_NAME.match(server):
        raise ValueError(f"malformed MCP tool reference {ref!r}: bad server name {server!r}; {expected}")
    if slash and not pattern:
        raise ValueError(f"malformed MCP tool reference {ref!r}: empty tool pattern after '/'; {expected}")
    return server, pattern or "*"


def _decoded_size(data: str | bytes) -> int:
    """The size of base64 ``data`` once decoded, without decoding it."""
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
    return len(text.strip().rstrip("=")) * 3 // 4


def _content_item(item: Any) -> dict[str, Any]:
    """A JSON-friendly description of one MCP content block (no binary data)."""
    kind = getattr(item, "type", type(item).__name__)
    if isinstance(item, mcp_types.TextContent):
        return {"type": "text", "text": item.text}
    if isinstance(item, (mcp_types.ImageContent, mcp_types.AudioContent)):
        size = _decoded_size(item.data)
        return {"type": kind, "mime_type": item.mime_type,
                "note": f"{kind} data omitted ({size} bytes)"}
    if isinstance(item, mcp_types.ResourceLink):
        link: dict[str, Any] = {"type": "resource_link", "uri": str(item.uri), "name": item.name}
        for key in ("title", "description", "mime_type"):
            value = getattr(item, key, None)
            if value:
                link[key] = value
        return link
    if isinstance(item, mcp_types.EmbeddedResource):
        resource = item.resource
        described: dict[str, Any] = {"type": "resource", "uri": str(resource.uri)}
        if resource.mime_type:
            described["mime_type"] = resource.mime_type
        if isinstance(resource, mcp_types.TextResourceContents):
            described["text"] = resource.text
        else:
            described["note"] = f"binary resource omitted ({_decoded_size(getattr(resource, 'blob', ''))} bytes)"
        return described
    dump = getattr(item, "model_dump", None)
    return dump(mode="json", exclude_none=True) if callable(dump) else {"type": str(kind)}


def _text_of(content: Iterable[Any]) -> str:
    return "\n".join(item.text for item in content if isinstance(item, mcp_types.TextContent))


def convert_result(result: mcp_types.CallToolResult, output_schema: Mapping[str, Any] | None = None) -> Any:
    """The value of an MCP tool result for agentflow: raises ToolError for an error result; returns the
    structured content if any (a ``{"result": v}`` wrapper the output schema declares is unwrapped to
    ``v``), else a single text item's text, else a list of dicts describing the items."""
    if result.is_error:
        message = _text_of(result.content).strip() or "the MCP tool reported an error without a message"
        raise ToolError(message)
    structured = result.structured_content
    if structured is not None:
        properties = (output_schema or {}).get("properties")
        if (isinstance(structured, dict) and set(structured) == {"result"} and isinstance(properties, dict)
                and set(properties) == {"result"}):
            return structured["result"]
        return structured
    content = list(result.content)
    if not content:
        return ""
    if len(content) == 1 and isinstance(content[0], mcp_types.TextContent):
        return content[0].text
    return [_content_item(item) for item in content]


_SDK_CLOSED_MESSAGES = ("Connection closed", "SSE stream")


def _connection_closed(exc: MCPError) -> bool:
    """Whether ``exc`` is the SDK reporting that the connection (or, over HTTP, a response stream) closed.

    The SDK reports that with code -32000, ``CONNECTION_CLOSED``; but JSON-RPC leaves -32000 to -32099 to
    servers for their own errors, and a live server answering -32000 ("rate limited") must not make the
    connection count as dead, nor lose its message. So the SDK's own messages decide.
    """
    return exc.code == mcp_types.CONNECTION_CLOSED and exc.message.startswith(_SDK_CLOSED_MESSAGES)


def _describe(exc: BaseException) -> str:
    """One line naming what went wrong (the leaves of exception groups included)."""
    inner = getattr(exc, "exceptions", None)  # an exception group (no BaseExceptionGroup on Python 3.10)
    if isinstance(inner, (list, tuple)) and inner:
        return "; ".join(_describe(e) for e in inner)
    if isinstance(exc, MCPError):
        if _connection_closed(exc):
            return "the connection closed (did the server exit?)"
        return exc.message
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class MCPConnection:
    """One live client session with an MCP server, run by an owner task::

        connection = MCPConnection(config)
        await tg.start(connection.run)      # raises ToolError if the server cannot be reached
        tools = await connection.list_tools("get_*")
        ...
        await connection.aclose()
    """

    def __init__(self, server: MCPServer) -> None:
        self.server = server
        self._client: Client | None = None
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._started = False
        self._closed = False
        self._lost = False
        self._close_reason = ""
        self._stderr: IO[str] | None = None
        self._mcp_tools: list[mcp_types.Tool] | None = None
        self._output_schemas: dict[str, dict[str, Any] | None] = {}
        self._tools: dict[str, Tool] = {}
        self._list_lock = anyio.Lock()

    def __repr__(self) -> str:
        state = ("closed" if self._closed else "lost" if self._lost else "open" if self._client is not None
                 else "not started")
        return f"<MCPConnection {self.server.name!r} ({self.server.transport}, {state})>"

    @property
    def connected(self) -> bool:
        """Whether the session is up: started, not closed, and not found dead (the server gone)."""
        return self._client is not None and not self._closed and not self._lost

    @property
    def server_info(self) -> mcp_types.Implementation | None:
        """The server's name and version, when it gave them."""
        return self._client.server_info if self._client is not None else None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, initialise, report started, and keep the session open until :meth:`aclose` or
        cancellation. Failing to connect within ``connect_timeout`` raises ToolError (before started);
        later failures are logged, never raised into the owner's task group."""
        if self._started or self._closed:
            raise RuntimeError(f"{self!r} can be run only once")
        self._started = True
        name = self.server.name
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + self.server.connect_timeout) as scope:
                async with AsyncExitStack() as stack:
                    client = await self._connect(stack)
                    scope.deadline = math.inf
                    self._client = client
                    log.info("MCP server %r connected (%s, protocol %s)", name, self.server.transport,
                             client.protocol_version)
                    task_status.started()
                    await self._stop.wait()
                    log.debug("closing the connection to MCP server %r", name)
            if scope.cancelled_caught and self._client is None:
                raise ToolError(self._failure(f"no connection within {self.server.connect_timeout:g} s"))
        except ToolError:
            raise
        except Exception as exc:
            if self._client is None:
                raise ToolError(self._failure(_describe(exc))) from exc
            log.warning("MCP server %r: the connection ended with an error: %s", name, _describe(exc))
        finally:
            self._closed = True
            self._close_reason = self._close_reason or "the connection is closed"
            self._client = None
            if self._stderr is not None:
                tail = self._stderr_tail()
                if tail:
                    log.debug("MCP server %r stderr (last lines):\n%s", name, tail)
                self._stderr.close()
                self._stderr = None
            self._done.set()

    async def _connect(self, stack: AsyncExitStack) -> Client:
        server = self.server
        if server.command is not None:
            params = StdioServerParameters(command=server.command[0], args=list(server.command[1:]),
                                           env=server.env, cwd=server.cwd)
            self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115
            transport: Any = stdio_client(params, errlog=cast(TextIO, self._stderr))
        else:
            assert server.url is not None
            http_client = None
            if server.headers:
                http_client = await stack.enter_async_context(create_mcp_http_client(headers=dict(server.headers)))
            transport = streamable_http_client(server.url, http_client=http_client)
        client = Client(transport)
        await stack.enter_async_context(client)
        return client

    def _failure(self, cause: str) -> str:
        """The message of a failed start: server, transport, cause, and the tail of a stdio server's stderr."""
        server = self.server
        where = f"command {shlex.join(server.command)!r}" if server.command is not None else f"url {server.url!r}"
        message = f"MCP server {server.name!r} ({where}) failed to start: {cause}"
        tail = self._stderr_tail()
        if tail:
            message += f"\n--- its stderr (last lines) ---\n{tail}"
        self._close_reason = f"it failed to start: {cause}"
        return message

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.flush()
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 4 * _STDERR_TAIL))
            text = self._stderr.read()
        except (OSError, ValueError):
            return ""
        return text[-_STDERR_TAIL:].strip()

    async def aclose(self) -> None:
        """End the session (and a stdio server's process) and wait until the owner task is done."""
        self._close_reason = self._close_reason or "the connection was closed"
        self._stop.set()
        if self._started:
            await self._done.wait()
        self._closed = True

    def _require_client(self) -> Client:
        if self._client is None or self._closed or self._lost:
            state = self._close_reason if self._started else "it is not connected yet"
            raise ToolError(f"MCP server {self.server.name!r} is not available: {state}")
        return self._client

    def _connection_lost(self) -> str:
        """Mark the session dead (its server went away) and say so, with a stdio server's stderr tail."""
        self._lost = True
        self._close_reason = "the connection to the server closed (did the server exit?)"
        tail = self._stderr_tail()
        return self._close_reason + (f"\n--- its stderr (last lines) ---\n{tail}" if tail else "")

    async def list_mcp_tools(self, *, refresh: bool = False) -> list[mcp_types.Tool]:
        """The server's tools as MCP describes them (every page), fetched once and cached."""
        async with self._list_lock:
            if self._mcp_tools is None or refresh:
                client = self._require_client()
                found: list[mcp_types.Tool] = []
                cursor: str | None = None
                try:
                    with anyio.fail_after(self.server.timeout):
                        for _ in range(1000):
                            page = await client.list_tools(cursor=cursor, cache_mode="refresh" if refresh else "use")
                            found.extend(page.tools)
                            cursor = page.next_cursor
                            if not cursor:
                                break
                except TimeoutError:
                    raise ToolTimeoutError(f"MCP server {self.server.name!r}: listing its tools timed out after "
                                           f"{self.server.timeout:g} s") from None
                except MCPError as exc:
                    cause = self._connection_lost() if _connection_closed(exc) else exc.message
                    raise ToolError(f"MCP server {self.server.name!r}: listing its tools failed: {cause}") from exc
                except Exception as exc:
                    raise ToolError(f"MCP server {self.server.name!r}: listing its tools failed: "
                                    f"{_describe(exc)}") from exc
                self._mcp_tools = found
                self._output_schemas = {spec.name: spec.output_schema for spec in found}
            return list(self._mcp_tools)

    async def list_tools(self, pattern: str = "*", *, refresh: bool = False) -> list[Tool]:
        """The server's tools whose MCP names match ``pattern`` (fnmatch) and the ``include`` filters, as
        agentflow Tools (the same objects on every call)."""
        mcp_tools = await self.list_mcp_tools(refresh=refresh)
        taken = {t.name: mcp_name for mcp_name, t in self._tools.items()}
        selected: list[Tool] = []
        for spec in mcp_tools:
            if not self.server.includes(spec.name) or not fnmatch.fnmatchcase(spec.name, pattern):
                continue
            made = self._tools.get(spec.name)
            if made is None or refresh:
                made = self._make_tool(spec, taken)
                self._tools[spec.name] = made
                taken[made.name] = spec.name
            selected.append(made)
        return selected

    def _make_tool(self, spec: mcp_types.Tool, taken: Mapping[str, str]) -> Tool:
        server = self.server
        name = _exposed_name(server.tool_prefix, spec.name, taken)
        parameters = copy.deepcopy(dict(spec.input_schema or {}))
        parameters.setdefault("type", "object")
        parameters.setdefault("properties", {})
        annotations = spec.annotations
        read_only = bool(annotations is not None and annotations.read_only_hint)
        side_effects = (not read_only) if server.side_effects is None else server.side_effects
        output_schema = spec.output_schema
        mcp_name = spec.name

        async def call_mcp_tool(**arguments: Any) -> Any:
            return await self.call_tool(mcp_name, arguments, output_schema=output_schema)

        call_mcp_tool.__name__ = name
        call_mcp_tool.__qualname__ = f"MCPConnection[{server.name}].{mcp_name}"
        description = spec.description or spec.title or (annotations.title if annotations else None) or ""
        return Tool(name=name, fn=call_mcp_tool, description=description, parameters=parameters,
                    side_effects=side_effects, requires_approval=server.requires_approval,
                    max_concurrency=server.max_concurrency, retry=server.retry)

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | None = None, *,
                        output_schema: Mapping[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Call the MCP tool ``name`` and convert its result (see :func:`convert_result`; ``output_schema``
        defaults to the listed tool's). Failures, including the server's error results, raise ToolError;
        running past ``timeout`` (default: the server's) raises ToolTimeoutError."""
        client = self._require_client()
        if output_schema is None:
            if self._mcp_tools is None:  # a call before any listing: learn the output schemas first
                with contextlib.suppress(ToolError):
                    await self.list_mcp_tools()
            output_schema = self._output_schemas.get(name)
        limit = self.server.timeout if timeout is None else timeout
        where = f"MCP tool {name!r} of server {self.server.name!r}"
        try:
            with anyio.fail_after(limit):
                result = await client.call_tool(name, dict(arguments or {}))
        except TimeoutError:
            raise ToolTimeoutError(f"{where} timed out after {limit:g} s") from None
        except MCPError as exc:
            if exc.code == mcp_types.REQUEST_TIMEOUT:
                raise ToolTimeoutError(f"{where} timed out after {limit:g} s") from None
            if _connection_closed(exc):
                raise ToolError(f"{where} failed: {self._connection_lost()}") from exc
            raise ToolError(f"{where} failed: {exc.message}") from exc
        except Exception as exc:
            raise ToolError(f"{where} failed: {_describe(exc)}") from exc
        return convert_result(result, output_schema)


def _exposed_name(prefix: str, mcp_name: str, taken: Mapping[str, str]) -> str:
    """``prefix + mcp_name`` made a valid, unused OpenAI function name (sanitised; long ones shortened
    with a hash so that distinct MCP names stay distinct)."""
    name = prefix + _UNSAFE.sub("_", mcp_name)
    if len(name) > _MAX_NAME or (name in taken and taken[name] != mcp_name):
        digest = hashlib.sha1(mcp_name.encode()).hexdigest()[:8]
        name = f"{name[:_MAX_NAME - 9]}_{digest}"
    return name or f"mcp_{hashlib.sha1(mcp_name.encode()).hexdigest()[:8]}"


class MCPManager:
    """Connects configured MCP servers lazily, on first use, and closes them all at the end.

    Either give a task group that outlives the manager's use (connections are run in it), or use the
    manager as an async context manager, which runs its own::

        async with MCPManager([MCPServer("weather", command=[...])]) as manager:
            tools = await manager.tools("weather", "get_*")

    Concurrent first uses of a server share one connection. A server that fails to start raises
    ToolError (each use retries the start). One that dies later makes the calls of the tools already
    handed out fail with ToolError; once a call has found it dead, the next :meth:`tools` reconnects and
    returns fresh tools.
    """

    def __init__(self, servers: Mapping[str, MCPServer] | Iterable[MCPServer],
                 task_group: anyio.abc.TaskGroup | None = None) -> None:
        configs = list(servers.values()) if isinstance(servers, Mapping) else list(servers)
        if isinstance(servers, Mapping):
            for key, config in servers.items():
                if key != config.name:
                    raise ValueError(f"MCP server configured under {key!r} is named {config.name!r}")
        self.servers: dict[str, MCPServer] = {}
        for config in configs:
            if not isinstance(config, MCPServer):
                raise TypeError(f"expected MCPServer configurations, got {config!r}")
            if config.name in self.servers:
                raise ValueError(f"MCP server {config.name!r} is configured twice")
            self.servers[config.name] = config
        self._task_group = task_group
        self._lifetime_cm: AbstractAsyncContextManager[MCPManager] | None = None
        self._connections: dict[str, MCPConnection] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._closed = False

    async def __aenter__(self) -> MCPManager:
        if self._task_group is not None:
            raise RuntimeError("this MCPManager already has a task group; do not also use it with 'async with'")
        self._lifetime_cm = self._lifetime()
        return await self._lifetime_cm.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        cm, self._lifetime_cm = self._lifetime_cm, None
        if cm is None:
            return None
        return await cm.__aexit__(*exc_info)

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[MCPManager]:
        async with anyio.create_task_group() as group:
            self._task_group = group
            try:
                yield self
            finally:
                await self.aclose()
                self._task_group = None

    @property
    def connected(self) -> list[str]:
        """The names of the servers with a live connection."""
        return [name for name, conn in self._connections.items() if conn.connected]

    async def connection(self, server_name: str) -> MCPConnection:
        """The live connection to ``server_name``, connecting on first use (ToolError if unknown or failing)."""
        if server_name not in self.servers:
            known = ", ".join(sorted(self.servers)) or "none"
            raise ToolError(f"unknown MCP server {server_name!r}; configured: {known}")
        if self._closed:
            raise ToolError(f"MCP server {server_name!r}: the MCP manager is closed")
        if self._task_group is None:
            raise RuntimeError("MCPManager needs a task group: pass one, or use 'async with MCPManager(...)'")
        lock = self._locks.setdefault(server_name, anyio.Lock())
        async with lock:
            conn = self._connections.pop(server_name, None)
            if conn is not None:
                if conn.connected:
                    self._connections[server_name] = conn
                    return conn
                log.warning("MCP server %r: the connection was lost; reconnecting", server_name)
                await conn.aclose()
            conn = MCPConnection(self.servers[server_name])
            await self._task_group.start(conn.run)
            if self._closed:  # closed while connecting
                await conn.aclose()
                raise ToolError(f"MCP server {server_name!r}: the MCP manager is closed")
            self._connections[server_name] = conn
            return conn

    async def tools(self, server_name: str, pattern: str = "*") -> list[Tool]:
        """The tools of ``server_name`` whose MCP names match ``pattern``."""
        conn = await self.connection(server_name)
        return await conn.list_tools(pattern)

    async def tools_for(self, ref: str) -> list[Tool]:
        """The tools an ``mcp:SERVER[/PATTERN]`` reference stands for (ToolError if malformed)."""
        try:
            parsed = parse_reference(ref)
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        if parsed is None:
            raise ToolError(f"{ref!r} is not an MCP tool reference (expected 'mcp:SERVER[/PATTERN]')")
        return await self.tools(*parsed)

    def knows(self, ref: str) -> bool:
        """Whether ``ref`` is a well-formed ``mcp:SERVER[/PATTERN]`` reference to a configured server."""
        try:
            parsed = parse_reference(ref)
        except ValueError:
            return False
        return parsed is not None and parsed[0] in self.servers

    def attach(self, task_group: anyio.abc.TaskGroup) -> None:
        """Run connections in ``task_group`` from now on (the owner's: e.g. a ``Runtime`` entering its
        ``async with``); a manager closed before may be attached again."""
        self._task_group = task_group
        self._closed = False

    async def aclose(self) -> None:
        """Close every connection (stdio servers' processes end) and wait for them to finish."""
        self._closed = True
        connections = list(self._connections.values())
        self._connections.clear()
        for conn in connections:
            await conn.aclose()

