"""Built-in HTTP tools, ``http_get`` and ``http_request``, hardened against server-side request forgery.

A model chooses the URLs these tools fetch, so every URL — and every redirect ``Location`` — is vetted
before a single packet is sent:

* **Scheme**: ``http`` and ``https`` only (``file:``, ``ftp:``, ``gopher:``, ``data:``, ``javascript:`` … are refused).
* **Shape**: no userinfo (``user@host``), no backslashes, control characters or percent-encoding in the
  authority — anything two URL parsers could read differently is refused rather than guessed at.
* **Numeric hosts** are normalised the way browsers and ``inet_aton`` read them (``127.1``, ``0x7f000001``,
  ``2130706433``, ``0177.0.0.1``, ``[::ffff:7f00:1]``) and are never handed to a resolver as a "name".
* **Addresses**: a host name is resolved once; *every* address it resolves to must be globally routable
  (DNS-rebinding defence). IPv4 embedded in IPv6 (IPv4-mapped, IPv4-compatible, 6to4, NAT64, Teredo) is
  unwrapped and judged as IPv4. Loopback, private, link-local (cloud metadata), shared address space
  (CGNAT), unspecified, multicast, broadcast, reserved, documentation and benchmarking ranges are refused.
* **Pinning**: the request goes to the vetted IP itself, never back through DNS. The original name travels
  in the ``Host`` header and, for https, as the TLS SNI / certificate hostname.
* **Redirects** are followed by hand, at most ``max_redirects`` hops, each hop vetted by the same rules.
* **Caps**: one total timeout (DNS, connects, all hops, body); the body is streamed and cut at
  ``max_bytes`` (``truncated: true``); the response content type must be textual, else the body is not read.
* **Allowlist**: hosts, IPs and CIDR networks in ``allow`` skip the "must be global" rule — for tests and
  intranets. It is checked against the literal host name and each resolved IP, on every hop.

Use :func:`make_http_tools` for a configured pair of tools, the module-level :data:`http_get` /
:data:`http_request` for the defaults, or :func:`fetch` with a :class:`UrlPolicy` without the tool wrapper.
"""

from __future__ import annotations

import codecs
import functools
import ipaddress
import json
import logging
import re
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict
from urllib.parse import urljoin, urlsplit

import anyio
import anyio.to_thread
import httpx

from agentflow.tool import Tool, ToolArgumentError, ToolError, tool

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]

METHODS: frozenset[str] = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})
DEFAULT_PORTS = {"http": 80, "https": 443}
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


# --------------------------------------------------------------------------------------------------- errors


class HttpRefusedError(ToolArgumentError):
    """The HTTP tool refused a request or a response by policy (not a network failure).

    A :class:`~agentflow.tool.ToolArgumentError` (so a :class:`~agentflow.tool.ToolError`) because asking
    again gets the same answer: the tool layer never retries it, even for ``http_get``.
    """

    code = "http_refused"


