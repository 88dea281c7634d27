"""Workspace file tools: round trips, caps, and every way out of the workspace refused."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agentflow.tool import Tool, ToolContext, ToolError
from tools import files
from tools.files import default_workspace, file_tools, make_file_tools

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


CTX = ToolContext(run_id="r", node_id="n", attempt=1, call_id="c")


def by_name(tools: list[Tool]) -> dict[str, Tool]:
    return {t.name: t for t in tools}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "a.txt").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (root / "docs" / "b.md").write_text("# B\n", encoding="utf-8")
    (root / "docs" / "c.py").write_text("print(1)", encoding="utf-8")
    (root / "docs" / "deep" / "d.py").write_text("", encoding="utf-8")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key.txt").write_text("TOP SECRET", encoding="utf-8")
    return root


@pytest.fixture
def tools(workspace: Path) -> dict[str, Tool]:
    return by_name(make_file_tools(workspace))


async def call(tool: Tool, **arguments: Any) -> Any:
    return await tool.call(arguments, CTX)


async def test_the_tools_and_their_flags(tools: dict[str, Tool], workspace: Path) -> None:
    assert list(tools) == ["read_file", "list_files", "write_file"]
    assert not tools["read_file"].side_effects and not tools["list_files"].side_effects
    assert tools["write_file"].side_effects
    assert "workspace root" in tools["read_file"].parameters["properties"]["path"]["description"]
    assert list(by_name(make_file_tools(workspace, read_only=True))) == ["read_file", "list_files"]


async def test_read_whole_file_and_line_ranges(tools: dict[str, Tool]) -> None:
    read = tools["read_file"]
    whole = await call(read, path="a.txt")
    assert whole == {"path": "a.txt", "size": 14, "total_lines": 3, "start_line": 1, "end_line": 3,
                     "content": "one\ntwo\nthree\n"}
    part = await call(read, path="a.txt", offset=2, limit=1)
    assert (part["content"], part["start_line"], part["end_line"]) == ("two\n", 2, 2)
    assert (await call(read, path="./docs/../docs/c.py"))["content"] == "print(1)"  # no trailing newline kept as is
    empty = await call(read, path="docs/deep/d.py")
    assert (empty["content"], empty["total_lines"], empty["end_line"]) == ("", 0, 0)
    with pytest.raises(ToolError, match="past the end"):
        await call(read, path="a.txt", offset=9)
    with pytest.raises(ToolError, match="offset must be 1 or more"):
        await call(read, path="a.txt", offset=0)


async def test_read_errors(tools: dict[str, Tool], workspace: Path) -> None:
    read = tools["read_file"]
    with pytest.raises(ToolError, match="not found"):
        await call(read, path="nope.txt")
    with pytest.raises(ToolError, match="is a directory"):
        await call(read, path="docs")
    with pytest.raises(ToolError, match="workspace directory itself"):
        await call(read, path=".")
    (workspace / "blob.bin").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ToolError, match="not UTF-8 text"):
        await call(read, path="blob.bin")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
async def test_a_fifo_is_refused_without_hanging(tools: dict[str, Tool], workspace: Path) -> None:
    os.mkfifo(workspace / "pipe")
    with pytest.raises(ToolError, match="not a regular file"):
        await call(tools["read_file"], path="pipe")
    with pytest.raises(ToolError, match=r"cannot write|not a regular file"):
        await call(tools["write_file"], path="pipe", content="x")


async def test_size_caps(workspace: Path) -> None:
    tools = by_name(make_file_tools(workspace, max_read_bytes=10, max_write_bytes=8))
    with pytest.raises(ToolError, match="too large"):
        await call(tools["read_file"], path="a.txt")  # 14 bytes
    assert (await call(tools["read_file"], path="docs/b.md"))["content"] == "# B\n"
    with pytest.raises(ToolError, match="too large"):
        await call(tools["write_file"], path="big.txt", content="123456789")
    with pytest.raises(ToolError, match="too large"):  # counted in UTF-8 bytes, not characters
        await call(tools["write_file"], path="big.txt", content="ééééé")
    assert not (workspace / "big.txt").exists()
    await call(tools["write_file"], path="log.txt", content="12345")
    with pytest.raises(ToolError, match="larger than 8 bytes"):
        await call(tools["write_file"], path="log.txt", content="6789", append=True)
    assert (workspace / "log.txt").read_text() == "12345"


async def test_write_round_trip(tools: dict[str, Tool], workspace: Path) -> None:
    write, read = tools["write_file"], tools["read_file"]
    first = await call(write, path="out/new/report.md", content="héllo ✓\n")
    assert first == {"path": "out/new/report.md", "bytes_written": 11, "appended": False, "created": True}
    assert (workspace / "out" / "new" / "report.md").read_text(encoding="utf-8") == "héllo ✓\n"
    await call(write, path="out/new/report.md", content="more\n", append=True)
    assert (await call(read, path="out/new/report.md"))["content"] == "héllo ✓\nmore\n"
    replaced = await call(write, path="out/new/report.md", content="x")
    assert replaced["created"] is False
    assert (await call(read, path="out/new/report.md"))["content"] == "x"
    with pytest.raises(ToolError, match="does not exist"):
        await call(write, path="missing/dir/f.txt", content="x", create_dirs=False)
    with pytest.raises(ToolError, match="is a directory"):
        await call(write, path="docs", content="x")
    with pytest.raises(ToolError, match="a file is in the way"):
        await call(write, path="a.txt/inner.txt", content="x")


async def test_write_creates_a_missing_workspace(tmp_path: Path) -> None:
    tools = by_name(make_file_tools(tmp_path / "fresh"))
    assert await call(tools["list_files"]) == {"directory": ".", "entries": [], "truncated": False}
    await call(tools["write_file"], path="a.txt", content="hi")
    assert (tmp_path / "fresh" / "a.txt").read_text() == "hi"


async def test_list_files(tools: dict[str, Tool]) -> None:
    ls = tools["list_files"]
    top = await call(ls)
    assert top == {"directory": ".", "truncated": False, "entries": [
        {"path": "a.txt", "type": "file", "size": 14}, {"path": "docs", "type": "dir"}]}
    everything = await call(ls, path="docs", recursive=True)
    assert [e["path"] for e in everything["entries"]] == ["docs/b.md", "docs/c.py", "docs/deep", "docs/deep/d.py"]
    assert everything["directory"] == "docs"
    python = await call(ls, recursive=True, pattern="*.py")
    assert [e["path"] for e in python["entries"]] == ["docs/c.py", "docs/deep/d.py"]
    nested = await call(ls, recursive=True, pattern="docs/deep/*")
    assert [e["path"] for e in nested["entries"]] == ["docs/deep/d.py"]
    with pytest.raises(ToolError, match="not found"):
        await call(ls, path="nope")
    with pytest.raises(ToolError, match="is a file"):
        await call(ls, path="a.txt")


async def test_list_files_caps_entries(workspace: Path) -> None:
    for i in range(12):
        (workspace / f"f{i:02}.txt").write_text("x")
    listing = await call(by_name(make_file_tools(workspace, max_entries=5))["list_files"])
    assert len(listing["entries"]) == 5 and listing["truncated"] is True
    assert listing["entries"][0]["path"] == "a.txt"


TRAVERSAL = [
    ("../secret/key.txt", "outside the workspace"),
    ("..", "outside the workspace"),
    ("a/../../secret/key.txt", "outside the workspace"),
    ("docs/../../secret/key.txt", "outside the workspace"),
    ("nonexistent/../../secret/key.txt", "outside the workspace"),
    ("/etc/passwd", "is absolute"),
    ("//etc/passwd", "is absolute"),
    ("~/.ssh/id_rsa", "home directory"),
    ("~", "home directory"),
    ("C:\\Windows\\win.ini", "Windows drive"),
    ("C:/x", "Windows drive"),
    ("c:x", "Windows drive"),
    ("\\\\server\\share\\x", "is absolute"),
    ("docs\\..\\..\\secret", "backslash"),
    ("a.txt\x00.png", "NUL byte"),
    ("", "path is empty"),
    ("   ", "path is empty"),
    ("x/" * 3000, "too long"),
    ("link_file", "outside the workspace"),
    ("link_dir/key.txt", "outside the workspace"),
    ("docs/link_up/secret/key.txt", "outside the workspace"),
]


@pytest.fixture
def escape_links(workspace: Path) -> None:
    secret = workspace.parent / "secret"
    (workspace / "link_file").symlink_to(secret / "key.txt")
    (workspace / "link_dir").symlink_to(secret, target_is_directory=True)
    (workspace / "docs" / "link_up").symlink_to("../..", target_is_directory=True)


@pytest.mark.usefixtures("escape_links")
@pytest.mark.parametrize(("path", "reason"), TRAVERSAL)
async def test_traversal_is_refused_by_every_tool(tools: dict[str, Tool], workspace: Path, path: str,
                                                  reason: str) -> None:
    with pytest.raises(ToolError, match=reason):
        await call(tools["read_file"], path=path)
    with pytest.raises(ToolError, match=reason):
        await call(tools["write_file"], path=path, content="pwned")
    with pytest.raises(ToolError, match=reason):
        await call(tools["list_files"], path=path)
    assert (workspace.parent / "secret" / "key.txt").read_text() == "TOP SECRET"
    assert sorted(p.name for p in (workspace.parent / "secret").iterdir()) == ["key.txt"]


@pytest.mark.usefixtures("escape_links")
async def test_symlinks_inside_the_workspace_work_and_are_listed_unfollowed(tools: dict[str, Tool],
                                                                          workspace: Path) -> None:
    (workspace / "alias.txt").symlink_to("a.txt")
    assert (await call(tools["read_file"], path="alias.txt"))["content"] == "one\ntwo\nthree\n"
    entries = {e["path"]: e["type"] for e in (await call(tools["list_files"]))["entries"]}
    assert entries["alias.txt"] == entries["link_dir"] == entries["link_file"] == "symlink"
    recursive = await call(tools["list_files"], recursive=True)  # does not descend into link_dir
    assert not any(e["path"].startswith("link_dir/") for e in recursive["entries"])


def test_workspace_resolve_allows_the_root_only_for_listing(workspace: Path) -> None:
    ws = files.Workspace(workspace)
    assert ws.resolve(".", allow_root=True) == workspace.resolve()
    assert ws.resolve("docs/../a.txt") == (workspace / "a.txt").resolve()
    with pytest.raises(ToolError, match="workspace directory itself"):
        ws.resolve("docs/..")


def test_default_workspace_and_lazy_file_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTFLOW_WORKSPACE", raising=False)
    assert default_workspace() == Path("workspace")
    monkeypatch.setenv("AGENTFLOW_WORKSPACE", str(tmp_path / "one"))
    assert default_workspace() == tmp_path / "one"
    first = file_tools()
    assert [t.name for t in first] == ["read_file", "list_files", "write_file"]
    assert file_tools()[0] is first[0]  # built once per workspace
    monkeypatch.setenv("AGENTFLOW_WORKSPACE", str(tmp_path / "two"))
    assert file_tools()[0] is not first[0]
    assert not (tmp_path / "one").exists()  # building the tools creates nothing


async def test_builtin_names_resolve_to_these_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentflow.tool import ToolRegistry

    monkeypatch.setenv("AGENTFLOW_WORKSPACE", str(tmp_path))
    resolved = await ToolRegistry().resolve(["files", "calculator"])
    assert [t.name for t in resolved] == ["read_file", "list_files", "write_file", "calculator"]
    await call(resolved[2], path="x.txt", content="y")
    assert os.path.exists(tmp_path / "x.txt")


async def test_a_name_that_is_not_utf8_is_listed_as_unicode_text(tools: dict[str, Tool], workspace: Path) -> None:
    try:
        (workspace / os.fsdecode(b"bad\xffname.txt")).write_text("x", encoding="utf-8")
    except OSError:
        pytest.skip("this filesystem only takes UTF-8 names")
    listing = await call(tools["list_files"])
    assert "bad\\xffname.txt" in [e["path"] for e in listing["entries"]]
    json.dumps(listing, ensure_ascii=False).encode("utf-8")  # no lone surrogate: it can be stored and sent


async def test_paths_and_content_with_lone_surrogates_are_refused(tools: dict[str, Tool], workspace: Path) -> None:
    with pytest.raises(ToolError, match="lone surrogate"):
        await call(tools["write_file"], path="s.txt", content="half a pair: \ud800")
    with pytest.raises(ToolError, match="lone surrogate"):
        await call(tools["write_file"], path="bad\udcffname.txt", content="x")
    with pytest.raises(ToolError, match="lone surrogate"):
        await call(tools["read_file"], path="bad\udcffname.txt")
    assert not (workspace / "s.txt").exists()
    assert not (workspace / os.fsdecode(b"bad\xffname.txt")).exists()
