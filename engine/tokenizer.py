"""Tokenizer, chat template, incremental detokenization and stop strings.

``Tokenizer`` wraps a transformers tokenizer for loading and the chat template, and encodes and
decodes through its Rust backend directly (read-only calls, safe from several threads at once).

``OutputText`` turns one request's output tokens into text as they arrive:

* *Incremental detokenization.* Each new token is decoded together with a few tokens before it
  (so tokenizers that drop a leading space at the start of a decode still get it right), and the
  new text is released only once it no longer ends in U+FFFD, i.e. once a multi-byte UTF-8
  character split across tokens is complete.
* *Stop strings* are searched in the text (so they match across token boundaries); the tail of
  the text that could still become a stop string is held back until it cannot.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import InvalidRequestError, ModelLoadError

log = logging.getLogger(__name__)

_CONTEXT_TOKENS = 5
"""Prompt tokens decoded before the first output token, for the leading-space rule."""


def _byte_alphabet() -> dict[str, int]:
    """Byte-level BPE's spelling of bytes: the printable Latin-1 bytes stand for themselves, every other
    byte for the character 256 + its rank among them (the GPT-2 convention)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    alphabet = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            alphabet[chr(256 + extra)] = b
            extra += 1
    return alphabet


_UNICODE_TO_BYTE = _byte_alphabet()
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class Tokenizer:
    def __init__(self, path: str | Path) -> None:
        from transformers import AutoTokenizer  # heavy import, only when a tokenizer is needed

        self.path = Path(path)
        try:
            self.hf = AutoTokenizer.from_pretrained(str(path))
        except Exception as e:  # transformers raises OSError, ValueError, ... depending on version
            raise ModelLoadError(f"cannot load a tokenizer from {path}: {e}", field="tokenizer") from e
        self._backend = getattr(self.hf, "backend_tokenizer", None)
        self.vocab_size = len(self.hf)
        self.special_ids = frozenset(self.hf.all_special_ids)
        self.eos_token_ids = self._eos_ids()

    @staticmethod
    def find(path: Path) -> bool:
        """Does ``path`` hold tokenizer files?"""
        return any((path / name).is_file() for name in
                   ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json"))

    def _eos_ids(self) -> tuple[int, ...]:
        """EOS as generation_config.json says (what ``generate`` stops on); else the tokenizer's."""
        for name in ("generation_config.json", "config.json"):
            file = self.path / name
            if file.is_file():
                try:
                    value = json.loads(file.read_text()).get("eos_token_id")
                except (OSError, json.JSONDecodeError):
                    continue
                if value is not None:
                    return (value,) if isinstance(value, int) else tuple(value)
        eos = self.hf.eos_token_id
        return (eos,) if eos is not None else ()

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        if self._backend is not None:
            return list(self._backend.encode(text, add_special_tokens=add_special_tokens).ids)
        return list(self.hf.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        if self._backend is not None:
            return str(self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens))
        return str(self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for, even when they are part of a character (which ``decode`` of the
        token alone shows as U+FFFD). Byte-level BPE (GPT-2, Llama 3, Qwen) spells each byte as a printable
        character; SentencePiece (Llama 2, Mistral) writes ``▁`` for a space and ``<0xNN>`` for a raw byte;
        an added or special token is its text."""
        piece = self.hf.convert_ids_to_tokens(token_id)
        if not isinstance(piece, str):
            return b""
        if token_id in self.special_ids or piece in self._added:
            return piece.encode()
        raw = _BYTE_TOKEN.fullmatch(piece)
        if raw is not None:
            return bytes([int(raw.group(1), 16)])
        if all(c in _UNICODE_TO_BYTE for c in piece) and not self._sentencepiece:
            return bytes(_UNICODE_TO_BYTE[c] for c in piece)
        return piece.replace("\u2581", " ").encode()

    @functools.cached_property
    def _added(self) -> frozenset[str]:
        return frozenset(getattr(self.hf, "get_added_vocab", dict)())

    @functools.cached_property
    def _sentencepiece(self) -> bool:
        """Whether pieces mark spaces with ``▁`` (SentencePiece) rather than spell bytes (byte-level BPE)."""
        space = self.encode(" a b", add_special_tokens=False)
        return any("\u2581" in str(self.hf.convert_ids_to_tokens(t)) for t in space)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.hf, "chat_template", None))

    def apply_chat_template(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
                            add_generation_prompt: bool = True, **kwargs: Any) -> str:
        """Render ``messages`` (and ``tools``, OpenAI function format) with the model's template."""
        if not self.has_chat_template:
            raise InvalidRequestError(f"the tokenizer at {self.path} has no chat template; "
                                      "send a prompt instead of messages", field="messages")
        try:
            text = self.hf.apply_chat_template(messages, tools=tools, tokenize=False,  # type: ignore[arg-type]
                                               add_generation_prompt=add_generation_prompt, **kwargs)
        except Exception as e:  # jinja2 errors, template raise_exception(), bad message shapes
            raise InvalidRequestError(f"chat template failed: {e}", field="messages") from e
        return str(text)

    def encode_chat(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
                    **kwargs: Any) -> list[int]:
        # The rendered template already holds BOS and role markers: add no special tokens.
        return self.encode(self.apply_chat_template(messages, tools=tools, **kwargs),
                           add_special_tokens=False)


class IncrementalDetokenizer:
    """Decodes tokens one at a time; never releases half a UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int], *, skip_special_tokens: bool) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._ids = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._prefix = 0  # start of the window decoded for context
        self._read = len(self._ids)  # end of what has been released

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        return self._release(final=False)

    def flush(self) -> str:
        """Whatever is left at the end (an incomplete character decodes to U+FFFD here)."""
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        before = self._tok.decode(self._ids[self._prefix:self._read], skip_special_tokens=self._skip)
        after = self._tok.decode(self._ids[self._prefix:], skip_special_tokens=self._skip)
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        # Keep the window short: the tokens since `_prefix` are all we decode next time.
        if self._prefix > 0:
            del self._ids[: self._prefix]
            self._read -= self._prefix
            self._prefix = 0
        return after[len(before):]


class OutputText:
    """One request's output text: detokenized incrementally, cut at stop strings, released safely."""

    def __init__(self, detok: IncrementalDetokenizer, stop: Sequence[str] = (),
                 include_stop: bool = False) -> None:
        self._detok = detok
        self._stop = tuple(stop)
        self._include_stop = include_stop
        self._longest_stop = max((len(s) for s in self._stop), default=0)
        self.text = ""
        self._released = 0

    def push(self, token_id: int) -> str | None:
        """Add a token; returns the stop string if the text now contains one (text is cut there)."""
        return self._extend(self._detok.push(token_id))

    def finish(self) -> None:
        """Generation ended without a stop string: take the detokenizer's remainder."""
        self._extend(self._detok.flush())

    def _extend(self, delta: str) -> str | None:
        if not delta:
            return None
        search_from = max(0, len(self.text) - self._longest_stop + 1)
        self.text += delta
        hit, hit_at = None, len(self.text)
        for s in self._stop:
            i = self.text.find(s, search_from)
            if i != -1 and i < hit_at:
                hit, hit_at = s, i
        if hit is not None:
            self.text = self.text[: hit_at + (len(hit) if self._include_stop else 0)]
        return hit

    def release(self, *, final: bool) -> str:
        """Text that is now safe to send: all of it at the end, else all but a possible stop prefix."""
        end = len(self.text) if final else len(self.text) - self._held_back()
        out = self.text[self._released:end]
        self._released = max(self._released, end)
        return out

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        best = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:n]):
                    best = n
                    break
        return best
