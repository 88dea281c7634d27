"""RadixCache: prefix matching, insertion, lock/pin accounting, LRU eviction, session pins.

Pure bookkeeping: a ``SlotAllocator`` stands in for the KV pool and a fake clock drives pin TTLs.
Every test ends with ``check_tree``, which recomputes the counters from ``cache.nodes()`` and checks
that every slot of the pool is either free or held by the tree or by the test, exactly once.
"""

from __future__ import annotations

import random

import pytest

from engine.kv_cache import SlotAllocator
from engine.radix_cache import RadixCache, TreeNode


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(pool: int = 64, *, max_pinned: int | None = None) -> tuple[SlotAllocator, RadixCache, FakeClock]:
    alloc = SlotAllocator(pool)
    clock = FakeClock()
    cache = RadixCache(alloc, max_pinned_tokens=pool if max_pinned is None else max_pinned, clock=clock)
    return alloc, cache, clock


def put(alloc: SlotAllocator, cache: RadixCache, tokens: list[int]) -> tuple[int, TreeNode, list[int]]:
    """Insert like a finished request does: allocate slots for every token, insert, free the
    duplicates of what was already cached. Returns (already cached, end node, slots now in the tree)."""
    slots = alloc.alloc(len(tokens))
    existing, node = cache.insert(tokens, slots)
    alloc.free(slots[:existing])
    return existing, node, cache.match_prefix(tokens).slots


def tree_map(cache: RadixCache) -> dict[tuple[int, ...], int]:
    """Every cached prefix (as a token tuple) -> the slot of its last token. Read-only walk."""
    out: dict[tuple[int, ...], int] = {}
    stack: list[tuple[TreeNode, tuple[int, ...]]] = [(cache.root, ())]
    while stack:
        node, path = stack.pop()
        for child in node.children.values():
            p = path
            for tok, slot in zip(child.key, child.value, strict=True):
                p = (*p, tok)
                out[p] = slot
            stack.append((child, p))
    return out


def tree_slots(cache: RadixCache) -> list[int]:
    return [s for n in cache.nodes() for s in n.value]


def path_tokens(node: TreeNode) -> list[int]:
    return [t for n in reversed(list(node.path_to_root())) for t in n.key]


def path_slots(node: TreeNode) -> list[int]:
    return [s for n in reversed(list(node.path_to_root())) for s in n.value]


def check_tree(alloc: SlotAllocator, cache: RadixCache, held: tuple[int, ...] = ()) -> None:
    """Structure, counters recomputed from the nodes, and the slot partition of the pool."""
    nodes = cache.nodes()
    for n in nodes:
        assert n.key and len(n.key) == len(n.value)
        assert n.lock_ref >= 0 and n.pin_ref >= 0
        assert n.parent is not None and n.parent.children[n.key[0]] is n
        # a lock or pin covers the whole path to the root
        assert n.parent.lock_ref >= sum(c.lock_ref for c in n.parent.children.values()) or n.parent is cache.root
        assert n.parent.pin_ref >= sum(c.pin_ref for c in n.parent.children.values()) or n.parent is cache.root
    assert cache.root.lock_ref >= 1
    assert cache.total_size == sum(len(n.key) for n in nodes)
    assert cache.evictable_size == sum(len(n.key) for n in nodes if n.lock_ref == 0 and n.pin_ref == 0)
    assert cache.pinned_size == sum(len(n.key) for n in nodes if n.pin_ref > 0)
    # every slot exactly once: free, in the tree, or held by the caller
    assert alloc.num_free + cache.total_size + len(held) == alloc.num_slots
    free = alloc.alloc(alloc.num_free)
    alloc.free(free)
    assert sorted(free + tree_slots(cache) + list(held)) == list(range(alloc.num_slots))


# ---- the slot allocator the cache frees into ------------------------------------------------


