"""The built-in HTTP tools: an SSRF corpus (every case refused, for the stated reason, before anything is
sent) and a real HTTP server on 127.0.0.1 for redirects, caps, timeouts and Host/SNI pinning.

Nothing leaves the machine: names go through a stub resolver, and the only server is local."""

from __future__ import annotations

import functools
import gzip
import ipaddress
import json
import pickle
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agentflow.tool import ToolContext, ToolError
from tools.http_request import (
    BlockedURLError,
    HttpRefusedError,
    UrlPolicy,
    fetch,
    http_get,
    http_request,
    make_http_tools,
    non_global_reason,
    parse_ipv4_host,
    parse_url,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class StubResolver:
    """A resolver from a table; records every name it is asked about."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = table or {}
        self.calls: list[str] = []

    async def resolve(self, host: str) -> list[str]:
        self.calls.append(host)
        return list(self.table.get(host, []))


STUB_TABLE = {
    "internal.example": ["10.1.2.3"],
    "rebind.example": ["93.184.216.34", "127.0.0.1"],
    "metadata.example": ["169.254.169.254"],
    "cgnat.example": ["100.100.100.200"],
    "v6local.example": ["::1"],
    "mapped.example": ["::ffff:192.168.0.1"],
    "public.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
}

# (url, a phrase the refusal must contain)
SSRF_CORPUS: list[tuple[str, str]] = [
    # loopback, in every numeric spelling
    ("http://127.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("HTTP://127.0.0.1:8080/admin", "loopback"),
    ("http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/", "loopback"),  # full-width digits and dot
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[::127.0.0.1]/", "loopback"),  # IPv4-compatible
    ("http://[64:ff9b::7f00:1]/", "loopback"),  # NAT64
    ("http://[64:ff9b:1::7f00:1]/", "loopback"),  # NAT64 local-use prefix
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4
    ("http://127.0.0.1#@evil.com", "loopback"),  # the fragment is not an authority
    ("http://localhost/", "loopback"),
    ("http://app.localhost:3000/", "loopback"),
    # unspecified / this network
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://0.1.2.3/", "this network"),
    # link-local and cloud metadata
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),  # NAT64 of 169.254.169.254
    ("https://[::ffff:a9fe:a9fe]/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    # private
    ("http://[fd00:ec2::254]/", "private"),  # AWS IMDS over IPv6
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://172.31.255.255/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://[2002:c0a8:101::1]/", "private"),  # 6to4 of 192.168.1.1
    # CGNAT, multicast, broadcast, reserved, documentation, benchmarking
    ("http://100.64.0.1/", "shared address space"),
    ("http://100.127.255.255/", "shared address space"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://192.0.2.1/", "documentation"),
    ("http://[2001:db8::1]/", "documentation"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "documentation"),  # Teredo, client 192.0.2.45
    ("http://198.18.0.1/", "benchmarking"),
    # schemes
    ("file:///etc/passwd", "scheme"),
    ("ftp://example.com/", "scheme"),
    ("gopher://127.0.0.1:70/_GET%20/", "scheme"),
    ("data:text/html,<script>alert(1)</script>", "scheme"),
    ("javascript:alert(1)", "scheme"),
    ("dict://127.0.0.1:11211/stats", "scheme"),
    ("//example.com/", "missing scheme"),
    # userinfo and parser confusion
    ("http://user:pass@example.com/", "userinfo"),
    ("http://example.com@127.0.0.1/", "userinfo"),
    ("http://user@[::1]/", "userinfo"),
    ("http://evil.com\\@127.0.0.1/", "backslash"),
    ("http://%31%32%37.0.0.1/", "percent-encoded"),
    ("http://[fe80::1%25eth0]/", "zone"),
    ("http://127.0.0.1\n.evil.com/", "control characters"),
    ("http:///etc/passwd", "missing host"),
    ("http://1.2.3.4.5/", "numeric IPv4"),
    ("http://127.0.0.1:99999/", "invalid port"),
    # names resolving to non-global addresses (stub resolver)
    ("http://internal.example/", "private"),
    ("http://rebind.example/", "loopback"),  # one good address and one bad: refused
    ("http://metadata.example/latest/meta-data/", "link-local"),
    ("http://cgnat.example/", "shared address space"),
    ("http://v6local.example/", "loopback"),
    ("http://mapped.example/", "private"),
    ("http://nowhere.example/", "could not resolve"),
]

NUMERIC_HOSTS = {"127.0.0.1", "127.1", "0x7f000001", "2130706433", "0177.0.0.1", "0", "[::1]", "0x7f.1"}


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs of every request the HTTP client actually sends."""
    urls: list[str] = []
    original = httpx.AsyncClient.send

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        urls.append(str(request.url))
        return await original(self, request, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", send)
    return urls


def test_corpus_is_big_enough() -> None:
    assert len(SSRF_CORPUS) >= 30
    assert len({url for url, _ in SSRF_CORPUS}) == len(SSRF_CORPUS)


@pytest.mark.parametrize(("url", "reason"), SSRF_CORPUS)
async def test_ssrf_corpus_refused(url: str, reason: str, sent: list[str]) -> None:
    resolver = StubResolver(STUB_TABLE)
    policy = UrlPolicy(resolver=resolver)
    with pytest.raises(BlockedURLError) as info:
        await policy.vet(url)
    assert reason in str(info.value), str(info.value)
    assert reason in info.value.reason
    # The same through fetch (and so the tools): refused before anything is sent.
    with pytest.raises(BlockedURLError, match="refused"):
        await fetch(url, policy=policy)
    assert sent == []
    host = urlsplit(url).netloc.rsplit("@", 1)[-1]
    if host in NUMERIC_HOSTS:  # numeric hosts are never handed to the resolver as names
        assert resolver.calls == []


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
     ("0x7f.0.0.1", "127.0.0.1"), ("10.1", "10.0.0.1"), ("192.168.257", "192.168.1.1"), ("0", "0.0.0.0"),
     ("8.8.8.8", "8.8.8.8"), ("1.2.3.4.", "1.2.3.4"), ("example.com", None), ("0x", "0.0.0.0"),
     ("a1.example", None)],
)
def test_parse_ipv4_host(host: str, expected: str | None) -> None:
    result = parse_ipv4_host(host)
    assert (str(result) if result is not None else None) == expected


