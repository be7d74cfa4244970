"""Tests for the pure best-fit allocator (memlab.store.allocator)."""

from __future__ import annotations

import random

import pytest

from memlab.store.allocator import Allocator


@pytest.fixture
def alloc():
    a = Allocator(1024, alignment=64)
    yield a
    a.validate()


def test_allocations_are_aligned_and_disjoint(alloc):
    offsets = [alloc.allocate(n) for n in (1, 64, 65, 100)]
    assert offsets == [0, 64, 128, 256]
    assert alloc.used == 64 + 64 + 128 + 128
    assert all(o % 64 == 0 for o in offsets)


def test_size_zero_takes_one_alignment_unit(alloc):
    a = alloc.allocate(0)
    b = alloc.allocate(0)
    assert a != b
    assert alloc.used == 128
    assert alloc.block_size(a) == 64


def test_returns_none_when_no_contiguous_block_fits(alloc):
    offsets = [alloc.allocate(128) for _ in range(8)]
    assert alloc.allocate(1) is None
    alloc.free(offsets[1])
    alloc.free(offsets[3])
    # 256 bytes are free, but in two separate 128-byte holes.
    assert alloc.free_bytes == 256
    assert alloc.largest_free() == 128
    assert alloc.allocate(129) is None
    assert alloc.allocate(128) in (offsets[1], offsets[3])


def test_free_coalesces_with_both_neighbours(alloc):
    a, b, c = (alloc.allocate(128) for _ in range(3))
    alloc.free(a)
    alloc.free(c)
    alloc.validate()
    alloc.free(b)
    assert alloc.largest_free() == 1024
    assert alloc.allocate(1024) == 0


def test_best_fit_picks_the_smallest_hole_that_fits(alloc):
    blocks = [alloc.allocate(n) for n in (256, 64, 128, 64, 512)]
    alloc.free(blocks[0])  # 256-byte hole at 0
    alloc.free(blocks[2])  # 128-byte hole at 320
    assert alloc.allocate(100) == 320


def test_free_of_unknown_or_freed_offset_raises(alloc):
    a = alloc.allocate(10)
    with pytest.raises(ValueError, match="no allocated block starts at this offset"):
        alloc.free(a + 64)
    alloc.free(a)
    with pytest.raises(ValueError, match="already freed"):
        alloc.free(a)


def test_largest_free_if_freed_ignores_other_blocks(alloc):
    a, b, c, d = (alloc.allocate(256) for _ in range(4))
    assert alloc.largest_free() == 0
    assert alloc.largest_free_if_freed([b, c]) == 512
    assert alloc.largest_free_if_freed([a, c]) == 256
    assert alloc.largest_free_if_freed([a, b, c, d]) == 1024


def test_capacity_not_a_multiple_of_alignment():
    a = Allocator(1000, alignment=64)
    blocks = []
    while (offset := a.allocate(64)) is not None:
        blocks.append(offset)
    assert len(blocks) == 15  # the 40-byte tail can never hold an aligned block
    a.validate()
    for offset in blocks:
        a.free(offset)
    a.validate()
    assert a.largest_free() == 1000


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="alignment"):
        Allocator(100, alignment=0)
    with pytest.raises(ValueError, match=">= 0"):
        Allocator(100).allocate(-1)


@pytest.mark.parametrize("seed", range(5))
def test_random_allocate_free_sequence_keeps_invariants(seed):
    rng = random.Random(seed)
    capacity = 1 << 20
    a = Allocator(capacity, alignment=64)
    live: dict[int, int] = {}
    for _ in range(2000):
        if live and rng.random() < 0.45:
            offset = rng.choice(list(live))
            a.free(offset)
            del live[offset]
        else:
            size = rng.choice([0, 1, 63, 64, 65, 1000, rng.randrange(1, 40_000)])
            offset = a.allocate(size)
            if offset is None:
                assert a.largest_free() < a.round_up(size)
                continue
            assert offset % 64 == 0 and offset + size <= capacity
            for other, other_size in live.items():
                assert offset + a.round_up(size) <= other or other + other_size <= offset
            live[offset] = a.round_up(size)
        a.validate()
        assert a.used == sum(live.values())
    for offset in list(live):
        a.free(offset)
    a.validate()
    assert a.used == 0 and a.largest_free() == capacity
