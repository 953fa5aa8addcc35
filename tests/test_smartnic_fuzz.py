"""Protocol unit tests and the decoder fuzz test: whatever bytes arrive, the frame decoder returns
frames or raises ProtocolError — never another exception, never a hang."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload.backend import BackendError
from offload.batch import FixedKeys, Numbers, Sequences, VarChunk, VarRecords, as_records
from offload.host.cpu import CpuBackend
from offload.host.smartnic import codec
from offload.host.smartnic.protocol import (
    HANDSHAKE_STAGING,
    HEADER_SIZE,
    ErrorCode,
    FrameReader,
    MsgType,
    ProtocolError,
    encode_frame,
    pack_error,
    pack_located_error,
    parse_error,
    parse_json,
    parse_located_error,
)
from offload.ops import REGISTRY, make_call
from tests.conftest import a_dtype_it_takes

pytestmark = pytest.mark.timeout(120)


def _bytes(bufs) -> bytes:
    return b"".join(bytes(memoryview(b).cast("B")) for b in bufs)


def _request(call, batch) -> tuple[bytes, list]:
    return codec.request_body(*codec.request_arrays(call, batch))


def _valid_frames() -> list[bytes]:
    meta, bufs = _request(
        make_call("bucketize", boundaries=[0.0, 2.5], dtype=np.float64),
        Numbers(np.arange(50, dtype=np.float64), (50,)),
    )
    big = np.arange((72 << 10) // 8, dtype=np.uint64)  # above 64 KiB: the direct-receive path
    bmeta, bbufs = _request(make_call("xxh64"), as_records(big))
    return [
        _bytes(encode_frame(MsgType.HELLO, 0, b'{"nonce":"00","auth":false}')),
        _bytes(encode_frame(MsgType.AUTH, 0, b"x" * 32)),
        _bytes(encode_frame(MsgType.HEALTH, 3)),
        _bytes(encode_frame(MsgType.REQUEST, 7, meta, bufs)),
        _bytes(encode_frame(MsgType.REQUEST, 8, bmeta, bbufs)),
        _bytes(encode_frame(MsgType.ERROR, 9, pack_error(ErrorCode.VALUE_ERROR, "bad"))),
    ]


VALID = _valid_frames()


def test_round_trip_any_split():
    stream = b"".join(VALID)
    for step in (1, 7, 40, 4096, len(stream)):
        r = FrameReader()
        frames = []
        for i in range(0, len(stream), step):
            frames.extend(r.feed(stream[i : i + step]))
        assert [f.type for f in frames] == [
            MsgType.HELLO,
            MsgType.AUTH,
            MsgType.HEALTH,
            MsgType.REQUEST,
            MsgType.REQUEST,
            MsgType.ERROR,
        ]
        call, batch, _ = codec.parse_request(frames[3].meta, frames[3].payload)
        assert call == make_call("bucketize", boundaries=[0.0, 2.5], dtype=np.float64)
        np.testing.assert_array_equal(batch.values, np.arange(50, dtype=np.float64))
        assert codec.parse_request(frames[4].meta, frames[4].payload)[1].keys[-1] == (72 << 10) // 8 - 1
        assert parse_error(frames[5].meta) == (ErrorCode.VALUE_ERROR, "bad")
        assert r.pending_bytes == 0


def test_every_single_bit_flip_of_a_frame_is_detected():
    frame = VALID[3]
    for bit in range(0, len(frame) * 8, 3):
        data = bytearray(frame)
        data[bit // 8] ^= 1 << (bit % 8)
        r = FrameReader()
        try:
            frames = r.feed(bytes(data))
        except ProtocolError:
            continue
        # a flip in a length field may leave the frame incomplete, never accepted as valid
        assert frames == [], bit


def test_limits():
    r = FrameReader(max_meta=16, max_payload=1024)
    with pytest.raises(ProtocolError) as e:
        r.feed(_bytes(encode_frame(MsgType.AUTH, 0, b"x" * 17)))
    assert e.value.code == ErrorCode.TOO_LARGE
    with pytest.raises(ProtocolError):  # a failed reader stays failed
        r.feed(b"\x00")
    r = FrameReader(max_payload=1024)
    with pytest.raises(ProtocolError) as e:
        r.feed(_bytes(encode_frame(MsgType.REQUEST, 1, b"", [np.zeros(129, np.uint64)]))[:HEADER_SIZE])
    assert e.value.code == ErrorCode.TOO_LARGE


def test_handshake_mode_reads_one_small_frame_then_admits():
    """A server's reader before authentication: the AUTH frame alone (what follows it waits in
    the staging buffer), another or a larger frame refused from its header; admit() applies the
    full limits and returns the frames that followed."""
    auth, request = VALID[1], VALID[4]  # REQUEST above 64 KiB: the direct-receive path
    r = FrameReader(max_payload=1 << 20, handshake=True)
    assert r.held_bytes == HANDSHAKE_STAGING
    frames = r.feed(auth + request[:1000])
    assert [f.type for f in frames] == [MsgType.AUTH] and r.pending_bytes == 1000
    assert r.admit(max_meta=64 << 10, max_payload=1 << 20) == []
    assert [f.type for f in r.feed(request[1000:])] == [MsgType.REQUEST]
    assert r.held_bytes >= 256 << 10 and r.pending_bytes == 0
    refusals = [
        (request, ErrorCode.OUT_OF_ORDER, r"^expected AUTH, got REQUEST$"),
        (
            _bytes(encode_frame(MsgType.AUTH, 0, b"x" * 257)),
            ErrorCode.TOO_LARGE,
            r"^AUTH frame with 257 bytes of meta and 0 of payload: an AUTH frame has at "
            r"most 256 bytes of meta and no payload$",
        ),
    ]
    for frame, code, message in refusals:
        r = FrameReader(handshake=True)
        with pytest.raises(ProtocolError) as e:
            r.feed(frame[:HEADER_SIZE])  # the header alone is enough to refuse it
        assert e.value.code == code and re.match(message, e.value.message)
    r.release()
    assert r.held_bytes == 0
    with pytest.raises(ProtocolError):
        r.get_buffer()


def _batches(kind: str, dtype: np.dtype | None = None) -> list:
    """Batches of every layout of an input kind, sliced so that offsets do not start at 0
    (numbers of ``dtype``)."""
    var = VarRecords(
        (
            VarChunk(np.array([0, 2, 2, 5, 9], np.int32), np.arange(9, dtype=np.uint8)),
            VarChunk(np.array([3, 4], np.int64), np.arange(6, dtype=np.uint8)),
        )
    )
    if kind == "numbers":
        return [Numbers(np.array([-3.0, 0.0, 2.0, 7.5]).astype(dtype or np.float64), (4,))]
    if kind == "sequences":
        return [Sequences(np.array([0, 2, 2, 5], np.int64), np.arange(-2, 3, dtype=np.int64)).slice(1, 3)]
    if kind == "encoded":
        return [var.slice(1, 5)]
    return [
        var,
        var.slice(1, 5),
        FixedKeys(np.arange(5, dtype=np.uint32), (5,)),
        FixedKeys(np.arange(5, dtype=np.uint64), (5,)).slice(2, 5),
    ]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_codec_round_trip_of_every_operator(name):
    """Every registered operator's examples, on every batch layout of its input kind: the request
    body rebuilds an equal call and batch, and the result body the CPU backend's result."""
    cpu = CpuBackend()
    entry = REGISTRY[name]
    for example in entry.examples:
        dtype = a_dtype_it_takes(entry) if entry.inputs == "numbers" else None
        call = make_call(name, **example, **({"dtype": dtype} if dtype is not None else {}))
        for batch in _batches(entry.inputs, dtype):
            meta, bufs = _request(call, batch)
            payload = np.frombuffer(b"".join(bytes(memoryview(b).cast("B")) for b in bufs), np.uint8).copy()
            call2, batch2, _ = codec.parse_request(meta, payload)
            assert call2 == call and batch2.n == batch.n
            assert [batch2.record(i) for i in range(batch.n)] == [batch.record(i) for i in range(batch.n)]
            res = cpu.run(call2, batch2)
            fields, out = codec.result_body(res)
            body = np.frombuffer(b"".join(bytes(memoryview(b).cast("B")) for b in out), np.uint8)
            back = codec.parse_result(call, batch.n, {"bufs": json.loads(fields)}, body)
            ref = cpu.run(call, batch)
            for a, b in zip(
                ref if isinstance(ref, tuple) else (ref,), back if isinstance(back, tuple) else (back,)
            ):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "meta,message",
    [
        ({"bufs": [["<u8", 3]]}, r"^service result: buffers need more than the payload's 16 bytes$"),
        (
            {"bufs": [["<u4", 4]]},
            r"^service result: buffers \['<u4'\] where xxh64 returns "
            r"\['<u8'\]$",
        ),
        ({"bufs": [["<u8", 1], ["<u8", 1]]}, r"^service result: buffers \['<u8', '<u8'\] where "),
        ({"bufs": [["<u8", 1]]}, r"^service result: buffers take 8 bytes of a payload of 16$"),
        ({}, r"^service result: bufs must be a list of \[dtype, count\]$"),
    ],
)
def test_a_result_that_does_not_fit_the_call_is_a_framing_error(meta, message):
    with pytest.raises(BackendError, match=message) as ei:
        codec.parse_result(make_call("xxh64"), 2, meta, np.zeros(16, np.uint8))
    assert ei.value.cause == "framing"