@pytest.mark.parametrize("host", ["1.2.3.256", "256.1.1.1", "09.1.1.1", "1.2.3.4.5", "1.1.1.08", "example.123", "1..2"])
def test_parse_ipv4_host_rejects_malformed_numbers(host: str) -> None:
    with pytest.raises(ValueError):
        parse_ipv4_host(host)


@pytest.mark.parametrize(
    "ip", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::5db8:d822", "::ffff:8.8.8.8",
           "2002:5db8:d822::1"],
)
def test_global_addresses_pass(ip: str) -> None:
    assert non_global_reason(ipaddress.ip_address(ip)) is None


async def test_public_names_and_ips_are_vetted_and_pinned() -> None:
    resolver = StubResolver(STUB_TABLE)
    policy = UrlPolicy(resolver=resolver)
    vetted = await policy.vet("https://Public.Example/a/b?q=1#frag")
    assert (vetted.host, vetted.ip, vetted.port, vetted.target) == ("public.example", "93.184.216.34", 443, "/a/b?q=1")
    assert vetted.addresses == ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    assert vetted.connect_url == "https://93.184.216.34:443/a/b?q=1"
    assert vetted.url == "https://public.example/a/b?q=1"
    assert vetted.host_header == "public.example"
    assert resolver.calls == ["public.example"]
    literal = await policy.vet("http://[2606:4700:4700::1111]:8080")
    assert literal.connect_url == "http://[2606:4700:4700::1111]:8080/"
    assert literal.host_header == "[2606:4700:4700::1111]:8080"
    assert parse_url("http://bücher.example/").host == "xn--bcher-kva.example"


async def test_allowlist_hosts_ips_and_networks() -> None:
    resolver = StubResolver({**STUB_TABLE, "db.corp.example": ["10.9.9.9"], "localhost": ["127.0.0.1"]})
    policy = UrlPolicy(["10.0.0.0/8", "localhost", "*.corp.example", "::1"], resolver=resolver)
    assert (await policy.vet("http://10.0.0.5/")).allowlisted
    assert (await policy.vet("http://internal.example/")).ip == "10.1.2.3"  # resolved IP in an allowed network
    assert (await policy.vet("http://db.corp.example/")).allowlisted  # allowed by name
    assert (await policy.vet("http://localhost:8000/")).ip == "127.0.0.1"
    assert (await policy.vet("http://[::1]/")).ip == "::1"
    with pytest.raises(BlockedURLError, match="loopback"):  # 127.0.0.1 itself is not listed
        await policy.vet("http://127.0.0.1/")
    with pytest.raises(BlockedURLError, match="link-local"):
        await policy.vet("http://169.254.169.254/")
    with pytest.raises(BlockedURLError, match="scheme"):  # the allowlist never relaxes the scheme rule
        await policy.vet("ftp://10.0.0.5/")


