"""Workspace file tools: ``read_file``, ``list_files`` and ``write_file``, confined to one directory.

:func:`make_file_tools` builds the three tools for a root directory (the *workspace*). Every path a
model passes is relative to that root and is checked before anything is opened:

* refused outright: empty paths, NUL bytes, absolute paths (``/etc/passwd``), Windows drive and UNC
  forms (``C:\\x``, ``C:x``, ``\\\\server\\share``), backslashes (use ``/``), ``~`` home paths and
  paths over 4096 characters;
* then the path is joined to the root and resolved with symlinks followed (``Path.resolve``); the
  result must be the root or lie inside it. So ``../x`` and ``a/../../x`` are refused, and so is a
  symlink (to a file or a directory) that points outside the workspace, while ``a/../b`` and
  symlinks that stay inside are fine.

The final open uses ``O_NOFOLLOW`` where the platform has it, so a file swapped for a symlink
between the check and the open is refused too. (A process that can rewrite the workspace while a
tool runs could still race directory components; the workspace is meant to be the agent's own.)

Text is UTF-8: ``read_file`` refuses files that are not valid UTF-8 (binary files) with an error
saying so, rather than handing the model replacement characters. Paths and contents given to the tools
must be valid Unicode (no lone surrogates). A file name on disk that is not valid UTF-8 is reported
with ``\\xNN`` escapes for its bad bytes (``bad\\xffname.txt``), so every result is Unicode text that
can be stored and sent to a model; the tools cannot open such a file.

:func:`file_tools` gives the tools for :func:`default_workspace` (``$AGENTFLOW_WORKSPACE``, else
``./workspace``); it is what workflows get when they name ``read_file``, ``list_files``,
``write_file`` or the group ``files``.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any

from agentflow.jsondata import has_lone_surrogate
from agentflow.tool import Tool, ToolError, ToolRetry, tool

log = logging.getLogger(__name__)

MAX_PATH_CHARS = 4096
_DRIVE = re.compile(r"^[A-Za-z]:")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NO_RETRY = ToolRetry(max_attempts=1)  # file errors are deterministic: retrying only delays the answer


def default_workspace() -> Path:
    """The workspace the built-in file tools use: ``$AGENTFLOW_WORKSPACE``, else ``./workspace``."""
    return Path(os.environ.get("AGENTFLOW_WORKSPACE", "workspace"))


class Workspace:
    """A root directory and the checks that keep paths inside it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def resolve(self, path: str, *, allow_root: bool = False) -> Path:
        """The real path ``path`` (relative to the root) names, or ToolError if it is malformed or escapes."""
        if not isinstance(path, str):
            raise ToolError(f"path must be a string, got {type(path).__name__}")
        if "\x00" in path:
            raise ToolError("path contains a NUL byte")
        if has_lone_surrogate(path):
            raise ToolError("path is not valid Unicode text (it holds a lone surrogate)")
        if len(path) > MAX_PATH_CHARS:
            raise ToolError(f"path is too long ({len(path)} characters; the limit is {MAX_PATH_CHARS})")
        stripped = path.strip()
        if not stripped:
            raise ToolError("path is empty")
        if stripped.startswith(("/", "\\")):
            raise ToolError(f"path {path!r} is absolute: give a path relative to the workspace, e.g. 'notes/a.txt'")
        if _DRIVE.match(stripped):
            raise ToolError(f"path {path!r} is a Windows drive path: give a path relative to the workspace")
        if "\\" in stripped:
            raise ToolError(f"path {path!r} contains a backslash: use '/' to separate directories")
        if stripped == "~" or stripped.startswith("~/"):
            raise ToolError(f"path {path!r} refers to a home directory, which is outside the workspace")
        full = (self.root / stripped).resolve()
        if full == self.root:
            if not allow_root:
                raise ToolError(f"path {path!r} is the workspace directory itself, not a file")
            return full
        if not full.is_relative_to(self.root):
            raise ToolError(f"path {path!r} is outside the workspace")
        return full

    def relative(self, full: Path) -> str:
        """``full`` as a '/'-separated path relative to the root ('.' for the root). Bytes of a name that
        are not UTF-8 (which Python holds as lone surrogates) are shown as ``\\xNN`` escapes."""
        rel = full.relative_to(self.root).as_posix()
        if has_lone_surrogate(rel):
            rel = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return rel or "."


