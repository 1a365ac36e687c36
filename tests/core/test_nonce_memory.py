"""The bounded in-memory nonce store: reference expiry semantics, bounds, O(1) sweeping."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authmesh.core._nonce import AsyncNonceStore, InMemoryNonceStore, NonceStore, as_async


class FakeClock:
    def __init__(self, now: float = 1_743_160_800.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_fresh_then_replayed() -> None:
    store = InMemoryNonceStore(clock=FakeClock())
    assert store.check_and_store("n1", 60)
    assert not store.check_and_store("n1", 60)
    assert store.check_and_store("n2", 60)


def test_expiry_boundary_matches_reference() -> None:
    # Recorded at t with TTL 60: refused through t+60, accepted again from t+61.
    clock = FakeClock(1000.0)
    store = InMemoryNonceStore(clock=clock)
    assert store.check_and_store("n", 60)
    clock.now = 1060.999
    assert not store.check_and_store("n", 60)
    clock.now = 1061.0
    assert store.check_and_store("n", 60)
    assert not store.check_and_store("n", 60)


def test_full_store_of_live_entries_fails_closed() -> None:
    clock = FakeClock(1000.0)
    store = InMemoryNonceStore(capacity=3, clock=clock)
    assert all(store.check_and_store(f"n{i}", 60) for i in range(3))
    assert not store.check_and_store("fresh", 60)
    assert len(store) == 3
    clock.now = 1061.0
    assert store.check_and_store("fresh", 60)


def test_sweep_is_incremental_not_a_full_scan() -> None:
    clock = FakeClock(1000.0)
    store = InMemoryNonceStore(capacity=10_000, clock=clock)
    for i in range(1000):
        assert store.check_and_store(f"n{i}", 10)
    clock.now = 2000.0
    assert store.check_and_store("later", 10)
    # One call reclaims only a handful of the 1000 expired entries...
    assert 990 <= len(store) < 1001
    # ...but reclaiming outpaces inserting, so the backlog drains.
    for i in range(200):
        store.check_and_store(f"m{i}", 10)
    assert len(store) == 201


def test_expired_entry_rerecorded_is_not_dropped_by_its_stale_queue_item() -> None:
    clock = FakeClock(1000.0)
    store = InMemoryNonceStore(clock=clock)
    assert store.check_and_store("n", 1)
    clock.now = 1002.0
    assert store.check_and_store("n", 100)
    clock.now = 1050.0
    assert store.check_and_store("other", 1)  # sweeps the stale item for "n"
    assert not store.check_and_store("n", 100)


def test_capacity_bounds_memory_under_replayed_expiry() -> None:
    clock = FakeClock(1000.0)
    store = InMemoryNonceStore(capacity=5, clock=clock)
    for step in range(100):
        clock.now = 1000.0 + 2 * step
        assert store.check_and_store("same", 1)
        assert len(store._queue_keys) <= 5


def test_concurrent_threads_accept_a_nonce_once() -> None:
    store = InMemoryNonceStore()
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait()
        results.append(store.check_and_store("shared", 60))

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(results) == [False] * 7 + [True]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        InMemoryNonceStore(capacity=0)
    with pytest.raises(ValueError):
        InMemoryNonceStore().check_and_store("n", -1)


async def test_async_adapter() -> None:
    store = InMemoryNonceStore()
    async_store = as_async(store)
    assert isinstance(store, NonceStore)
    assert isinstance(async_store, AsyncNonceStore)
    assert await async_store.check_and_store("n", 60)
    assert not await async_store.check_and_store("n", 60)
    assert not store.check_and_store("n", 60)


operations = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 5), st.integers(0, 4)),
    max_size=60,
)


@given(operations)
def test_matches_the_reference_semantics(steps: list[tuple[str, int, int]]) -> None:
    """Against a direct model of the reference map (unbounded, exact expiry per key)."""
    clock = FakeClock(0.0)
    store = InMemoryNonceStore(clock=clock)
    model: dict[str, int] = {}
    for key, ttl, advance in steps:
        clock.now += advance
        now = int(clock.now)
        expected = not (key in model and model[key] >= now)
        if expected:
            model[key] = now + ttl
        assert store.check_and_store(key, ttl) == expected


@given(operations, st.integers(1, 4))
def test_a_bounded_store_never_accepts_a_replay(
    steps: list[tuple[str, int, int]], capacity: int
) -> None:
    """When full it may refuse fresh keys (fail closed) but never accepts a live one."""
    clock = FakeClock(0.0)
    store = InMemoryNonceStore(capacity=capacity, clock=clock)
    live: dict[str, int] = {}
    for key, ttl, advance in steps:
        clock.now += advance
        now = int(clock.now)
        accepted = store.check_and_store(key, ttl)
        if accepted:
            assert not (key in live and live[key] >= now)
            live[key] = now + ttl
        assert len(store._queue_keys) <= capacity
