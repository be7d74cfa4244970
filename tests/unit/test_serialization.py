"""Tests of memlab.serialization: layout, codec, zero-copy reads, refs, functions."""

from __future__ import annotations

import gc
import pickle
import struct
import subprocess
import sys
import threading
import traceback
import types
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from memlab.exceptions import SerializationError
from memlab.serialization import (
    SerializedValue,
    collecting_refs,
    dumps_function,
    layout,
    record_ref,
    serialize,
)
from memlab.serialization import deserialize as _deserialize
from memlab.serialization import loads_function as _loads_function

# The codec returns ``object``; the tests inspect results dynamically.
deserialize: Callable[..., Any] = _deserialize
loads_function: Callable[[bytes], Any] = _loads_function


class FakeRef:
    """Stand-in for runtime.ObjectRef: records itself when pickled."""

    def __init__(self, ident: int) -> None:
        self.ident = ident

    def __reduce__(self) -> tuple[Any, ...]:
        record_ref(self)
        return FakeRef, (self.ident,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeRef) and other.ident == self.ident

    def __hash__(self) -> int:
        return hash(self.ident)


class Holder:
    """A plain user object with attributes (pickled via __dict__)."""

    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


class Vanishing:
    """Deleted from the module in one test to make unpickling fail."""


class BadReduce:
    def __reduce__(self) -> Any:
        raise RuntimeError("refusing to pickle")


class BadSetstate:
    def __init__(self) -> None:
        self.state = 1

    def __setstate__(self, state: Any) -> None:
        raise ValueError("refusing to unpickle")


def roundtrip(value: object) -> Any:
    return deserialize(serialize(value).to_bytes())


def into_shared_region(value: object) -> tuple[memoryview, np.ndarray]:
    """Mimic the runtime: the layout in a region, plus a read-only uint8 holder over it."""
    sv = serialize(value)
    region = bytearray(sv.total_size)
    sv.write_to(memoryview(region))
    holder = np.frombuffer(region, dtype=np.uint8)
    holder.flags.writeable = False
    return memoryview(region), holder


def inside(address: int, holder: np.ndarray) -> bool:
    start = holder.ctypes.data
    return start <= address < start + holder.nbytes


def finalizer_flag(holder: np.ndarray) -> list[bool]:
    fired: list[bool] = []
    weakref.finalize(holder, fired.append, True)
    return fired


# --- layout -----------------------------------------------------------------


@pytest.mark.parametrize("buffer_lens", [[], [0], [1], [63, 64, 65], [1000, 0, 7]])
def test_layout_offsets_are_aligned_ordered_and_sum_to_total_size(buffer_lens: list[int]) -> None:
    offsets = layout.buffer_offsets(13, buffer_lens)
    assert all(o % layout.ALIGNMENT == 0 for o in offsets)
    end = layout.HEADER_SIZE + 16 * len(buffer_lens) + 13
    for offset, length in zip(offsets, buffer_lens, strict=True):
        assert offset >= end
        end = offset + length
    assert layout.total_size(13, buffer_lens) == end


def test_layout_parse_returns_views_of_what_was_written() -> None:
    meta, bufs = b"meta-bytes", [b"a" * 5, b"", b"xyz" * 40]
    dest = bytearray(layout.total_size(len(meta), [len(b) for b in bufs]) + 100)
    view = memoryview(dest)
    offsets = layout.write_header(view, len(meta), [len(b) for b in bufs])
    start = layout.HEADER_SIZE + 16 * len(bufs)
    view[start : start + len(meta)] = meta
    for offset, buf in zip(offsets, bufs, strict=True):
        view[offset : offset + len(buf)] = buf
    meta_view, buf_views = layout.parse(view)
    assert bytes(meta_view) == meta
    assert [bytes(b) for b in buf_views] == bufs
    assert buf_views[2].obj is dest  # a slice of the input, not a copy