def test_slot_allocator_hands_out_each_slot_once() -> None:
    alloc = SlotAllocator(5)
    assert alloc.num_slots == 5 and alloc.num_free == 5
    assert alloc.alloc(0) == []
    a = alloc.alloc(2)
    b = alloc.alloc(3)
    assert sorted(a + b) == [0, 1, 2, 3, 4] and alloc.num_free == 0
    with pytest.raises(MemoryError):
        alloc.alloc(1)
    alloc.free(a)
    assert alloc.num_free == 2
    with pytest.raises(MemoryError):
        alloc.alloc(3)
    assert alloc.num_free == 2  # a failed alloc takes nothing
    assert sorted(alloc.alloc(2)) == sorted(a)


def test_slot_allocator_rejects_an_empty_pool() -> None:
    with pytest.raises(ValueError):
        SlotAllocator(0)


# ---- match and insert -------------------------------------------------------------------------


def test_empty_cache_matches_nothing() -> None:
    alloc, cache, _ = make()
    m = cache.match_prefix([1, 2, 3])
    assert m.slots == [] and m.node is cache.root
    assert cache.match_prefix([]).slots == []
    check_tree(alloc, cache)


def test_match_returns_slots_of_longest_cached_prefix() -> None:
    alloc, cache, _ = make()
    existing, node, a = put(alloc, cache, [1, 2, 3, 4])
    assert existing == 0 and len(a) == 4
    assert cache.match_prefix([1, 2, 3, 4]).slots == a
    assert cache.match_prefix([1, 2, 3, 4, 5, 6]).slots == a  # longer query: whole cached prefix
    assert cache.match_prefix([1, 2, 9]).slots == a[:2]  # diverges inside the edge
    assert cache.match_prefix([2, 3]).slots == []  # not a prefix
    m = cache.match_prefix([1, 2, 3, 4, 5])
    assert m.node is node and path_slots(m.node) == a  # deepest node of the match
    check_tree(alloc, cache)


def test_partial_match_splits_the_edge() -> None:
    alloc, cache, _ = make()
    _, _, a = put(alloc, cache, [1, 2, 3, 4, 5, 6])
    assert len(cache.nodes()) == 1
    m = cache.match_prefix([1, 2, 3, 7])
    assert m.slots == a[:3]
    assert sorted(len(n.key) for n in cache.nodes()) == [3, 3]  # [1,2,3] -> [4,5,6]
    assert m.node.key == [1, 2, 3] and m.node.value == a[:3]
    assert m.node.children[4].key == [4, 5, 6] and m.node.children[4].value == a[3:]
    # the split loses nothing
    assert cache.total_size == 6 and cache.evictable_size == 6
    assert cache.match_prefix([1, 2, 3, 4, 5, 6]).slots == a
    check_tree(alloc, cache)


def test_insert_reports_cached_prefix_and_keeps_each_slot_once() -> None:
    alloc, cache, _ = make(32)
    existing, _, a = put(alloc, cache, [1, 2, 3, 4])
    assert existing == 0
    assert cache.total_size == 4

    # A + B: the shared 4 tokens are already cached; only the tail's slots are taken by the tree
    slots_ab = alloc.alloc(6)
    existing, node = cache.insert([1, 2, 3, 4, 5, 6], slots_ab)
    assert existing == 4
    alloc.free(slots_ab[:4])
    assert cache.total_size == 6
    assert cache.match_prefix([1, 2, 3, 4, 5, 6]).slots == a + slots_ab[4:]
    assert node.value == slots_ab[4:]

    # diverging inside an edge: split, and only the new tail goes in
    slots_c = alloc.alloc(4)
    existing, _ = cache.insert([1, 2, 7, 8], slots_c)
    assert existing == 2
    alloc.free(slots_c[:2])
    assert cache.total_size == 8
    assert cache.match_prefix([1, 2, 7, 8]).slots == a[:2] + slots_c[2:]
    assert cache.match_prefix([1, 2, 3, 4, 5, 6]).slots == a + slots_ab[4:]  # untouched

    # an already cached sequence (and a prefix of one) adds nothing
    slots_d = alloc.alloc(3)
    existing, node = cache.insert([1, 2, 3], slots_d)
    assert existing == 3
    alloc.free(slots_d)
    assert path_tokens(node) == [1, 2, 3] and path_slots(node) == a[:3]
    assert cache.match_prefix([1, 2, 3]).node is node
    assert cache.total_size == 8

    assert sorted(tree_slots(cache)) == sorted(a + slots_ab[4:] + slots_c[2:])
    check_tree(alloc, cache)