# ---------------------------------------------------------------------------------------------- live server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stop = threading.Event()
    hits: list[str]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is expected here


@functools.cache
def _encoded(coding: str, size: int) -> bytes:
    """``size`` zero bytes in a content coding (``deflate-raw``: deflate without the zlib header)."""
    data = b"\0" * size
    if coding == "gzip":
        return gzip.compress(data)
    if coding == "deflate":
        return zlib.compress(data)
    if coding == "deflate-raw":
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return packer.compress(data) + packer.flush()
    return b"not really " + coding.encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        self.server.hits.append(f"{self.command} {self.path}")
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        if path == "/hello":
            self._send(200, "héllo wörld".encode())
        elif path == "/json":
            self._send(200, json.dumps({"ok": True, "items": [1, 2, 3]}).encode(), "application/json")
        elif path.startswith("/chain/"):
            left = int(path.rsplit("/", 1)[1])
            if left == 0:
                self._send(200, b"end of chain")
            else:
                self._send(302, b"", headers={"Location": f"/chain/{left - 1}"})
        elif path == "/redirect":
            self._send(int(query.get("status", "302")), b"", headers={"Location": query["to"]})
        elif path == "/big":
            self._send(200, b"a" * 50_000)
        elif path == "/binary":
            self._send(200, b"\x00\x01\x02" * 100, "application/octet-stream")
        elif path == "/slow":
            self.server.stop.wait(3)
            self._send(200, b"finally")
        elif path == "/host":
            self._send(200, (self.headers.get("Host") or "").encode())
        elif path == "/echo":
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            echo = {"method": self.command, "body": body, "content_type": self.headers.get("Content-Type"),
                    "authorization": self.headers.get("Authorization")}
            self._send(200, json.dumps(echo).encode(), "application/json")
        elif path == "/encoded":
            coding, size = query["coding"], int(query["size"])
            self._send(200, _encoded(coding, size), headers={"Content-Encoding": coding.removesuffix("-raw")})
        elif path == "/charset":
            self._send(200, b"hello", f"text/plain; charset={query['charset']}")
        elif path == "/missing":
            self._send(404, b"no such thing")
        else:
            self._send(500, b"unexpected path")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.stop = threading.Event()
    srv.hits = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
def base(server: _Server) -> str:
    server.hits.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


LOCAL = UrlPolicy(["127.0.0.1"], resolver=StubResolver({"api.test": ["127.0.0.1"], "other.test": ["127.0.0.2"]}))


async def test_allowlisted_local_server_is_reached(base: str) -> None:
    result = await fetch(f"{base}/hello", policy=LOCAL)
    assert result["status"] == 200
    assert result["text"] == "héllo wörld"
    assert result["url"] == f"{base}/hello"
    assert result["content_type"] == "text/plain; charset=utf-8"
    assert result["headers"]["content-type"] == "text/plain; charset=utf-8"
    assert result["truncated"] is False
    assert result["redirects"] == []


async def test_local_server_refused_without_allowlist(base: str, server: _Server) -> None:
    with pytest.raises(BlockedURLError, match="loopback"):
        await fetch(f"{base}/hello", policy=UrlPolicy())
    assert server.hits == []