def _valid_layout() -> bytes:
    return serialize([np.arange(10), np.ones(3)]).to_bytes()


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda b: b[:10], id="shorter-than-header"),
        pytest.param(lambda b: b"XXXX" + b[4:], id="bad-magic"),
        pytest.param(lambda b: b[:4] + struct.pack("<I", 2**32 - 1) + b[8:], id="huge-count"),
        pytest.param(lambda b: b[:8] + struct.pack("<Q", 2**63) + b[16:], id="huge-meta"),
        pytest.param(lambda b: b[:16] + struct.pack("<Q", 2**62) + b[24:], id="buffer-offset"),
        pytest.param(lambda b: b[:24] + struct.pack("<Q", 2**40) + b[32:], id="buffer-length"),
        pytest.param(lambda b: b[:16] + struct.pack("<Q", 64 * 2 + 1) + b[24:], id="misaligned"),
        pytest.param(lambda b: b[:16] + struct.pack("<Q", 0) + b[24:], id="over-header"),
        pytest.param(lambda b: b[: len(b) - 1], id="truncated-last-buffer"),
    ],
)
def test_layout_parse_rejects_corrupt_input(corrupt: Any) -> None:
    bad = corrupt(_valid_layout())
    with pytest.raises(SerializationError, match="corrupt value layout"):
        layout.parse(memoryview(bad))
    with pytest.raises(SerializationError, match="corrupt value layout"):
        deserialize(bad)


def test_layout_parse_never_reads_out_of_bounds_for_any_truncation() -> None:
    data = _valid_layout()
    for n in range(len(data)):
        with pytest.raises(SerializationError):
            deserialize(memoryview(data)[:n])


def test_layout_accepts_region_longer_than_value() -> None:
    data = _valid_layout() + b"\xff" * 77
    a, b = deserialize(data)
    assert np.array_equal(a, np.arange(10)) and np.array_equal(b, np.ones(3))


# --- SerializedValue ----------------------------------------------------------


def test_serialized_value_fields_and_total_size() -> None:
    sv = serialize({"a": np.arange(100, dtype=np.int32), "b": np.zeros((4, 4))})
    assert isinstance(sv, SerializedValue)
    assert not hasattr(sv, "__dict__")
    assert len(sv.buffers) == 2
    for buf in sv.buffers:
        assert buf.format == "B" and buf.ndim == 1 and buf.c_contiguous
    assert sv.total_size == layout.total_size(len(sv.meta), [len(b) for b in sv.buffers])
    assert len(sv.to_bytes()) == sv.total_size


def test_write_to_matches_to_bytes_and_zeroes_padding() -> None:
    sv = serialize([np.arange(3, dtype=np.uint8), np.arange(5, dtype=np.uint8)])
    dest = bytearray(b"\xee" * (sv.total_size + 10))
    sv.write_to(memoryview(dest))
    assert bytes(dest[: sv.total_size]) == sv.to_bytes()
    assert dest[sv.total_size :] == b"\xee" * 10  # nothing written past total_size


def test_write_to_rejects_small_or_readonly_destination() -> None:
    sv = serialize(np.arange(10))
    with pytest.raises(ValueError, match=r"at least SerializedValue\.total_size"):
        sv.write_to(memoryview(bytearray(sv.total_size - 1)))
    with pytest.raises(ValueError, match="read-only"):
        sv.write_to(memoryview(bytes(sv.total_size)))


# --- round trips ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**100),
        3.5,
        "",
        "héllo",
        b"",
        b"\x00" * 1000,
        (1, "a", None),
        [1.0, b"x"],
        {"k": 1, 2: "v"},
        (),
        [[1, 2], {"a": (3,)}],
        {1, 2, 3},
        list(range(1000)),
        Holder(x=1, y=[2, 3]).__dict__,
    ],
)
def test_roundtrip_plain_values(value: object) -> None:
    assert roundtrip(value) == value