def test_insert_ending_inside_an_edge_returns_the_node_where_it_ends() -> None:
    alloc, cache, _ = make()
    _, _, a = put(alloc, cache, [1, 2, 3, 4, 5])
    slots = alloc.alloc(2)
    existing, node = cache.insert([1, 2], slots)
    alloc.free(slots)
    assert existing == 2
    # the path to the returned node is exactly [1, 2]
    assert path_tokens(node) == [1, 2]
    assert path_slots(node) == a[:2]
    check_tree(alloc, cache)


def test_insert_rejects_mismatched_lengths() -> None:
    _, cache, _ = make()
    with pytest.raises(ValueError):
        cache.insert([1, 2, 3], [0, 1])


# ---- locks and evictable accounting --------------------------------------------------------


def test_locked_path_is_not_evictable_and_unlock_restores_it() -> None:
    alloc, cache, _ = make()
    put(alloc, cache, [1, 2, 3, 4])
    put(alloc, cache, [5, 6, 7])
    assert cache.evictable_size == 7
    m = cache.match_prefix([1, 2, 3, 4])
    cache.lock(m.node)
    assert cache.evictable_size == 3
    check_tree(alloc, cache)

    assert cache.evict(100) == 3  # only the unlocked branch
    assert cache.match_prefix([1, 2, 3, 4]).slots == m.slots
    assert cache.match_prefix([5, 6, 7]).slots == []
    assert cache.total_size == 4 and cache.evictable_size == 0
    check_tree(alloc, cache)

    cache.unlock(m.node)
    assert cache.evictable_size == cache.total_size == 4
    assert cache.evict(100) == 4
    assert cache.total_size == 0 and alloc.num_free == alloc.num_slots
    check_tree(alloc, cache)


def test_lock_of_partial_match_protects_only_the_matched_part() -> None:
    alloc, cache, _ = make()
    _, _, a = put(alloc, cache, [1, 2, 3, 4, 5, 6])
    m = cache.match_prefix([1, 2, 3, 9])
    cache.lock(m.node)
    assert cache.evictable_size == 3  # [4, 5, 6] below the lock
    assert cache.evict(100) == 3
    assert cache.match_prefix([1, 2, 3, 4, 5, 6]).slots == a[:3]
    cache.unlock(m.node)
    assert cache.evictable_size == cache.total_size == 3
    check_tree(alloc, cache)


def test_evictable_size_is_exact_through_splits_of_locked_nodes() -> None:
    alloc, cache, _ = make()
    put(alloc, cache, [1, 2, 3, 4, 5, 6])
    m = cache.match_prefix([1, 2, 3, 4, 5, 6])
    cache.lock(m.node)
    assert cache.evictable_size == 0
    # splitting the locked edge twice (via match and via insert) keeps it all locked
    cache.match_prefix([1, 2, 9])
    put(alloc, cache, [1, 2, 3, 4, 7, 8])
    assert cache.total_size == 8
    assert cache.evictable_size == 2  # only the new [7, 8]
    check_tree(alloc, cache)
    assert cache.evict(100) == 2
    assert cache.match_prefix([1, 2, 3, 4, 5, 6]).slots == m.slots
    cache.unlock(m.node)  # unlocks every piece of the split path
    assert all(n.lock_ref == 0 for n in cache.nodes())
    assert cache.evictable_size == cache.total_size == 6
    check_tree(alloc, cache)


