"""Radix tree from token ids to the KV slots that hold them, shared by all requests.

Each edge carries a run of token ids (``key``) and the slots of their K/V (``value``, same length).
A request *matches* the longest cached prefix of its tokens and *locks* that path while it runs;
when it finishes it *inserts* everything it computed, and the tree takes ownership of those slots.
Unlocked, unpinned leaves are *evicted* least-recently-used first, their slots returned to the
allocator, when the pool needs room.

Sessions: a finished request with a ``session_id`` *pins* its path, so an agent's history survives
while it waits on a tool. The pin goes when the session's next request is admitted (its own lock
takes over), when the session is closed, or when the TTL runs out. The total of pinned tokens is
capped; past the cap the oldest pins are released first. A token is counted once however many
pins cover it.

Pure Python: no torch. Time comes from an injectable clock; LRU order from a counter.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol


class SlotSink(Protocol):
    def free(self, slots: list[int]) -> None: ...


class TreeNode:
    __slots__ = ("children", "key", "last_access", "lock_ref", "parent", "pin_ref", "value")

    def __init__(self, key: list[int], value: list[int], parent: TreeNode | None) -> None:
        self.children: dict[int, TreeNode] = {}
        self.parent = parent
        self.key = key
        self.value = value
        self.lock_ref = 0
        self.pin_ref = 0
        self.last_access = 0

    @property
    def protected(self) -> bool:
        return self.lock_ref > 0 or self.pin_ref > 0

    def path_to_root(self) -> Iterator[TreeNode]:
        node: TreeNode | None = self
        while node is not None and node.parent is not None:
            yield node
            node = node.parent


@dataclass
class Match:
    slots: list[int]
    """KV slots of the matched prefix, in token order."""
    node: TreeNode
    """Deepest node of the match (the root when nothing matched); lock it to keep the prefix."""


@dataclass
class _Pin:
    node: TreeNode
    deadline: float


class RadixCache:
    def __init__(self, slots: SlotSink, *, max_pinned_tokens: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = TreeNode([], [], None)
        self.root.lock_ref = 1  # never evicted
        self._slots = slots
        self.max_pinned_tokens = max_pinned_tokens
        self._clock = clock
        self._tick = 0
        self._pins: OrderedDict[str, _Pin] = OrderedDict()  # oldest first
        self.total_size = 0
        """Tokens held by the tree."""
        self.evictable_size = 0
        """Tokens in nodes neither locked nor pinned."""
        self.pinned_size = 0
        """Tokens in nodes with at least one pin."""

    # ---- lookup and insertion -------------------------------------------------------------

    def match_prefix(self, tokens: Sequence[int]) -> Match:
        node, slots, i = self.root, [], 0
        self._tick += 1
        while i < len(tokens):
            child = node.children.get(tokens[i])
            if child is None:
                break
            n = _common_prefix(child.key, tokens, i)
            if n < len(child.key):
                child = self._split(child, n)
            child.last_access = self._tick
            slots.extend(child.value)
            node, i = child, i + n
        return Match(slots, node)

    def insert(self, tokens: Sequence[int], slots: Sequence[int]) -> tuple[int, TreeNode]:
        """Insert ``tokens`` with their ``slots``. Returns how many leading tokens were already
        cached (the caller still owns, and must free, its own slots for those) and the node
        where ``tokens`` ends."""
        if len(tokens) != len(slots):
            raise ValueError(f"{len(tokens)} tokens but {len(slots)} slots")
        node, i = self.root, 0
        self._tick += 1
        while i < len(tokens):
            child = node.children.get(tokens[i])
            if child is None:
                leaf = TreeNode(list(tokens[i:]), list(slots[i:]), node)
                leaf.last_access = self._tick
                node.children[tokens[i]] = leaf
                self.total_size += len(leaf.key)
                self.evictable_size += len(leaf.key)
                return i, leaf
            n = _common_prefix(child.key, tokens, i)
            if n < len(child.key):
                child = self._split(child, n)
            child.last_access = self._tick
            node, i = child, i + n
        return i, node

    def _split(self, child: TreeNode, n: int) -> TreeNode:
        """Cut ``child``'s edge after ``n`` tokens; returns the new upper node."""
        parent = child.parent
        assert parent is not None and 0 < n < len(child.key)
        upper = TreeNode(child.key[:n], child.value[:n], parent)
        upper.lock_ref, upper.pin_ref, upper.last_access = child.lock_ref, child.pin_ref, child.last_access
        upper.children[child.key[n]] = child
        parent.children[child.key[0]] = upper
        child.key, child.value, child.parent = child.key[n:], child.value[n:], upper
        return upper

    # ---- locks (running requests) ---------------------------------------------------------

    def lock(self, node: TreeNode) -> None:
        for n in node.path_to_root():
            if not n.protected:
                self.evictable_size -= len(n.key)
            n.lock_ref += 1

    def unlock(self, node: TreeNode) -> None:
        for n in node.path_to_root():
            if n.lock_ref <= 0:
                raise RuntimeError("radix cache: unlock of an unlocked node")
            n.lock_ref -= 1
            if not n.protected:
                self.evictable_size += len(n.key)

    # ---- session pins ---------------------------------------------------------------------

    def pin(self, session_id: str, node: TreeNode, ttl: float) -> None:
        """Pin the path ending at ``node`` for ``session_id`` (replacing its previous pin)."""
        self.unpin(session_id)
        for n in node.path_to_root():
            if not n.protected:
                self.evictable_size -= len(n.key)
            if n.pin_ref == 0:
                self.pinned_size += len(n.key)
            n.pin_ref += 1
        self._pins[session_id] = _Pin(node, self._clock() + ttl)
        while self.pinned_size > self.max_pinned_tokens:
            self.release_oldest_pin()

    def unpin(self, session_id: str) -> bool:
        pin = self._pins.pop(session_id, None)
        if pin is None:
            return False
        for n in pin.node.path_to_root():
            n.pin_ref -= 1
            if n.pin_ref == 0:
                self.pinned_size -= len(n.key)
            if not n.protected:
                self.evictable_size += len(n.key)
        return True

    def release_oldest_pin(self) -> str | None:
        if not self._pins:
            return None
        session_id = next(iter(self._pins))
        self.unpin(session_id)
        return session_id

    def is_pinned(self, session_id: str) -> bool:
        return session_id in self._pins

    def expire_pins(self) -> int:
        """Release pins whose TTL has passed; returns how many."""
        now = self._clock()
        expired = [sid for sid, pin in self._pins.items() if pin.deadline <= now]
        for sid in expired:
            self.unpin(sid)
        return len(expired)

    # ---- eviction -------------------------------------------------------------------------

    def evict(self, num_tokens: int) -> int:
        """Free at least ``num_tokens`` slots if possible, least recently used leaves first.
        Returns the number freed."""
        heap = [(n.last_access, id(n), n) for n in self._leaves() if not n.protected]
        heapq.heapify(heap)
        freed = 0
        while freed < num_tokens and heap:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            assert parent is not None
            self._slots.free(leaf.value)
            freed += len(leaf.key)
            self.total_size -= len(leaf.key)
            self.evictable_size -= len(leaf.key)
            del parent.children[leaf.key[0]]
            if parent is not self.root and not parent.children and not parent.protected:
                heapq.heappush(heap, (parent.last_access, id(parent), parent))
        return freed

    def _leaves(self) -> list[TreeNode]:
        leaves, stack = [], [self.root]
        while stack:
            node = stack.pop()
            if node.children:
                stack.extend(node.children.values())
            elif node is not self.root:
                leaves.append(node)
        return leaves

    def nodes(self) -> list[TreeNode]:
        """Every node but the root (for checks and stats)."""
        out, stack = [], list(self.root.children.values())
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(node.children.values())
        return out


def _common_prefix(key: Sequence[int], tokens: Sequence[int], start: int) -> int:
    n = min(len(key), len(tokens) - start)
    i = 0
    while i < n and key[i] == tokens[start + i]:
        i += 1
    return i
