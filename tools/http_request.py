"""Built-in HTTP tools, ``http_get`` and ``http_request``, hardened against server-side request forgery.

A model chooses the URLs these tools fetch, so every URL — and every redirect ``Location`` — is first vetted
by a :class:`~tools.url_policy.UrlPolicy` (scheme, URL shape, numeric-host normalisation, "every resolved
address must be globally routable", the allowlist: see :mod:`tools.url_policy`). This module does the fetching:

* **Pinning**: the request goes to the vetted IP itself, never back through DNS. The original name travels
  in the ``Host`` header and, for https, as the TLS SNI / certificate hostname.
* **Redirects** are followed by hand, at most ``max_redirects`` hops, each hop vetted by the same rules.
* **Caps**: one total timeout (DNS, connects, all hops, body); the body is streamed and cut at
  ``max_bytes`` (``truncated: true``); the response content type must be textual, else the body is not read.
* **Decoding**: only the ``gzip`` and ``deflate`` content codings are accepted, and they are inflated with
  bounded output, so a small compressed body (a "zip bomb") cannot grow past ``max_bytes`` in memory; a body
  in another coding (``br``, ``zstd`` …) is refused. The ``charset`` must name a text encoding, else the
  body is read as UTF-8 (a codec such as ``zlib`` or ``rot13`` is never run on it).

Use :func:`make_http_tools` for a configured pair of tools, the module-level :data:`http_get` /
:data:`http_request` for the defaults, or :func:`fetch` with a :class:`UrlPolicy` without the tool wrapper.
The vetting names (:class:`UrlPolicy`, :class:`BlockedURLError`, :func:`parse_url` …) are re-exported here.
"""

from __future__ import annotations

import codecs
import functools
import json
import logging
import ssl
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypedDict
from urllib.parse import urljoin

import anyio
import httpx

from agentflow.tool import Tool, ToolError, tool
from tools.url_policy import (
    DEFAULT_PORTS,
    BlockedURLError,
    HttpRefusedError,
    IPAddress,
    IPNetwork,
    ParsedURL,
    Resolver,
    SystemResolver,
    UrlPolicy,
    Vetted,
    non_global_reason,
    parse_ipv4_host,
    parse_url,
)

logger = logging.getLogger(__name__)

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]

METHODS: frozenset[str] = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

#: Allowed response media types: an entry ending in ``/`` is a prefix, one starting with ``+`` a structured
#: syntax suffix (``application/problem+json``), anything else an exact match. Parameters are ignored.
DEFAULT_CONTENT_TYPES: tuple[str, ...] = (
    "text/",
    "application/json",
    "application/xml",
    "application/xhtml+xml",
    "application/javascript",
    "application/ecmascript",
    "application/ld+json",
    "application/rss+xml",
    "application/atom+xml",
    "application/x-ndjson",
    "application/yaml",
    "application/x-yaml",
    "application/toml",
    "+json",
    "+xml",
)

#: Response headers passed on to the model (the rest are noise or, like ``Set-Cookie``, not its business).
RESULT_HEADERS = ("content-type", "content-length", "content-language", "last-modified", "etag", "location",
                  "retry-after", "cache-control")

#: Request headers the tool sets itself; a caller may not override them.
_RESERVED_REQUEST_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
#: Request headers dropped when a redirect leaves the origin (as browsers and httpx do).
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})

USER_AGENT = "agentflow-http-tool/0.1"

#: The content codings the tool asks for and can inflate with bounded output (see :class:`_Inflater`).
ACCEPT_ENCODING = "gzip, deflate"
_ZLIB_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


# ------------------------------------------------------------------------------------------------- fetch


class RedirectHop(TypedDict):
    status: int
    url: str  # the URL that answered with the redirect
    location: str  # the absolute URL it pointed to


class HttpResult(TypedDict):
    status: int
    url: str
    headers: dict[str, str]
    content_type: str | None
    text: str
    truncated: bool
    redirects: list[RedirectHop]