def test_shared_prefix_stays_locked_while_any_holder_remains() -> None:
    alloc, cache, _ = make()
    put(alloc, cache, [1, 2, 3, 4])
    put(alloc, cache, [1, 2, 5, 6, 7])
    ma = cache.match_prefix([1, 2, 3, 4])
    mb = cache.match_prefix([1, 2, 5, 6, 7])
    cache.lock(ma.node)
    cache.lock(mb.node)
    assert cache.evictable_size == 0
    cache.unlock(ma.node)
    assert cache.evictable_size == 2  # [3, 4]; [1, 2] is still held by b
    assert cache.evict(100) == 2
    assert cache.match_prefix([1, 2, 5, 6, 7]).slots == mb.slots
    cache.unlock(mb.node)
    assert cache.evictable_size == cache.total_size == 5
    check_tree(alloc, cache)


def test_lock_twice_needs_unlock_twice() -> None:
    alloc, cache, _ = make()
    put(alloc, cache, [1, 2, 3])
    m = cache.match_prefix([1, 2, 3])
    cache.lock(m.node)
    cache.lock(m.node)
    cache.unlock(m.node)
    assert cache.evictable_size == 0 and cache.evict(100) == 0
    cache.unlock(m.node)
    assert cache.evictable_size == 3
    check_tree(alloc, cache)


def test_unlock_of_unlocked_node_raises() -> None:
    alloc, cache, _ = make()
    _, node, _ = put(alloc, cache, [1, 2, 3])
    with pytest.raises(RuntimeError):
        cache.unlock(node)


def test_locking_the_root_changes_nothing() -> None:
    alloc, cache, _ = make()
    put(alloc, cache, [1, 2])
    m = cache.match_prefix([9])
    assert m.node is cache.root
    cache.lock(m.node)
    cache.unlock(m.node)
    assert cache.evictable_size == 2
    check_tree(alloc, cache)


# ---- eviction --------------------------------------------------------------------------------


def test_evict_frees_least_recently_used_leaf_first() -> None:
    alloc, cache, _ = make(32)
    _, _, x = put(alloc, cache, [1, 1, 1])
    _, _, y = put(alloc, cache, [2, 2, 2])
    _, _, z = put(alloc, cache, [3, 3, 3])
    cache.match_prefix([1, 1, 1, 5])  # x is now the most recently used
    free_before = alloc.num_free

    assert cache.evict(3) == 3
    assert cache.match_prefix([2, 2, 2]).slots == []  # stale y went first
    assert cache.match_prefix([1, 1, 1]).slots == x
    assert cache.match_prefix([3, 3, 3]).slots == z
    assert alloc.num_free == free_before + 3
    check_tree(alloc, cache)

    # freed slots are back in the allocator: taking them all back returns y's slots among them
    got = alloc.alloc(alloc.num_free)
    assert set(y) <= set(got)
    alloc.free(got)

    # z was touched before x (by the match just above): z goes next, x last
    cache.match_prefix([1, 1, 1])
    assert cache.evict(1) == 3
    assert cache.match_prefix([3, 3, 3]).slots == []
    assert cache.match_prefix([1, 1, 1]).slots == x
    assert cache.evict(1) == 3
    assert cache.total_size == 0 and alloc.num_free == alloc.num_slots
    check_tree(alloc, cache)


def test_insert_counts_as_a_use_for_lru() -> None:
    alloc, cache, _ = make(32)
    put(alloc, cache, [1, 1, 1])
    put(alloc, cache, [2, 2, 2])
    put(alloc, cache, [1, 1, 1])  # re-inserting refreshes [1, 1, 1]  (put also matches it)
    assert cache.evict(1) == 3
    assert cache.match_prefix([2, 2, 2]).slots == []
    assert len(cache.match_prefix([1, 1, 1]).slots) == 3
    check_tree(alloc, cache)


