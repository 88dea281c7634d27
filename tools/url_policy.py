"""URL and address vetting for the built-in HTTP tools (:mod:`tools.http_request`): the defence against
server-side request forgery.

A model chooses the URLs those tools fetch, so every URL — and every redirect ``Location`` — is vetted here
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
* **Allowlist**: hosts, IPs and CIDR networks in ``allow`` skip the "must be global" rule — for tests and
  intranets. It is checked against the literal host name and each resolved IP, on every hop.

:meth:`UrlPolicy.vet` applies all of it and returns a :class:`Vetted` target pinned to one checked address;
:func:`parse_url` and :func:`non_global_reason` are the syntactic and address halves on their own. Refusals
raise :class:`BlockedURLError` (a :class:`HttpRefusedError`). Name resolution goes through a :class:`Resolver`
(default :class:`SystemResolver`), so tests never touch real DNS.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio
import anyio.to_thread

from agentflow.tool import ToolArgumentError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS = {"http": 80, "https": 443}


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


__all__ = [
    "DEFAULT_PORTS",
    "BlockedURLError",
    "HttpRefusedError",
    "IPAddress",
    "IPNetwork",
    "ParsedURL",
    "Resolver",
    "SystemResolver",
    "UrlPolicy",
    "Vetted",
    "non_global_reason",
    "parse_ipv4_host",
    "parse_url",
]
