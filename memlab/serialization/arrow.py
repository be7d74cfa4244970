"""Arrow values as one out-of-band Arrow IPC stream.

This module owns how ``pyarrow.Table``, ``RecordBatch``, ``Array`` and
``ChunkedArray`` are pickled: the value is written as an Arrow IPC stream into
one buffer that pickle-5 carries out of band, and it is rebuilt with
``pyarrow.ipc.open_stream`` over that buffer, so every column buffer of the
result is a zero-copy slice of the caller's memory (shared memory in the
runtime) and keeps it alive through Arrow's parent-buffer chain.

Invariants:
- pyarrow is imported only when an object whose type lives in a ``pyarrow``
  module is met, so ``import memlab`` does not pay for it.
- Other pyarrow objects (Schema, DataType, Scalar, Buffer...) keep pyarrow's
  own pickling: ``reduce_arrow`` returns ``NotImplemented`` for them.
- An Array or ChunkedArray travels as the single column ``"_"`` of a batch or
  table, so slices (non-zero offsets), nulls and zero-chunk arrays keep their
  exact type and contents.
"""

from __future__ import annotations

import pickle
from typing import Any, cast

# Values of the ``kind`` tag in the reduce tuple.
_TABLE = "table"
_BATCH = "batch"
_ARRAY = "array"
_CHUNKED = "chunked"
_COLUMN = "_"


def _kind_of(obj: object, pa: Any) -> str | None:
    if isinstance(obj, pa.Table):
        return _TABLE
    if isinstance(obj, pa.RecordBatch):
        return _BATCH
    if isinstance(obj, pa.Array):
        return _ARRAY
    if isinstance(obj, pa.ChunkedArray):
        return _CHUNKED
    return None


def reduce_arrow(obj: object) -> Any:
    """Return a pickle reduce tuple for Arrow tabular data, else ``NotImplemented``.

    Call it only for objects whose type's module starts with ``"pyarrow"``.

    Args:
        obj: The object met by the pickler.

    Returns:
        ``(rebuild_arrow, (kind, PickleBuffer(ipc_stream)))`` or ``NotImplemented``.
    """
    import pyarrow as pa

    kind = _kind_of(obj, pa)
    if kind is None:
        return NotImplemented
    sink = pa.BufferOutputStream()
    # _kind_of checked the type; the casts tell mypy what it found.
    if kind == _TABLE:
        table = cast("pa.Table", obj)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    elif kind == _BATCH:
        batch = cast("pa.RecordBatch", obj)
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
    elif kind == _ARRAY:
        batch = pa.RecordBatch.from_arrays([cast("pa.Array[Any]", obj)], names=[_COLUMN])
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
    else:
        table = pa.Table.from_arrays([cast("pa.ChunkedArray[Any]", obj)], names=[_COLUMN])
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return rebuild_arrow, (kind, pickle.PickleBuffer(sink.getvalue()))


def rebuild_arrow(kind: str, buffer: Any) -> Any:
    """Rebuild an Arrow value from its IPC stream, zero-copy over ``buffer``.

    Args:
        kind: The tag written by ``reduce_arrow``.
        buffer: The out-of-band buffer (a memoryview in memlab; bytes-like in general).

    Returns:
        The Table, RecordBatch, Array or ChunkedArray.
    """
    import pyarrow as pa

    # py_buffer keeps a reference to ``buffer``, and every column buffer the
    # reader creates is a slice of it: that is the chain keeping the memory alive.
    reader = pa.ipc.open_stream(pa.py_buffer(buffer))
    if kind == _TABLE:
        return reader.read_all()
    if kind == _BATCH:
        return reader.read_next_batch()
    if kind == _ARRAY:
        return reader.read_next_batch().column(0)
    if kind == _CHUNKED:
        return reader.read_all().column(0)
    raise ValueError(f"unknown Arrow value kind {kind!r}; the pickle stream is corrupt")
