"""Arrow-native operators: every operator reads pyarrow columns of the types it takes (sliced,
chunked, dictionary-encoded) as the same records as the plain forms; nulls follow the call's
policy; results come as numpy or pyarrow (docs/operators.md, "Nulls and Arrow output")."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import offload
from offload import columnar, golden
from offload.backend import Availability, Backend, BitExactError, Capabilities
from offload.batch import as_numbers, as_records, as_sequences
from offload.host.cpu import CpuBackend
from offload.ops import OPERATORS, REGISTRY, operator
from tests.conftest import a_dtype_it_takes

CPU = offload.Runtime(backends=["cpu"])
HINT = 'fill or drop nulls first, or pass nulls="null" (null results) or nulls=<a replacement value>'


def _m(s: str) -> str:
    return "^" + re.escape(s) + "$"


def _tolist(res: Any) -> Any:
    if isinstance(res, tuple):
        return [a.tolist() for a in res]
    if isinstance(res, (pa.Array, pa.ChunkedArray)):
        return res.to_pylist()
    return res.tolist()


STRINGS = ["", "a", "héllo", "user_42|ios", "x" * 40, "\U0001f600"]
INTS = [0, 1, -1, 2**31 - 1, -(2**31), 7]
FLOATS = [-2.0, -1.5, 0.0, 1.0, 2.0, 7.25]
SEQS = [[5, 3, 3, 10], [], [1], [-(2**63), 2**63 - 1], [0, 0, 0]]


def _chunked(values: list[Any], typ: pa.DataType) -> pa.ChunkedArray:
    return pa.chunked_array([values[:2], [], values[2:4], values[4:]], typ)


def _sliced(values: list[Any], typ: pa.DataType, pad: Any) -> pa.Array:
    return pa.array([pad, pad, *values, pad], typ).slice(2, len(values))


def _dictionary(values: list[Any], typ: pa.DataType) -> pa.Array:
    arr = pa.array(values + values[::-1], typ)
    return arr.dictionary_encode()


def record_forms() -> list[tuple[str, Any, Any]]:
    """(id, arrow column, the same records in a plain form)."""
    forms: list[tuple[str, Any, Any]] = []
    for typ in (pa.string(), pa.large_string(), pa.string_view()):
        forms += [
            (f"{typ}", pa.array(STRINGS, typ), STRINGS),
            (f"{typ} sliced", _sliced(STRINGS, typ, "pad"), STRINGS),
            (f"{typ} chunked", _chunked(STRINGS, typ), STRINGS),
            (f"dictionary<{typ}>", _dictionary(STRINGS, typ), STRINGS + STRINGS[::-1]),
        ]
    raw = [s.encode() for s in STRINGS]
    for typ in (pa.binary(), pa.large_binary(), pa.binary_view()):
        forms += [
            (f"{typ}", pa.array(raw, typ), raw),
            (f"{typ} chunked", _chunked(raw, typ), raw),
        ]
    for typ, dt in ((pa.int64(), np.int64), (pa.int32(), np.int32)):
        forms += [
            (f"{typ}", pa.array(INTS, typ), np.array(INTS, dt)),
            (f"{typ} sliced", _sliced(INTS, typ, 99), np.array(INTS, dt)),
            (f"{typ} chunked", _chunked(INTS, typ), np.array(INTS, dt)),
            (f"dictionary<{typ}>", _dictionary(INTS, typ), np.array(INTS + INTS[::-1], dt)),
        ]
    unsigned = [0, 1, 2**32 - 1, 5, 6, 7]
    for typ, dt in ((pa.uint64(), np.uint64), (pa.uint32(), np.uint32)):
        forms += [
            (f"{typ}", pa.array(unsigned, typ), np.array(unsigned, dt)),
            (f"{typ} sliced", _sliced(unsigned, typ, 3), np.array(unsigned, dt)),
        ]
    return forms


def number_forms(dtype: np.dtype) -> list[tuple[str, Any, Any]]:
    values = FLOATS if dtype.kind == "f" else INTS
    typ = pa.from_numpy_dtype(dtype)
    plain = np.array(values, dtype)
    return [
        (f"{typ}", pa.array(plain), plain),
        (f"{typ} sliced", _sliced(values, typ, 0), plain),
        (f"{typ} chunked", _chunked(values, typ), plain),
        (f"dictionary<{typ}>", _dictionary(values, typ), np.array(values + values[::-1], dtype)),
    ]


def sequence_forms() -> list[tuple[str, Any, Any]]:
    forms = []
    for typ in (pa.list_(pa.int64()), pa.large_list(pa.int64())):
        forms += [
            (f"{typ}", pa.array(SEQS, typ), SEQS),
            (f"{typ} sliced", _sliced(SEQS, typ, [9, 9]), SEQS),
            (f"{typ} chunked", _chunked(SEQS, typ), SEQS),
        ]
    return forms


ENCODED = offload.delta_varint_encode(SEQS, backend="cpu")
ENCODED_RECORDS = [ENCODED[1][ENCODED[0][i] : ENCODED[0][i + 1]].tobytes() for i in range(len(SEQS))]


def encoded_forms() -> list[tuple[str, Any, Any]]:
    return [
        (f"{typ}{how}", col, ENCODED)
        for typ in (pa.binary(), pa.large_binary())
        for how, col in (
            ("", pa.array(ENCODED_RECORDS, typ)),
            (" sliced", _sliced(ENCODED_RECORDS, typ, b"\x00")),
            (" chunked", _chunked(ENCODED_RECORDS, typ)),
        )
    ]


def cases() -> list[Any]:
    """Every registered operator, each example parameter set, each arrow form of its input."""
    out = []
    for entry in REGISTRY.values():
        for k, params in enumerate(entry.examples):
            if entry.inputs == "records":
                forms = record_forms()
            elif entry.inputs == "numbers":
                dtypes = (
                    (np.int64, np.int32) if a_dtype_it_takes(entry) == np.int64 else (np.float64, np.float32)
                )
                forms = [f for dt in dtypes for f in number_forms(np.dtype(dt))]
            elif entry.inputs == "sequences":
                forms = sequence_forms()
            else:
                forms = encoded_forms()
            out += [
                pytest.param(entry.name, params, col, plain, id=f"{entry.name}-{k}-{fid}")
                for fid, col, plain in forms
            ]
    return out


@pytest.mark.parametrize(("op", "params", "column", "plain"), cases())
def test_an_arrow_column_gives_what_its_plain_form_gives(op, params, column, plain):
    got = CPU.call(op, column, **params)
    assert _tolist(got) == _tolist(CPU.call(op, plain, **params))
    arrow = CPU.call(op, column, output="arrow", **params)
    assert arrow.to_pylist() == _arrow_expected(op, CPU.call(op, plain, **params))


def _arrow_expected(op: str, res: Any) -> list[Any]:
    entry = operator(op)
    if entry.result_dtype is not None:
        return res.tolist()
    offsets, values = res
    pieces = [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    return [p.tobytes() if entry.result == "encoded" else p.tolist() for p in pieces]


def test_every_operator_is_covered_by_the_arrow_cases():
    assert {c.values[0] for c in cases()} == set(OPERATORS)


# -- the golden model, not another form, says what an arrow column's records are -------------


def test_arrow_integer_keys_are_their_little_endian_bytes():
    col = pa.array([-1, 7], pa.int64())
    assert offload.xxh64(col, backend="cpu").tolist() == [
        golden.xxh64((-1).to_bytes(8, "little", signed=True)),
        golden.xxh64((7).to_bytes(8, "little")),
    ]
    assert offload.xxh32(pa.array([5], pa.uint32()), backend="cpu").tolist() == [golden.xxh32(b"\x05\0\0\0")]


def test_a_string_view_column_is_its_utf8_bytes():
    col = pa.array(["short", "a string longer than twelve bytes"], pa.string_view())
    assert offload.xxh64(col, backend="cpu").tolist() == [
        golden.xxh64(b"short"),
        golden.xxh64(b"a string longer than twelve bytes"),
    ]


# -- read in place ----------------------------------------------------------------------------


def test_arrow_integer_keys_are_read_in_place_at_the_slice_offset():
    arr = pa.array(np.arange(10, dtype=np.int64)).slice(3, 4)
    keys = as_records(arr).keys  # type: ignore[union-attr]
    assert keys.ctypes.data == arr.buffers()[1].address + 3 * 8
    assert keys.view(np.int64).tolist() == [3, 4, 5, 6]


def test_arrow_numbers_are_read_in_place():
    arr = pa.array(np.linspace(0, 1, 8)).slice(2)
    x = as_numbers(arr).values
    assert x.ctypes.data == arr.buffers()[1].address + 2 * 8 and x.tolist() == arr.to_pylist()


def test_arrow_sequences_are_read_in_place():
    arr = pa.array(SEQS, pa.large_list(pa.int64())).slice(1, 3)
    seqs = as_sequences(arr)
    assert seqs.values.ctypes.data == arr.values.buffers()[1].address
    assert [seqs.record(i) for i in range(seqs.n)] == SEQS[1:4]


def test_a_numeric_arrow_result_shares_the_numpy_buffer():
    res = np.arange(5, dtype=np.uint64)
    out = columnar._arrow_values(res, None)
    assert out.type == pa.uint64() and out.buffers()[1].address == res.ctypes.data


def test_the_encoders_arrow_result_shares_its_buffers():
    res = offload.delta_varint_encode(SEQS, backend="cpu")
    prep = columnar.prepare(operator("delta_varint_encode"), SEQS)
    out = columnar.finish(operator("delta_varint_encode"), prep, res, "arrow")
    assert out.type == pa.large_binary()
    assert out.buffers()[1].address == res[0].ctypes.data and out.buffers()[2].address == res[1].ctypes.data


def test_arrow_results_have_the_result_dtype():
    for op in ("xxh32", "xxh64", "hash_bucket", "fid", "farmhash64", "cityhash64", "murmur3_32"):
        params = dict(operator(op).examples[0])
        got = CPU.call(op, pa.array(["a", "b"]), output="arrow", **params)
        assert got.type == pa.from_numpy_dtype(operator(op).result_dtype)
    assert CPU.bucketize(pa.array([1.0]), [0.0], output="arrow").type == pa.int32()
    assert CPU.sigrid_hash(pa.array([1]), 0, 10, output="arrow").type == pa.int64()
    assert CPU.delta_varint_encode(SEQS, output="arrow").type == pa.large_binary()
    assert CPU.delta_varint_decode(*ENCODED, output="arrow").type == pa.large_list(pa.int64())


def test_arrow_output_of_a_2d_array_is_flat():
    keys = np.arange(6, dtype=np.uint64).reshape(2, 3)
    assert CPU.xxh64(keys, output="arrow").to_pylist() == CPU.xxh64(keys).reshape(-1).tolist()


def test_the_codec_round_trips_through_arrow():
    col = pa.array(SEQS, pa.list_(pa.int64()))
    encoded = CPU.delta_varint_encode(col, output="arrow")
    assert CPU.delta_varint_decode(encoded, output="arrow").to_pylist() == SEQS
    assert offload.delta_varint_decode(encoded, backend="cpu")[1].tolist() == [v for s in SEQS for v in s]


# -- dictionaries: each distinct value once, then taken ----------------------------------------


class Recorder(Backend):
    """The CPU kernels, remembering each batch it ran (what would travel to a device)."""

    name = "fpga"

    def __init__(self, mode: str = "ok") -> None:
        self.cpu, self.batches, self.mode = CpuBackend(), [], mode

    def availability(self) -> Availability:
        return Availability(True, "test double")

    def capabilities(self) -> Capabilities:
        return Capabilities(ops=frozenset(OPERATORS))

    def run(self, call, batch):
        self.batches.append(batch)
        res = self.cpu.run(call, batch)
        if self.mode == "flip":
            res = res.copy()
            res[1] ^= res.dtype.type(1)
        return res


def test_a_dictionary_column_runs_on_its_dictionary_only():
    dev = Recorder()
    rt = offload.Runtime(backends=[dev, "cpu"])
    vocab = ["ios", "android", "web"]
    col = pa.DictionaryArray.from_arrays(pa.array(np.arange(3000) % 3, pa.int32()), pa.array(vocab))
    got = rt.xxh64(col, seed=7)
    assert got.tolist() == (rt.xxh64(vocab, seed=7)[np.arange(3000) % 3]).tolist()
    assert [b.n for b in dev.batches] == [3, 3]
    assert [dev.batches[0].record(i) for i in range(3)] == [v.encode() for v in vocab]
    assert rt.last_call()["records"] == 3


def test_a_dictionary_of_floats_is_bucketized_once_per_value():
    col = pa.array([0.5, 2.5, 0.5, 1.5]).dictionary_encode()
    assert CPU.bucketize(col, [1.0, 2.0]).tolist() == [0, 2, 0, 1]
    assert CPU.last_call()["records"] == 3


def test_a_sliced_dictionary_column():
    col = pa.array(["a", "b", "c", "a", "b"]).dictionary_encode().slice(2, 3)
    assert CPU.xxh64(col).tolist() == CPU.xxh64(["c", "a", "b"]).tolist()


def test_chunks_with_different_dictionaries_are_unified():
    col = pa.chunked_array(
        [pa.array(["x", "y"]).dictionary_encode(), pa.array(["z", "x"]).dictionary_encode()]
    )
    got = CPU.farmhash64(col).tolist()
    assert CPU.last_call()["records"] == 3
    assert got == CPU.farmhash64(["x", "y", "z", "x"]).tolist()


def test_a_dictionary_column_falls_back_on_the_dictionary_records():
    from tests.test_runtime import Faulty

    rt = offload.Runtime(backends=[Faulty("fpga", "fail_after", at=2), "cpu"])
    vocab = [f"v{i}" for i in range(5)]
    col = pa.DictionaryArray.from_arrays(pa.array(np.arange(100) % 5, pa.int8()), pa.array(vocab))
    assert rt.xxh64(col).tolist() == CPU.xxh64([vocab[i % 5] for i in range(100)]).tolist()
    assert rt.last_call()["segments"] == [("fpga", 0, 2), ("cpu", 2, 5)]


@pytest.mark.parametrize("verify", ["sample", "full"])
def test_verification_sees_the_dictionary_records(verify):
    rt = offload.Runtime(backends=[Recorder("flip"), "cpu"], verify=verify, sample_size=64)
    col = pa.array(["a", "b", "c", "a"]).dictionary_encode()
    with pytest.raises(BitExactError) as e:
        rt.xxh64(col)
    assert (e.value.index, e.value.record) == (1, b"b")


def test_a_dictionary_column_of_a_codec_is_read_as_its_values():
    col = pa.DictionaryArray.from_arrays(
        pa.array([1, 0, 1], pa.int32()), pa.array(ENCODED_RECORDS[:2], pa.binary())
    )
    assert CPU.delta_varint_decode(col, output="arrow").to_pylist() == [SEQS[1], SEQS[0], SEQS[1]]


# -- nulls: "error" ----------------------------------------------------------------------------


NULL_ERRORS = [
    ("arrow string", lambda: CPU.xxh64(pa.array(["a", None])), 1),
    ("arrow int64", lambda: CPU.xxh64(pa.array([1, 2, None, 4])), 2),
    ("chunked", lambda: CPU.xxh64(pa.chunked_array([[1, 2], [3, None]], pa.int64())), 3),
    ("sliced", lambda: CPU.xxh64(pa.array([None, "a", "b", None]).slice(1)), 2),
    ("dictionary index", lambda: CPU.xxh64(pa.array(["a", "b", None]).dictionary_encode()), 2),
    (
        "dictionary value",
        lambda: CPU.xxh64(pa.DictionaryArray.from_arrays(pa.array([0, 0, 1]), pa.array(["a", None]))),
        2,
    ),
    ("list None", lambda: CPU.xxh64(["a", None, "c"]), 1),
    ("bytes list None", lambda: CPU.xxh64([b"a", b"b", None]), 2),
    ("memoryview list None", lambda: CPU.xxh64([memoryview(b"a"), None]), 1),
    ("object array None", lambda: CPU.xxh64(np.array(["a", "b", None], object)), 2),
    ("all None", lambda: CPU.xxh64([None, None]), 0),
    ("bucketize", lambda: CPU.bucketize(pa.array([1.0, None]), [0.0]), 1),
    ("sigrid_hash", lambda: CPU.sigrid_hash(pa.array([None, 1]), 0, 10), 0),
    ("encoder list", lambda: CPU.delta_varint_encode([[1], None]), 1),
    ("encoder arrow", lambda: CPU.delta_varint_encode(pa.array([[1], [2], None])), 2),
    ("decoder arrow", lambda: CPU.delta_varint_decode(pa.array([b"\x02", None])), 1),
]


@pytest.mark.parametrize(("call", "index"), [c[1:] for c in NULL_ERRORS], ids=[c[0] for c in NULL_ERRORS])
def test_a_null_is_refused_by_default_naming_its_index(call, index):
    with pytest.raises(ValueError, match=_m(f"null at index {index}: {HINT}")):
        call()


def test_a_masked_element_keeps_its_message_by_default():
    with pytest.raises(ValueError, match=r"^masked value at index 1: masked values cannot be processed"):
        CPU.xxh64(np.ma.array([1, 2], mask=[0, 1], dtype=np.uint64))


def test_a_null_inside_a_sequence_is_refused_whatever_the_policy():
    col = pa.array([[1, None]], pa.list_(pa.int64()))
    with pytest.raises(ValueError, match=_m("delta_varint_encode: null inside a sequence")):
        CPU.delta_varint_encode(col, nulls="null", output="arrow")


def test_a_null_inside_the_unreferenced_part_of_a_sliced_list_is_not_read():
    col = pa.array([[1, None], [2, 3]], pa.list_(pa.int64())).slice(1)
    assert CPU.delta_varint_encode(col)[0].tolist() == [0, 2]


# -- nulls: "null" -----------------------------------------------------------------------------


def test_null_results_in_arrow_where_the_input_is_null():
    col = pa.chunked_array([["a", None], [None, "d"]])
    got = CPU.xxh64(col, nulls="null", output="arrow")
    expected = CPU.xxh64(["a", "d"]).tolist()
    assert got.to_pylist() == [expected[0], None, None, expected[1]]


def test_null_results_in_numpy_are_masked():
    got = CPU.hash_bucket(pa.array([1, None, 3]), 10, nulls="null")
    assert isinstance(got, np.ma.MaskedArray)
    assert got.mask.tolist() == [False, True, False]
    assert got.compressed().tolist() == CPU.hash_bucket(np.array([1, 3]), 10).tolist()


def test_null_policy_without_nulls_still_gives_a_masked_array():
    got = CPU.xxh64(np.arange(3, dtype=np.uint64), nulls="null")
    assert isinstance(got, np.ma.MaskedArray) and got.mask.tolist() == [False] * 3
    assert CPU.xxh64(np.arange(3, dtype=np.uint64), nulls="null", output="arrow").null_count == 0


def test_masked_elements_are_nulls_under_the_null_policy():
    keys = np.ma.array([[1, 2], [3, 4]], mask=[[0, 1], [1, 0]], dtype=np.uint64)
    got = CPU.xxh64(keys, nulls="null")
    assert got.shape == (2, 2) and got.mask.tolist() == [[False, True], [True, False]]
    assert got[0, 0] == CPU.xxh64(np.array([1], np.uint64))[0]
    x = np.ma.array([0.5, 9.0], mask=[0, 1])
    assert CPU.bucketize(x, [1.0], nulls="null").mask.tolist() == [False, True]


def test_dictionary_nulls_under_the_null_policy():
    col = pa.DictionaryArray.from_arrays(pa.array([0, None, 1, 2], pa.int32()), pa.array(["a", None, "c"]))
    got = CPU.xxh64(col, nulls="null", output="arrow").to_pylist()
    a, c = CPU.xxh64(["a", "c"]).tolist()
    assert got == [a, None, None, c]


def test_an_all_null_dictionary_column_with_an_empty_dictionary():
    col = pa.DictionaryArray.from_arrays(pa.array([None, None], pa.int32()), pa.array([], pa.string()))
    assert CPU.xxh64(col, nulls="null", output="arrow").to_pylist() == [None, None]
    assert CPU.xxh64(col, nulls="z").tolist() == CPU.xxh64(["z", "z"]).tolist()


def test_codec_nulls_under_the_null_policy():
    col = pa.array([[5, 3], None, [1]], pa.list_(pa.int64()))
    encoded = CPU.delta_varint_encode(col, nulls="null", output="arrow")
    assert encoded.to_pylist() == [ENCODED_RECORDS[0][:2], None, ENCODED_RECORDS[2]]
    assert CPU.delta_varint_decode(encoded, nulls="null", output="arrow").to_pylist() == [[5, 3], None, [1]]


def test_a_null_slot_with_garbage_bytes_is_not_decoded():
    # Arrow lets a null slot hold bytes: a malformed varint under a null is never read
    good = pa.array([b"\x02", b"\x80"], pa.binary())
    offsets, data = good.buffers()[1], good.buffers()[2]
    col = pa.Array.from_buffers(
        pa.binary(), 2, [pa.py_buffer(np.packbits([1, 0], bitorder="little")), offsets, data]
    )
    assert CPU.delta_varint_decode(col, nulls="null", output="arrow").to_pylist() == [[1], None]


@pytest.mark.parametrize("op", ["delta_varint_encode", "delta_varint_decode"])
def test_a_codec_needs_arrow_output_to_keep_nulls(op):
    pair = "(offsets, data)" if op == "delta_varint_encode" else "(value_offsets, values)"
    values = [[1]] if op == "delta_varint_encode" else ENCODED
    message = (
        f'nulls="null" needs output="arrow" for {op}: its numpy result, an {pair} pair, cannot hold a null'
    )
    with pytest.raises(ValueError, match=_m(message)):
        CPU.call(op, values, nulls="null")


# -- nulls: a replacement ----------------------------------------------------------------------


REPLACEMENTS = [
    ("str", "xxh64", pa.array(["a", None, "c"]), "zz", ["a", "zz", "c"]),
    ("bytes for str", "xxh64", pa.array(["a", None]), b"zz", ["a", "zz"]),
    ("list None", "murmur3_32", [b"a", None], b"q", [b"a", b"q"]),
    ("int64", "xxh64", pa.array([1, None, 3]), -5, np.array([1, -5, 3])),
    ("uint64", "fid", pa.array([1, None], pa.uint64()), 2**64 - 1, np.array([1, 2**64 - 1], np.uint64)),
    ("int32 chunked", "xxh32", pa.chunked_array([[None], [2]], pa.int32()), 9, np.array([9, 2], np.int32)),
    (
        "dictionary",
        "farmhash64",
        pa.array(["a", None, "b", "a"]).dictionary_encode(),
        "n/a",
        ["a", "n/a", "b", "a"],
    ),
    ("masked", "xxh64", np.ma.array([1, 2], mask=[1, 0], dtype=np.uint64), 0, np.array([0, 2], np.uint64)),
    ("bucketize", "bucketize", pa.array([0.5, None, 2.5]), 1.5, np.array([0.5, 1.5, 2.5])),
    ("bucketize NaN", "bucketize", pa.array([0.5, None]), float("nan"), np.array([0.5, np.nan])),
    ("bucketize dict", "bucketize", pa.array([0.5, None]).dictionary_encode(), 1.5, np.array([0.5, 1.5])),
    ("sigrid int", "sigrid_hash", pa.array([None, 4]), 7, np.array([7, 4])),
    ("encoder", "delta_varint_encode", pa.array([[1, 2], None]), [9, 9], [[1, 2], [9, 9]]),
    ("encoder list", "delta_varint_encode", [[1, 2], None], np.array([4]), [[1, 2], [4]]),
    (
        "decoder",
        "delta_varint_decode",
        pa.array([None, b"\x02"]),
        b"\x04",
        ([0, 1, 2], np.array([4, 2], np.uint8)),
    ),
]
_PARAMS = {"hash_bucket": {"num_buckets": 10}, "fid": {"slot": 3}, "bucketize": {"boundaries": [1.0, 2.0]}}
_PARAMS["sigrid_hash"] = {"salt": 3, "max_value": 100}


@pytest.mark.parametrize(
    ("op", "column", "value", "filled"), [c[1:] for c in REPLACEMENTS], ids=[c[0] for c in REPLACEMENTS]
)
def test_a_replacement_is_processed_in_place_of_each_null(op, column, value, filled):
    params = _PARAMS.get(op, {})
    if op == "delta_varint_decode":
        filled = (np.array(filled[0]), filled[1])
    expected = _tolist(CPU.call(op, filled, **params))
    assert _tolist(CPU.call(op, column, nulls=value, **params)) == expected


def test_a_replacement_runs_once_as_one_more_record():
    CPU.xxh64(pa.array(["a", None, None, "b"]), nulls="z")
    assert CPU.last_call()["records"] == 5


REPLACEMENT_ERRORS = [
    (
        "int for strings",
        lambda: CPU.xxh64(pa.array(["a", None]), nulls=0),
        TypeError,
        "nulls: the replacement must be a str or bytes for byte records, got int",
    ),
    (
        "str for int keys",
        lambda: CPU.xxh64(pa.array([1, None]), nulls="0"),
        TypeError,
        "nulls: the replacement for a column of int64 keys must be an int, got str",
    ),
    (
        "bool for int keys",
        lambda: CPU.xxh64(np.arange(2), nulls=True),
        TypeError,
        "nulls: the replacement for a column of int64 keys must be an int, got bool",
    ),
    (
        "float for int keys",
        lambda: CPU.xxh64(pa.array([1, None]), nulls=1.0),
        TypeError,
        "nulls: the replacement for a column of int64 keys must be an int, got float",
    ),
    (
        "negative for uint64",
        lambda: CPU.xxh64(pa.array([1, None], pa.uint64()), nulls=-1),
        ValueError,
        "nulls: the replacement -1 is outside the column's uint64 range",
    ),
    (
        "2**31 for int32",
        lambda: CPU.xxh32(pa.array([1, None], pa.int32()), nulls=2**31),
        ValueError,
        "nulls: the replacement 2147483648 is outside the column's int32 range",
    ),
    (
        "lone surrogate",
        lambda: CPU.xxh64(["a", None], nulls="\ud800"),
        ValueError,
        "nulls: the replacement is not encodable as UTF-8: surrogates not allowed",
    ),
    (
        "str for numbers",
        lambda: CPU.bucketize(pa.array([1.0, None]), [0.0], nulls="0"),
        TypeError,
        "nulls: the replacement for bucketize's float64 values must be a number, got str",
    ),
    (
        "inexact float32",
        lambda: CPU.bucketize(pa.array([1.0, None], pa.float32()), [0.0], nulls=0.1),
        ValueError,
        "nulls: the replacement 0.1 is not exactly representable in float32",
    ),
    (
        "fraction for int64 ids",
        lambda: CPU.sigrid_hash(pa.array([1, None]), 0, 10, nulls=0.5),
        ValueError,
        "nulls: the replacement 0.5 is not exactly representable in int64",
    ),
    (
        "NaN for int64 ids",
        lambda: CPU.sigrid_hash(pa.array([1, None]), 0, 10, nulls=float("nan")),
        ValueError,
        "nulls: the replacement nan is not exactly representable in int64",
    ),
    (
        "str for the encoder",
        lambda: CPU.delta_varint_encode([[1], None], nulls="1"),
        TypeError,
        "nulls: the replacement for delta_varint_encode must be a sequence of ints (a list of int or "
        "a 1-D int64 array), got str",
    ),
    (
        "encoder value outside int64",
        lambda: CPU.delta_varint_encode([[1], None], nulls=[2**63]),
        ValueError,
        "nulls: the replacement sequence holds a value outside int64",
    ),
    (
        "str for the decoder",
        lambda: CPU.delta_varint_decode(pa.array([b"\x02", None]), nulls="x"),
        TypeError,
        "nulls: the replacement must be bytes (an encoded sequence) for delta_varint_decode, got str",
    ),
    (
        "None",
        lambda: CPU.xxh64(["a"], nulls=None),
        TypeError,
        'nulls must be "error", "null" or a replacement value, got None',
    ),
    ("output type", lambda: offload.xxh64(["a"], output=1), TypeError, "output must be a str, got int"),
    (
        "output name",
        lambda: offload.xxh64(["a"], output="pandas"),
        ValueError,
        "unknown output 'pandas': expected 'numpy' or 'arrow'",
    ),
    (
        "arrow float64 keys",
        lambda: offload.xxh64(pa.array([1.5])),
        TypeError,
        "unsupported pyarrow type double: expected int32, uint32, int64, uint64, binary, string, "
        "large_binary, large_string, binary_view, string_view, or a dictionary of one of them",
    ),
    (
        "arrow int16 keys",
        lambda: offload.xxh64(pa.array([1], pa.int16())),
        TypeError,
        "unsupported pyarrow type int16: expected int32, uint32, int64, uint64, binary, string, "
        "large_binary, large_string, binary_view, string_view, or a dictionary of one of them",
    ),
    (
        "arrow uint8 numbers",
        lambda: offload.bucketize(pa.array([1], pa.uint8()), [0]),
        TypeError,
        "bucketize: unsupported x dtype uint8: expected float32, float64, int32 or int64",
    ),
    (
        "arrow string for the decoder",
        lambda: offload.delta_varint_decode(pa.array(["a"])),
        TypeError,
        "delta_varint_decode: unsupported pyarrow type string: expected binary, large_binary or "
        "binary_view (the encoder's arrow output)",
    ),
]


TABLE = pa.table({"a": [1]})
REPLACEMENT_ERRORS += [
    (
        "table for records",
        lambda: offload.xxh64(TABLE),
        TypeError,
        "unsupported batch type Table: expected a numpy int32/uint32/int64/uint64 array, a sequence of "
        "bytes/bytearray/memoryview/str, a pyarrow integer, binary, string or dictionary array (or chunked "
        "array), or a pair (offsets int64, data uint8)",
    ),
    (
        "scalar for numbers",
        lambda: offload.bucketize(pa.scalar(1.0), [0.0]),
        TypeError,
        "bucketize: x must be a numpy float32, float64, int32 or int64 array, got DoubleScalar",
    ),
    (
        "table for sequences",
        lambda: offload.delta_varint_encode(TABLE),
        TypeError,
        "delta_varint_encode: sequences must be a list of 1-D int64 arrays, a pyarrow list<int64> array or "
        "(value_offsets, values), got Table",
    ),
    (
        "table for the decoder",
        lambda: offload.call("delta_varint_decode", TABLE),
        TypeError,
        "delta_varint_decode: expected an (offsets, data) pair or a pyarrow binary column, got Table",
    ),
]


@pytest.mark.parametrize(
    ("call", "exc", "message"), [c[1:] for c in REPLACEMENT_ERRORS], ids=[c[0] for c in REPLACEMENT_ERRORS]
)
def test_bad_nulls_and_output_raise_exact_errors(call, exc, message):
    with pytest.raises(exc, match=_m(message)):
        call()


def test_a_wrong_replacement_is_refused_even_without_nulls():
    with pytest.raises(TypeError, match="^nulls: the replacement must be a str or bytes"):
        CPU.xxh64(pa.array(["a"]), nulls=0)


def test_the_literal_strings_error_and_null_are_policies_so_bytes_replace_them():
    assert CPU.xxh64(["a", None], nulls=b"null").tolist() == CPU.xxh64(["a", "null"]).tolist()


def test_existing_numpy_inputs_are_unchanged_by_the_new_keywords():
    keys = np.arange(12, dtype=np.int64).reshape(3, 4)
    plain = CPU.xxh64(keys)
    assert type(plain) is np.ndarray and plain.shape == (3, 4)
    assert np.array_equal(CPU.xxh64(keys, nulls="error", output="numpy"), plain)
    assert np.array_equal(CPU.xxh64(keys, nulls=0), plain)


# -- the device backends read arrow columns too ------------------------------------------------


DEVICE_CALLS = [
    ("xxh64", pa.array(np.arange(50, dtype=np.int64)).slice(7, 30), {"seed": 3}),
    ("xxh32", pa.chunked_array([[1, 2], [3]], pa.uint32()), {}),
    ("hash_bucket", pa.array(["ab", None, "c" * 70, "ab"]).dictionary_encode(), {"num_buckets": 97}),
    ("fid", pa.array(["x", None, "y"], pa.string_view()), {"slot": 5}),
    ("bucketize", pa.array([0.5, None, 2.5], pa.float32()), {"boundaries": [1.0, 2.0]}),
    ("delta_varint_encode", pa.array([[1, 2], None, [-5]], pa.large_list(pa.int64())).slice(1), {}),
]


@pytest.fixture(scope="module")
def smartnic():
    from offload.host.smartnic import SmartNicBackend
    from offload.host.smartnic.testing import InProcessService

    with InProcessService(warmup=False) as svc:
        be = SmartNicBackend(svc.address)
        yield be
        be.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("device", ["sim", "smartnic"])
@pytest.mark.parametrize(("op", "column", "params"), DEVICE_CALLS, ids=[c[0] for c in DEVICE_CALLS])
def test_a_device_backend_gives_the_cpus_result_for_an_arrow_column(device, op, column, params, request):
    be = request.getfixturevalue("smartnic") if device == "smartnic" else "sim"
    rt = offload.Runtime(backends=[be], fallback=False, verify="full")
    for nulls in ("null", b"\x07" if operator(op).inputs != "sequences" else [7]):
        if op in ("xxh64", "xxh32", "bucketize") and not isinstance(nulls, str):
            nulls = 7.0 if op == "bucketize" else 7
        got = rt.call(op, column, nulls=nulls, output="arrow", **params)
        assert got.to_pylist() == CPU.call(op, column, nulls=nulls, output="arrow", **params).to_pylist()
        assert rt.last_call()["segments"][0][0] == device


EMPTY = [
    ("int64", lambda: CPU.xxh64(pa.array([], pa.int64()), output="arrow"), []),
    ("no chunks", lambda: CPU.xxh64(pa.chunked_array([], pa.string())), []),
    (
        "no dictionary chunks",
        lambda: CPU.xxh64(pa.chunked_array([], pa.dictionary(pa.int32(), pa.string()))),
        [],
    ),
    ("empty dictionary", lambda: CPU.xxh64(pa.array([], pa.string()).dictionary_encode(), nulls="null"), []),
    ("numbers", lambda: CPU.bucketize(pa.chunked_array([], pa.float64()), [0.0], nulls=1.0), []),
    ("encoder", lambda: CPU.delta_varint_encode(pa.array([], pa.list_(pa.int64())), output="arrow"), []),
    ("decoder", lambda: CPU.delta_varint_decode(pa.array([], pa.binary()), output="arrow"), []),
    ("only a null", lambda: CPU.xxh64([None], nulls="null", output="arrow"), [None]),
    (
        "only a null decoded",
        lambda: CPU.delta_varint_decode(pa.array([None], pa.binary()), nulls=b"\x02"),
        [[0, 1], [1]],
    ),
]


@pytest.mark.parametrize(("call", "expected"), [c[1:] for c in EMPTY], ids=[c[0] for c in EMPTY])
def test_empty_and_all_null_columns(call, expected):
    assert _tolist(call()) == expected


def test_none_in_an_object_array_or_a_masked_object_array_follows_the_policy():
    a, c = CPU.xxh64(["a", "c"]).tolist()
    assert CPU.xxh64(np.array(["a", None, "c"], object), nulls="null").tolist() == [a, None, c]
    masked = np.ma.array(np.array(["a", "b", "c"], object), mask=[0, 1, 0])
    assert CPU.xxh64(masked, nulls="null", output="arrow").to_pylist() == [a, None, c]
    assert CPU.xxh64(masked, nulls="c").tolist() == [a, c, c]
