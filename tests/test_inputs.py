"""Python sequences of records: the one-pass conversion equals the element-by-element reading."""

from __future__ import annotations

import numpy as np
import pytest

from offload import golden
from offload.batch import VarRecords, _bytes_slow, as_records

CASES = {
    "ascii str": ["", "a", "user_42|ios", "x" * 300],
    "non-ascii str": ["h\u00e9llo", "", "\U0001f600", "\u4e2d\u6587" * 50, "plain"],
    "numpy str_": [np.str_("abc"), "d", np.str_("\u00e9")],
    "bytes": [b"", b"\x00\xff", b"abc" * 100],
    "bytes and bytearray": [b"ab", bytearray(b"\x00\x01"), np.bytes_(b"zz")],
    "memoryviews": [b"ab", memoryview(np.array([1, 2], np.uint16)), memoryview(b"abcdef")[::2]],
    "tuple": ("t", "u"),
}


def _records(r: VarRecords) -> list[bytes]:
    return [r.record(i) for i in range(r.n)]


@pytest.mark.parametrize("values", CASES.values(), ids=CASES.keys())
def test_one_pass_equals_element_by_element(values):
    fast = as_records(values)
    slow = _bytes_slow(values, len(values))
    assert _records(fast) == _records(slow)
    expected = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
    assert _records(fast) == expected
    assert [golden.xxh64(e) for e in expected] == [golden.xxh64(r) for r in _records(fast)]


def test_a_large_list_is_read_in_place_by_arrow():
    values = [f"id{i}" for i in range(100_000)]
    r = as_records(values)
    (chunk,) = r.chunks
    assert chunk.offsets.dtype == np.int64 and chunk.offsets[-1] == sum(map(len, values))
    assert r.record(99_999) == b"id99999"


@pytest.mark.parametrize(
    "values, message",
    [
        (["a", "b", "c", "d", b"e"], "mixed element types: element 0 is str but element 4 is bytes"),
        ([b"a", b"b", b"c", b"d", "e"], "mixed element types: element 0 is bytes but element 4 is str"),
        # the first element that is not a null is the one named
        ([None, b"a", "b"], "mixed element types: element 1 is bytes but element 2 is str"),
        ([None, None, None, None, 5], "element 4 has unsupported type int"),
    ],
)
def test_slices_of_different_kinds_are_the_errors_one_slice_would_be(monkeypatch, values, message):
    import offload.batch as batch_module

    monkeypatch.setattr(batch_module, "_CONVERT_SLICE", 4)  # each slice alone converts
    with pytest.raises(TypeError, match=message):
        as_records(values)


@pytest.mark.parametrize(
    "values",
    [
        [b"a", memoryview(np.arange(3, dtype=np.int32))],  # a memoryview's bytes, as bytes() reads them
        [b"a", memoryview(np.arange(6, dtype=np.uint8))[::2]],  # not contiguous
        [np.str_("x"), "y"],
        [bytearray(b"x"), np.bytes_(b"y")],
    ],
)
def test_records_of_a_list_are_the_bytes_of_its_elements(values):
    expected = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
    assert _records(as_records(values)) == expected


def test_any_sequence_of_records_converts_as_a_list_does():
    from collections import deque

    assert _records(as_records(deque(["a", "bc"]))) == _records(as_records(["a", "bc"])) == [b"a", b"bc"]


@pytest.mark.parametrize("values", [["a", "STRING"], [b"a", "BINARY"]])
def test_arrow_scalars_among_the_elements_are_refused(values):
    import pyarrow as pa

    values = [values[0], pa.scalar("b") if values[1] == "STRING" else pa.scalar(b"b")]
    with pytest.raises(TypeError, match="element 1 has unsupported type (String|Binary)Scalar"):
        as_records(values)


def test_a_list_longer_than_one_conversion_slice(monkeypatch):
    import offload.batch as batch_module

    monkeypatch.setattr(batch_module, "_CONVERT_SLICE", 4)
    values = [f"k{i}" * (i % 3) for i in range(10)]
    r = as_records(values)
    assert len(r.chunks) == 3 and r.n == 10
    assert _records(r) == [v.encode() for v in values]