def content_type_allowed(content_type: str, allowed: Iterable[str]) -> bool:
    """Whether a ``Content-Type`` header value matches ``allowed`` (see :data:`DEFAULT_CONTENT_TYPES`)."""
    mime = content_type.split(";", 1)[0].strip().lower()
    for entry in allowed:
        entry = entry.lower()
        if (entry.endswith("/") and mime.startswith(entry)) or (entry.startswith("+") and mime.endswith(entry)):
            return True
        if mime == entry:
            return True
    return False


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context (building one loads the CA bundle, which is slow)."""
    return httpx.create_ssl_context()


def _prepare_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if key.strip().lower() in _RESERVED_REQUEST_HEADERS:
            raise ToolError(f"the {key!r} header is set by the HTTP tool and cannot be given")
        out[key] = value
    return out


async def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    body: str | bytes | None = None,
    policy: UrlPolicy | None = None,
    max_redirects: int = 3,
    timeout: float = 15.0,
    max_bytes: int = 1_000_000,
    content_types: Iterable[str] = DEFAULT_CONTENT_TYPES,
) -> HttpResult:
    """Fetch ``url`` under ``policy`` (see the module docstrings here and of :mod:`tools.url_policy` for the
    rules) and return an :class:`HttpResult`.

    Non-2xx statuses are returned, not raised. Raises :class:`BlockedURLError` for a refused URL or redirect
    hop, :class:`HttpRefusedError` for too many redirects or a non-textual response, and :class:`ToolError`
    for a timeout or a network failure. ``timeout`` covers everything: resolution, every hop and the body.
    """
    method = method.upper()
    if method not in METHODS:
        raise ToolError(f"HTTP method {method!r} is not supported (use one of {', '.join(sorted(METHODS))})")
    if json_body is not None and body is not None:
        raise ToolError("give either a JSON body or a text body, not both")
    policy = policy or UrlPolicy()
    request_headers = _prepare_headers(headers)
    content: bytes | None = None
    if json_body is not None:
        try:
            content = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise ToolError(f"JSON body is not serialisable: {exc}") from None
        if not any(k.lower() == "content-type" for k in request_headers):
            request_headers["Content-Type"] = "application/json"
    elif body is not None:
        content = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        if not any(k.lower() == "content-type" for k in request_headers):
            request_headers["Content-Type"] = "text/plain; charset=utf-8"
    allowed_types = tuple(content_types)
    try:
        with anyio.fail_after(timeout):
            return await _fetch(url, method, request_headers, content, policy, max_redirects, timeout, max_bytes,
                                allowed_types)
    except (TimeoutError, httpx.TimeoutException):
        logger.info("http tool: %s %s timed out after %ss", method, url, timeout)
        raise ToolError(f"{method} {url} timed out after {timeout:g}s") from None
    except httpx.HTTPError as exc:
        logger.info("http tool: %s %s failed: %r", method, url, exc)
        raise ToolError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from None
    except httpx.InvalidURL as exc:
        raise ToolError(f"{method} {url} failed: invalid URL: {exc}") from None


async def _fetch(url: str, method: str, headers: dict[str, str], content: bytes | None, policy: UrlPolicy,
                 max_redirects: int, timeout: float, max_bytes: int, content_types: tuple[str, ...]) -> HttpResult:
    try:
        vetted = await policy.vet(url)
    except BlockedURLError as exc:
        logger.info("http tool: refused %s: %s", url, exc.reason)
        raise
    redirects: list[RedirectHop] = []
    while True:
        logger.debug("http tool: %s %s via %s", method, vetted.url, vetted.ip)
        extensions = {"sni_hostname": vetted.host} if vetted.scheme == "https" and vetted.is_name else {}
        # A fresh client per hop: no connection (or TLS session with another SNI) and no cookie is shared
        # between hops. trust_env=False: no proxies from the environment, no .netrc credentials.
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=httpx.Timeout(timeout),
                                     verify=_ssl_context(),
                                     headers={"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING}) as client:
            request = client.build_request(method, vetted.connect_url, headers={**headers, "Host": vetted.host_header},
                                           content=content, extensions=extensions)
            response = await client.send(request, stream=True)
            try:
                location = response.headers.get("location")
                if response.status_code in REDIRECT_STATUSES and location:
                    next_url = urljoin(vetted.url, location.strip())
                    hop = len(redirects) + 1
                    if hop > max_redirects:
                        raise HttpRefusedError(f"too many redirects: {vetted.url!r} redirects to {next_url!r} "
                                               f"after {max_redirects} hop(s) (the limit)")
                    redirects.append({"status": response.status_code, "url": vetted.url, "location": next_url})
                    try:
                        next_vetted = await policy.vet(next_url)
                    except BlockedURLError as exc:
                        logger.info("http tool: refused redirect hop %d to %s: %s", hop, next_url, exc.reason)
                        raise BlockedURLError(next_url, f"{exc.reason} (redirected from {vetted.url!r})",
                                              hop=hop) from None
                    if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                        method = method if method == "HEAD" else "GET"
                        content = None
                        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
                    if next_vetted.origin != vetted.origin:
                        headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
                    vetted = next_vetted
                    continue
                return await _read(response, vetted, method, redirects, max_bytes, content_types)
            finally:
                await response.aclose()


async def _read(response: httpx.Response, vetted: Vetted, method: str, redirects: list[RedirectHop],
                max_bytes: int, content_types: tuple[str, ...]) -> HttpResult:
    content_type = response.headers.get("content-type")
    result: HttpResult = {
        "status": response.status_code,
        "url": vetted.url,
        "headers": {k: response.headers[k] for k in RESULT_HEADERS if k in response.headers},
        "content_type": content_type,
        "text": "",
        "truncated": False,
        "redirects": redirects,
    }
    if method == "HEAD" or response.status_code in (204, 304) or response.headers.get("content-length") == "0":
        return result
    if content_type is None:
        raise HttpRefusedError(f"{vetted.url!r} answered {response.status_code} without a Content-Type; "
                               "only textual responses are read")
    if not content_type_allowed(content_type, content_types):
        raise HttpRefusedError(f"{vetted.url!r} answered {response.status_code} with content type "
                               f"{content_type!r}, which is not allowed (allowed: {', '.join(content_types)})")
    inflater = _Inflater.for_response(response, vetted.url)
    chunks: list[bytes] = []
    size = 0
    truncated = False
    async for raw in response.aiter_raw():  # raw bytes: httpx's own decoders would inflate them unbounded
        chunk = inflater.inflate(raw, max_bytes - size + 1)  # one byte past the cap says "there is more"
        if size + len(chunk) > max_bytes:
            chunks.append(chunk[: max_bytes - size])
            truncated = True
            break
        chunks.append(chunk)
        size += len(chunk)
    data = b"".join(chunks)
    decoder = codecs.getincrementaldecoder(_text_encoding(response.charset_encoding))(errors="replace")
    # When cut, a character split at the cut is dropped instead of becoming U+FFFD.
    result["text"] = decoder.decode(data, final=not truncated)
    result["truncated"] = truncated
    return result


class _Inflater:
    """Undoes a response's content coding (none, ``gzip`` or ``deflate``) chunk by chunk, never producing
    more than it is asked for: zlib's ``max_length`` stops inflating at the limit, so a compressed body
    costs at most ``max_bytes`` of memory whatever its ratio."""

    def __init__(self, coding: str, url: str) -> None:
        self.coding = coding
        self.url = url
        self._zlib = zlib.decompressobj(_ZLIB_WBITS[coding]) if coding in _ZLIB_WBITS else None
        self._started = False

    @classmethod
    def for_response(cls, response: httpx.Response, url: str) -> _Inflater:
        """The inflater for ``response``'s ``Content-Encoding``; HttpRefusedError for one the tool does not decode."""
        header = response.headers.get("content-encoding", "")
        codings = [c.strip().lower() for c in header.split(",") if c.strip().lower() not in ("", "identity")]
        if not codings:
            return cls("identity", url)
        if len(codings) > 1 or codings[0] not in _ZLIB_WBITS:
            raise HttpRefusedError(f"{url!r} answered with content encoding {header!r}, which the HTTP tool does "
                                   f"not decode (it accepts {ACCEPT_ENCODING})")
        return cls(codings[0], url)

    def inflate(self, data: bytes, limit: int) -> bytes:
        """At most ``limit`` bytes of decoded output for the next raw chunk ``data`` (``limit`` >= 1: to zlib,
        a ``max_length`` of 0 means no limit at all)."""
        if self._zlib is None:
            return data[:limit]
        first, self._started = not self._started, True
        try:
            return self._zlib.decompress(data, limit)
        except zlib.error as exc:
            if self.coding == "deflate" and first:  # raw deflate, without the zlib header some servers omit
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.inflate(data, limit)
            raise ToolError(f"{self.url!r} sent a body that is not valid {self.coding} ({exc})") from None


