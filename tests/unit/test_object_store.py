"""Tests for the shared-memory arena and the node's object store (memlab.store)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading

import numpy as np
import pytest

from memlab.exceptions import ObjectStoreFullError
from memlab.store import RELEASE_MEMORY_MIN_BYTES, Arena, ObjectStore

KiB = 1024
_CREATED_SHM_DIRS: list[str] = []


def oid(i: int) -> bytes:
    return i.to_bytes(16, "big")


@pytest.fixture(scope="module", autouse=True)
def _no_leftover_shm_dirs():
    yield
    leftovers = [d for d in _CREATED_SHM_DIRS if os.path.exists(d)]
    assert not leftovers, f"tests left arena directories in /dev/shm: {leftovers}"


@pytest.fixture
def shm_dir():
    path = tempfile.mkdtemp(prefix="memlab-test-", dir="/dev/shm")
    _CREATED_SHM_DIRS.append(path)
    yield path
    leftovers = os.listdir(path)
    shutil.rmtree(path, ignore_errors=True)
    assert not leftovers, f"arena files not unlinked: {leftovers}"


@pytest.fixture
def arena(shm_dir):
    a = Arena.create(os.path.join(shm_dir, "arena"), 64 * KiB)
    yield a
    a.close()
    a.unlink()


class Events(list):
    def __call__(self, kind, **fields):
        self.append((kind, fields))

    def kinds(self, object_id: bytes) -> list[str]:
        return [k for k, f in self if f["object_id"] == object_id.hex()]


@pytest.fixture
def events():
    return Events()


@pytest.fixture
def make_store(shm_dir, tmp_path, events):
    made: list[tuple[ObjectStore, Arena]] = []

    def make(capacity: int = 3 * KiB, name: str = "arena") -> ObjectStore:
        a = Arena.create(os.path.join(shm_dir, name), capacity)
        store = ObjectStore(a, str(tmp_path / f"spill-{name}"), emit=events, node_id="n1")
        made.append((store, a))
        return store

    yield make
    for store, a in made:
        store.validate()
        store.close()
        assert not os.path.exists(store.spill_dir), "close() left the spill directory"
        a.close()
        a.unlink()


def put(store: ObjectStore, object_id: bytes, data: bytes, primary: bool = True) -> int:
    offset = store.create(object_id, len(data), "driver", primary=primary)
    store.arena.view(offset, len(data))[:] = data
    store.seal(object_id, "driver")
    return offset


def read(store: ObjectStore, object_id: bytes) -> bytes:
    got = store.get(object_id, "reader")
    assert got is not None
    offset, size = got
    data = bytes(store.arena.view(offset, size))
    store.release(object_id, "reader")
    return data


# -- arena ---------------------------------------------------------------------------------


def test_arena_file_is_exclusive_private_and_sparse(arena):
    st = os.stat(arena.path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_size == 64 * KiB
    assert st.st_blocks == 0
    with pytest.raises(FileExistsError):
        Arena.create(arena.path, 4 * KiB)


def test_two_mappings_of_one_arena_share_bytes(arena):
    other = Arena.attach(arena.path)
    try:
        assert other.capacity == arena.capacity
        arena.view(4096, 5)[:] = b"hello"
        arr = other.readonly_array(4096, 5)
        assert arr.tobytes() == b"hello"
        other.view(4096, 1)[:] = b"j"
        assert bytes(arena.view(4096, 5)) == b"jello"
        assert arr[0] == ord("j"), "the array must be a zero-copy view, not a copy"
        del arr
    finally:
        other.close()


def test_readonly_array_cannot_be_written_or_made_writable(arena):
    arr = arena.readonly_array(0, 16)
    assert arr.dtype == np.uint8 and arr.shape == (16,)
    assert not arr.flags.writeable
    with pytest.raises(ValueError):
        arr[0] = 1
    with pytest.raises(ValueError):
        arr.flags.writeable = True


def test_views_are_bounds_checked(arena):
    for offset, size in [(-1, 4), (0, 64 * KiB + 1), (64 * KiB - 3, 4), (0, -1)]:
        with pytest.raises(ValueError, match="outside the arena"):
            arena.view(offset, size)
        with pytest.raises(ValueError, match="outside the arena"):
            arena.readonly_array(offset, size)
    assert len(arena.view(64 * KiB - 4, 4)) == 4


def test_close_with_live_views_does_not_crash(arena):
    view = arena.view(0, 8)
    arr = arena.readonly_array(0, 8)
    arena.close()
    arena.close()
    assert arena.closed
    view[:] = b"stillok!"
    assert arr.tobytes() == b"stillok!"
    with pytest.raises(ValueError, match="closed"):
        arena.view(0, 1)


def test_unlink_is_idempotent(arena):
    arena.unlink()
    assert not os.path.exists(arena.path)
    arena.unlink()


def test_release_memory_gives_pages_back(arena):
    arena.view(0, 32 * KiB)[:] = b"x" * (32 * KiB)
    before = os.stat(arena.path).st_blocks
    assert before > 0
    # An unaligned region: only whole pages inside it may go, the edges keep their bytes.
    arena.release_memory(100, 32 * KiB - 200)
    assert os.stat(arena.path).st_blocks < before
    assert bytes(arena.view(0, 100)) == b"x" * 100
    assert bytes(arena.view(32 * KiB - 100, 100)) == b"x" * 100


# -- object store ----------------------------------------------------------------------------


def test_create_seal_get_release_delete_cycle(make_store):
    store = make_store()
    offset = store.create(oid(1), 10, "w1")
    assert store.get(oid(1), "w2") is None, "unsealed objects are not readable"
    assert not store.contains(oid(1))
    assert store.object_info(oid(1))["pins"] == {"w1": 1}
    store.arena.view(offset, 10)[:] = b"0123456789"
    store.seal(oid(1), "w1")
    assert store.contains(oid(1))
    assert store.object_info(oid(1))["pins"] == {}

    assert store.get(oid(1), "w2") == (offset, 10)
    assert bytes(store.arena.view(offset, 10)) == b"0123456789"
    assert store.object_info(oid(1))["pins"] == {"w2": 1}
    assert store.stats()["num_pinned"] == 1
    store.release(oid(1), "w2")
    assert store.object_info(oid(1))["pins"] == {}

    store.delete(oid(1))
    assert not store.contains(oid(1))
    assert store.get(oid(1), "w2") is None
    assert store.stats()["used"] == 0
    store.delete(oid(1))  # idempotent


def test_duplicate_id_and_negative_size_are_rejected(make_store):
    store = make_store()
    put(store, oid(1), b"a")
    with pytest.raises(ValueError, match="already exists"):
        store.create(oid(1), 1, "w1")
    with pytest.raises(ValueError, match=">= 0"):
        store.create(oid(2), -1, "w1")


def test_zero_size_object(make_store):
    store = make_store()
    offset = put(store, oid(1), b"")
    assert store.get(oid(1), "w1") == (offset, 0)
    store.release(oid(1), "w1")


def test_seal_and_abort_only_by_the_creator_before_sealing(make_store):
    store = make_store()
    store.create(oid(1), 8, "w1")
    with pytest.raises(ValueError, match="only the creator"):
        store.seal(oid(1), "w2")
    with pytest.raises(ValueError, match="only the creator"):
        store.abort(oid(1), "w2")
    store.seal(oid(1), "w1")
    with pytest.raises(ValueError, match="only the creator"):
        store.seal(oid(1), "w1")
    with pytest.raises(ValueError, match="only the creator"):
        store.abort(oid(1), "w1")
    store.abort(oid(99), "w1")  # unknown ids are ignored


def test_abort_frees_the_region(make_store):
    store = make_store()
    store.create(oid(1), 1000, "w1")
    assert store.stats()["used"] == 1024
    store.abort(oid(1), "w1")
    assert store.stats()["used"] == 0
    assert store.object_info(oid(1)) is None


def test_each_get_needs_its_own_release(make_store):
    store = make_store()
    put(store, oid(1), b"x")
    store.get(oid(1), "w1")
    store.get(oid(1), "w1")
    store.release(oid(1), "w1")
    assert store.object_info(oid(1))["pins"] == {"w1": 1}
    store.release(oid(1), "w2")  # a pin w2 never took: ignored
    store.release(oid(99), "w1")
    assert store.object_info(oid(1))["pins"] == {"w1": 1}
    store.release(oid(1), "w1")
    assert store.object_info(oid(1))["pins"] == {}


def test_deleted_pinned_region_is_not_reused_until_released(make_store):
    store = make_store(capacity=4 * KiB)
    a = put(store, oid(1), b"a" * KiB)
    put(store, oid(2), b"b" * KiB)
    store.get(oid(1), "w1")
    store.delete(oid(1))
    assert store.get(oid(1), "w2") is None
    assert store.stats()["used"] == 2 * KiB, "a deleted but pinned region still counts"
    # Best fit would put an exact-size object into a's hole if it were free.
    x = store.create(oid(3), KiB, "w2")
    assert x != a
    assert bytes(store.arena.view(a, KiB)) == b"a" * KiB
    store.abort(oid(3), "w2")
    store.release(oid(1), "w1")
    assert store.stats()["used"] == KiB
    assert store.create(oid(4), KiB, "w2") == a


def test_delete_while_creator_writes_frees_on_seal(make_store):
    store = make_store()
    store.create(oid(1), 100, "w1")
    store.delete(oid(1))
    assert store.object_info(oid(1)) is None
    assert store.stats()["used"] == 128
    store.seal(oid(1), "w1")
    assert store.stats()["used"] == 0
    assert store.get(oid(1), "w1") is None


def test_full_store_spills_lru_primary_and_restores_it_intact(make_store, events):
    store = make_store(capacity=3 * KiB)
    blobs = {i: bytes([i]) * KiB for i in (1, 2, 3)}
    offsets = {i: put(store, oid(i), blobs[i]) for i in blobs}
    read(store, oid(1))  # 2 is now the least recently used

    d = store.create(oid(4), KiB, "w1")
    assert d == offsets[2]
    info = store.object_info(oid(2))
    assert info["spilled"] and info["offset"] is None
    assert not store.object_info(oid(1))["spilled"]
    assert store.stats()["spilled_bytes"] == KiB
    spill_file = os.path.join(store.spill_dir, oid(2).hex())
    assert stat.S_IMODE(os.stat(spill_file).st_mode) == 0o600
    assert events.kinds(oid(2)) == ["object.spilled"]
    assert store.contains(oid(2))

    store.abort(oid(4), "w1")
    assert read(store, oid(2)) == blobs[2]
    assert store.stats()["spilled_bytes"] == 0
    assert not os.path.exists(spill_file)
    assert events.kinds(oid(2)) == ["object.spilled", "object.restored"]
    assert events[-1][1] == {"object_id": oid(2).hex(), "node": "n1", "size": KiB}


def test_restore_spills_another_object_to_make_room(make_store):
    store = make_store(capacity=2 * KiB)
    put(store, oid(1), b"1" * KiB)
    put(store, oid(2), b"2" * KiB)
    put(store, oid(3), b"3" * KiB)  # spills 1
    assert store.object_info(oid(1))["spilled"]
    assert read(store, oid(1)) == b"1" * KiB  # restoring spills 2, the LRU
    assert store.object_info(oid(2))["spilled"]
    assert read(store, oid(2)) == b"2" * KiB  # spills 3
    assert read(store, oid(3)) == b"3" * KiB  # spills 1, the LRU again
    assert store.object_info(oid(1))["spilled"]
    store.delete(oid(1))  # a spilled object: its file goes too
    assert store.stats()["spilled_bytes"] == 0
    assert os.listdir(store.spill_dir) == []


def test_secondary_copies_are_evicted_before_primaries_are_spilled(make_store, events):
    store = make_store(capacity=3 * KiB)
    put(store, oid(1), b"p" * KiB)  # oldest, but primary
    put(store, oid(2), b"s" * KiB, primary=False)
    put(store, oid(3), b"t" * KiB, primary=False)
    store.create(oid(4), KiB, "w1")
    assert not store.contains(oid(2)), "the LRU secondary copy is evicted"
    assert store.contains(oid(3))
    assert not store.object_info(oid(1))["spilled"]
    assert events.kinds(oid(2)) == ["object.evicted"]
    assert store.stats()["spilled_bytes"] == 0


def test_full_error_when_everything_is_pinned(make_store):
    store = make_store(capacity=2 * KiB)
    put(store, oid(1), b"a" * KiB)
    store.get(oid(1), "w1")
    store.create(oid(2), KiB, "w2")  # unsealed, pinned by its creator
    with pytest.raises(ObjectStoreFullError) as info:
        store.create(oid(3), KiB, "w3")
    err = info.value
    assert (err.requested, err.capacity, err.used, err.pinned) == (KiB, 2 * KiB, 2 * KiB, 2 * KiB)
    assert "2 objects are pinned: 1 unsealed" in str(err)
    assert "1 read through live zero-copy views or a running task's arguments" in str(err)
    assert "w1 1.0 KiB" in str(err)  # who holds the viewed one
    assert "1.0 KiB" in str(err) and "2.0 KiB" in str(err)
    assert store.object_info(oid(3)) is None
    assert store.stats()["spilled_bytes"] == 0


def test_full_error_when_larger_than_capacity(make_store):
    store = make_store(capacity=2 * KiB)
    put(store, oid(1), b"a" * KiB)
    with pytest.raises(ObjectStoreFullError, match=r"2049 bytes exceed .* 2048 bytes") as info:
        store.create(oid(2), 2 * KiB + 1, "w1")
    assert info.value.requested == 2 * KiB + 1
    assert not store.object_info(oid(1))["spilled"], "nothing is spilled for a hopeless request"


def test_nothing_is_spilled_when_pinned_fragments_leave_no_room(make_store):
    store = make_store(capacity=4 * KiB)
    for i in range(1, 5):
        put(store, oid(i), bytes([i]) * KiB)
    store.get(oid(1), "w1")
    store.get(oid(3), "w1")
    # 2 KiB could be freed, but only as two separate 1 KiB holes.
    with pytest.raises(ObjectStoreFullError, match="2 objects are pinned"):
        store.create(oid(5), 2 * KiB, "w2")
    assert store.stats()["num_spilled"] == 0


def test_disconnect_drops_pins_and_aborts_unsealed_creates(make_store):
    store = make_store(capacity=4 * KiB)
    put(store, oid(1), b"a" * KiB)
    put(store, oid(2), b"b" * KiB)
    store.get(oid(1), "w1")
    store.get(oid(1), "w1")
    store.get(oid(1), "w2")
    store.get(oid(2), "w1")
    store.delete(oid(2))  # pinned only by w1
    store.create(oid(3), KiB, "w1")
    assert store.stats()["used"] == 3 * KiB
    store.disconnect("w1")
    assert store.object_info(oid(1))["pins"] == {"w2": 1}
    assert store.object_info(oid(3)) is None
    assert store.stats()["used"] == KiB, "w1's unsealed and deleted-pinned regions are freed"


def test_regions_stay_resident_by_default(make_store, monkeypatch):
    store = make_store(capacity=RELEASE_MEMORY_MIN_BYTES + 4 * KiB)
    calls = []
    monkeypatch.setattr(store.arena, "release_memory", lambda o, s: calls.append((o, s)))
    store.create(oid(2), RELEASE_MEMORY_MIN_BYTES, "w1")
    store.seal(oid(2), "w1")
    store.delete(oid(2))
    assert calls == []


def test_large_regions_are_released_to_the_os_small_ones_stay(make_store, monkeypatch):
    store = make_store(capacity=RELEASE_MEMORY_MIN_BYTES + 4 * KiB)
    store.release_threshold = RELEASE_MEMORY_MIN_BYTES
    calls = []
    monkeypatch.setattr(store.arena, "release_memory", lambda o, s: calls.append((o, s)))
    small = store.create(oid(1), KiB, "w1")
    store.seal(oid(1), "w1")
    big = store.create(oid(2), RELEASE_MEMORY_MIN_BYTES, "w1")  # sparse: never touched
    store.seal(oid(2), "w1")
    store.delete(oid(1))
    assert calls == []
    store.delete(oid(2))
    assert calls == [(big, RELEASE_MEMORY_MIN_BYTES)]
    assert small != big


def test_close_removes_spill_files(make_store):
    store = make_store(capacity=KiB)
    put(store, oid(1), b"a" * KiB)
    put(store, oid(2), b"b" * KiB)
    spill_dir = store.spill_dir
    assert os.listdir(spill_dir) == [oid(1).hex()]
    store.close()
    assert not os.path.exists(spill_dir)
    assert store.object_info(oid(1)) is None
    with pytest.raises(RuntimeError, match="closed"):
        store.create(oid(3), 1, "w1")


def test_concurrent_clients_keep_the_bookkeeping_consistent(make_store):
    store = make_store(capacity=64 * KiB)
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            for i in range(200):
                object_id = oid(n * 1000 + i)
                data = bytes([n]) * (i % 7 * 100)
                put(store, object_id, data)
                assert read(store, object_id) == data
                store.get(object_id, f"c{n}")
                store.delete(object_id)
                store.release(object_id, f"c{n}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert store.stats()["used"] == 0
    assert store.stats()["num_objects"] == 0