class BlockedURLError(HttpRefusedError):
    """A URL (or a redirect hop) is not allowed; the message says why."""

    code = "blocked_url"

    def __init__(self, url: str, reason: str, *, hop: int | None = None) -> None:
        self.url = url
        self.reason = reason
        self.hop = hop
        where = f"redirect hop {hop} to {url!r}" if hop is not None else f"URL {url!r}"
        super().__init__(f"{where} refused: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # pickle with the real constructor arguments
        return _rebuild_blocked, (self.url, self.reason, self.hop)


def _rebuild_blocked(url: str, reason: str, hop: int | None) -> BlockedURLError:
    return BlockedURLError(url, reason, hop=hop)


# ------------------------------------------------------------------------------------------ address rules

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# (network, reason) in the order they are checked; the first match names the reason.
_IPV4_RULES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/32"), "an unspecified address"),
    (_V4("0.0.0.0/8"), "in 'this network' (0.0.0.0/8)"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("10.0.0.0/8"), "a private address (10.0.0.0/8)"),
    (_V4("172.16.0.0/12"), "a private address (172.16.0.0/12)"),
    (_V4("192.168.0.0/16"), "a private address (192.168.0.0/16)"),
    (_V4("169.254.169.254/32"), "a link-local address (cloud metadata endpoint)"),
    (_V4("169.254.0.0/16"), "a link-local address"),
    (_V4("100.64.0.0/10"), "in the shared address space (CGNAT, 100.64.0.0/10)"),
    (_V4("192.0.0.0/24"), "an IETF protocol assignment (192.0.0.0/24)"),
    (_V4("192.0.2.0/24"), "a documentation address (TEST-NET-1)"),
    (_V4("198.51.100.0/24"), "a documentation address (TEST-NET-2)"),
    (_V4("203.0.113.0/24"), "a documentation address (TEST-NET-3)"),
    (_V4("198.18.0.0/15"), "a benchmarking address (198.18.0.0/15)"),
    (_V4("192.88.99.0/24"), "a 6to4 relay anycast address (deprecated)"),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("255.255.255.255/32"), "the broadcast address"),
    (_V4("240.0.0.0/4"), "a reserved address (240.0.0.0/4)"),
)

_IPV6_RULES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "an unspecified address"),
    (_V6("::1/128"), "a loopback address"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fec0::/10"), "a site-local address (deprecated private range)"),
    (_V6("fc00::/7"), "a private address (unique local, fc00::/7)"),
    (_V6("ff00::/8"), "a multicast address"),
    (_V6("2001:db8::/32"), "a documentation address (2001:db8::/32)"),
    (_V6("3fff::/20"), "a documentation address (3fff::/20)"),
    (_V6("2001:2::/48"), "a benchmarking address (2001:2::/48)"),
    (_V6("100::/64"), "a discard-only address (100::/64)"),
    (_V6("2001::/23"), "an IETF protocol assignment (2001::/23)"),
)

