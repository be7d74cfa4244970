"""Turn any Python value into a pickle-5 stream plus out-of-band buffers, and back.

This module owns the value codec of memlab:

    serialize(value) ──► SerializedValue(meta, buffers, contained_refs)
                              │ to_bytes() / write_to(shm view)
                              ▼
                    layout bytes (see ``layout``)
                              │ deserialize(view, readonly_base=holder)
                              ▼
                    value whose arrays / Arrow buffers point INTO the layout

Invariants:
- Plain scalars (and one-level containers of them) take a fast path through
  ``pickle.dumps``; everything else goes through a cloudpickle pickler with
  protocol 5 that collects out-of-band buffers and reduces Arrow data to IPC.
- Deserialized buffers are read-only zero-copy slices. When ``readonly_base`` is
  given, every buffer is sliced out of it, so each numpy array / Arrow buffer
  handed to the user has a base chain ending at ``readonly_base``: the runtime's
  ``weakref.finalize`` on it fires only once the last such view is gone.
- Every failure to pickle or unpickle leaves as ``SerializationError`` (chained
  with ``from exc``) whose message names the offending type and the fix.
"""

from __future__ import annotations

import io
import marshal
import pickle
import types
from typing import Any

import cloudpickle

from memlab.exceptions import MemlabError, SerializationError
from memlab.serialization import layout
from memlab.serialization.arrow import reduce_arrow
from memlab.serialization.context import collecting_refs
from memlab.serialization.memcopy import copy_into

_SCALARS = frozenset({type(None), bool, int, float, str, bytes})
_CONTAINERS = frozenset({tuple, list})
# Beyond this many items the per-item type check costs more than it saves.
_FAST_MAX_ITEMS = 64


class SerializedValue:
    """A value turned into a pickle-5 stream and out-of-band buffers.

    Attributes:
        meta: The pickle-5 stream (in-band part).
        buffers: Out-of-band buffers, each a contiguous 1-D ``'B'`` memoryview.
        contained_refs: ObjectRefs recorded (via ``record_ref``) while pickling.
        total_size: Size of the layout, ``layout.total_size(len(meta), buffer lengths)``.
    """

    __slots__ = ("buffers", "contained_refs", "meta", "total_size")

    def __init__(
        self, meta: bytes, buffers: list[memoryview], contained_refs: list[object]
    ) -> None:
        self.meta = meta
        self.buffers = buffers
        self.contained_refs = contained_refs
        if buffers:
            self.total_size = layout.total_size(len(meta), [b.nbytes for b in buffers])
        else:
            self.total_size = layout.HEADER_SIZE + len(meta)

    def __repr__(self) -> str:
        return (
            f"<SerializedValue {self.total_size} bytes: meta={len(self.meta)} "
            f"buffers={len(self.buffers)} refs={len(self.contained_refs)}>"
        )

    def to_bytes(self) -> bytes:
        """Return the layout as one contiguous ``bytes`` (meant for small inline values)."""
        if not self.buffers:
            return layout.pack_inline(self.meta)
        out = bytearray(self.total_size)
        self.write_to(memoryview(out))
        return bytes(out)

    def write_to(self, dest: memoryview) -> None:
        """Write the layout into ``dest[:total_size]``.

        Large buffers are copied by every core (``memcopy``); padding is
        zeroed so that equal values give equal bytes.

        Args:
            dest: A writable byte view at least ``total_size`` long (e.g. a
                freshly allocated shared-memory region).

        Raises:
            ValueError: ``dest`` is too small or read-only.
        """
        dest = layout.as_byte_view(dest)
        if dest.readonly or dest.nbytes < self.total_size:
            raise ValueError(
                f"cannot write a {self.total_size}-byte value into a "
                f"{'read-only' if dest.readonly else f'{dest.nbytes}-byte'} destination; "
                "allocate a writable region of at least SerializedValue.total_size bytes"
            )
        buffers = self.buffers
        offsets = layout.write_header(dest, len(self.meta), [b.nbytes for b in buffers])
        pos = layout.HEADER_SIZE + 16 * len(buffers)
        end = pos + len(self.meta)
        dest[pos:end] = self.meta
        for offset, buf in zip(offsets, buffers, strict=True):
            if offset > end:
                dest[end:offset] = bytes(offset - end)
            end = offset + buf.nbytes
            copy_into(dest[offset:end], buf)