async def test_tools_through_tool_call(base: str) -> None:
    get, request = make_http_tools(allow=["127.0.0.1"])
    ctx = ToolContext(run_id="r", node_id="n", attempt=1, call_id="c")
    result = await get.call({"url": f"{base}/json"}, ctx)
    assert result["status"] == 200
    assert json.loads(result["text"]) == {"ok": True, "items": [1, 2, 3]}
    posted = await request.call({"url": f"{base}/echo", "method": "POST", "json_body": {"a": [1, "b"]}}, ctx)
    echo = json.loads(posted["text"])
    assert echo["method"] == "POST"
    assert json.loads(echo["body"]) == {"a": [1, "b"]}
    assert echo["content_type"] == "application/json"
    put = await request.call({"url": f"{base}/echo", "method": "PUT", "body": "plain"}, ctx)
    assert json.loads(put["text"])["body"] == "plain"
    head = await request.call({"url": f"{base}/hello", "method": "HEAD"}, ctx)
    assert (head["status"], head["text"]) == (200, "")
    missing = await get.call({"url": f"{base}/missing"}, ctx)  # non-2xx is returned, not raised
    assert (missing["status"], missing["text"]) == (404, "no such thing")
    with pytest.raises(ToolError, match="loopback"):  # the default tools do not allow loopback
        await http_get.call({"url": f"{base}/hello"}, ctx)


def test_tool_objects() -> None:
    assert http_get.name == "http_get" and http_get.side_effects is False
    assert http_request.name == "http_request" and http_request.side_effects is True
    assert http_get.parameters["type"] == "object"
    assert http_get.parameters["required"] == ["url"]
    assert http_get.parameters["properties"]["url"]["type"] == "string"
    assert set(http_request.parameters["properties"]["method"]["enum"]) == {"GET", "POST", "PUT", "PATCH", "DELETE",
                                                                            "HEAD"}
    assert http_get.description.startswith("Fetch a public http(s) URL")


async def test_redirect_chain_within_allowlist_is_followed(base: str) -> None:
    result = await fetch(f"{base}/chain/3", policy=LOCAL, max_redirects=3)
    assert result["status"] == 200 and result["text"] == "end of chain"
    assert result["url"] == f"{base}/chain/0"
    assert [hop["location"] for hop in result["redirects"]] == [f"{base}/chain/{n}" for n in (2, 1, 0)]
    assert [hop["status"] for hop in result["redirects"]] == [302, 302, 302]


async def test_too_many_redirects(base: str) -> None:
    with pytest.raises(HttpRefusedError, match="too many redirects"):
        await fetch(f"{base}/chain/4", policy=LOCAL, max_redirects=3)


@pytest.mark.parametrize(
    ("target", "reason"),
    [("http://169.254.169.254/latest/meta-data/", "link-local"), ("http://10.0.0.5/", "private"),
     ("http://0x7f000002/", "loopback"), ("file:///etc/passwd", "scheme")],
)
async def test_redirect_to_private_host_is_refused(base: str, target: str, reason: str, sent: list[str]) -> None:
    with pytest.raises(BlockedURLError) as info:
        await fetch(f"{base}/redirect?to={target}", policy=LOCAL)
    message = str(info.value)
    assert "redirect hop 1" in message and reason in message, message
    assert info.value.hop == 1
    assert [urlsplit(u).hostname for u in sent] == ["127.0.0.1"]  # the private host was never contacted


async def test_redirect_to_name_resolving_to_non_allowlisted_loopback(base: str, server: _Server,
                                                                      sent: list[str]) -> None:
    port = server.server_address[1]
    with pytest.raises(BlockedURLError, match=r"redirect hop 1 .* other\.test resolves to 127\.0\.0\.2, which is a "
                                              "loopback address"):
        await fetch(f"{base}/redirect?to=http://other.test:{port}/hello", policy=LOCAL)
    assert len(sent) == 1


async def test_303_turns_post_into_get_and_cross_origin_drops_credentials(base: str, server: _Server) -> None:
    port = server.server_address[1]
    result = await fetch(f"{base}/redirect?status=303&to=http://api.test:{port}/echo", method="POST",
                         json_body={"x": 1}, headers={"Authorization": "Bearer secret"}, policy=LOCAL)
    echo = json.loads(result["text"])
    assert echo == {"method": "GET", "body": "", "content_type": None, "authorization": None}
    kept = await fetch(f"{base}/redirect?status=307&to=/echo", method="POST", body="data",
                       headers={"Authorization": "Bearer secret"}, policy=LOCAL)
    assert json.loads(kept["text"])["method"] == "POST"
    assert json.loads(kept["text"])["body"] == "data"
    assert json.loads(kept["text"])["authorization"] == "Bearer secret"  # same origin keeps it