def test_evict_stops_once_enough_is_freed_and_reports_whole_leaves() -> None:
    alloc, cache, _ = make(32)
    put(alloc, cache, [1, 1, 1, 1])
    put(alloc, cache, [2, 2, 2, 2])
    put(alloc, cache, [3, 3])
    assert cache.evict(2) == 4  # the whole oldest leaf, nothing more
    assert cache.total_size == 6
    assert cache.evict(0) == 0
    assert cache.total_size == 6
    check_tree(alloc, cache)


def test_evicting_children_makes_the_parent_an_evictable_leaf() -> None:
    alloc, cache, _ = make(32)
    put(alloc, cache, [1, 2, 3, 4])
    put(alloc, cache, [1, 2, 5, 6])  # splits: [1,2] -> {[3,4], [5,6]}
    _, _, q = put(alloc, cache, [9, 9])
    cache.match_prefix([9, 9])  # q is the most recent
    # the parent [1,2] (last used before q) becomes a leaf once both children go, and is older than q
    assert cache.evict(6) == 6
    assert cache.match_prefix([1, 2]).slots == []
    assert cache.match_prefix([9, 9]).slots == q
    assert cache.total_size == 2
    check_tree(alloc, cache)


def test_evict_everything_returns_every_slot() -> None:
    alloc, cache, _ = make(40)
    for toks in ([1, 2, 3], [1, 2, 4, 5], [1, 6], [7], [1, 2, 3, 8, 9]):
        put(alloc, cache, toks)
    total = cache.total_size
    assert total == len(tree_map(cache)) == 9
    assert cache.evict(10**9) == total
    assert cache.total_size == cache.evictable_size == 0 and cache.nodes() == []
    assert alloc.num_free == alloc.num_slots
    check_tree(alloc, cache)


def test_locked_or_pinned_nodes_are_never_evicted() -> None:
    alloc, cache, _ = make(40)
    put(alloc, cache, [1, 2, 3])
    put(alloc, cache, [1, 2, 4])
    put(alloc, cache, [5, 6])
    put(alloc, cache, [7, 8, 9])
    locked = cache.match_prefix([1, 2, 3])
    cache.lock(locked.node)
    pinned = cache.match_prefix([7, 8, 9])
    cache.pin("s", pinned.node, ttl=100)
    assert cache.evict(10**9) == 3  # [4] and [5, 6]
    assert cache.match_prefix([1, 2, 3]).slots == locked.slots
    assert cache.match_prefix([7, 8, 9]).slots == pinned.slots
    assert cache.match_prefix([1, 2, 4]).slots == locked.slots[:2]
    assert cache.total_size == 6 and cache.evictable_size == 0
    check_tree(alloc, cache)


# ---- session pins ----------------------------------------------------------------------------


def test_pin_survives_eviction_and_unpin_makes_it_evictable() -> None:
    alloc, cache, _ = make()
    _, node, a = put(alloc, cache, [1, 2, 3, 4])
    put(alloc, cache, [5, 6])
    cache.pin("s", node, ttl=10)
    assert cache.is_pinned("s")
    assert cache.pinned_size == 4 and cache.evictable_size == 2
    assert cache.evict(10**9) == 2
    assert cache.match_prefix([1, 2, 3, 4]).slots == a
    check_tree(alloc, cache)

    assert cache.unpin("s") is True
    assert not cache.is_pinned("s")
    assert cache.pinned_size == 0 and cache.evictable_size == cache.total_size == 4
    assert cache.unpin("s") is False  # nothing left to unpin
    assert cache.unpin("never") is False
    assert cache.evict(10**9) == 4
    check_tree(alloc, cache)


def test_pin_expires_after_its_ttl() -> None:
    alloc, cache, clock = make()
    _, node, _ = put(alloc, cache, [1, 2, 3])
    cache.pin("s", node, ttl=10)
    clock.now = 5
    assert cache.expire_pins() == 0
    assert cache.is_pinned("s") and cache.evict(10**9) == 0
    clock.now = 11
    assert cache.expire_pins() == 1
    assert not cache.is_pinned("s")
    assert cache.pinned_size == 0 and cache.evictable_size == 3
    assert cache.expire_pins() == 0
    assert cache.evict(10**9) == 3
    check_tree(alloc, cache)