def test_pair_results_are_checked_against_their_offsets():
    call = make_call("delta_varint_encode")
    for offsets, message in (
        ([0, 3, 2], "offsets do not frame 2 records of 2 elements"),
        ([1, 1, 2], "offsets do not frame 2 records of 2 elements"),
    ):
        arrays = [np.array(offsets, np.int64), np.zeros(2, np.uint8)]
        meta = {"bufs": [["<i8", 3], ["|u1", 2]]}
        payload = np.frombuffer(arrays[0].tobytes() + arrays[1].tobytes() + bytes(6), np.uint8)
        with pytest.raises(BackendError, match=message):
            codec.parse_result(call, 2, meta, payload)


def test_a_value_error_locates_the_record_and_byte_in_its_message():
    message = "malformed varint in sequence 12 at byte offset 345: cut off at the end"
    code, text = parse_error(pack_located_error(ValueError(message)))
    assert code == ErrorCode.VALUE_ERROR
    kind, located, record, byte = parse_located_error(text)
    assert (kind, located) == (ValueError, message)
    assert (message[slice(*record)], message[slice(*byte)]) == ("12", "345")
    assert parse_located_error(parse_error(pack_located_error(TypeError("index 3")))[1]) == (
        TypeError,
        "index 3",
        (6, 7),
        None,
    )
    assert parse_located_error("plain text") == (ValueError, "plain text", None, None)
    forged = json.dumps({"message": "record x1", "record": [7, 9], "byte": [0, 99]})
    assert parse_located_error(forged) == (ValueError, "record x1", None, None)


