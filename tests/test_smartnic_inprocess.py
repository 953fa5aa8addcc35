"""The SmartNIC service run in this process: operators registered by a test travel through it with
no SmartNIC code of their own, the service validates calls with the registry's exact messages,
and a client of another protocol version is refused with a clear error."""

from __future__ import annotations

import json
import socket
import struct

import numpy as np
import pytest

from offload import golden, ops
from offload.batch import Sequences
from offload.host.smartnic import SmartNicBackend
from offload.host.smartnic.protocol import (
    HEADER,
    MAGIC,
    ErrorCode,
    FrameReader,
    MsgType,
    auth_digest,
    crc32c,
    encode_frame,
    parse_error,
    parse_json,
)
from offload.host.smartnic.testing import InProcessService
from offload.ops import OpCall, Operator, Param
from offload.runtime import Runtime

pytestmark = pytest.mark.timeout(120)

RNG = np.random.default_rng(20261205)


@pytest.fixture(scope="module")
def service():
    with InProcessService(warmup=False) as svc:
        yield svc


# -- throwaway operators: registered here, unknown to host/smartnic ------------------------------


def _tagged_golden(call: OpCall, record: bytes) -> int:
    """A 16-bit result (not a whole word: the in-place receive pads it) from an array parameter
    and a float one."""
    h = golden.xxh32(record, 0)
    return int(call.table[h % call.table.shape[0]]) * 256 + int(call.scale * len(record)) % 256


def _tagged_cpu(backend, call: OpCall, batch) -> np.ndarray:
    return np.array([_tagged_golden(call, batch.record(i)) for i in range(batch.n)], np.uint16)


def _reverse_golden(call: OpCall, record: list[int]) -> list[int]:
    return [v + call.add for v in reversed(record)]


def _reverse_cpu(backend, call: OpCall, batch: Sequences) -> tuple[np.ndarray, np.ndarray]:
    seqs = [_reverse_golden(call, batch.record(i)) for i in range(batch.n)]
    vo = np.zeros(batch.n + 1, np.int64)
    np.cumsum([len(s) for s in seqs], out=vo[1:])
    return vo, np.array([v for s in seqs for v in s], np.int64)


def _table(value, _) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype != np.uint8 or arr.ndim != 1 or arr.shape[0] == 0:
        raise ValueError("table must be a non-empty 1-D uint8 array")
    return arr


def _scale(value, _) -> float:
    if not isinstance(value, float):
        raise TypeError(f"scale must be a float, got {type(value).__name__}")
    return value


@pytest.fixture
def throwaway():
    tagged = ops.register(
        Operator(
            "t_tagged",
            "a table entry and a scaled length",
            "records",
            (Param("table", _table), Param("scale", _scale, 1.0)),
            "uint16",
            _tagged_golden,
            _tagged_cpu,
            memoise=False,
            examples=({"table": np.arange(5, dtype=np.uint8)},),
        )
    )
    reverse = ops.register(
        Operator(
            "t_reverse",
            "each sequence reversed, plus a constant",
            "sequences",
            (Param("add", lambda v, _: ops.check_int("add", v, -10, 10, "[-10, 10]"), 0),),
            "sequences",
            _reverse_golden,
            _reverse_cpu,
        )
    )
    yield tagged, reverse
    ops.unregister("t_tagged")
    ops.unregister("t_reverse")


def test_a_registered_operator_round_trips_through_the_service(service, throwaway):
    """Operators registered by this test (an array and a float parameter and a 2-byte result;
    a sequences-to-sequences operator) run on the service, in many chunks, equal to their golden
    functions: nothing in host/smartnic names them."""
    be = SmartNicBackend(service.address, chunk_bytes=512, window=3)
    rt = Runtime(backends=[be], fallback=False, verify="full")
    records = [RNG.integers(0, 256, int(k), dtype=np.uint8).tobytes() for k in RNG.integers(0, 40, 301)]
    table = RNG.integers(0, 256, 7, dtype=np.uint8)
    got = rt.call("t_tagged", records, table=table, scale=2.5)
    call = ops.make_call("t_tagged", table=table, scale=2.5)
    assert got.dtype == np.uint16 and got.tolist() == [_tagged_golden(call, r) for r in records]
    seqs = [RNG.integers(-99, 99, int(k)).astype(np.int64) for k in RNG.integers(0, 30, 120)]
    vo, values = rt.call("t_reverse", seqs, add=-3)
    assert [values[vo[i] : vo[i + 1]].tolist() for i in range(len(seqs))] == [
        [v - 3 for v in reversed(s.tolist())] for s in seqs
    ]
    st = rt.stats()
    assert set(st["by_backend"]) == {"smartnic"} and st["fallbacks"] == []
    assert st["verified_records"] == len(records) + len(seqs)
    assert be.stats()["chunks"] > 4  # more than one chunk each
    rt.close()


# -- raw frames -----------------------------------------------------------------------------------


def _bytes(bufs) -> bytes:
    return b"".join(bytes(memoryview(b).cast("B")) for b in bufs)


def _read(s: socket.socket, r: FrameReader, k: int):
    frames = []
    s.settimeout(5)
    while len(frames) < k:
        buf = r.get_buffer()
        n = s.recv_into(buf)
        if n == 0:
            raise ConnectionError("closed")
        frames.extend(r.buffer_updated(n))
    return frames


def _authenticated(port: int) -> tuple[socket.socket, FrameReader]:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    r = FrameReader()
    nonce = bytes.fromhex(parse_json(_read(s, r, 1)[0].meta)["nonce"])
    s.sendall(_bytes(encode_frame(MsgType.AUTH, 0, auth_digest(b"unused", nonce))))
    assert _read(s, r, 1)[0].type == MsgType.AUTH_OK
    return s, r