def _is_plain(value: object) -> bool:
    """True if ``value`` is a scalar, or a small container of scalars (one level)."""
    t = type(value)
    if t in _SCALARS:
        return True
    if t in _CONTAINERS:
        if len(value) > _FAST_MAX_ITEMS:  # type: ignore[arg-type]
            return False
        scalars = _SCALARS
        return all(type(item) in scalars for item in value)  # type: ignore[attr-defined]
    if t is dict:
        if len(value) > _FAST_MAX_ITEMS:  # type: ignore[arg-type]
            return False
        scalars = _SCALARS
        return all(
            type(k) in scalars and type(v) in scalars
            for k, v in value.items()  # type: ignore[attr-defined]
        )
    return False


class _Pickler(cloudpickle.Pickler):
    """cloudpickle with Arrow IPC reduction and a note of the last object reduced.

    The C pickler calls ``reducer_override`` for every object except exact
    builtin scalars and containers, so the last object seen before a failure is
    the innermost non-trivial object being pickled: the one to name in the error.
    """

    def __init__(self, file: io.BytesIO, buffer_callback: Any = None) -> None:
        super().__init__(file, protocol=5, buffer_callback=buffer_callback)
        self.last_seen: object = None

    def reducer_override(self, obj: object) -> Any:
        self.last_seen = obj
        if type(obj) is types.CodeType:
            # cloudpickle (>= 3.1.3) renames every code object's file to "<dynamic-code>", so a
            # task's traceback would lose its file name and source lines. marshal keeps the code
            # whole (nested code included); peers run the same interpreter, which marshal needs.
            return marshal.loads, (marshal.dumps(obj),)
        module = type(obj).__module__
        if module.__class__ is str and module.startswith("pyarrow"):
            reduced = reduce_arrow(obj)
            if reduced is not NotImplemented:
                return reduced
        return super().reducer_override(obj)


def _type_name(obj: object) -> str:
    t = type(obj)
    module = getattr(t, "__module__", None)
    qualname = getattr(t, "__qualname__", t.__name__)
    return qualname if module in (None, "builtins") else f"{module}.{qualname}"


def _pickling_error(value: object, culprit: object, exc: BaseException) -> SerializationError:
    name = _type_name(value if culprit is None else culprit)
    cause = exc.__cause__ if isinstance(exc, pickle.PicklingError) else None
    if isinstance(exc, RecursionError) or isinstance(cause, RecursionError):
        reached = "" if culprit is None else f" (last object reached: type '{name}')"
        name = _type_name(value)
        message = (
            f"cannot serialize a value of type '{name}': it is nested too deeply or its "
            f"__reduce__ recurses forever{reached}. Flatten the structure, or create it "
            "inside the task instead of passing it in."
        )
    else:
        message = (
            f"cannot serialize an object of type '{name}' ({type(exc).__name__}: {exc}). "
            "Make it picklable (define __reduce__, or __getstate__/__setstate__), "
            "or create it inside the task instead of passing it in."
        )
    return SerializationError(message, type_name=name)


def _pickle(value: object, buffer_callback: Any) -> tuple[bytes, list[object]]:
    """Pickle with cloudpickle, translating any failure into SerializationError."""
    file = io.BytesIO()
    pickler = _Pickler(file, buffer_callback)
    try:
        with collecting_refs() as refs:
            pickler.dump(value)
    except MemlabError:
        # Already translated by a nested serialize (e.g. in a __reduce__), or a memlab error
        # of its own (a ref from a session that ended): both say more than "cannot pickle".
        raise
    except Exception as exc:
        culprit = pickler.last_seen
        pickler.last_seen = None
        raise _pickling_error(value, culprit, exc) from exc
    return file.getvalue(), refs