_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def _drive(data: bytes, chunk: int) -> None:
    r = FrameReader(max_meta=4096, max_payload=1 << 20)
    for i in range(0, len(data), max(1, chunk)):
        try:
            frames = r.feed(data[i : i + max(1, chunk)])
        except ProtocolError:
            return
        for f in frames:  # whatever decodes must also parse or fail with ProtocolError
            try:
                if f.type == MsgType.REQUEST:
                    try:
                        codec.parse_request(f.meta, f.payload)
                    except (ValueError, TypeError):  # the service answers BAD_REQUEST
                        pass
                elif f.type == MsgType.ERROR:
                    parse_error(f.meta)
                else:
                    parse_json(f.meta)
            except ProtocolError:
                pass


@_SETTINGS
@given(st.binary(max_size=2048), st.integers(1, 300))
def test_fuzz_random_bytes(data, chunk):
    _drive(data, chunk)


@_SETTINGS
@given(st.binary(max_size=6000), st.integers(1, 300))
def test_fuzz_handshake_mode(data, chunk):
    """Whatever an unauthenticated peer sends: frames or ProtocolError, and never more than the
    handshake staging buffer held."""
    r = FrameReader(handshake=True)
    for i in range(0, len(data), chunk):
        try:
            frames = r.feed(data[i : i + chunk])
        except ProtocolError:
            return
        assert r.held_bytes == HANDSHAKE_STAGING and len(frames) <= 1
        if frames:
            return


@_SETTINGS
@given(
    st.sampled_from(range(len(VALID))),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
    st.integers(0, 64),
    st.integers(64, 8192),
    st.booleans(),
)
def test_fuzz_mutated_frames(which, flips, cut, chunk, fix_crc):
    data = bytearray(b"".join(VALID[which : which + 2]))
    for pos, val in flips:
        data[pos % len(data)] = val
    if fix_crc:  # re-seal the header so mutations reach the deeper parsers
        import struct

        import google_crc32c

        data[36:40] = struct.pack("<I", google_crc32c.value(bytes(data[:36])))
    _drive(bytes(data[: len(data) - cut]), chunk)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_BUF = st.tuples(
    st.sampled_from(["|u1", "<u4", "<u8", "<i8", "<f8", "<f4", "<i4", "|O", ">u8", "<U4"]),
    st.integers(-1, 40),
).map(list)


@_SETTINGS
@given(
    st.sampled_from(list(REGISTRY) + ["nope"]),
    st.dictionaries(
        st.sampled_from(
            ["seed", "num_buckets", "method", "slot", "version", "dtype", "boundaries", "right", "extra"]
        ),
        _JSON
        | st.builds(lambda i: {"buf": i}, st.integers(-1, 3))
        | st.builds(lambda d: {"dtype": d}, st.sampled_from(["<f8", "<i4", "O"])),
        max_size=4,
    ),
    st.sampled_from(["fixed", "var", "numbers", "sequences", "other"]),
    st.lists(_BUF, max_size=4),
    st.binary(max_size=256),
)
def test_fuzz_request_content(op, params, layout, bufs, payload):
    """Well-framed requests with arbitrary body content: the service's decoder raises ValueError
    or TypeError (answered as BAD_REQUEST) or yields a call and a batch of the declared size."""
    meta = json.dumps({"op": op, "params": params, "batch": layout, "bufs": bufs}).encode()
    data = np.frombuffer(payload[: len(payload) // 8 * 8], np.uint8).copy()
    try:
        call, batch, _ = codec.parse_request(meta, data)
    except (ValueError, TypeError):
        return
    assert call.op == op and batch.n >= 0