def _text_encoding(charset: str | None) -> str:
    """``charset`` when it names a text encoding, else ``"utf-8"``: an unknown name, and a codec that is
    not a text encoding (``zlib``, ``bz2``, ``base64``, ``rot13`` …), which would decompress, crash or
    hand back bytes."""
    if not charset:
        return "utf-8"
    try:
        b"?".decode(charset, "replace")  # LookupError for unknown names and for non-text codecs
    except LookupError:
        return "utf-8"
    return charset


# ------------------------------------------------------------------------------------------------- tools


def make_http_tools(
    *,
    allow: Iterable[str] = (),
    resolver: Resolver | None = None,
    max_redirects: int = 3,
    timeout: float = 15.0,
    max_bytes: int = 1_000_000,
    content_types: tuple[str, ...] = DEFAULT_CONTENT_TYPES,
) -> list[Tool]:
    """``[http_get, http_request]`` tools sharing one :class:`UrlPolicy` and one set of limits.

    ``http_get`` only reads (``side_effects=False``: an agent may start it early and retry it);
    ``http_request`` can also POST/PUT/PATCH/DELETE/HEAD (``side_effects=True``).
    """
    policy = UrlPolicy(allow, resolver)
    limits: dict[str, Any] = {"policy": policy, "max_redirects": max_redirects, "timeout": timeout,
                              "max_bytes": max_bytes, "content_types": content_types}
    tool_timeout = timeout + 5.0  # fetch enforces `timeout` itself and says so; this is only a backstop

    @tool(name="http_get", side_effects=False, timeout=tool_timeout)
    async def http_get(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Fetch a public http(s) URL with GET and return its status, final URL, content type and text.

        Private, loopback and link-local addresses are refused, redirects are followed (a few hops) and
        re-checked, only textual content types are read, and long bodies are cut (truncated: true).

        Args:
            url: Absolute http:// or https:// URL to fetch.
            headers: Extra request headers (for example Accept or Authorization).
        """
        return dict(await fetch(url, method="GET", headers=headers, **limits))

    @tool(name="http_request", side_effects=True, timeout=tool_timeout)
    async def http_request(url: str, method: HttpMethod = "GET", headers: dict[str, str] | None = None,
                           json_body: Any = None, body: str | None = None) -> dict[str, Any]:
        """Send an HTTP request (GET, POST, PUT, PATCH, DELETE or HEAD) to a public http(s) URL.

        Returns the status (non-2xx included), final URL, content type and text. The same rules as
        http_get apply: private addresses are refused, redirects are re-checked, bodies are capped.

        Args:
            url: Absolute http:// or https:// URL.
            method: HTTP method.
            headers: Extra request headers.
            json_body: A JSON value to send as the request body (sets Content-Type: application/json).
            body: A text body to send instead of json_body.
        """
        return dict(await fetch(url, method=method, headers=headers, json_body=json_body, body=body, **limits))

    return [http_get, http_request]


http_get, http_request = make_http_tools()

__all__ = [
    "DEFAULT_CONTENT_TYPES",
    "DEFAULT_PORTS",
    "BlockedURLError",
    "HttpRefusedError",
    "HttpResult",
    "IPAddress",
    "IPNetwork",
    "ParsedURL",
    "RedirectHop",
    "Resolver",
    "SystemResolver",
    "UrlPolicy",
    "Vetted",
    "content_type_allowed",
    "fetch",
    "http_get",
    "http_request",
    "make_http_tools",
    "non_global_reason",
    "parse_ipv4_host",
    "parse_url",
]