def serialize(value: object) -> SerializedValue:
    """Serialize ``value`` into a pickle-5 stream and out-of-band buffers.

    Args:
        value: Any picklable Python value (cloudpickle semantics for code).

    Returns:
        The SerializedValue; its buffers alias ``value``'s memory (no copy), so
        write it out before mutating ``value``.

    Raises:
        SerializationError: ``value`` (or something inside it) cannot be pickled.
    """
    if _is_plain(value):
        return SerializedValue(pickle.dumps(value, protocol=5), [], [])
    raw: list[pickle.PickleBuffer] = []
    meta, refs = _pickle(value, raw.append)
    # raw() is a zero-copy 1-D 'B' view; it raises BufferError for
    # non-contiguous buffers, which numpy never produces out of band.
    return SerializedValue(meta, [pb.raw() for pb in raw], refs)


def deserialize(
    data: bytes | bytearray | memoryview, *, readonly_base: object | None = None
) -> object:
    """Rebuild a value from its layout, zero-copy and read-only for its buffers.

    Args:
        data: The layout (bytes, or a view of a shared-memory region; it may be
            longer than the layout).
        readonly_base: If given, an object over exactly the same bytes as
            ``data`` that supports zero-copy slicing (a read-only uint8
            ``numpy.ndarray`` in the runtime). Buffers are sliced out of it so
            that every array in the result keeps it alive.

    Returns:
        The value. numpy arrays and Arrow buffers in it are read-only views.

    Raises:
        SerializationError: the layout is corrupt or unpickling fails.
    """
    view = layout.as_byte_view(data)
    (meta_start, meta_end), spans = layout.parse_spans(view)
    meta = view[meta_start:meta_end]
    base: Any = readonly_base
    if spans and base is not None and memoryview(base).nbytes < view.nbytes:
        raise ValueError(
            "readonly_base must cover exactly the bytes of data; pass a read-only uint8 "
            "array over the same region, or None"
        )
    try:
        if not spans:
            return pickle.loads(meta)
        if base is None:
            buffers = [view[a:b].toreadonly() for a, b in spans]
        else:
            buffers = [memoryview(base[a:b]).toreadonly() for a, b in spans]
        return pickle.loads(meta, buffers=buffers)
    except SerializationError:
        raise
    except Exception as exc:
        raise _unpickling_error(exc) from exc


def _unpickling_error(exc: BaseException) -> SerializationError:
    name = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
    return SerializationError(
        f"cannot deserialize value ({type(exc).__name__}: {exc}). Make sure every "
        "module and class it uses is importable in this process (same package "
        "versions as the writer); define classes at module level or in __main__.",
        type_name=name,
    )


def dumps_function(fn: object) -> bytes:
    """Pickle a function or class with cloudpickle (by value if defined in ``__main__``).

    Functions and classes of ``__main__`` (notebooks) or of modules that are not
    importable are pickled by value; importable ones by reference.

    Args:
        fn: The function, class or callable object.

    Returns:
        A self-contained pickle stream (no out-of-band buffers).

    Raises:
        SerializationError: ``fn`` or a global / closure variable cannot be pickled.
    """
    return dumps_code(fn)[0]


def dumps_code(fn: object) -> tuple[bytes, list[object]]:
    """``dumps_function``, plus the ObjectRefs met in its closure and globals.

    A ref captured by a function's code lives in the pickled bytes; the caller keeps it counted
    for as long as those bytes may be unpickled (DESIGN §3).
    """
    return _pickle(fn, None)


def loads_function(data: bytes) -> object:
    """Rebuild a function pickled by ``dumps_function``.

    Raises:
        SerializationError: unpickling fails (for example a missing module).
    """
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise _unpickling_error(exc) from exc