@pytest.mark.parametrize("value", [7, "s", b"b", (1, 2.0), [None, True], {"a": 1}])
def test_fast_path_is_plain_pickle_without_buffers(value: object) -> None:
    sv = serialize(value)
    assert sv.meta == pickle.dumps(value, protocol=5)
    assert sv.buffers == [] and sv.contained_refs == []


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(np.arange(24, dtype=np.float32).reshape(2, 3, 4), id="c-order"),
        pytest.param(np.asfortranarray(np.arange(12.0).reshape(3, 4)), id="f-order"),
        pytest.param(np.array(5.0), id="0-d"),
        pytest.param(np.zeros((0, 3)), id="empty"),
        pytest.param(
            np.array(
                [(1, 2.5, b"ab"), (3, 4.5, b"cd")], dtype=[("i", "<i4"), ("f", "<f8"), ("s", "S2")]
            ),
            id="structured",
        ),
        pytest.param(np.arange(6, dtype=">i8"), id="big-endian"),
        pytest.param(np.array([1 + 2j]), id="complex"),
    ],
)
def test_numpy_roundtrip_is_out_of_band_and_read_only(array: np.ndarray) -> None:
    sv = serialize(array)
    assert len(sv.buffers) == 1
    result = deserialize(sv.to_bytes())
    assert result.dtype == array.dtype and result.shape == array.shape
    assert np.array_equal(result, array)
    assert result.flags.writeable is False


def test_numpy_arrays_numpy_pickles_in_band_still_roundtrip() -> None:
    strided = np.arange(20).reshape(4, 5)[:, ::2]
    objects = np.array([{"a": 1}, None, "x"], dtype=object)
    dates = np.array(["2020-01-01", "NaT"], dtype="datetime64[D]")
    sv = serialize([strided, objects, dates])
    assert sv.buffers == []  # numpy's own choice for these three kinds
    got_strided, got_objects, got_dates = deserialize(sv.to_bytes())
    assert np.array_equal(got_strided, strided)
    assert list(got_objects) == list(objects)
    assert np.array_equal(got_dates, dates, equal_nan=True)


def test_bytearray_data_without_base_still_yields_read_only_arrays() -> None:
    sv = serialize(np.arange(4))
    region = bytearray(sv.total_size)
    sv.write_to(memoryview(region))
    result = deserialize(region)
    assert result.flags.writeable is False
    assert inside(result.ctypes.data, np.frombuffer(region, dtype=np.uint8))


# --- zero-copy reads from a "shared-memory" region ---------------------------------


def test_numpy_zero_copy_read_only_and_keeps_holder_alive() -> None:
    view, holder = into_shared_region(np.arange(1000, dtype=np.float64))
    fired = finalizer_flag(holder)
    result = deserialize(view, readonly_base=holder)
    assert inside(result.ctypes.data, holder)
    with pytest.raises(ValueError, match="read-only"):
        result[0] = 1.0
    part = result[10:20]
    del view, holder, result
    gc.collect()
    assert fired == []  # the slice still reads the region
    del part
    gc.collect()
    assert fired == [True]


def test_nested_containers_each_array_zero_copy() -> None:
    value = {"a": [np.arange(10), (np.ones(5), {"deep": np.zeros(3, dtype=np.int8)})], "n": 1}
    view, holder = into_shared_region(value)
    fired = finalizer_flag(holder)
    result = deserialize(view, readonly_base=holder)
    arrays = [result["a"][0], result["a"][1][0], result["a"][1][1]["deep"]]
    for arr in arrays:
        assert inside(arr.ctypes.data, holder) and arr.flags.writeable is False
    assert np.array_equal(arrays[0], np.arange(10)) and result["n"] == 1
    keep = arrays[2]
    del view, holder, result, arrays, arr
    gc.collect()
    assert fired == []
    del keep
    gc.collect()
    assert fired == [True]


def _arrow_addresses(table: pa.Table) -> list[int]:
    return [
        buf.address
        for column in table.columns
        for chunk in column.chunks
        for buf in chunk.buffers()
        if buf is not None and buf.size > 0
    ]


def test_arrow_table_zero_copy_and_keeps_holder_alive() -> None:
    table = pa.table({"i": pa.array(range(1000)), "s": pa.array([str(i) for i in range(1000)])})
    view, holder = into_shared_region(table)
    fired = finalizer_flag(holder)
    result = deserialize(view, readonly_base=holder)
    assert result.equals(table)
    addresses = _arrow_addresses(result)
    assert addresses and all(inside(a, holder) for a in addresses)
    column = result.column("i")
    del view, holder, result
    gc.collect()
    assert fired == []
    del column
    gc.collect()
    assert fired == [True]