def _request(meta: dict, payload: np.ndarray, bid: int = 1) -> bytes:
    return _bytes(encode_frame(MsgType.REQUEST, bid, json.dumps(meta).encode(), [payload]))


@pytest.mark.parametrize(
    "op,params,error",
    [
        ("hash_bucket", {"num_buckets": 0}, "ValueError: num_buckets must be in [1, 2**63], got 0"),
        (
            "fid",
            {"slot": 5000, "version": 1},
            "ValueError: slot must be in [0, 1024) for fid version 1, got 5000",
        ),
        ("xxh64", {"salt": 1}, "TypeError: xxh64() got an unexpected parameter 'salt'"),
        ("nope", {}, "ValueError: unknown operator 'nope': expected one of xxh32, xxh64, "),
    ],
)
def test_the_service_validates_a_call_with_the_registrys_message(service, op, params, error):
    s, r = _authenticated(service.service.port)
    with s:
        keys = np.arange(4, dtype=np.uint64)
        s.sendall(_request({"op": op, "params": params, "batch": "fixed", "bufs": [["<u8", 4]]}, keys))
        err = _read(s, r, 1)[0]
        code, message = parse_error(err.meta)
        assert (code, err.batch_id) == (ErrorCode.BAD_REQUEST, 1)
        assert message.startswith(error)


@pytest.mark.parametrize(
    "meta,error",
    [
        (
            {"op": "xxh64", "params": {}, "batch": "fixed", "bufs": [["<u8", 2**32 - 1]]},
            "RequestError: buffers need more than the payload's 32 bytes",
        ),
        (
            {"op": "xxh64", "params": {}, "batch": "fixed", "bufs": [["|O", 4]]},
            "RequestError: bad buffer ['|O', 4]: expected [dtype, count] with dtype one of ",
        ),
        (
            {"op": "xxh64", "params": {}, "batch": "numbers", "bufs": [["<f8", 4]]},
            "RequestError: a records operator takes the layout fixed or var, got 'numbers'",
        ),
        (
            {"op": "xxh64", "params": {}, "batch": "var", "bufs": [["<i8", 2], ["|u1", 16]]},
            "ValueError: offsets[-1] must equal len(data) = 16, got 1",
        ),
        (
            {
                "op": "bucketize",
                "params": {"dtype": {"dtype": "<f8"}, "boundaries": {"buf": 0}},
                "batch": "numbers",
                "bufs": [["<f8", 2], ["<f8", 2]],
            },
            "ValueError: boundaries must be strictly increasing",
        ),
    ],
)
def test_a_malformed_request_body_is_a_bad_request_and_the_connection_goes_on(service, meta, error):
    payload = np.array([0, 1, 1, 0], np.int64) if meta["batch"] == "var" else np.array([3.0, 1.0, 0.5, 0.25])
    s, r = _authenticated(service.service.port)
    with s:
        s.sendall(_request(meta, payload.view(np.uint8)))
        code, message = parse_error(_read(s, r, 1)[0].meta)
        assert code == ErrorCode.BAD_REQUEST and message.startswith(error), message
        good = {"op": "xxh64", "params": {"seed": 0}, "batch": "fixed", "bufs": [["<u8", 4]]}
        s.sendall(_request(good, np.arange(4, dtype=np.uint64), bid=2))
        ok = _read(s, r, 1)[0]
        assert ok.type == MsgType.RESULT and ok.batch_id == 2
        assert ok.payload.view(np.uint64).tolist() == [
            golden.xxh64(struct.pack("<Q", k), 0) for k in range(4)
        ]


def test_a_client_of_another_protocol_version_is_refused_with_a_clear_error(service):
    """A version-1 client: its AUTH frame is refused from the header with a message naming both
    versions, and the connection is closed."""
    s = socket.create_connection(("127.0.0.1", service.service.port), timeout=5)
    with s:
        r = FrameReader()
        assert _read(s, r, 1)[0].type == MsgType.HELLO
        head = HEADER.pack(MAGIC, 1, int(MsgType.AUTH), 0, 0, 0, 0, 0, 0, 0)[:36]
        s.sendall(head + struct.pack("<I", crc32c(head)))
        err = _read(s, r, 1)[0]
        assert parse_error(err.meta) == (
            ErrorCode.BAD_FRAME,
            (
                "protocol version 1 is not supported: this side speaks version 2 (client and service "
                "must be the same offload release)"
            ),
        )
        s.settimeout(5)
        assert s.recv(1) == b""


def _strict_cpu(backend, call: OpCall, batch) -> np.ndarray:
    for i in range(batch.n):
        if not batch.record(i):
            raise ValueError(f"t_strict: record {i} is empty")
    return np.array([len(batch.record(i)) for i in range(batch.n)], np.int64)


@pytest.fixture
def strict():
    entry = ops.register(
        Operator(
            "t_strict",
            "the length of each record, which must not be empty",
            "records",
            (),
            "int64",
            lambda c, r: len(r),
            _strict_cpu,
        )
    )
    yield entry
    ops.unregister("t_strict")


def test_a_registered_operators_value_error_names_the_callers_record(service, strict):
    """The service's ValueError for a record in a later chunk names that record's index in the
    caller's batch: the restatement knows no operator."""
    records = [b"x" * (1 + i % 7) for i in range(500)]
    records[321] = b""
    be = SmartNicBackend(service.address, chunk_bytes=256)
    rt = Runtime(backends=[be], fallback=False)
    with pytest.raises(ValueError, match=r"^t_strict: record 321 is empty$"):
        rt.call("t_strict", records)
    assert be.stats()["chunks"] >= 3
    rt.close()
