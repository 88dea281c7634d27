"""Webhook signatures (agentflow.server.signatures) against the independent ``standardwebhooks``
library, and GitHub's X-Hub-Signature-256 against the example in GitHub's documentation."""

from __future__ import annotations

import base64
import hmac
import time
from datetime import datetime, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from agentflow.server import signatures
from agentflow.server.signatures import (
    MAX_SIGNATURES,
    SecretError,
    SignatureError,
    decode_secret,
    sign_github,
    sign_standard,
    verify_github,
    verify_standard,
)

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()
BODY = b'{"event": "push", "n": 1}'


def lib_headers(secret: str | bytes, body: bytes, *, msg_id: str = "msg_1", at: float | None = None) -> dict[str, str]:
    """Headers as a Standard Webhooks sender makes them, signed by the reference library."""
    stamp = int(time.time() if at is None else at)
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(stamp, tz=timezone.utc), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}


def code_of(secret: bytes, headers: dict[str, str], body: bytes = BODY, **kw: float) -> str:
    with pytest.raises(SignatureError) as caught:
        verify_standard(secret, headers, body, **kw)
    return caught.value.code


# -- secrets -----------------------------------------------------------------------------------------------


def test_whsec_secret_is_base64_decoded_like_the_library() -> None:
    assert decode_secret(SECRET) == b"0123456789abcdef0123456789abcdef"
    assert decode_secret(SECRET.rstrip("=") + "\n") == b"0123456789abcdef0123456789abcdef"  # unpadded, newline
    assert decode_secret(SECRET) == Webhook(SECRET)._whsecret


def test_other_secrets_are_their_utf8_bytes() -> None:
    assert decode_secret("a plain shared secret") == b"a plain shared secret"
    assert decode_secret(SECRET, scheme="github") == SECRET.encode()  # GitHub secrets are never decoded


@pytest.mark.parametrize("bad", ["short", "whsec_" + base64.b64encode(b"too short").decode(), "whsec_not*base64!",
                                 "   "])
def test_unusable_secrets_are_refused(bad: str) -> None:
    with pytest.raises(SecretError):
        decode_secret(bad)


# -- Standard Webhooks ---------------------------------------------------------------------------------------


def test_library_signed_delivery_verifies_and_gives_its_id() -> None:
    headers = lib_headers(SECRET, BODY, msg_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")
    assert verify_standard(decode_secret(SECRET), headers, BODY) == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    upper = {name.title(): value for name, value in headers.items()}  # header names are case-insensitive
    assert verify_standard(decode_secret(SECRET), upper, BODY) == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"


def test_our_signature_is_the_library_signature_and_it_verifies_ours() -> None:
    stamp = int(time.time())
    ours = sign_standard(decode_secret(SECRET), "msg_9", stamp, BODY)
    theirs = Webhook(SECRET).sign("msg_9", datetime.fromtimestamp(stamp, tz=timezone.utc), BODY.decode())
    assert ours == theirs
    headers = {"webhook-id": "msg_9", "webhook-timestamp": str(stamp), "webhook-signature": ours}
    assert Webhook(SECRET).verify(BODY, headers) == {"event": "push", "n": 1}
    raw = b"a raw secret, not base64!"
    assert sign_standard(raw, "m", stamp, BODY) == Webhook(raw).sign(
        "m", datetime.fromtimestamp(stamp, tz=timezone.utc), BODY.decode())


def test_tampered_body_wrong_secret_and_changed_id_fail() -> None:
    key = decode_secret(SECRET)
    headers = lib_headers(SECRET, BODY)
    assert code_of(key, headers, BODY.replace(b"1", b"2")) == "invalid_signature"
    assert code_of(key, headers, BODY + b" ") == "invalid_signature"
    assert code_of(decode_secret(OTHER), headers) == "invalid_signature"
    assert code_of(key, {**headers, "webhook-id": "msg_2"}) == "invalid_signature"
    with pytest.raises(WebhookVerificationError):  # the library agrees
        Webhook(SECRET).verify(BODY.replace(b"1", b"2"), headers)


def test_timestamp_must_be_within_tolerance_both_ways() -> None:
    key = decode_secret(SECRET)
    now = 1_700_000_000.0
    for offset in (-300, 0, 300):
        assert verify_standard(key, lib_headers(SECRET, BODY, at=now + offset), BODY, now=now) == "msg_1"
    for offset in (-301, 301, -86_400):
        assert code_of(key, lib_headers(SECRET, BODY, at=now + offset), now=now) == "timestamp_out_of_range"
    assert code_of(key, lib_headers(SECRET, BODY, at=now - 60), now=now, tolerance_s=30) == "timestamp_out_of_range"
    stale = lib_headers(SECRET, BODY, at=time.time() - 600)
    with pytest.raises(WebhookVerificationError):  # the library agrees
        Webhook(SECRET).verify(BODY, stale)
    assert code_of(key, stale) == "timestamp_out_of_range"


@pytest.mark.parametrize("stamp", ["", "12.5", "-5", "1e9", "abc", "9" * 13])
def test_malformed_timestamps_are_refused(stamp: str) -> None:
    headers = {**lib_headers(SECRET, BODY), "webhook-timestamp": stamp}
    assert code_of(decode_secret(SECRET), headers) in {"invalid_timestamp", "missing_signature"}


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_header_is_required(missing: str) -> None:
    headers = lib_headers(SECRET, BODY)
    del headers[missing]
    assert code_of(decode_secret(SECRET), headers) == "missing_signature"


def test_id_must_be_visible_ascii() -> None:
    key = decode_secret(SECRET)
    stamp = int(time.time())
    for bad in ("msg 1", "x" * 256):
        headers = {"webhook-id": bad, "webhook-timestamp": str(stamp),
                   "webhook-signature": sign_standard(key, bad, stamp, BODY)}
        assert code_of(key, headers) == "invalid_signature"


def test_several_signatures_for_key_rotation() -> None:
    old, new = decode_secret(OTHER), decode_secret(SECRET)
    stamp = int(time.time())
    both = f"{sign_standard(old, 'msg_1', stamp, BODY)} {sign_standard(new, 'msg_1', stamp, BODY)}"
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(stamp), "webhook-signature": both}
    assert verify_standard(new, headers, BODY) == "msg_1"
    assert verify_standard(old, headers, BODY) == "msg_1"
    assert Webhook(SECRET).verify(BODY, headers) and Webhook(OTHER).verify(BODY, headers)  # the library agrees
    # other versions and garbage entries are skipped, not fatal
    noisy = f"v1a,c2lnbmF0dXJl v1,%%%notbase64 v2,{sign_standard(new, 'msg_1', stamp, BODY)[3:]} " \
            f"{sign_standard(new, 'msg_1', stamp, BODY)}"
    assert verify_standard(new, {**headers, "webhook-signature": noisy}, BODY) == "msg_1"
    only_wrong = f"v1a,{sign_standard(new, 'msg_1', stamp, BODY)[3:]} {sign_standard(old, 'msg_1', stamp, BODY)}"
    third = decode_secret("whsec_" + base64.b64encode(b"a third secret nobody signs with").decode())
    assert code_of(third, {**headers, "webhook-signature": only_wrong}) == "invalid_signature"


