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


def test_a_list_longer_than_one_conversion_slice(monkeypatch):
    import offload.batch as batch_module

    monkeypatch.setattr(batch_module, "_CONVERT_SLICE", 4)
    values = [f"k{i}" * (i % 3) for i in range(10)]
    r = as_records(values)
    assert len(r.chunks) == 3 and r.n == 10
    assert _records(r) == [v.encode() for v in values]
