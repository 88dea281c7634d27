"""parse_tool_calls: Hermes / Qwen2.5 ``<tool_call>`` blocks in model text."""

from __future__ import annotations

import json
import logging
import re

import pytest

from agentflow.llm.toolcalls import new_call_id, parse_tool_calls


def test_no_calls_returns_the_text_unchanged() -> None:
    assert parse_tool_calls("  just an answer\n") == ("  just an answer\n", [])
    assert parse_tool_calls("") == ("", [])


def test_one_call_as_qwen_writes_it() -> None:
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>'
    content, calls = parse_tool_calls(text)
    assert content == ""
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris", "days": 3})]
    assert re.fullmatch(r"call_[0-9a-f]{24}", calls[0].id)


def test_text_before_the_call_is_the_content() -> None:
    text = 'Let me check.\n<tool_call>\n{"name": "search", "arguments": {"q": "x"}}\n</tool_call>'
    content, calls = parse_tool_calls(text)
    assert content == "Let me check."
    assert calls[0].name == "search"


def test_several_calls_keep_their_order_and_get_distinct_ids() -> None:
    text = "".join(f'<tool_call>\n{{"name": "f{i}", "arguments": {{"i": {i}}}}}\n</tool_call>\n' for i in range(3))
    content, calls = parse_tool_calls(text)
    assert content == ""
    assert [(c.name, c.arguments) for c in calls] == [("f0", {"i": 0}), ("f1", {"i": 1}), ("f2", {"i": 2})]
    assert len({c.id for c in calls}) == 3


def test_nested_json_and_braces_inside_strings() -> None:
    args = {"filter": {"and": [{"tag": "a"}, {"not": {"tag": "}b{"}}]}, "limit": None, "ok": True}
    text = '<tool_call>{"name": "query", "arguments": ' + _json(args) + "}</tool_call>"
    assert parse_tool_calls(text)[1][0].arguments == args


def test_unicode_names_and_arguments() -> None:
    text = ('好的。\n<tool_call>\n{"name": "traduire", '
            '"arguments": {"texte": "héllo wörld 你好 🙂", "to": "\\u00e9"}}\n</tool_call>')
    content, calls = parse_tool_calls(text)
    assert content == "好的。"
    assert calls[0].arguments == {"texte": "héllo wörld 你好 🙂", "to": "é"}


def test_malformed_block_is_skipped_kept_in_content_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = '<tool_call>\n{"name": "broken", "arguments": {"a": 1}\n</tool_call>'
    good = '<tool_call>\n{"name": "fine", "arguments": {}}\n</tool_call>'
    with caplog.at_level(logging.WARNING, logger="agentflow.llm.toolcalls"):
        content, calls = parse_tool_calls(f"Trying.\n{bad}\n{good}")
    assert [c.name for c in calls] == ["fine"]
    assert content == f"Trying.\n{bad}"
    assert "not valid JSON" in caplog.text


def test_only_malformed_blocks_leave_the_text_untouched() -> None:
    text = "<tool_call>not json</tool_call>"
    assert parse_tool_calls(text) == (text, [])


@pytest.mark.parametrize("body", ['["name", "f"]', '{"arguments": {}}', '{"name": "", "arguments": {}}',
                                  '{"name": "f", "arguments": [1, 2]}', '{"name": "f", "arguments": "nope"}'])
def test_json_that_is_not_a_call_is_skipped(body: str) -> None:
    assert parse_tool_calls(f"<tool_call>{body}</tool_call>")[1] == []


def test_lenient_argument_forms() -> None:
    text = ('<tool_call>{"name": "a", "arguments": "{\\"x\\": 1}"}</tool_call>'  # double-encoded
            '<tool_call>{"name": "b", "parameters": {"y": 2}}</tool_call>'  # Llama-style key
            '<tool_call>{"name": "c"}</tool_call>')  # no arguments
    assert [(c.name, c.arguments) for c in parse_tool_calls(text)[1]] == [("a", {"x": 1}), ("b", {"y": 2}), ("c", {})]


def test_unclosed_last_block_counts_when_its_json_is_complete() -> None:
    content, calls = parse_tool_calls('Ok.\n<tool_call>\n{"name": "f", "arguments": {"k": "v"}}\n')
    assert content == "Ok." and calls[0].arguments == {"k": "v"}
    truncated = 'Ok.\n<tool_call>\n{"name": "f", "argu'
    assert parse_tool_calls(truncated) == (truncated, [])


def test_new_call_ids_are_unique() -> None:
    assert len({new_call_id() for _ in range(1000)}) == 1000


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)