def _open_flags(base: int) -> int:
    # O_NONBLOCK: opening a FIFO must not hang the worker thread (regular files ignore the flag).
    return base | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def _split_lines(text: str) -> list[str]:
    """Lines of ``text`` split on '\\n' only, each keeping its newline."""
    if not text:
        return []
    lines = [line + "\n" for line in text.split("\n")]
    if text.endswith("\n"):
        lines.pop()
    else:
        lines[-1] = lines[-1][:-1]
    return lines


def make_file_tools(root: str | os.PathLike[str], *, max_read_bytes: int = 1_000_000, max_write_bytes: int = 1_000_000,
                    read_only: bool = False, max_entries: int = 1000) -> list[Tool]:
    """The file tools for the workspace ``root``: ``read_file``, ``list_files`` and (unless
    ``read_only``) ``write_file``.

    Args:
        root: The workspace directory; need not exist yet (``write_file`` creates it).
        max_read_bytes: Largest file ``read_file`` reads (larger ones are refused as too large).
        max_write_bytes: Most UTF-8 bytes one ``write_file`` call may write, and the largest file an
            append may produce.
        read_only: Leave ``write_file`` out.
        max_entries: Most entries ``list_files`` returns (then it says ``truncated``).
    """
    workspace = Workspace(root)

    @tool(name="read_file", side_effects=False, retry=_NO_RETRY)
    def read_file(path: str, offset: int = 1, limit: int | None = None) -> dict[str, Any]:
        """Read a UTF-8 text file from the workspace, whole or a range of lines.

        Returns the file's path, size in bytes, total_lines, the start_line and end_line returned and
        the content. For a long file, read it in parts with offset and limit.

        Args:
            path: Path relative to the workspace root, e.g. "notes/todo.md".
            offset: First line to return, counting from 1.
            limit: How many lines to return (default: to the end of the file).
        """
        if offset < 1:
            raise ToolError(f"offset must be 1 or more (lines count from 1), got {offset}")
        if limit is not None and limit < 0:
            raise ToolError(f"limit must not be negative, got {limit}")
        full = workspace.resolve(path)
        try:
            fd = os.open(full, _open_flags(os.O_RDONLY))
        except FileNotFoundError:
            raise ToolError(f"file {path!r} not found in the workspace") from None
        except IsADirectoryError:
            raise ToolError(f"{path!r} is a directory, not a file (use list_files)") from None
        except OSError as e:
            raise ToolError(f"cannot open {path!r}: {e.strerror or e}") from None
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise ToolError(f"{path!r} is a directory, not a file (use list_files)")
            if not stat.S_ISREG(info.st_mode):
                raise ToolError(f"{path!r} is not a regular file")
            if info.st_size > max_read_bytes:
                raise ToolError(f"file {path!r} is too large ({info.st_size:,} bytes; the limit is "
                                f"{max_read_bytes:,})")
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as f:
            data = f.read(max_read_bytes + 1)
        if len(data) > max_read_bytes:  # grew since fstat
            raise ToolError(f"file {path!r} is too large (over {max_read_bytes:,} bytes)")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ToolError(f"file {path!r} is not UTF-8 text (binary?): invalid byte at offset {e.start}") from None
        lines = _split_lines(text)
        if offset > max(len(lines), 1):
            raise ToolError(f"offset {offset} is past the end of {path!r}, which has {len(lines)} lines")
        chosen = lines[offset - 1:] if limit is None else lines[offset - 1:offset - 1 + limit]
        return {"path": workspace.relative(full), "size": len(data), "total_lines": len(lines),
                "start_line": offset, "end_line": offset - 1 + len(chosen), "content": "".join(chosen)}

    @tool(name="list_files", side_effects=False, retry=_NO_RETRY)
    def list_files(path: str = ".", pattern: str | None = None, recursive: bool = False) -> dict[str, Any]:
        """List the files and directories in a workspace directory.

        Each entry has its path relative to the workspace root (usable with read_file), its type
        ("file", "dir" or "symlink") and, for files, its size in bytes. Symlinks are listed, not
        followed. At most a fixed number of entries is returned; "truncated" says whether there were more.

        Args:
            path: Directory relative to the workspace root; "." is the root itself.
            pattern: Shell-style filter, e.g. "*.py". Matched against the entry's name, or against its
                path below the listed directory when the pattern contains "/".
            recursive: Also list the contents of subdirectories.
        """
        full = workspace.resolve(path, allow_root=True)
        if full == workspace.root and not full.exists():  # nothing written yet
            return {"directory": ".", "entries": [], "truncated": False}
        if not full.exists():
            raise ToolError(f"directory {path!r} not found in the workspace")
        if not full.is_dir():
            raise ToolError(f"{path!r} is a file, not a directory (use read_file)")
        entries: list[dict[str, Any]] = []
        truncated = False
        scanned = 0
        max_scanned = max(10_000, 50 * max_entries)
        pending = [full]
        while pending and not truncated:
            directory = pending.pop(0)
            try:
                with os.scandir(directory) as it:
                    children = sorted(it, key=lambda entry: entry.name)
            except OSError as e:
                log.info("list_files: cannot list %s: %s", directory, e)
                continue
            subdirectories = []
            for child in children:
                scanned += 1
                if scanned > max_scanned:
                    truncated = True
                    break
                child_path = Path(child.path)
                if child.is_symlink():
                    kind, size = "symlink", None
                elif child.is_dir(follow_symlinks=False):
                    kind, size = "dir", None
                    if recursive:
                        subdirectories.append(child_path)
                else:
                    kind = "file"
                    try:
                        size = child.stat(follow_symlinks=False).st_size
                    except OSError:
                        size = None
                below = child_path.relative_to(full).as_posix()
                if pattern is not None and not fnmatch.fnmatchcase(below if "/" in pattern else child.name, pattern):
                    continue
                if len(entries) >= max_entries:
                    truncated = True
                    break
                entry: dict[str, Any] = {"path": workspace.relative(child_path), "type": kind}
                if size is not None:
                    entry["size"] = size
                entries.append(entry)
            pending[0:0] = subdirectories  # depth-first, in name order
        return {"directory": workspace.relative(full), "entries": entries, "truncated": truncated}

    tools = [read_file, list_files]
    if read_only:
        return tools

    @tool(name="write_file", side_effects=True)
    def write_file(path: str, content: str, append: bool = False, create_dirs: bool = True) -> dict[str, Any]:
        """Write UTF-8 text to a file in the workspace, replacing it (or appending to it).

        Args:
            path: Path relative to the workspace root, e.g. "out/report.md".
            content: The text to write.
            append: Add to the end of the file instead of replacing it.
            create_dirs: Create missing parent directories.
        """
        full = workspace.resolve(path)
        if has_lone_surrogate(content):
            raise ToolError("content is not valid Unicode text (it holds a lone surrogate)")
        data = content.encode("utf-8")
        if len(data) > max_write_bytes:
            raise ToolError(f"content is too large ({len(data):,} bytes; the limit is {max_write_bytes:,})")
        if full.is_dir():
            raise ToolError(f"{path!r} is a directory, not a file")
        parent = full.parent
        if not parent.is_dir():
            if not create_dirs:
                raise ToolError(f"the directory of {path!r} does not exist (pass create_dirs=true to create it)")
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise ToolError(f"cannot create the directory of {path!r}: a file is in the way") from None
            except OSError as e:
                raise ToolError(f"cannot create the directory of {path!r}: {e.strerror or e}") from None
        created = not full.exists()
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        try:
            if append and not created and full.stat().st_size + len(data) > max_write_bytes:
                raise ToolError(f"appending would make {path!r} larger than {max_write_bytes:,} bytes")
            fd = os.open(full, _open_flags(flags), 0o666)
        except ToolError:
            raise
        except OSError as e:
            raise ToolError(f"cannot write {path!r}: {e.strerror or e}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ToolError(f"{path!r} is not a regular file")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        log.info("write_file: %s %d bytes to %s", "appended" if append else "wrote", len(data), full)
        return {"path": workspace.relative(full), "bytes_written": len(data), "appended": append, "created": created}

    tools.append(write_file)
    return tools


@functools.lru_cache(maxsize=8)
def _file_tools_for(root: str) -> list[Tool]:
    return make_file_tools(root)


def file_tools() -> list[Tool]:
    """The file tools for :func:`default_workspace`, built on first use (and again if the workspace changes)."""
    return list(_file_tools_for(str(default_workspace().expanduser().resolve())))


__all__ = ["Workspace", "default_workspace", "file_tools", "make_file_tools"]