def test_pandas_dataframe_of_floats_zero_copy_and_keeps_holder_alive() -> None:
    df = pd.DataFrame(np.arange(3000, dtype=np.float64).reshape(1000, 3), columns=["a", "b", "c"])
    view, holder = into_shared_region(df)
    fired = finalizer_flag(holder)
    result = deserialize(view, readonly_base=holder)
    pd.testing.assert_frame_equal(result, df)
    assert inside(result["b"].to_numpy().ctypes.data, holder)
    series = result["a"]
    del view, holder, result
    gc.collect()
    assert fired == []
    del series
    gc.collect()
    assert fired == [True]


def test_pandas_series_and_mixed_frame_roundtrip() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0], "n": [1, 2], "s": ["a", "b"]})
    pd.testing.assert_frame_equal(roundtrip(df), df)
    series = pd.Series([1, 2, 3], name="s")
    pd.testing.assert_series_equal(roundtrip(series), series)


def test_readonly_base_smaller_than_data_is_rejected() -> None:
    view, holder = into_shared_region(np.arange(8))
    with pytest.raises(ValueError, match="readonly_base"):
        deserialize(view, readonly_base=holder[:-1])


# --- Arrow ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(pa.table({"a": [1, 2, None], "b": ["x", "y", "z"]}), id="table"),
        pytest.param(pa.table({"a": pa.array([], pa.int64())}), id="empty-table"),
        pytest.param(pa.record_batch({"a": [1.5, 2.5]}), id="record-batch"),
        pytest.param(pa.array([1, None, 3, 4])[1:], id="sliced-array-with-nulls"),
        pytest.param(pa.array([["a"], [], None]), id="list-array"),
        pytest.param(pa.chunked_array([[1, 2], [3]]), id="chunked"),
        pytest.param(pa.chunked_array([], pa.string()), id="chunked-no-chunks"),
    ],
)
def test_arrow_roundtrip_uses_one_out_of_band_buffer(value: Any) -> None:
    sv = serialize(value)
    assert len(sv.buffers) == 1
    result = deserialize(sv.to_bytes())
    assert type(result) is type(value)
    assert result.type == value.type if hasattr(value, "type") else result.schema == value.schema
    assert result.equals(value)


def test_arrow_non_tabular_objects_keep_pyarrow_pickling() -> None:
    value = [pa.schema([("a", pa.int32())]), pa.int64(), pa.scalar(3)]
    assert roundtrip(value) == value


