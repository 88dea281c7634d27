"""Tool calls written in model text, Hermes / Qwen2.5 style.

Qwen2.5's chat template (and the Hermes format it copies) asks the model to answer a tool call as::

    Let me look that up.
    <tool_call>
    {"name": "search", "arguments": {"query": "weather in Paris"}}
    </tool_call>

:func:`parse_tool_calls` splits such text into the plain content and the calls. A block whose
JSON does not parse, or parses to something that is not a call, is **not** a call: it is logged
as a warning and left in the content verbatim, so nothing the model wrote is lost and the
orchestrator can show it (or ask the model again). A final block without its closing tag (the
model stopped at a stop string or ran out of tokens right after the JSON) counts when its JSON is
complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid
from typing import Any

from agentflow.llm.base import ToolCallRequest

log = logging.getLogger(__name__)

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN_TAG) + r"(.*?)(?:" + re.escape(CLOSE_TAG) + r"|\Z)", re.DOTALL)


def new_call_id() -> str:
    """An id in OpenAI's shape (``call_`` + 24 hex digits), unique across turns and runs."""
    return "call_" + uuid.uuid4().hex[:24]


def parse_tool_calls(text: str) -> tuple[str, list[ToolCallRequest]]:
    """Return ``(content, calls)``: the text with every well-formed ``<tool_call>`` block removed
    (stripped; usually just what came before the first call), and the calls in order.

    A call is a JSON object with a string ``name`` and an object ``arguments`` (a JSON string
    holding an object, ``parameters`` instead of ``arguments``, or no arguments at all are
    accepted too). Malformed blocks stay in the content; see the module docstring.
    """
    if OPEN_TAG not in text:
        return text, []
    calls: list[ToolCallRequest] = []
    kept: list[str] = []
    pos = 0
    for match in _BLOCK.finditer(text):
        call = _parse_block(match.group(1))
        if call is None:
            continue
        kept.append(text[pos:match.start()])
        pos = match.end()
        calls.append(call)
    kept.append(text[pos:])
    content = "".join(kept).strip() if calls else text
    return content, calls


def _parse_block(body: str) -> ToolCallRequest | None:
    try:
        data: Any = json.loads(body)
    except json.JSONDecodeError as e:
        log.warning("ignoring a <tool_call> block that is not valid JSON (%s): %.200r", e, body)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        log.warning("ignoring a <tool_call> block without a string \"name\": %.200r", body)
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):  # some models double-encode the arguments
        with contextlib.suppress(json.JSONDecodeError):  # if not JSON: reported below, not an object
            arguments = json.loads(arguments) if arguments.strip() else {}
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        log.warning("ignoring a <tool_call> block whose \"arguments\" is not a JSON object: %.200r", body)
        return None
    return ToolCallRequest(id=new_call_id(), name=data["name"], arguments=arguments)


__all__ = ["new_call_id", "parse_tool_calls"]