async def test_body_is_truncated_at_max_bytes(base: str) -> None:
    result = await fetch(f"{base}/big", policy=LOCAL, max_bytes=1000)
    assert result["truncated"] is True
    assert result["text"] == "a" * 1000
    full = await fetch(f"{base}/big", policy=LOCAL)
    assert full["truncated"] is False and len(full["text"]) == 50_000


@pytest.mark.parametrize("coding", ["gzip", "deflate", "deflate-raw"])
async def test_compressed_bodies_are_inflated(base: str, coding: str) -> None:
    result = await fetch(f"{base}/encoded?coding={coding}&size=5000", policy=LOCAL)
    assert result["text"] == "\0" * 5000 and result["truncated"] is False


async def test_compression_bomb_inflates_only_up_to_max_bytes(base: str) -> None:
    bomb = _encoded("gzip", 32 << 20)  # 32 MiB of zeros in ~32 KiB: one network read
    assert len(bomb) < 64 << 10
    tracemalloc.start()
    try:
        result = await fetch(f"{base}/encoded?coding=gzip&size={32 << 20}", policy=LOCAL, max_bytes=100_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["truncated"] is True and result["text"] == "\0" * 100_000
    assert peak < 4 << 20  # the body was inflated to the cap, not to 32 MiB


@pytest.mark.parametrize("coding", ["zstd", "br", "compress"])
async def test_content_codings_without_bounded_inflation_are_refused(base: str, coding: str) -> None:
    with pytest.raises(HttpRefusedError, match=f"content encoding '{coding}'"):
        await fetch(f"{base}/encoded?coding={coding}&size=10", policy=LOCAL)


@pytest.mark.parametrize("charset", ["zlib", "bz2", "rot13", "hex", "base64", "no-such-charset"])
async def test_charset_that_is_not_a_text_encoding_reads_as_utf8(base: str, charset: str) -> None:
    result = await fetch(f"{base}/charset?charset={charset}", policy=LOCAL)
    assert result["text"] == "hello"


async def test_disallowed_content_type_is_refused(base: str) -> None:
    with pytest.raises(HttpRefusedError, match="application/octet-stream"):
        await fetch(f"{base}/binary", policy=LOCAL)
    result = await fetch(f"{base}/binary", policy=LOCAL, content_types=("application/octet-stream",))
    assert result["status"] == 200


async def test_slow_endpoint_times_out(base: str) -> None:
    with pytest.raises(ToolError, match=r"timed out after 0\.3s"):
        await fetch(f"{base}/slow", policy=LOCAL, timeout=0.3)


async def test_host_header_is_the_original_name(base: str, server: _Server, sent: list[str]) -> None:
    port = server.server_address[1]
    result = await fetch(f"http://api.test:{port}/host", policy=LOCAL)
    assert result["text"] == f"api.test:{port}"
    assert result["url"] == f"http://api.test:{port}/host"
    assert sent == [f"http://127.0.0.1:{port}/host"]  # dialled by the vetted IP, not the name


async def test_https_sets_sni_to_the_original_name(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        seen.append(request)
        # Streamed, as client.send(..., stream=True) answers: the body is read raw, chunk by chunk.
        return httpx.Response(200, headers={"Content-Type": "text/plain"}, stream=httpx.ByteStream(b"ok"),
                              request=request)

    monkeypatch.setattr(httpx.AsyncClient, "send", send)
    policy = UrlPolicy(resolver=StubResolver(STUB_TABLE))
    result = await fetch("https://public.example/x", policy=policy)
    assert result["text"] == "ok"
    (request,) = seen
    assert str(request.url) == "https://93.184.216.34/x"
    assert request.headers["Host"] == "public.example"
    assert request.extensions["sni_hostname"] == "public.example"


async def test_bad_requests_are_refused() -> None:
    with pytest.raises(ToolError, match="method"):
        await fetch("http://93.184.216.34/", method="TRACE")
    with pytest.raises(ToolError, match="Host"):
        await fetch("http://93.184.216.34/", headers={"Host": "internal"})
    with pytest.raises(ToolError, match="not both"):
        await fetch("http://93.184.216.34/", method="POST", json_body={}, body="x")


def test_blocked_url_error_pickles() -> None:
    error = BlockedURLError("http://10.0.0.5/", "10.0.0.5 is a private address", hop=2)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.url, copy.reason, copy.hop) == (str(error), error.url, error.reason, 2)
    assert isinstance(copy, ToolError)
