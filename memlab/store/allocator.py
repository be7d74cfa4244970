"""Best-fit allocator over one contiguous address range (pure bookkeeping, no I/O).

Owns the map of which byte ranges of ``[0, capacity)`` are allocated and which are free.
It never touches memory: the arena (``memlab.store.arena``) maps the bytes and the object
store decides what lives where.

Layout of the bookkeeping::

    _free_offsets  sorted offsets of free blocks       (address order, for coalescing)
    _free_sizes    free offset -> size
    _by_size       sorted (size, offset) of free blocks (best-fit lookup by bisect)
    _allocated     allocated offset -> block size

Invariants (checked by ``validate()``):
    * allocated and free blocks tile ``[0, capacity)`` exactly: no gap, no overlap, so
      ``used + free bytes == capacity``;
    * no two free blocks touch (``free()`` coalesces with both neighbours at once);
    * every allocated block size is a positive multiple of ``alignment``, and every block
      starts at a multiple of ``alignment`` (only the tail of a capacity that is not a
      multiple of ``alignment`` can be an unaligned-size free block).

Cost: the lookups are bisects (O(log n)); the list inserts and removals are memmoves of
pointers, cheap for the thousands of blocks a node store holds.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable

__all__ = ["Allocator"]


class Allocator:
    """Best-fit allocator with an address-ordered, coalescing free list.

    Args:
        capacity: Number of bytes managed, ``[0, capacity)``.
        alignment: Every block starts at, and is sized in, multiples of this many bytes.
    """

    def __init__(self, capacity: int, alignment: int = 64) -> None:
        if capacity < 0:
            raise ValueError(f"allocator capacity must be >= 0, got {capacity}")
        if alignment <= 0:
            raise ValueError(f"allocator alignment must be > 0, got {alignment}")
        self.capacity = capacity
        self.alignment = alignment
        self.used = 0
        self._allocated: dict[int, int] = {}
        self._free_offsets: list[int] = []
        self._free_sizes: dict[int, int] = {}
        self._by_size: list[tuple[int, int]] = []
        if capacity > 0:
            self._add_free(0, capacity)

    def __repr__(self) -> str:
        return (
            f"Allocator(capacity={self.capacity}, used={self.used}, "
            f"blocks={len(self._allocated)}, free_blocks={len(self._free_offsets)})"
        )

    def round_up(self, size: int) -> int:
        """The block size ``allocate(size)`` would use: ``size`` rounded up to the alignment.

        A size of 0 still takes one alignment unit, so every allocation has a distinct offset.
        """
        if size < 0:
            raise ValueError(f"allocation size must be >= 0, got {size}")
        units = max(1, -(-size // self.alignment))
        return units * self.alignment

    def allocate(self, size: int) -> int | None:
        """Reserve a block of at least ``size`` bytes.

        Args:
            size: Requested bytes (0 allowed; rounded up to the alignment).

        Returns:
            The block's offset, or ``None`` when no single free block is large enough
            (the free bytes may still add up to more than ``size``: fragmentation).
        """
        need = self.round_up(size)
        i = bisect_left(self._by_size, (need, -1))
        if i == len(self._by_size):
            return None
        block_size, offset = self._by_size[i]
        self._remove_free(offset)
        if block_size > need:
            self._add_free(offset + need, block_size - need)
        self._allocated[offset] = need
        self.used += need
        return offset

    def free(self, offset: int) -> None:
        """Return the block at ``offset`` and merge it with free neighbours.

        Raises:
            ValueError: ``offset`` is not the start of an allocated block (double free or
                a wrong offset).
        """
        size = self._allocated.pop(offset, None)
        if size is None:
            raise ValueError(
                f"free({offset}): no allocated block starts at this offset; it was already "
                "freed or never returned by allocate()"
            )
        self.used -= size
        start, end = offset, offset + size
        i = bisect_left(self._free_offsets, offset)
        if i > 0:
            prev = self._free_offsets[i - 1]
            if prev + self._free_sizes[prev] == start:
                start = prev
                self._remove_free(prev)
        if end in self._free_sizes:
            end += self._free_sizes[end]
            self._remove_free(offset + size)
        self._add_free(start, end - start)

    def block_size(self, offset: int) -> int:
        """Size of the allocated block at ``offset`` (its rounded-up size).

        Raises:
            ValueError: no allocated block starts at ``offset``.
        """
        try:
            return self._allocated[offset]
        except KeyError:
            raise ValueError(f"no allocated block starts at offset {offset}") from None

    def allocations(self) -> dict[int, int]:
        """A snapshot ``{offset: block size}`` of every allocated block."""
        return dict(self._allocated)

    def largest_free(self) -> int:
        """Size of the largest free block: the biggest request that can succeed now."""
        return self._by_size[-1][0] if self._by_size else 0

    def largest_free_if_freed(self, offsets: Iterable[int | None]) -> int:
        """The largest free block there would be if the blocks at ``offsets`` were freed.

        Lets a caller check that evicting candidates can make room before evicting any.
        """
        freed = set(offsets)
        best, cursor = 0, 0
        for offset in sorted(o for o in self._allocated if o not in freed):
            best = max(best, offset - cursor)
            cursor = offset + self._allocated[offset]
        return max(best, self.capacity - cursor)

    @property
    def free_bytes(self) -> int:
        """Total free bytes (possibly fragmented)."""
        return self.capacity - self.used

    def validate(self) -> None:
        """Check every invariant listed in the module docstring.

        Raises:
            AssertionError: the bookkeeping is inconsistent (a bug in this module).
        """
        assert self._free_offsets == sorted(self._free_offsets), "free list not address-ordered"
        assert set(self._free_offsets) == set(self._free_sizes), "free list and sizes disagree"
        assert self._by_size == sorted((s, o) for o, s in self._free_sizes.items()), (
            "size index disagrees with the free list"
        )
        assert self.used == sum(self._allocated.values()), "used does not match the blocks"
        free_total = sum(self._free_sizes.values())
        assert free_total + self.used == self.capacity, (
            f"free {free_total} + used {self.used} != capacity {self.capacity}"
        )
        blocks = [(o, s, False) for o, s in self._allocated.items()]
        blocks += [(o, s, True) for o, s in self._free_sizes.items()]
        blocks.sort()
        cursor = 0
        prev_free = False
        for offset, size, is_free in blocks:
            assert offset == cursor, f"gap or overlap at offset {cursor} (next block {offset})"
            assert size > 0, f"empty block at offset {offset}"
            assert offset % self.alignment == 0, f"unaligned block at offset {offset}"
            if is_free:
                assert not prev_free, f"free block at {offset} not coalesced with its neighbour"
            else:
                assert size % self.alignment == 0, f"allocated block {offset} has unaligned size"
            prev_free = is_free
            cursor = offset + size
        assert cursor == self.capacity, f"blocks end at {cursor}, capacity is {self.capacity}"

    def _add_free(self, offset: int, size: int) -> None:
        insort(self._free_offsets, offset)
        self._free_sizes[offset] = size
        insort(self._by_size, (size, offset))

    def _remove_free(self, offset: int) -> None:
        size = self._free_sizes.pop(offset)
        del self._free_offsets[bisect_left(self._free_offsets, offset)]
        del self._by_size[bisect_left(self._by_size, (size, offset))]