def test_signature_list_is_bounded() -> None:
    key = decode_secret(SECRET)
    stamp = int(time.time())
    good = sign_standard(key, "msg_1", stamp, BODY)
    filler = sign_standard(decode_secret(OTHER), "msg_1", stamp, BODY)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(stamp)}
    at_limit = " ".join([filler] * (MAX_SIGNATURES - 1) + [good])
    assert verify_standard(key, {**headers, "webhook-signature": at_limit}, BODY) == "msg_1"
    over = " ".join([filler] * MAX_SIGNATURES + [good])
    assert code_of(key, {**headers, "webhook-signature": over}) == "too_many_signatures"
    assert code_of(key, {**headers, "webhook-signature": good + " " * 5000}) == "too_many_signatures"


def test_every_offered_signature_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signatures.hmac, "compare_digest", spy)
    key, stamp = decode_secret(SECRET), int(time.time())
    good = sign_standard(key, "msg_1", stamp, BODY)
    wrong = sign_standard(decode_secret(OTHER), "msg_1", stamp, BODY)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(stamp), "webhook-signature": f"{good} {wrong} {wrong}"}
    assert verify_standard(key, headers, BODY) == "msg_1"
    assert len(compared) == 3  # no early exit after the match
    verify_github(b"It's a Secret to Everybody", {"X-Hub-Signature-256": sign_github(
        b"It's a Secret to Everybody", b"x")}, b"x")
    assert len(compared) == 4


# -- GitHub ----------------------------------------------------------------------------------------------------

GITHUB_SECRET = b"It's a Secret to Everybody"
GITHUB_EXAMPLE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_github_documentation_example() -> None:
    assert sign_github(GITHUB_SECRET, b"Hello, World!") == GITHUB_EXAMPLE
    verify_github(GITHUB_SECRET, {"x-hub-signature-256": GITHUB_EXAMPLE}, b"Hello, World!")
    verify_github(GITHUB_SECRET, {"X-Hub-Signature-256": GITHUB_EXAMPLE.upper().replace("SHA256", "sha256")},
                  b"Hello, World!")


@pytest.mark.parametrize(("headers", "body", "code"), [
    ({"x-hub-signature-256": GITHUB_EXAMPLE}, b"Hello, World?", "invalid_signature"),
    ({"x-hub-signature-256": GITHUB_EXAMPLE[:-1] + "f"}, b"Hello, World!", "invalid_signature"),
    ({"x-hub-signature-256": "sha1=" + GITHUB_EXAMPLE[7:]}, b"Hello, World!", "invalid_signature"),
    ({"x-hub-signature-256": GITHUB_EXAMPLE[7:]}, b"Hello, World!", "invalid_signature"),
    ({"x-hub-signature-256": "sha256=zz" + GITHUB_EXAMPLE[9:]}, b"Hello, World!", "invalid_signature"),
    ({"x-hub-signature": "sha1=0123"}, b"Hello, World!", "missing_signature"),
    ({}, b"Hello, World!", "missing_signature"),
], ids=["tampered", "wrong-digest", "sha1", "no-prefix", "not-hex", "legacy-header-only", "none"])
def test_github_refusals(headers: dict[str, str], body: bytes, code: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify_github(GITHUB_SECRET, headers, body)
    assert caught.value.code == code
