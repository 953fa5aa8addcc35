"""The wire format: packers, the reference engine, and the trailer checks, against golden."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from offload import batch as B
from offload import wire
from offload.backend import BackendError
from offload.ops import golden_result, make_call
from tests.lengths import BOUNDARY_LENGTHS

rng = np.random.default_rng(7)
VAR = [rng.bytes(n) for n in BOUNDARY_LENGTHS]


def cases():
    yield make_call("xxh64", seed=(1 << 64) - 1), B.as_records(VAR)
    yield make_call("xxh32", seed=123), B.as_records(pa.array(VAR, pa.large_binary()).slice(3))
    yield make_call("xxh32", seed=0), B.as_records(np.array([0, -1, 7], np.int32))
    yield (
        make_call("hash_bucket", num_buckets=(1 << 63), seed=5),
        B.as_records(rng.integers(0, 1 << 63, 40, dtype=np.uint64)),
    )
    yield make_call("hash_bucket", num_buckets=12345, method="fastrange"), B.as_records(VAR)
    yield (
        make_call("fid", slot=1023, version=1, seed=9),
        B.as_records(pa.chunked_array([["a", "bb"], [], ["ccc"]])),
    )
    yield make_call("fid", slot=32767, version=2), B.as_records(np.arange(9, dtype=np.uint32))
    x32 = np.array([-0.0, 0.0, np.nan, np.inf, -np.inf, 1.5, -2.0, 3.0], np.float32)
    yield make_call("bucketize", boundaries=[-np.inf, -1.0, 0.0, 1.5], dtype=np.float32), B.as_numbers(x32)
    yield (
        make_call("bucketize", boundaries=[-5, 0, 7], dtype=np.int64, right=False),
        B.as_numbers(np.array([-6, -5, 0, 6, 7, 8, -(1 << 63)], np.int64)),
    )
    yield (
        make_call("bucketize", boundaries=[-1, 2], dtype=np.int32),
        B.as_numbers(np.array([-(1 << 31), -1, 2, 3], np.int32)),
    )
    yield (
        make_call("bucketize", boundaries=[0.0], dtype=np.float64, right=False),
        B.as_numbers(np.array([-0.0, 0.0, 1e-300, np.nan])),
    )
    yield (
        make_call("delta_varint_encode"),
        B.as_sequences(
            [
                np.array([0, (1 << 63) - 1, -(1 << 63), 5], np.int64),
                np.zeros(0, np.int64),
                rng.integers(-1000, 1000, 33),
            ]
        ),
    )


def expected(call, batch):
    return [golden_result(call, batch.record(i)) for i in range(batch.n)]


def as_list(call, res):
    if isinstance(res, tuple):
        o, d = res
        return [d[o[i] : o[i + 1]].tobytes() for i in range(len(o) - 1)]
    return res.tolist()


@pytest.mark.parametrize("call,batch", list(cases()), ids=lambda v: getattr(v, "op", ""))
def test_reference_engine_round_trip_equals_golden(call, batch):
    job = wire.encode_request(call, batch)
    out, err = wire.reference_engine(job.regs, job.table, job.words)
    assert err == 0
    assert out.shape[0] <= job.out_words_max
    assert as_list(call, wire.decode_response(job, out)) == expected(call, batch)


@pytest.mark.parametrize("call,batch", list(cases()), ids=lambda v: getattr(v, "op", ""))
def test_device_side_decode_and_encode_response(call, batch):
    job = wire.encode_request(call, batch)
    call2, batch2 = wire.decode_request(job.regs, job.table, job.words)
    assert call2.op == call.op
    assert expected(call2, batch2) == expected(call, batch)
    words = wire.encode_response(call2, _cpu(call2, batch2))
    assert as_list(call, wire.decode_response(job, words)) == expected(call, batch)


def _cpu(call, batch):
    from offload.host.cpu import CpuBackend

    return CpuBackend().run(call, batch)


def test_var_framing_is_the_documented_layout():
    job = wire.encode_request(make_call("xxh64"), B.as_records([b"", b"abcdefghi"]))
    assert job.regs["FORMAT"] == wire.FORMATS["VAR"]
    assert job.words.tolist() == [0, 9, int.from_bytes(b"abcdefgh", "little"), ord("i")]


def _job():
    return wire.encode_request(make_call("xxh64"), B.as_records(VAR[:10]))


def test_early_tlast_reports_completed_records_and_partial_results():
    job = _job()
    out, err = wire.reference_engine(job.regs, job.table, job.words[:-1])
    assert err == wire.ERR_FLAGS["EARLY_TLAST"]
    with pytest.raises(BackendError, match=r"flags EARLY_TLAST") as ei:
        wire.decode_response(job, out)
    assert ei.value.completed == 9
    assert ei.value.partial.tolist() == expected(job.call, B.as_records(VAR[:9]))


def test_missing_tlast_and_extra_data():
    job = _job()
    words = np.concatenate([job.words, np.zeros(3, np.uint64)])
    out, err = wire.reference_engine(job.regs, job.table, words)
    assert err == wire.ERR_FLAGS["MISSING_TLAST"] | wire.ERR_FLAGS["EXTRA_DATA"]
    assert wire.parse_trailer(out[-1])[1] == wire.ERR_FLAGS["MISSING_TLAST"]


def test_bad_header_and_bad_param():
    job = _job()
    words = job.words.copy()
    words[0] |= np.uint64(1 << 40)
    out, err = wire.reference_engine(job.regs, job.table, words)
    assert err & wire.ERR_FLAGS["BAD_HEADER"] and wire.parse_trailer(out[-1])[2] == 0
    regs = dict(job.regs, OP=77)
    out, err = wire.reference_engine(regs, job.table, job.words)
    assert out.tolist() == [wire.trailer(0, wire.ERR_FLAGS["BAD_PARAM"])]


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda w: w[:0], r"^engine returned no words for xxh64\(seed=0\) \(no trailer\)$"),
        (lambda w: w[:-1], r"^engine output does not end with a trailer \(last word 0x[0-9a-f]{16}\)$"),
        (lambda w: np.concatenate([w[:3], w[-1:]]), r"^engine sent 3 result words for 10 records$"),
    ],
)
def test_malformed_responses_are_device_errors(mutate, message):
    job = _job()
    out, _ = wire.reference_engine(job.regs, job.table, job.words)
    with pytest.raises(BackendError, match=message):
        wire.decode_response(job, mutate(out))


def test_decode_request_rejects_broken_framing():
    job = _job()
    with pytest.raises(wire.WireError, match=r"^VAR framing broken at record 9 \(truncated\)$"):
        wire.decode_request(job.regs, job.table, job.words[:-1])
    with pytest.raises(wire.WireError, match=r"^FORMAT 3 is not valid for OP 2$"):
        wire.decode_request(dict(job.regs, FORMAT=3), job.table, job.words)
    with pytest.raises(
        wire.WireError, match=r"^bad parameters: num_buckets must be in \[1, 2\*\*63\], got 0$"
    ):
        wire.decode_request(dict(job.regs, OP=3), job.table, job.words)


def test_a_corrupted_golden_value_is_caught():
    """The round-trip check can fail: flip one result bit and the comparison breaks."""
    call, batch = next(cases())
    job = wire.encode_request(call, batch)
    out, _ = wire.reference_engine(job.regs, job.table, job.words)
    out[5] ^= np.uint64(1)
    assert as_list(call, wire.decode_response(job, out)) != expected(call, batch)


def test_reference_engine_accepts_what_the_engine_accepts():
    """Register level, beyond the API's range: only mod by 0 is BAD_PARAM."""
    from offload import golden

    job = wire.encode_request(make_call("hash_bucket", num_buckets=5), B.as_records(VAR[:4]))
    out, err = wire.reference_engine(dict(job.regs, OP=4, NUM_BUCKETS_LO=0), job.table, job.words)
    assert err == 0 and out[:-1].tolist() == [0, 0, 0, 0]
    nb = (1 << 63) + 1
    regs = dict(job.regs, NUM_BUCKETS_LO=nb & 0xFFFFFFFF, NUM_BUCKETS_HI=nb >> 32)
    out, err = wire.reference_engine(regs, job.table, job.words)
    assert err == 0 and out[:-1].tolist() == [golden.xxh64(v) % nb for v in VAR[:4]]
    out, err = wire.reference_engine(dict(job.regs, NUM_BUCKETS_LO=0), job.table, job.words)
    assert out.tolist() == [wire.trailer(0, wire.ERR_FLAGS["BAD_PARAM"])]
    # a service decoding a request still holds it to the API's range
    with pytest.raises(wire.WireError, match=r"^bad parameters: num_buckets must be in"):
        wire.decode_request(regs, job.table, job.words)