def test_expire_pins_releases_only_the_expired_ones() -> None:
    alloc, cache, clock = make()
    _, n1, _ = put(alloc, cache, [1, 1])
    _, n2, _ = put(alloc, cache, [2, 2])
    cache.pin("short", n1, ttl=1)
    cache.pin("long", n2, ttl=100)
    clock.now = 50
    assert cache.expire_pins() == 1
    assert not cache.is_pinned("short") and cache.is_pinned("long")
    assert cache.pinned_size == 2 and cache.evictable_size == 2
    check_tree(alloc, cache)


def test_repin_replaces_the_sessions_previous_pin() -> None:
    alloc, cache, _ = make()
    _, n1, _ = put(alloc, cache, [1, 2, 3])
    _, n2, b = put(alloc, cache, [4, 5])
    cache.pin("s", n1, ttl=10)
    cache.pin("s", n2, ttl=10)
    assert cache.is_pinned("s")
    assert cache.pinned_size == 2  # only the new path
    assert cache.evictable_size == 3
    assert cache.evict(10**9) == 3
    assert cache.match_prefix([4, 5]).slots == b
    check_tree(alloc, cache)
    # one unpin releases it: the old pin left no reference behind
    cache.unpin("s")
    assert all(n.pin_ref == 0 for n in cache.nodes())
    assert cache.evictable_size == cache.total_size == 2
    check_tree(alloc, cache)


def test_repin_refreshes_the_deadline() -> None:
    alloc, cache, clock = make()
    _, node, _ = put(alloc, cache, [1, 2, 3])
    cache.pin("s", node, ttl=10)
    clock.now = 8
    cache.pin("s", node, ttl=10)  # same path again: deadline now 18
    assert cache.pinned_size == 3
    assert all(n.pin_ref == 1 for n in cache.nodes())
    clock.now = 12
    assert cache.expire_pins() == 0 and cache.is_pinned("s")
    clock.now = 19
    assert cache.expire_pins() == 1
    check_tree(alloc, cache)


def test_shared_prefix_of_two_pins_is_counted_once() -> None:
    alloc, cache, _ = make()
    _, n1, _ = put(alloc, cache, [1, 2, 3, 4])
    _, n2, _ = put(alloc, cache, [1, 2, 5, 6])
    cache.pin("a", n1, ttl=10)
    cache.pin("b", n2, ttl=10)
    assert cache.pinned_size == 6  # [1,2] + [3,4] + [5,6]
    assert cache.evictable_size == 0
    check_tree(alloc, cache)
    cache.unpin("a")
    assert cache.pinned_size == 4  # [1,2] still pinned by b
    assert cache.evictable_size == 2
    assert cache.evict(10**9) == 2
    assert len(cache.match_prefix([1, 2, 5, 6]).slots) == 4
    cache.unpin("b")
    assert cache.pinned_size == 0 and cache.evictable_size == cache.total_size == 4
    check_tree(alloc, cache)


def test_pin_and_lock_on_the_same_path() -> None:
    alloc, cache, _ = make()
    put(alloc, cache, [1, 2, 3, 4])
    m = cache.match_prefix([1, 2, 3, 4])
    cache.lock(m.node)
    cache.pin("s", m.node, ttl=10)
    assert cache.evictable_size == 0 and cache.pinned_size == 4
    cache.unlock(m.node)
    assert cache.evictable_size == 0  # still pinned
    assert cache.evict(10**9) == 0
    cache.lock(m.node)
    cache.unpin("s")
    assert cache.evictable_size == 0 and cache.pinned_size == 0  # still locked
    cache.unlock(m.node)
    assert cache.evictable_size == 4
    check_tree(alloc, cache)


