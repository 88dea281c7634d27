"""LLM backends behind one protocol.

- :class:`LocalEngine`: the in-process engine (``engine``), imported only on first use, so this
  package imports without torch.
- :class:`OpenAICompatible`: any OpenAI-compatible ``/chat/completions`` server, over httpx.

:func:`resolve_llm` turns a configuration string into a backend.
"""

from __future__ import annotations

import os
import re
from typing import Any

from agentflow.llm.base import (
    LLM,
    Constraint,
    LLMError,
    LLMRequest,
    LLMResult,
    StreamItem,
    TextDelta,
    ToolCallDelta,
    ToolCallReady,
    ToolCallRequest,
    generate,
)
from agentflow.llm.local import LocalEngine
from agentflow.llm.openai_compat import LLMStatusError, OpenAICompatible

OPENAI_BASE_URL = "https://api.openai.com/v1"
_OPENAI_SPEC = re.compile(r"openai:(?P<model>[^@]*?)(?:@(?P<url>https?://.+))?")


def resolve_llm(spec: str, **options: Any) -> LLM:
    """The backend a configuration string names; ``options`` go to its constructor.

    ==================================  ====================================================
    ``demo``                            ``LocalEngine("demo")``: the built-in demo model
    ``local:<name or path>``            ``LocalEngine(<name or path>)``
    a path (``/``, ``./``, ``../``,     ``LocalEngine(<path>)``: a Hugging Face checkpoint
    ``~`` or an existing directory)     directory
    ``openai:<model>@<base_url>``       ``OpenAICompatible(<base_url>, model=<model>)``,
                                        e.g. ``openai:qwen2.5-7b@http://localhost:8000/v1``
    ``openai:<model>``                  the same at ``https://api.openai.com/v1``
    ``http(s)://<base_url>``            ``OpenAICompatible(<base_url>)`` (the server's model)
    ==================================  ====================================================

    ``base_url`` ends where ``/chat/completions`` is appended (usually ``/v1``). Anything else
    raises ``ValueError``.
    """
    spec = spec.strip()
    if spec == "demo":
        return LocalEngine("demo", **options)
    if spec.startswith("local:") and spec[6:]:
        return LocalEngine(spec[6:], **options)
    if spec.startswith(("http://", "https://")):
        return OpenAICompatible(spec, **options)
    match = _OPENAI_SPEC.fullmatch(spec)
    if match:
        return OpenAICompatible(match["url"] or OPENAI_BASE_URL, model=match["model"] or None, **options)
    if spec.startswith(("/", "./", "../", "~")) or (spec and os.path.isdir(spec)):
        return LocalEngine(spec, **options)
    raise ValueError(f"unknown LLM spec {spec!r}: expected 'demo', 'local:<name or path>', a checkpoint path, "
                     "'openai:<model>[@<base_url>]' or an http(s):// base URL")


__all__ = [
    "LLM",
    "Constraint",
    "LLMError",
    "LLMRequest",
    "LLMResult",
    "LLMStatusError",
    "LocalEngine",
    "OpenAICompatible",
    "StreamItem",
    "TextDelta",
    "ToolCallDelta",
    "ToolCallReady",
    "ToolCallRequest",
    "generate",
    "resolve_llm",
]
