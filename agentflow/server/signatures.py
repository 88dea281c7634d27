"""Webhook signatures, checked on the raw request body before anything parses it.

Two schemes:

* ``standard`` — `Standard Webhooks <https://www.standardwebhooks.com/>`_: headers ``webhook-id``,
  ``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` (space-separated ``v1,<base64>``
  entries, several while the sender rotates keys). The signature is HMAC-SHA256 over
  ``"{id}.{timestamp}.{body}"``; the timestamp must be within the tolerance of now (replays of old
  deliveries fail), and one ``v1`` entry must match.
* ``github`` — ``X-Hub-Signature-256: sha256=<hex>``, HMAC-SHA256 over the body alone (no timestamp:
  deduplicate by ``X-GitHub-Delivery``).

Secrets: ``whsec_`` + base64 (the Standard Webhooks form) is decoded; any other string is used as
its UTF-8 bytes (GitHub secrets always are). Every comparison is :func:`hmac.compare_digest`, and
every offered signature is compared, so the time taken does not depend on which one matched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping

STANDARD_PREFIX = "whsec_"
MIN_SECRET_BYTES = 16
"""Shorter secrets are refused as a configuration error (they can be guessed)."""
MAX_SIGNATURES = 8
"""At most this many entries in ``webhook-signature``; more is refused unchecked."""
MAX_SIGNATURE_HEADER = 2048
MAX_ID_LENGTH = 255
_ID = re.compile(rf"^[\x21-\x7e]{{1,{MAX_ID_LENGTH}}}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_GITHUB = re.compile(r"^sha256=([0-9a-fA-F]{64})$")


class SignatureError(Exception):
    """The request is not signed correctly; ``code`` says how (the server answers 401)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class SecretError(ValueError):
    """The configured secret is unusable (empty, too short, bad base64)."""


def decode_secret(value: str, *, scheme: str = "standard") -> bytes:
    """The HMAC key of a configured secret: ``whsec_<base64>`` decoded (standard scheme), otherwise the
    string's UTF-8 bytes. Surrounding whitespace is ignored. Raises :class:`SecretError`."""
    value = value.strip()
    if scheme == "standard" and value.startswith(STANDARD_PREFIX):
        encoded = value[len(STANDARD_PREFIX):]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise SecretError(f"a {STANDARD_PREFIX} secret must be base64 after the prefix") from None
    else:
        key = value.encode("utf-8")
    if len(key) < MIN_SECRET_BYTES:
        raise SecretError(f"the secret is {len(key)} bytes; use at least {MIN_SECRET_BYTES}")
    return key


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


# -- Standard Webhooks ------------------------------------------------------------------------------------


def standard_signature(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    """The raw HMAC-SHA256 of ``"{msg_id}.{timestamp}.{body}"``."""
    return hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign_standard(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` entry for a delivery: ``v1,<base64>``."""
    return "v1," + base64.b64encode(standard_signature(secret, msg_id, timestamp, body)).decode("ascii")


def verify_standard(secret: bytes, headers: Mapping[str, str], body: bytes, *, tolerance_s: float = 300.0,
                    now: float | None = None) -> str:
    """Check a Standard Webhooks delivery; return its ``webhook-id``. Raises :class:`SignatureError`."""
    found = _lower(headers)
    msg_id = found.get("webhook-id", "")
    stamp = found.get("webhook-timestamp", "").strip()
    offered = found.get("webhook-signature", "")
    if not msg_id or not stamp or not offered.strip():
        raise SignatureError("missing_signature", "missing webhook-id, webhook-timestamp or webhook-signature "
                             "header")
    if not _ID.match(msg_id):
        raise SignatureError("invalid_signature", f"webhook-id must be 1 to {MAX_ID_LENGTH} visible ASCII "
                             "characters")
    if not _TIMESTAMP.match(stamp):
        raise SignatureError("invalid_timestamp", "webhook-timestamp must be Unix time in whole seconds")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError("timestamp_out_of_range", f"webhook-timestamp is more than {tolerance_s:g} s from "
                             "the server's clock")
    entries = offered.split() if len(offered) <= MAX_SIGNATURE_HEADER else None
    if entries is None or len(entries) > MAX_SIGNATURES:
        raise SignatureError("too_many_signatures", f"webhook-signature may hold at most {MAX_SIGNATURES} "
                             "signatures")
    expected = standard_signature(secret, msg_id, timestamp, body)
    matched = False
    for entry in entries:
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue  # other schemes (v1a: asymmetric) are not used here
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("invalid_signature", "no webhook-signature entry matches")
    return msg_id


# -- GitHub -------------------------------------------------------------------------------------------------


def sign_github(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_github(secret: bytes, headers: Mapping[str, str], body: bytes) -> None:
    """Check ``X-Hub-Signature-256``. Raises :class:`SignatureError`."""
    offered = _lower(headers).get("x-hub-signature-256", "").strip()
    if not offered:
        raise SignatureError("missing_signature", "missing X-Hub-Signature-256 header")
    match = _GITHUB.match(offered)
    if match is None:
        raise SignatureError("invalid_signature", "X-Hub-Signature-256 must be sha256=<64 hex digits>")
    expected = hmac.new(secret, body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, bytes.fromhex(match.group(1))):
        raise SignatureError("invalid_signature", "X-Hub-Signature-256 does not match")


__all__ = ["MAX_SIGNATURES", "MIN_SECRET_BYTES", "STANDARD_PREFIX", "SecretError", "SignatureError",
           "decode_secret", "sign_github", "sign_standard", "standard_signature", "verify_github",
           "verify_standard"]