def test_pin_cap_releases_oldest_pins_first() -> None:
    alloc, cache, _ = make(64, max_pinned=10)
    nodes = {}
    for sid, toks in (("s1", [1, 1, 1, 1]), ("s2", [2, 2, 2, 2]), ("s3", [3, 3, 3, 3])):
        nodes[sid] = put(alloc, cache, toks)[1]
    cache.pin("s1", nodes["s1"], ttl=100)
    cache.pin("s2", nodes["s2"], ttl=100)
    assert cache.pinned_size == 8
    cache.pin("s3", nodes["s3"], ttl=100)  # 12 > 10: s1 (oldest) goes
    assert not cache.is_pinned("s1")
    assert cache.is_pinned("s2") and cache.is_pinned("s3")
    assert cache.pinned_size == 8 and cache.evictable_size == 4
    assert cache.evict(10**9) == 4
    assert cache.match_prefix([1, 1, 1, 1]).slots == []
    check_tree(alloc, cache)


def test_pin_cap_order_follows_the_latest_pin_of_each_session() -> None:
    alloc, cache, _ = make(64, max_pinned=10)
    n1 = put(alloc, cache, [1, 1, 1, 1])[1]
    n2 = put(alloc, cache, [2, 2, 2, 2])[1]
    n3 = put(alloc, cache, [3, 3, 3, 3])[1]
    cache.pin("s1", n1, ttl=100)
    cache.pin("s2", n2, ttl=100)
    cache.pin("s1", n1, ttl=100)  # s1 re-pinned: s2 is now the oldest
    cache.pin("s3", n3, ttl=100)
    assert not cache.is_pinned("s2")
    assert cache.is_pinned("s1") and cache.is_pinned("s3")
    assert cache.pinned_size == 8
    check_tree(alloc, cache)


def test_pin_cap_releases_as_many_as_needed() -> None:
    alloc, cache, _ = make(64, max_pinned=10)
    n = [put(alloc, cache, [i] * 3)[1] for i in range(1, 4)]
    big = put(alloc, cache, [9] * 8)[1]
    for i, node in enumerate(n):
        cache.pin(f"s{i}", node, ttl=100)
    assert cache.pinned_size == 9
    cache.pin("big", big, ttl=100)  # 17 > 10: needs s0, s1, s2 all gone
    assert [cache.is_pinned(f"s{i}") for i in range(3)] == [False, False, False]
    assert cache.is_pinned("big") and cache.pinned_size == 8
    check_tree(alloc, cache)


def test_pin_cap_counts_a_shared_prefix_once() -> None:
    alloc, cache, _ = make(64, max_pinned=10)
    n1 = put(alloc, cache, [1, 2, 3, 4, 5, 6])[1]
    n2 = put(alloc, cache, [1, 2, 3, 4, 5, 6, 7, 8])[1]
    cache.pin("a", n1, ttl=100)
    cache.pin("b", n2, ttl=100)  # 6 + 8 tokens but only 8 distinct: fits under 10
    assert cache.is_pinned("a") and cache.is_pinned("b")
    assert cache.pinned_size == 8
    check_tree(alloc, cache)


def test_release_oldest_pin() -> None:
    alloc, cache, _ = make()
    assert cache.release_oldest_pin() is None
    n1 = put(alloc, cache, [1])[1]
    n2 = put(alloc, cache, [2])[1]
    cache.pin("a", n1, ttl=100)
    cache.pin("b", n2, ttl=100)
    assert cache.release_oldest_pin() == "a"
    assert not cache.is_pinned("a") and cache.is_pinned("b")
    assert cache.release_oldest_pin() == "b"
    assert cache.release_oldest_pin() is None
    assert cache.pinned_size == 0 and cache.evictable_size == 2
    check_tree(alloc, cache)


