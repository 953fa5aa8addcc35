"""Protocol unit tests and the decoder fuzz test: whatever bytes arrive, the frame decoder returns
frames or raises ProtocolError — never another exception, never a hang."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload import wire
from offload.batch import as_records, as_sequences
from offload.host.smartnic import codec
from offload.host.smartnic.protocol import (HANDSHAKE_STAGING, HEADER_SIZE, ErrorCode,
                                            FrameReader, MsgType, ProtocolError, encode_frame,
                                            pack_error, pack_request, parse_error, parse_json,
                                            parse_request)
from offload.ops import make_call

pytestmark = pytest.mark.timeout(120)


def _bytes(bufs) -> bytes:
    return b"".join(bytes(memoryview(b).cast("B")) for b in bufs)


def _valid_frames() -> list[bytes]:
    words = np.arange(50, dtype=np.uint64)
    meta, bufs = pack_request({"OP": 2, "FORMAT": 0, "COUNT": 50}, np.zeros(0, np.uint64), words)
    big = np.arange((72 << 10) // 8, dtype=np.uint64)  # above 64 KiB: the direct-receive path
    bmeta, bbufs = pack_request({"OP": 2, "FORMAT": 0, "COUNT": big.size}, np.zeros(0, np.uint64),
                                big)
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
            frames.extend(r.feed(stream[i:i + step]))
        assert [f.type for f in frames] == [MsgType.HELLO, MsgType.AUTH, MsgType.HEALTH,
                                            MsgType.REQUEST, MsgType.REQUEST, MsgType.ERROR]
        regs, table, words, _ = parse_request(frames[3])
        assert regs == {"OP": 2, "FORMAT": 0, "COUNT": 50} and table.size == 0
        np.testing.assert_array_equal(words, np.arange(50, dtype=np.uint64))
        assert parse_request(frames[4])[2][-1] == (72 << 10) // 8 - 1
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
    refusals = [(request, ErrorCode.OUT_OF_ORDER, r"^expected AUTH, got REQUEST$"),
                (_bytes(encode_frame(MsgType.AUTH, 0, b"x" * 257)), ErrorCode.TOO_LARGE,
                 r"^AUTH frame with 257 bytes of meta and 0 of payload: an AUTH frame has at "
                 r"most 256 bytes of meta and no payload$")]
    for frame, code, message in refusals:
        r = FrameReader(handshake=True)
        with pytest.raises(ProtocolError) as e:
            r.feed(frame[:HEADER_SIZE])  # the header alone is enough to refuse it
        assert e.value.code == code and re.match(message, e.value.message)
    r.release()
    assert r.held_bytes == 0
    with pytest.raises(ProtocolError):
        r.get_buffer()


@pytest.mark.parametrize("op,batch", [
    ("xxh32", as_records([b"abc", b"", b"0123456789"])),
    ("delta_varint_decode", as_records([b"\x02\x04", b"", b"\x01"])),
    ("delta_varint_encode", as_sequences([np.array([1, -2], np.int64), np.zeros(0, np.int64)])),
])
def test_codec_round_trip(op, batch):
    call = make_call(op)
    job = codec.encode_job(call, batch)
    call2, batch2 = codec.decode_job(job.regs, job.table, job.words)
    assert call2.op == op and batch2.n == batch.n
    from offload.host.cpu import CpuBackend
    res = CpuBackend().run(call2, batch2)
    words = np.concatenate(codec.encode_result(call2, res))
    back = codec.decode_result(job, words)
    ref = CpuBackend().run(call, batch)
    if isinstance(ref, tuple):
        for a, b in zip(ref, back):
            np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_array_equal(ref, back)


_SETTINGS = settings(max_examples=200, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _drive(data: bytes, chunk: int) -> None:
    r = FrameReader(max_meta=4096, max_payload=1 << 20)
    for i in range(0, len(data), max(1, chunk)):
        try:
            frames = r.feed(data[i:i + max(1, chunk)])
        except ProtocolError:
            return
        for f in frames:  # whatever decodes must also parse or fail with ProtocolError
            try:
                if f.type == MsgType.REQUEST:
                    regs, table, words, _ = parse_request(f)
                    try:
                        codec.decode_job(regs, table, words)
                    except wire.WireError:
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
            frames = r.feed(data[i:i + chunk])
        except ProtocolError:
            return
        assert r.held_bytes == HANDSHAKE_STAGING and len(frames) <= 1
        if frames:
            return


@_SETTINGS
@given(st.sampled_from(range(len(VALID))), st.lists(
    st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
    st.integers(0, 64), st.integers(64, 8192), st.booleans())
def test_fuzz_mutated_frames(which, flips, cut, chunk, fix_crc):
    data = bytearray(b"".join(VALID[which:which + 2]))
    for pos, val in flips:
        data[pos % len(data)] = val
    if fix_crc:  # re-seal the header so mutations reach the deeper parsers
        import google_crc32c
        import struct
        data[36:40] = struct.pack("<I", google_crc32c.value(bytes(data[:36])))
    _drive(bytes(data[:len(data) - cut]), chunk)


@_SETTINGS
@given(st.dictionaries(st.sampled_from(["OP", "FORMAT", "DTYPE", "COUNT", "SEED_LO", "SEED_HI",
                                        "NUM_BUCKETS_LO", "NUM_BUCKETS_HI", "SLOT",
                                        "NUM_BOUNDARIES"]),
                       st.integers(0, 2**32 - 1), max_size=10),
       st.lists(st.integers(0, 2**64 - 1), max_size=40), st.lists(st.integers(0, 2**64 - 1),
                                                                  max_size=4))
def test_fuzz_wire_content(regs, words, table):
    """Well-framed requests with arbitrary register and word content: the service's decoder
    raises WireError (answered as BAD_REQUEST) or yields a batch — nothing else."""
    for r in (regs, dict(regs, OP=regs.get("OP", 0) % 17, FORMAT=regs.get("FORMAT", 0) % 4,
                         COUNT=regs.get("COUNT", 0) % 50, DTYPE=regs.get("DTYPE", 0) % 5)):
        try:
            call, batch = codec.decode_job(r, np.array(table, np.uint64),
                                           np.array(words, np.uint64))
        except wire.WireError:
            continue
        assert batch.n == r.get("COUNT", 0)


def test_request_register_cache_is_not_shared():
    # parse_request caches parsed register sections: a caller mutating its dict must not change
    # what the next identical request decodes to
    from offload.batch import as_records
    from offload.ops import make_call
    job = codec.encode_job(make_call("xxh64", seed=3), as_records(np.arange(5, dtype=np.uint64)))
    meta, bufs = pack_request(job.regs, job.table, job.words)
    data = _bytes(encode_frame(MsgType.REQUEST, 1, meta, bufs))
    regs1 = parse_request(FrameReader().feed(data)[0])[0]
    regs1["OP"] = 99
    regs2 = parse_request(FrameReader().feed(data)[0])[0]
    assert regs2 == {k: int(v) & 0xFFFFFFFF for k, v in job.regs.items()}


def test_result_meta_backend_name():
    from offload.host.smartnic.backend import _meta_backend
    assert _meta_backend(b'{"backend":"cpu","us":12}') == "cpu"
    assert _meta_backend(b'{"backend":"fpga,cpu","us":1}') == "fpga,cpu"
    assert _meta_backend(b'{"us":1,"backend":"sim"}') == "sim"
    assert _meta_backend(b'{"backend":"a\\u0062"}') == "ab"
    assert _meta_backend(b"[1]") == "?" and _meta_backend(b"\xff") == "?"