_GLOBAL_UNICAST_V6 = _V6("2000::/3")
_IPV4_MAPPED = _V6("::ffff:0:0/96")
_IPV4_COMPATIBLE = _V6("::/96")
_SIX_TO_FOUR = _V6("2002::/16")
_TEREDO = _V6("2001::/32")
_NAT64 = (_V6("64:ff9b::/96"), _V6("64:ff9b:1::/48"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """``(form, ipv4)`` when an IPv6 address carries an IPv4 one that a gateway or stack may route to."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _IPV4_MAPPED:
        return "IPv4-mapped", low32
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are IPv6's own unspecified and loopback
        return "IPv4-compatible", low32
    if ip in _NAT64[0] or ip in _NAT64[1]:
        return "NAT64", low32
    if ip in _SIX_TO_FOUR:
        return "6to4", ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)
    return None


def _ipv4_reason(ip: ipaddress.IPv4Address) -> str | None:
    for net, reason in _IPV4_RULES:
        if ip in net:
            return reason
    if ip.is_multicast or ip.is_reserved or not ip.is_global:
        return "a special-purpose (non-global) address"
    return None


def non_global_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be fetched from (e.g. ``"a loopback address"``), or ``None`` if it is globally routable.

    IPv4 carried inside IPv6 (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) is judged as that IPv4.
    """
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_reason(ip)
    ip = ip if ip.scope_id is None else ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        form, v4 = embedded
        reason = _ipv4_reason(v4)
        return f"{reason} ({form} {v4})" if reason else None
    if ip in _TEREDO:
        teredo = ip.teredo
        for v4 in teredo or ():
            reason = _ipv4_reason(v4)
            if reason:
                return f"{reason} (Teredo {v4})"
        return "a Teredo tunnel address"
    for net, reason in _IPV6_RULES:
        if ip in net:
            return reason
    if ip not in _GLOBAL_UNICAST_V6 or ip.is_reserved or not ip.is_global:
        return "a reserved or special-purpose (non-global) IPv6 address"
    return None


# -------------------------------------------------------------------------------------------- URL parsing

_HEX = frozenset("0123456789abcdefABCDEF")
_NAME_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*\.?")


def _ipv4_number(part: str) -> int | None:
    """One part of a numeric IPv4 host as ``inet_aton`` / the WHATWG URL parser reads it (hex, octal, decimal)."""
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
        if not digits:
            return 0
        if not set(digits) <= _HEX:
            return None
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
        if not set(digits) <= set("01234567"):
            return None
    else:
        digits, base = part, 10
        if not digits.isascii() or not digits.isdigit():
            return None
    return int(digits, base)


def _ends_in_number(host: str) -> bool:
    last = host.removesuffix(".").rpartition(".")[2]
    return bool(last) and ((last.isascii() and last.isdigit()) or (last[:2] in ("0x", "0X")
                                                                  and set(last[2:]) <= _HEX))


def parse_ipv4_host(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host means when it ends in a number (``127.1``, ``0x7f000001``, ``0177.0.0.1``,
    ``2130706433``), ``None`` for a host that is a name. Raises ``ValueError`` for a malformed numeric host
    (browsers reject those too), so such a host is never mistaken for a name and sent to a resolver."""
    if not _ends_in_number(host):
        return None
    parts = host.removesuffix(".").split(".")
    numbers = [_ipv4_number(p) if p else None for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise ValueError(f"malformed numeric IPv4 host {host!r}")
    values = [n for n in numbers if n is not None]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        raise ValueError(f"out-of-range numeric IPv4 host {host!r}")
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


@dataclass(frozen=True)
class ParsedURL:
    """A URL that passed the syntactic checks: lower-case scheme, ASCII host, explicit port, path and query."""

    scheme: str
    host: str  # IDNA/ASCII name, dotted IPv4, or bare IPv6 (no brackets)
    port: int
    target: str  # path + query, always starting with "/"
    literal: IPAddress | None  # the host when it is an IP address

    @property
    def host_for_url(self) -> str:
        return f"[{self.host}]" if isinstance(self.literal, ipaddress.IPv6Address) else self.host

    @property
    def host_header(self) -> str:
        default = DEFAULT_PORTS[self.scheme] == self.port
        return self.host_for_url if default else f"{self.host_for_url}:{self.port}"

    @property
    def url(self) -> str:
        """The normalised URL (no fragment)."""
        return f"{self.scheme}://{self.host_header}{self.target}"

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


def parse_url(url: str) -> ParsedURL:
    """Check a URL's syntax and normalise it; raises :class:`BlockedURLError` naming the problem."""
    if not isinstance(url, str) or not url.strip():
        raise BlockedURLError(str(url), "empty URL")
    url = url.strip()
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise BlockedURLError(url, "control characters in URL")
    if "\\" in url:
        raise BlockedURLError(url, "backslash in URL (parsers disagree on what it means)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not scheme:
        raise BlockedURLError(url, "missing scheme (only http and https are allowed)")
    if scheme not in DEFAULT_PORTS:
        raise BlockedURLError(url, f"scheme {scheme!r} is not allowed (only http and https)")
    netloc = parts.netloc
    if "@" in netloc:
        raise BlockedURLError(url, "userinfo (user@host) in URL is not allowed")
    if not netloc:
        raise BlockedURLError(url, "missing host")

    # Split host and port by hand: urlsplit's .hostname/.port are lenient in ways that hide ambiguity.
    if netloc.startswith("["):
        close = netloc.find("]")
        if close < 0:
            raise BlockedURLError(url, "unterminated IPv6 literal")
        raw_host, rest = netloc[1:close], netloc[close + 1:]
        if rest and not rest.startswith(":"):
            raise BlockedURLError(url, "malformed authority after IPv6 literal")
        port_text = rest[1:]
        if "%" in raw_host:
            raise BlockedURLError(url, "IPv6 zone identifiers are not allowed")
        try:
            literal: IPAddress | None = ipaddress.IPv6Address(raw_host)
        except ValueError:
            raise BlockedURLError(url, f"invalid IPv6 literal [{raw_host}]") from None
        host = str(literal)
    else:
        raw_host, _, port_text = netloc.partition(":")
        if ":" in port_text:
            raise BlockedURLError(url, "malformed authority (several ':')")
        if not raw_host:
            raise BlockedURLError(url, "missing host")
        if "%" in raw_host:
            raise BlockedURLError(url, "percent-encoded host is not allowed")
        host = raw_host
        if not host.isascii():
            try:  # IDNA (with nameprep: full-width digits and dots become ASCII ones)
                host = host.encode("idna").decode("ascii")
            except UnicodeError:
                raise BlockedURLError(url, f"invalid internationalised host {raw_host!r}") from None
        host = host.lower()
        try:
            literal = parse_ipv4_host(host)
        except ValueError as exc:
            raise BlockedURLError(url, str(exc)) from None
        if literal is not None:
            host = str(literal)
        elif not _NAME_RE.fullmatch(host) or len(host) > 254:
            raise BlockedURLError(url, f"invalid host name {raw_host!r}")
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise BlockedURLError(url, f"invalid port {port_text!r}")
        port = int(port_text)
    else:
        port = DEFAULT_PORTS[scheme]
    target = parts.path or "/"
    if not target.startswith("/"):
        target = "/" + target
    if parts.query:
        target += "?" + parts.query
    return ParsedURL(scheme=scheme, host=host, port=port, target=target, literal=literal)


# ------------------------------------------------------------------------------------------------ policy


class Resolver(Protocol):
    """Turns a host name into IP address strings (injectable, so tests never touch real DNS)."""

    async def resolve(self, host: str) -> list[str]: ...


class SystemResolver:
    """``getaddrinfo`` in a worker thread (abandoned, not waited for, when the call is cancelled)."""

    async def resolve(self, host: str) -> list[str]:
        call = functools.partial(socket.getaddrinfo, host, None, type=socket.SOCK_STREAM)
        try:
            infos = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        except (socket.gaierror, UnicodeError):
            return []
        return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Vetted:
    """A URL that passed every rule, pinned to the address to connect to."""

    url: str  # the normalised original URL (host name, not IP)
    scheme: str
    host: str  # what goes in the Host header and SNI (no port)
    port: int
    ip: str  # the vetted address the request is sent to
    addresses: tuple[str, ...]  # everything the host resolved to (all vetted)
    target: str  # path + query
    host_header: str  # host, plus ":port" when it is not the scheme's default
    allowlisted: bool  # whether the allowlist (not globality) let it through
    is_name: bool  # host is a DNS name (so https needs SNI set to it)

    @property
    def connect_url(self) -> str:
        """The URL with the host replaced by the vetted IP — what the HTTP client actually dials."""
        ip = ipaddress.ip_address(self.ip)
        host = f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else str(ip)
        return f"{self.scheme}://{host}:{self.port}{self.target}"

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


class UrlPolicy:
    """Which URLs the HTTP tools may fetch: http(s) to globally routable addresses, plus an allowlist.

    ``allow`` takes host names (``"localhost"``, ``"intranet.example"``; ``"*.corp.example"`` or
    ``".corp.example"`` also match subdomains), IP addresses (``"127.0.0.1"``) and CIDR networks
    (``"10.0.0.0/8"``). A listed host name may resolve to anything; otherwise each resolved address must be
    global or inside a listed network. ``resolver`` defaults to :class:`SystemResolver`.
    """

    def __init__(self, allow: Iterable[str] = (), resolver: Resolver | None = None) -> None:
        self.resolver: Resolver = resolver or SystemResolver()
        self.allowed_hosts: set[str] = set()
        self.allowed_suffixes: set[str] = set()
        self.allowed_networks: list[IPNetwork] = []
        for entry in allow:
            item = entry.strip().lower()
            if not item:
                continue
            try:
                self.allowed_networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if item.startswith(("*.", ".")):
                self.allowed_suffixes.add("." + item.lstrip("*.").removesuffix("."))
            else:
                self.allowed_hosts.add(item.removesuffix("."))

    def __repr__(self) -> str:
        allow = sorted(self.allowed_hosts) + sorted("*" + s for s in self.allowed_suffixes)
        allow += [str(n) for n in self.allowed_networks]
        return f"UrlPolicy(allow={allow!r}, resolver={type(self.resolver).__name__})"

    def host_allowed(self, host: str) -> bool:
        """Whether a host name is on the allowlist by name."""
        name = host.removesuffix(".")
        return name in self.allowed_hosts or any(name.endswith(s) for s in self.allowed_suffixes)

    def ip_allowed(self, ip: IPAddress) -> bool:
        """Whether an address is inside an allowlisted network (IPv4-mapped IPv6 counts as its IPv4)."""
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c.version == n.version and c in n for c in candidates for n in self.allowed_networks)

    async def vet(self, url: str) -> Vetted:
        """Check ``url`` against every rule and pin it to one address; raises :class:`BlockedURLError`."""
        parsed = parse_url(url)
        by_name = parsed.literal is None and self.host_allowed(parsed.host)
        if parsed.literal is not None:
            addresses: list[IPAddress] = [parsed.literal]
        else:
            name = parsed.host.removesuffix(".")
            if not by_name and (name == "localhost" or name.endswith(".localhost")):
                raise BlockedURLError(url, f"{name} is a loopback name (RFC 6761)")
            addresses = await self._resolve(url, parsed)
        allowlisted = by_name
        for ip in addresses:
            if by_name:
                continue
            if self.ip_allowed(ip):
                allowlisted = True
                continue
            reason = non_global_reason(ip)
            if reason is not None:
                if parsed.literal is not None:
                    raise BlockedURLError(url, f"{ip} is {reason}")
                every = f" (all {len(addresses)} addresses a name resolves to must pass)" if len(addresses) > 1 else ""
                raise BlockedURLError(url, f"{parsed.host} resolves to {ip}, which is {reason}{every}")
        ips = tuple(str(ip) for ip in addresses)
        return Vetted(url=parsed.url, scheme=parsed.scheme, host=parsed.host_for_url, port=parsed.port, ip=ips[0],
                      addresses=ips, target=parsed.target, host_header=parsed.host_header, allowlisted=allowlisted,
                      is_name=parsed.literal is None)

    async def _resolve(self, url: str, parsed: ParsedURL) -> list[IPAddress]:
        raw = await self.resolver.resolve(parsed.host.removesuffix("."))
        addresses: list[IPAddress] = []
        for text in raw:
            try:
                ip = ipaddress.ip_address(str(text).split("%", 1)[0])
            except ValueError:
                raise BlockedURLError(url, f"{parsed.host} resolved to a non-address {text!r}") from None
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise BlockedURLError(url, f"could not resolve host {parsed.host!r} (no addresses)")
        return addresses


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
    """Fetch ``url`` under ``policy`` (see the module docstring for the rules) and return an :class:`HttpResult`.

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
                                     verify=_ssl_context(), headers={"User-Agent": USER_AGENT}) as client:
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
    chunks: list[bytes] = []
    size = 0
    truncated = False
    async for chunk in response.aiter_bytes():  # decoded (gzip…) bytes, so the cap also bounds decompression
        if size + len(chunk) > max_bytes:
            chunks.append(chunk[: max_bytes - size])
            truncated = True
            break
        chunks.append(chunk)
        size += len(chunk)
    data = b"".join(chunks)
    encoding = response.charset_encoding or "utf-8"
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    except LookupError:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    # When cut, a character split at the cut is dropped instead of becoming U+FFFD.
    result["text"] = decoder.decode(data, final=not truncated)
    result["truncated"] = truncated
    return result


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
    "BlockedURLError",
    "HttpRefusedError",
    "HttpResult",
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
