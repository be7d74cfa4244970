"""The contiguous byte layout of one serialized value.

This module owns the on-memory format that a serialized value takes inside a
shared-memory region (or an inline byte string)::

    offset 0   magic b"MLV1"                      4 bytes
           4   buffer count n (u32, little end.)  4 bytes
           8   meta length m (u64)                 8 bytes
          16   n x (buffer offset u64, length u64) 16*n bytes
    16+16n     meta: the pickle-5 stream           m bytes
               zero padding up to a 64-byte boundary
    o_0        buffer 0 (o_0 % 64 == 0)
               zero padding ...
    o_{n-1}    buffer n-1

Invariants:
- Offsets are relative to the start of the layout, and every buffer starts at a
  64-byte aligned offset, so when the region itself is 64-byte aligned every
  numpy array and Arrow buffer read from it is aligned for any dtype / SIMD.
- Buffers follow the meta and each other in order and never overlap.
- ``parse`` trusts nothing: it checks magic and bounds before it hands out a
  view, and never reads outside the view it is given. A region may be longer
  than the layout (allocators round sizes up); the tail is ignored.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from memlab.exceptions import SerializationError

MAGIC = b"MLV1"
ALIGNMENT = 64

_HEADER = struct.Struct("<4sIQ")
_ENTRY = struct.Struct("<QQ")
HEADER_SIZE = _HEADER.size  # 16
_ENTRY_SIZE = _ENTRY.size  # 16


def _align(offset: int) -> int:
    return (offset + ALIGNMENT - 1) & ~(ALIGNMENT - 1)


def buffer_offsets(meta_len: int, buffer_lens: Sequence[int]) -> list[int]:
    """Return the offset of each out-of-band buffer inside the layout.

    Args:
        meta_len: Length of the pickle stream.
        buffer_lens: Length of each out-of-band buffer, in order.

    Returns:
        One 64-byte aligned offset per buffer.
    """
    offsets = []
    end = HEADER_SIZE + _ENTRY_SIZE * len(buffer_lens) + meta_len
    for length in buffer_lens:
        start = _align(end)
        offsets.append(start)
        end = start + length
    return offsets


def total_size(meta_len: int, buffer_lens: Sequence[int]) -> int:
    """Return the number of bytes the layout of a value occupies.

    Args:
        meta_len: Length of the pickle stream.
        buffer_lens: Length of each out-of-band buffer, in order.

    Returns:
        The layout size in bytes (no trailing padding).
    """
    if not buffer_lens:
        return HEADER_SIZE + meta_len
    return buffer_offsets(meta_len, buffer_lens)[-1] + buffer_lens[-1]


def pack_inline(meta: bytes) -> bytes:
    """Return the whole layout of a value that has no out-of-band buffer."""
    return _HEADER.pack(MAGIC, 0, len(meta)) + meta


def write_header(dest: memoryview, meta_len: int, buffer_lens: Sequence[int]) -> list[int]:
    """Write the fixed header and the buffer table at the start of ``dest``.

    Args:
        dest: A writable 1-D byte view, at least ``total_size(...)`` long.
        meta_len: Length of the pickle stream that the caller writes next.
        buffer_lens: Length of each out-of-band buffer, in order.

    Returns:
        The offset of each buffer, where the caller copies the buffers.
    """
    offsets = buffer_offsets(meta_len, buffer_lens)
    _HEADER.pack_into(dest, 0, MAGIC, len(buffer_lens), meta_len)
    pos = HEADER_SIZE
    for offset, length in zip(offsets, buffer_lens, strict=True):
        _ENTRY.pack_into(dest, pos, offset, length)
        pos += _ENTRY_SIZE
    return offsets


def _corrupt(detail: str) -> SerializationError:
    return SerializationError(
        f"corrupt value layout: {detail}; the bytes were not written by memlab's serializer "
        "or were overwritten. Re-create the value (recompute or put it again)."
    )


def parse_spans(view: memoryview) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Validate a layout and return where its parts lie, without slicing.

    Args:
        view: A 1-D unsigned-byte view of the layout (it may be longer).

    Returns:
        ``((meta_start, meta_end), [(buf_start, buf_end), ...])``.

    Raises:
        SerializationError: bad magic, or a length or offset out of bounds.
    """
    size = view.nbytes
    if size < HEADER_SIZE:
        raise _corrupt(f"{size} bytes is shorter than the {HEADER_SIZE}-byte header")
    magic, count, meta_len = _HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise _corrupt(f"bad magic {bytes(magic)!r} (expected {MAGIC!r})")
    meta_start = HEADER_SIZE + _ENTRY_SIZE * count
    meta_end = meta_start + meta_len
    if meta_end > size:
        raise _corrupt(
            f"header announces {count} buffers and {meta_len} meta bytes, beyond the "
            f"{size}-byte region"
        )
    spans: list[tuple[int, int]] = []
    end = meta_end
    for pos in range(HEADER_SIZE, meta_start, _ENTRY_SIZE):
        offset, length = _ENTRY.unpack_from(view, pos)
        if offset < end or offset % ALIGNMENT or offset + length > size:
            raise _corrupt(
                f"buffer #{len(spans)} at offset {offset} of length {length} overlaps the "
                f"previous part, is misaligned, or ends beyond the {size}-byte region"
            )
        end = offset + length
        spans.append((offset, end))
    return (meta_start, meta_end), spans


def as_byte_view(data: object) -> memoryview:
    """Return a 1-D unsigned-byte memoryview over ``data`` (zero copy).

    Raises:
        SerializationError: ``data`` is not a contiguous buffer.
    """
    try:
        view = data if isinstance(data, memoryview) else memoryview(data)  # type: ignore[arg-type]
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
    except (TypeError, ValueError) as exc:
        raise _corrupt(
            f"expected a contiguous bytes-like object, got {type(data).__name__}"
        ) from exc
    return view


def parse(view: memoryview) -> tuple[memoryview, list[memoryview]]:
    """Validate a layout and return views of its meta and its buffers.

    Args:
        view: The layout (any contiguous bytes-like view; it may be longer).

    Returns:
        ``(meta_view, [buffer_view, ...])``, all slices of ``view`` (zero copy).

    Raises:
        SerializationError: the bytes are not a valid layout.
    """
    view = as_byte_view(view)
    (meta_start, meta_end), spans = parse_spans(view)
    return view[meta_start:meta_end], [view[a:b] for a, b in spans]