# ---- randomized ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_random_operations_keep_every_invariant(seed: int) -> None:
    rng = random.Random(seed)
    pool = 48
    alloc, cache, clock = make(pool, max_pinned=rng.choice([6, 12, 40]))
    model: dict[tuple[int, ...], int] = {}  # reference: cached prefix -> slot
    locks: list[tuple[TreeNode, list[int], list[int]]] = []  # node, tokens, slots
    pins: dict[str, tuple[list[int], list[int]]] = {}  # what each live pin protects

    def seq() -> list[int]:
        return [rng.randrange(3) for _ in range(rng.randint(1, 9))]

    def evict(n: int) -> None:
        nonlocal model
        before_free, before_total = alloc.num_free, cache.total_size
        freed = cache.evict(n)
        assert alloc.num_free == before_free + freed
        assert cache.total_size == before_total - freed
        cached = tree_map(cache)
        assert all(model[p] == s for p, s in cached.items())  # nothing else moved
        assert len(model) - len(cached) == freed
        model = cached

    def sync_pins() -> None:
        for sid in list(pins):
            if not cache.is_pinned(sid):
                del pins[sid]

    for _ in range(300):
        op = rng.random()
        if op < 0.35:
            tokens = seq()
            if alloc.num_free < len(tokens):
                evict(len(tokens) - alloc.num_free)
            if alloc.num_free < len(tokens):
                continue
            slots = alloc.alloc(len(tokens))
            k = 0
            while k < len(tokens) and tuple(tokens[: k + 1]) in model:
                k += 1
            existing, node = cache.insert(tokens, slots)
            assert existing == k
            alloc.free(slots[:existing])
            for i in range(existing, len(tokens)):
                model[tuple(tokens[: i + 1])] = slots[i]
            assert path_tokens(node) == tokens
        elif op < 0.55:
            tokens = seq()
            m = cache.match_prefix(tokens)
            k = 0
            while k < len(tokens) and tuple(tokens[: k + 1]) in model:
                k += 1
            assert m.slots == [model[tuple(tokens[: i + 1])] for i in range(k)]
            cache.lock(m.node)
            locks.append((m.node, tokens[:k], m.slots))
        elif op < 0.7:
            if locks:
                node, _, _ = locks.pop(rng.randrange(len(locks)))
                cache.unlock(node)
        elif op < 0.8:
            tokens = seq()
            m = cache.match_prefix(tokens)
            sid = f"s{rng.randrange(4)}"
            cache.pin(sid, m.node, ttl=rng.choice([1.0, 5.0, 50.0]))
            pins[sid] = (tokens[: len(m.slots)], m.slots)
            sync_pins()  # the cap may have released older pins (or this one)
            assert cache.pinned_size <= cache.max_pinned_tokens
        elif op < 0.85:
            sid = f"s{rng.randrange(4)}"
            assert cache.unpin(sid) == (sid in pins)
            pins.pop(sid, None)
        elif op < 0.9:
            clock.now += rng.choice([0.5, 2.0, 10.0])
            cache.expire_pins()
            sync_pins()
        else:
            evict(rng.randint(0, 20))

        assert tree_map(cache) == model
        for _, tokens, slots in locks:  # locked prefixes are intact
            assert [model[tuple(tokens[: i + 1])] for i in range(len(tokens))] == slots
        for tokens, slots in pins.values():  # so are pinned ones
            assert [model[tuple(tokens[: i + 1])] for i in range(len(tokens))] == slots
        assert all(n.lock_ref == sum(1 for nd, _, _ in locks if n in set(nd.path_to_root()))
                   for n in cache.nodes())
        check_tree(alloc, cache)

    for node, _, _ in locks:
        cache.unlock(node)
    for sid in list(pins):
        assert cache.unpin(sid)
    assert all(n.lock_ref == 0 and n.pin_ref == 0 for n in cache.nodes())
    assert cache.pinned_size == 0
    assert cache.evictable_size == cache.total_size
    total = cache.total_size
    assert total == len(model)
    assert cache.evict(10**9) == total
    assert cache.total_size == 0 and alloc.num_free == pool
    check_tree(alloc, cache)