def test_importing_and_using_serialization_does_not_import_pyarrow() -> None:
    code = (
        "import sys; from memlab.serialization import serialize, deserialize;"
        "deserialize(serialize({'a': [1, object.__new__(type('C', (), {}))]}).to_bytes());"
        "assert 'pyarrow' not in sys.modules, 'pyarrow imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- errors --------------------------------------------------------------------------


def test_unpicklable_value_names_innermost_type_and_fix() -> None:
    value = {"ok": [1, 2], "bad": Holder(inner=[threading.Lock()])}
    with pytest.raises(SerializationError) as info:
        serialize(value)
    message = str(info.value)
    assert "cannot serialize an object of type '_thread.lock'" in message
    assert "picklable" in message and "inside the task" in message
    assert info.value.type_name == "_thread.lock"
    assert isinstance(info.value.__cause__, TypeError)


def test_failing_reduce_is_named() -> None:
    with pytest.raises(SerializationError, match="BadReduce") as info:
        serialize([1, BadReduce()])
    assert isinstance(info.value.__cause__, RuntimeError)


def test_unpicklable_generator_is_named() -> None:
    with pytest.raises(SerializationError, match="type 'generator'"):
        serialize(Holder(gen=(i for i in range(3))))


def test_too_deep_nesting_is_a_serialization_error() -> None:
    value: list[Any] = []
    for _ in range(sys.getrecursionlimit() * 2):
        value = [value]
    with pytest.raises(SerializationError, match="nested too deeply"):
        serialize(value)


def test_unpickling_failure_is_a_serialization_error(monkeypatch: pytest.MonkeyPatch) -> None:
    data = serialize(Vanishing()).to_bytes()
    monkeypatch.delattr(sys.modules[__name__], "Vanishing")
    with pytest.raises(SerializationError, match="cannot deserialize") as info:
        deserialize(data)
    assert isinstance(info.value.__cause__, AttributeError)
    with pytest.raises(SerializationError, match="refusing to unpickle"):
        roundtrip(BadSetstate())


# --- contained refs ----------------------------------------------------------------


def test_contained_refs_found_in_lists_dicts_and_objects() -> None:
    refs = [FakeRef(i) for i in range(4)]
    value = [refs[0], {"k": refs[1], refs[2]: 1}, Holder(r=refs[3], arr=np.arange(3))]
    sv = serialize(value)
    assert sorted(r.ident for r in sv.contained_refs) == [0, 1, 2, 3]  # type: ignore[attr-defined]
    assert all(any(r is c for c in sv.contained_refs) for r in refs)
    back = deserialize(sv.to_bytes())
    assert back[0] == refs[0] and back[2].r == refs[3]


def test_nested_collecting_contexts_do_not_mix() -> None:
    outer_ref, inner_ref = FakeRef(1), FakeRef(2)
    with collecting_refs() as outer:
        record_ref(outer_ref)
        with collecting_refs() as inner:
            record_ref(inner_ref)
        # a serialize() call inside an active context keeps its refs to itself
        sv = serialize([FakeRef(3)])
        record_ref(outer_ref)
    assert inner == [inner_ref]
    assert outer == [outer_ref, outer_ref]
    assert [r.ident for r in sv.contained_refs] == [3]  # type: ignore[attr-defined]


def test_record_ref_outside_context_is_noop_and_contexts_are_per_thread() -> None:
    record_ref(FakeRef(0))  # must not raise
    other_thread_done = threading.Event()

    def other() -> None:
        record_ref(FakeRef(99))
        other_thread_done.set()

    with collecting_refs() as refs:
        thread = threading.Thread(target=other)
        thread.start()
        assert other_thread_done.wait(10)
        thread.join(10)
    assert refs == []


def test_context_is_popped_when_pickling_fails() -> None:
    with pytest.raises(SerializationError):
        serialize([FakeRef(1), threading.Lock()])
    with collecting_refs() as refs:
        pass
    record_ref(FakeRef(2))
    assert refs == []


# --- functions -------------------------------------------------------------------


def test_function_from_main_is_pickled_by_value() -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(
        "SCALE = 3\n"
        "class Point:\n"
        "    def __init__(self, x): self.x = x\n"
        "def scaled(p): return Point(p.x * SCALE)\n",
        namespace,
    )
    data = dumps_function(namespace["scaled"])
    assert b"scaled" in data
    namespace.clear()  # the defining namespace is gone, like a re-run cell
    fn = loads_function(data)
    point_class = fn.__globals__["Point"]
    assert fn(point_class(2)).x == 6


def test_closure_and_lambda_roundtrip() -> None:
    base = 10
    adders = [lambda x: x + base, (lambda k: lambda x: x * k)(4)]
    loaded = loads_function(dumps_function(adders))
    assert [f(2) for f in loaded] == [12, 8]


def test_function_capturing_unpicklable_names_type() -> None:
    lock = threading.Lock()

    def uses_lock() -> bool:
        return lock.locked()

    with pytest.raises(SerializationError, match=r"_thread\.lock"):
        dumps_function(uses_lock)


def test_loads_function_failure_is_serialization_error() -> None:
    with pytest.raises(SerializationError, match="cannot deserialize"):
        loads_function(b"not a pickle")


def test_function_by_value_keeps_its_file_and_lines_for_tracebacks(tmp_path: Path) -> None:
    source = tmp_path / "cell.py"
    source.write_text(
        "def outer(x):\n"
        "    def inner(y):\n"
        "        raise ValueError(f'bad {y}')\n"
        "    return inner(x)\n"
    )
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source.read_text(), str(source), "exec"), namespace)
    fn = loads_function(dumps_function(namespace["outer"]))

    inner_code = next(c for c in fn.__code__.co_consts if isinstance(c, types.CodeType))
    assert fn.__code__.co_filename == inner_code.co_filename == str(source)
    with pytest.raises(ValueError, match="bad 7") as info:
        fn(7)
    text = "".join(traceback.format_exception(info.value))
    assert f'File "{source}", line 3, in inner' in text
    assert "raise ValueError(f'bad {y}')" in text  # the source line, read from the file
