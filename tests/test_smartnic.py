"""SmartNIC service end to end: real ``offload serve`` processes on ephemeral loopback ports."""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest

import offload
from offload import golden
from offload.backend import BackendError
from offload.batch import as_records
from offload.host.smartnic import SmartNicBackend, codec
from offload.host.smartnic.protocol import (
    HEADER,
    MAGIC,
    VERSION,
    ErrorCode,
    FrameReader,
    MsgType,
    auth_digest,
    crc32c,
    encode_frame,
    parse_error,
    parse_json,
)
from offload.host.smartnic.server import is_loopback
from offload.host.smartnic.server import main as serve_main
from offload.host.smartnic.testing import ServerProcess
from offload.ops import make_call
from offload.runtime import Runtime

pytestmark = pytest.mark.timeout(120)

RNG = np.random.default_rng(20240611)


@pytest.fixture(scope="module")
def server():
    with ServerProcess(backend="cpu") as srv:
        yield srv


@pytest.fixture
def cpu():
    rt = Runtime(backends=["cpu"])
    yield rt
    rt.close()


def _rt(address: str, **opts) -> Runtime:
    return Runtime(backends=[SmartNicBackend(address, **opts)], verify="off")


def _same(a, b) -> None:
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
        return
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


def _xxh64_request(keys: np.ndarray) -> tuple[bytes, list]:
    """A REQUEST body for xxh64 of ``keys``."""
    return codec.request_body(*codec.request_arrays(make_call("xxh64"), as_records(keys)))


def _strings(n: int) -> list[bytes]:
    lens = RNG.integers(0, 70, n)
    return [RNG.integers(0, 256, int(k), dtype=np.uint8).tobytes() for k in lens]


# ---------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_bytes", [4 << 20, 512])
def test_every_operator_round_trip(server, cpu, chunk_bytes):
    """Every operator, several batch forms, bit-exact against the CPU backend (itself held to the
    golden model elsewhere) and, on samples, to the golden model (verify="full")."""
    rt = Runtime(
        backends=[SmartNicBackend(server.address, chunk_bytes=chunk_bytes, window=3)],
        verify="full",
        fallback=False,
    )
    k64 = RNG.integers(0, 2**63, 3000, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    k32 = RNG.integers(-(2**31), 2**31, 3000, dtype=np.int64).astype(np.int32).reshape(30, 100)
    strs = _strings(500)
    texts = ["", "a", "héllo", "x" * 100]
    arrow = pytest.importorskip("pyarrow").array(strs, type="large_binary").slice(3, 400)
    for values in (k64, k32, k32.astype(np.uint32), k64.view(np.int64), strs, texts, arrow):
        for seed in (0, 7, 2**32 - 1):
            _same(rt.xxh32(values, seed=seed), cpu.xxh32(values, seed=seed))
        for seed in (0, 2**64 - 1):
            _same(rt.xxh64(values, seed=seed), cpu.xxh64(values, seed=seed))
        for method in ("mod", "fastrange"):
            for nb in (1, 1000, 2**63):
                _same(
                    rt.hash_bucket(values, nb, seed=3, method=method),
                    cpu.hash_bucket(values, nb, seed=3, method=method),
                )
        _same(rt.fid(values, slot=1023, version=1, seed=5), cpu.fid(values, 1023, 1, seed=5))
        _same(rt.fid(values, slot=32767, version=2), cpu.fid(values, 32767, 2))
    for dt in (np.float32, np.float64, np.int32, np.int64):
        x = (RNG.standard_normal(2000) * 100).astype(dt)
        if dt in (np.float32, np.float64):
            x[:4] = [np.nan, -0.0, np.inf, -np.inf]
        b = np.unique((RNG.standard_normal(50) * 80).astype(dt))
        for right in (True, False):
            _same(rt.bucketize(x, b, right=right), cpu.bucketize(x, b, right=right))
    seqs = [
        RNG.integers(-(2**63), 2**63 - 1, int(k), dtype=np.int64, endpoint=True)
        for k in RNG.integers(0, 40, 300)
    ]
    enc = rt.delta_varint_encode(seqs)
    _same(enc, cpu.delta_varint_encode(seqs))
    _same(rt.delta_varint_decode(*enc), cpu.delta_varint_decode(*enc))
    # empty batches never reach the wire
    _same(rt.xxh64(np.zeros(0, np.uint64)), cpu.xxh64(np.zeros(0, np.uint64)))
    st = rt.stats()
    assert set(st["by_backend"]) == {"smartnic"} and not st["fallbacks"]
    rt.close()


def test_remote_value_error_names_the_global_index(server, cpu):
    """A malformed varint: the service's ValueError is raised with its message as the service
    wrote it, the record index and byte offset restated for the caller's batch (bad input is
    never a device failure, so nothing falls back)."""
    rt = Runtime(backends=[SmartNicBackend(server.address, chunk_bytes=64)])
    offsets = np.array([0, 1, 2, 3, 4, 6], np.int64)
    data = np.array([2, 4, 6, 8, 0x80, 0x80], np.uint8)  # the last sequence is cut off
    with pytest.raises(
        ValueError,
        match=r"^malformed varint in sequence 4 at byte offset 4: cut "
        r"off at the end of the sequence$",
    ):
        rt.delta_varint_decode(offsets, data)
    assert rt.stats()["fallbacks"] == []
    rt.close()


def test_an_operator_the_service_lacks_goes_to_the_next_backend(server):
    """An operator registered in this process only: the service (another process) announces the
    operators it holds, so the client does not send this one; the runtime records why."""
    from offload import ops

    def golden_of(call, record):
        return golden.xxh64(record, call.seed) ^ 1

    def cpu(backend, call, batch):
        return np.array([golden_of(call, batch.record(i)) for i in range(batch.n)], np.uint64)

    ops.register(
        ops.Operator(
            "only_here",
            "test",
            "records",
            (ops.Param("seed", ops.seed_check(64), 0),),
            "uint64",
            golden_of,
            cpu,
        )
    )
    try:
        be = SmartNicBackend(server.address)
        rt = Runtime(backends=[be, "cpu"])
        assert rt.availability("smartnic", refresh=True).ok
        assert "xxh64" in be.capabilities().ops and "only_here" not in be.capabilities().ops
        keys = np.arange(10, dtype=np.uint64)
        got = rt.call("only_here", keys, seed=3)
        assert got.tolist() == [golden.xxh64(k.tobytes(), 3) ^ 1 for k in keys]
        (fb,) = rt.stats()["fallbacks"]
        assert (fb["from"], fb["to"], fb["cause"]) == ("smartnic", "cpu", "unsupported")
        assert rt.call("xxh64", keys).tolist() == [golden.xxh64(k.tobytes()) for k in keys]
        assert rt.last_call()["segments"] == [("smartnic", 0, 10)]
        rt.close()
    finally:
        ops.unregister("only_here")


def test_health_and_availability(server, monkeypatch):
    be = SmartNicBackend(server.address)
    av = be.availability()
    assert av.ok, av.reason
    h = be.health()
    assert h["status"] == "ok" and h["chain"] == ["cpu"] and h["proto"] == 2
    be.close()
    monkeypatch.delenv("OFFLOAD_SMARTNIC", raising=False)
    av = SmartNicBackend().availability()
    assert not av.ok and "OFFLOAD_SMARTNIC" in av.reason
    monkeypatch.setenv("OFFLOAD_SMARTNIC", server.address)
    assert SmartNicBackend().availability().ok
    # a port nobody listens on
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    av = SmartNicBackend(f"127.0.0.1:{port}").availability()
    assert not av.ok and "cannot reach" in av.reason and time.monotonic() - t0 < 3
    assert not SmartNicBackend("nonsense").availability().ok


def test_concurrent_clients(server, cpu):
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            rng = np.random.default_rng(i)
            rt = _rt(server.address, chunk_bytes=4096, window=2)
            for _ in range(8):
                keys = rng.integers(0, 2**63, int(rng.integers(1, 5000)), dtype=np.uint64)
                _same(rt.xxh64(keys, seed=i), cpu.xxh64(keys, seed=i))
                strs = [
                    bytes(rng.integers(0, 256, int(rng.integers(0, 30)), dtype=np.uint8)) for _ in range(200)
                ]
                _same(rt.hash_bucket(strs, 97, seed=i), cpu.hash_bucket(strs, 97, seed=i))
            rt.close()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]


# ---------------------------------------------------------------------------------------------
# faults: the runtime's result stays complete and correct
# ---------------------------------------------------------------------------------------------


def test_sigkill_mid_batch_falls_back_to_cpu(cpu):
    keys = RNG.integers(0, 2**63, 200_000, dtype=np.uint64)
    with ServerProcess("--debug-delay-ms", "150", backend="cpu") as srv:
        be = SmartNicBackend(srv.address, chunk_bytes=80_000, window=2, retries=1, backoff=0.05)
        rt = Runtime(backends=[be])
        assert rt.availability("smartnic").ok

        def kill_after_first_chunk() -> None:
            t_end = time.monotonic() + 20
            while be.stats()["chunks"] < 1 and time.monotonic() < t_end:
                time.sleep(0.01)
            srv.kill()

        killer = threading.Thread(target=kill_after_first_chunk)
        killer.start()
        t0 = time.monotonic()
        out = rt.xxh64(keys, seed=11)
        killer.join()
        assert time.monotonic() - t0 < 10
    _same(out, cpu.xxh64(keys, seed=11))
    st = rt.stats()
    by = st["by_backend"]
    assert by["smartnic"]["records"] > 0 and by["cpu"]["records"] > 0
    assert by["smartnic"]["records"] + by["cpu"]["records"] == keys.size
    fb = st["fallbacks"][0]
    assert fb["from"] == "smartnic" and fb["to"] == "cpu" and fb["cause"] == "connection_lost"
    assert fb["at_record"] == by["smartnic"]["records"]
    rt.close()


class _DropProxy:
    """A TCP proxy on loopback that cuts its first connection after ``drop_after`` bytes from the
    server (the link dropping mid-batch); later connections are forwarded untouched."""

    def __init__(self, target: tuple[str, int], drop_after: int) -> None:
        self.target = target
        self.drop_after = drop_after
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.conns = 0
        self.stopped = threading.Event()
        self.threads: list[threading.Thread] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                c, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.conns += 1
            s = socket.create_connection(self.target)
            limit = self.drop_after if self.conns == 1 else None
            for a, b, lim in ((c, s, None), (s, c, limit)):
                t = threading.Thread(target=self._pump, args=(a, b, lim, c, s), daemon=True)
                t.start()
                self.threads.append(t)

    def _pump(self, src, dst, limit, c, s) -> None:
        moved = 0
        src.settimeout(0.2)
        try:
            while not self.stopped.is_set():
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                if limit is not None and moved + len(data) >= limit:
                    dst.sendall(data[: max(0, limit - moved)])
                    break
                dst.sendall(data)
                moved += len(data)
        except OSError:
            pass
        for x in (c, s):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            x.close()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()
        for t in self.threads:
            t.join(2)


@pytest.mark.parametrize("retries", [0, 2])
def test_link_dropped_mid_batch(server, cpu, retries):
    keys = RNG.integers(0, 2**63, 100_000, dtype=np.uint64)
    host, port = server.address.rsplit(":", 1)
    proxy = _DropProxy((host, int(port)), drop_after=300_000)  # mid-way through the results
    try:
        rt = Runtime(
            backends=[
                SmartNicBackend(
                    f"127.0.0.1:{proxy.port}", chunk_bytes=64_000, window=2, retries=retries, backoff=0.01
                )
            ]
        )
        out = rt.xxh64(keys, seed=3)
    finally:
        proxy.close()
    _same(out, cpu.xxh64(keys, seed=3))
    st = rt.stats()
    sn = st["by_backend"].get("smartnic", {}).get("records", 0)
    if retries == 0:
        assert st["fallbacks"] and st["fallbacks"][0]["cause"] == "connection_lost"
        assert 0 < sn < keys.size and st["by_backend"]["cpu"]["records"] == keys.size - sn
    else:  # reconnected and resent only the unanswered chunks
        assert not st["fallbacks"] and sn == keys.size
        be = rt.backend("smartnic")
        assert be.stats()["reconnects"] == 1 and be.stats()["records"] == keys.size
    rt.close()


def test_slow_server_hits_deadline(cpu):
    keys = RNG.integers(0, 2**63, 5000, dtype=np.uint64)
    with ServerProcess("--debug-delay-ms", "1500", backend="cpu") as srv:
        rt = Runtime(backends=[SmartNicBackend(srv.address, timeout=0.3)])
        t0 = time.monotonic()
        out = rt.xxh64(keys)
        assert time.monotonic() - t0 < 2.5
        _same(out, cpu.xxh64(keys))
        fb = rt.stats()["fallbacks"]
        assert fb and fb[0]["cause"] == "timeout" and fb[0]["to"] == "cpu"
        strict = Runtime(backends=[SmartNicBackend(srv.address, timeout=0.3)], fallback=False)
        with pytest.raises(BackendError) as ei:
            strict.xxh64(keys)
        assert ei.value.cause == "timeout" and ei.value.completed == 0
        rt.close()
        strict.close()
        srv.kill()  # do not wait for the slow batches to drain


def test_sigterm_finishes_in_flight_batches(cpu):
    keys = RNG.integers(0, 2**63, 50_000, dtype=np.uint64)
    with ServerProcess("--debug-delay-ms", "600", backend="cpu") as srv:
        rt = Runtime(backends=[SmartNicBackend(srv.address)], fallback=False)
        assert rt.availability("smartnic").ok
        res: dict[str, object] = {}
        t = threading.Thread(target=lambda: res.setdefault("out", rt.xxh64(keys, seed=9)))
        t.start()
        time.sleep(0.3)  # the batch is received and waiting in the service
        t0 = time.monotonic()
        rc = srv.terminate(timeout=20)
        t.join(20)
        assert rc == 0
        assert time.monotonic() - t0 < 10
        _same(res["out"], cpu.xxh64(keys, seed=9))  # answered by the draining service
        assert rt.stats()["by_backend"]["smartnic"]["records"] == keys.size
        ev = [e["event"] for e in srv.events()]
        assert "draining" in ev and ev[-1] == "stopped"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
        rt.close()


# ---------------------------------------------------------------------------------------------
# security
# ---------------------------------------------------------------------------------------------


def test_token_auth(tmp_path, cpu):
    tok = tmp_path / "token"
    tok.write_text("s3cret-token\n")
    keys = np.arange(100, dtype=np.uint64)
    with ServerProcess("--token-file", str(tok), backend="cpu") as srv:
        good = SmartNicBackend(srv.address, token="s3cret-token")
        assert good.availability().ok
        _same(Runtime(backends=[good], fallback=False).xxh64(keys), cpu.xxh64(keys))
        file_client = SmartNicBackend(srv.address, token_file=str(tok))
        assert file_client.availability().ok
        none = SmartNicBackend(srv.address)
        av = none.availability()
        assert not av.ok and "refused" in av.reason and "no token" in av.reason
        wrong = SmartNicBackend(srv.address, token="guess")
        av = wrong.availability()
        assert not av.ok and "wrong token" in av.reason
        with pytest.raises(BackendError) as ei:
            wrong.run(make_call("xxh64"), as_records(keys))
        assert ei.value.cause == "auth"
        # the runtime falls back rather than failing
        rt = Runtime(backends=[SmartNicBackend(srv.address, token="guess")])
        _same(rt.xxh64(keys), cpu.xxh64(keys))
        assert "smartnic" not in rt.stats()["by_backend"]
        # a raw client that skips the handshake is refused too
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            r = FrameReader()
            hello = _read_frames(s, r, 1)[0]
            assert hello.type == MsgType.HELLO and parse_json(hello.meta)["auth"] is True
            meta, bufs = _xxh64_request(np.zeros(1, np.uint64))
            _send(s, encode_frame(MsgType.REQUEST, 1, meta, bufs))
            err = _read_frames(s, r, 1)[0]
            assert err.type == MsgType.ERROR
            assert parse_error(err.meta)[0] == ErrorCode.OUT_OF_ORDER
            assert _closed(s)
        for b in (good, file_client, none, wrong):
            b.close()
        time.sleep(0.2)
        refused = srv.events("auth_refused")
        assert len(refused) >= 2 and all(e["level"] == "warning" for e in refused)


def test_non_loopback_requires_token(tmp_path, capsys):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    t0 = time.monotonic()
    assert serve_main(["--host", "0.0.0.0", "--port", "0"]) == 2
    assert time.monotonic() - t0 < 5
    assert "--token-file" in capsys.readouterr().err
    (tmp_path / "empty").write_text("  \n")
    assert serve_main(["--host", "0.0.0.0", "--port", "0", "--token-file", str(tmp_path / "empty")]) == 2


# ---------------------------------------------------------------------------------------------
# malformed traffic closes only that connection
# ---------------------------------------------------------------------------------------------


def _send(s: socket.socket, bufs) -> None:
    s.sendall(b"".join(bytes(memoryview(b).cast("B")) for b in bufs))


def _read_frames(s: socket.socket, r: FrameReader, k: int, timeout: float = 5.0):
    frames = []
    s.settimeout(timeout)
    while len(frames) < k:
        buf = r.get_buffer()
        n = s.recv_into(buf)
        if n == 0:
            raise ConnectionError("closed")
        frames.extend(r.buffer_updated(n))
    return frames


def _closed(s: socket.socket, timeout: float = 5.0) -> bool:
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _handshake(port: int) -> tuple[socket.socket, FrameReader]:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    r = FrameReader()
    hello = _read_frames(s, r, 1)[0]
    nonce = bytes.fromhex(parse_json(hello.meta)["nonce"])
    _send(s, encode_frame(MsgType.AUTH, 0, auth_digest(b"unused", nonce)))
    assert _read_frames(s, r, 1)[0].type == MsgType.AUTH_OK
    return s, r


def test_malformed_frames_close_only_that_connection(cpu):
    with ServerProcess("--max-frame-mb", "1", backend="cpu") as srv:
        be = SmartNicBackend(srv.address)
        keys = np.arange(1000, dtype=np.uint64)
        healthy = Runtime(backends=[be], fallback=False)
        _same(healthy.xxh64(keys), cpu.xxh64(keys))

        good = encode_frame(MsgType.HEALTH, 1)
        raw = bytearray(b"".join(bytes(memoryview(b).cast("B")) for b in good))
        bad_magic = b"XXXX" + bytes(raw[4:])
        meta, bufs = _xxh64_request(np.arange(4, dtype=np.uint64))
        req = bytearray(
            b"".join(bytes(memoryview(b).cast("B")) for b in encode_frame(MsgType.REQUEST, 1, meta, bufs))
        )
        corrupt = bytearray(req)
        corrupt[-3] ^= 0x10  # a payload bit flips: the body CRC catches it
        big = encode_frame(MsgType.REQUEST, 1, meta, [np.zeros((2 << 20) // 8, np.uint64)])
        cases = {
            "garbage": (b"\x00" * 40, ErrorCode.BAD_FRAME),
            "bad_magic": (bad_magic, ErrorCode.BAD_FRAME),
            "bad_crc": (bytes(corrupt), ErrorCode.BAD_CRC),
            "oversized": (bytes(memoryview(big[0]).cast("B")), ErrorCode.TOO_LARGE),
            "server_type": (
                b"".join(bytes(memoryview(b).cast("B")) for b in encode_frame(MsgType.RESULT, 1)),
                ErrorCode.OUT_OF_ORDER,
            ),
        }
        for name, (data, code) in cases.items():
            s, r = _handshake(srv.port)
            with s:
                s.sendall(data)
                err = _read_frames(s, r, 1)[0]
                assert err.type == MsgType.ERROR, name
                assert parse_error(err.meta)[0] == code, (name, parse_error(err.meta))
                assert _closed(s), name
        # batch ids must increase on a connection
        s, r = _handshake(srv.port)
        with s:
            _send(s, encode_frame(MsgType.REQUEST, 5, meta, bufs))
            ok = _read_frames(s, r, 1)[0]
            assert ok.type == MsgType.RESULT and ok.batch_id == 5
            _send(s, encode_frame(MsgType.REQUEST, 5, meta, bufs))
            err = _read_frames(s, r, 1)[0]
            assert parse_error(err.meta)[0] == ErrorCode.OUT_OF_ORDER and _closed(s)
        # a well-framed request with a bad body: an error answer, the connection stays
        s, r = _handshake(srv.port)
        with s:
            bad_meta = meta.replace(b'"op":"xxh64"', b'"op":"xxh99"')
            _send(s, encode_frame(MsgType.REQUEST, 1, bad_meta, bufs))
            err = _read_frames(s, r, 1)[0]
            assert parse_error(err.meta)[0] == ErrorCode.BAD_REQUEST and err.batch_id == 1
            huge_count = meta.replace(b'["<u8",4]', b'["<u8",4294967295]')
            _send(s, encode_frame(MsgType.REQUEST, 2, huge_count, bufs))
            err = _read_frames(s, r, 1)[0]
            assert parse_error(err.meta)[0] == ErrorCode.BAD_REQUEST and err.batch_id == 2
            _send(s, encode_frame(MsgType.REQUEST, 3, meta, bufs))
            assert _read_frames(s, r, 1)[0].type == MsgType.RESULT
        # a slowloris half frame does not block others; the pooled connection still works
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(raw[:20])
        _same(healthy.xxh64(keys), cpu.xxh64(keys))
        s.close()
        assert srv.running()
        assert len(srv.events("protocol_error")) >= 6
        healthy.close()


def test_backpressure_bounded_inflight(cpu):
    """A client that sends without reading: the service stops reading (TCP backpressure) instead
    of queueing without bound; a well-behaved client is served meanwhile."""
    with ServerProcess("--max-inflight-mb", "1", "--max-frame-mb", "1", backend="cpu") as srv:
        s, r = _handshake(srv.port)
        words = np.arange((512 << 10) // 8, dtype=np.uint64)
        meta, bufs = _xxh64_request(words)
        s.setblocking(False)
        sent = 0
        t0 = time.monotonic()
        bid = 1
        pending = b""
        while time.monotonic() - t0 < 1.5 and sent < 400 << 20:
            if not pending:
                pending = b"".join(
                    bytes(memoryview(b).cast("B")) for b in encode_frame(MsgType.REQUEST, bid, meta, bufs)
                )
                bid += 1
            try:
                k = s.send(pending)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            sent += k
            pending = pending[k:]
        assert sent < 64 << 20, f"the service accepted {sent} bytes without them being read"
        h = SmartNicBackend(srv.address).health()
        assert h["inflight_bytes"] <= 3 << 20
        keys = np.arange(10, dtype=np.uint64)
        _same(_rt(srv.address).xxh64(keys), cpu.xxh64(keys))
        s.close()
        srv.kill()


@pytest.mark.parametrize("bad", ["cut", "long", "high"])
def test_a_decode_error_in_a_later_chunk_is_exact_without_a_local_rerun(server, cpu, monkeypatch, bad):
    """The bad record sits in a later chunk, its bytes far into the caller's data: the message is
    the CPU backend's for the whole batch, exactly, and nothing ran on this process's CPU (the
    client's CPU backend and golden decoder raise if called)."""
    seqs = [RNG.integers(-(1 << 40), 1 << 40, int(k)).astype(np.int64) for k in RNG.integers(0, 20, 400)]
    offsets, data = cpu.delta_varint_encode(seqs)
    record = 333
    start, end = int(offsets[record]), int(offsets[record + 1])
    tail = {"cut": [0x80], "long": [0x80] * 10 + [0x01], "high": [0x80] * 9 + [0x02]}[bad]
    data = np.concatenate([data[:end], np.array(tail, np.uint8), data[end:]])
    offsets = np.concatenate([offsets[: record + 1], offsets[record + 1 :] + len(tail)])
    with pytest.raises(ValueError) as expected:
        cpu.delta_varint_decode(offsets, data)
    assert f"in sequence {record} at byte offset " in str(expected.value) and start > 0

    def no_local_work(*args, **kwargs):
        raise AssertionError("the client recomputed the batch locally")

    from offload.host.cpu import CpuBackend

    monkeypatch.setattr(CpuBackend, "run", no_local_work)
    monkeypatch.setattr(golden, "delta_varint_decode_seq", no_local_work)
    be = SmartNicBackend(server.address, chunk_bytes=1024)
    rt = Runtime(backends=[be], fallback=False)
    with pytest.raises(ValueError) as got:
        rt.delta_varint_decode(offsets, data)
    assert str(got.value) == str(expected.value)
    assert be.stats()["chunks"] > 3  # the record was in a later chunk: earlier ones answered
    rt.close()


def test_bad_input_on_the_service_is_the_callers_value_error():
    """A malformed varint sent to the service raises the documented ValueError, with the index
    into the caller's batch, even with fallback=False (never a device error)."""
    from offload.host.smartnic.testing import ServerProcess

    with ServerProcess(backend="cpu") as srv:
        if srv.port is None:
            srv.start()
        rt = offload.Runtime(backends=["smartnic"], fallback=False, smartnic=srv.address)
        with pytest.raises(
            ValueError,
            match=r"^malformed varint in sequence 1 at byte offset 1: "
            r"cut off at the end of the sequence$",
        ):
            rt.delta_varint_decode(np.array([0, 1, 3]), np.array([2, 0x80, 0x80], np.uint8))
        rt.close()


def _read_until_closed(sock: socket.socket, limit_s: float) -> bytes:
    sock.settimeout(limit_s)
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk
    except TimeoutError:
        raise AssertionError(f"connection still open after {limit_s} s") from None


def test_stalled_or_unauthenticated_connections_are_closed():
    """A sender stalled mid-frame, or one that never authenticates, loses its connection after
    --frame-timeout; an authenticated idle connection between frames is kept."""
    from offload.host.smartnic.testing import ServerProcess

    with ServerProcess("--frame-timeout", "0.5", backend="cpu") as srv:
        if srv.port is None:
            srv.start()
        host, port = srv.address.rsplit(":", 1)
        stalled = socket.create_connection((host, int(port)))
        stalled.sendall(b"\x4f\x46")  # two bytes of a frame header, then nothing
        silent = socket.create_connection((host, int(port)))
        got = _read_until_closed(stalled, 10)
        assert b"incomplete frame stalled for more than 0.5 s" in got
        got = _read_until_closed(silent, 10)
        assert b"no authentication within 0.5 s" in got
        be = SmartNicBackend(srv.address)
        keys = as_records(np.arange(100, dtype=np.uint64))
        from offload.ops import make_call

        first = be.run(make_call("xxh64"), keys)
        time.sleep(1.5)
        assert np.array_equal(be.run(make_call("xxh64"), keys), first)
        assert be.stats()["reconnects"] == 0
        be.close()
        stalled.close()
        silent.close()


# ---------------------------------------------------------------------------------------------
# the client fits its chunks to the service's frame limit (announced in HELLO)
# ---------------------------------------------------------------------------------------------


def test_chunks_fit_the_services_frame_limit(cpu):
    """Against a service with a 64 KiB max_frame, batches much larger than one frame (and records
    of very different sizes) run entirely on the service: no fallback, an exact result. One record
    larger than a frame is the documented too_large failure, naming the record."""
    long_and_short = [b"x" * 30_000 if i % 50 == 7 else bytes([i % 256]) * (i % 9) for i in range(2000)]
    seqs = [np.arange(int(k), dtype=np.int64) * 977 for k in RNG.integers(0, 3000, 200)]
    keys = RNG.integers(0, 2**63, 200_000, dtype=np.uint64)
    with ServerProcess("--max-frame-mb", "0.0625", backend="cpu") as srv:
        be = SmartNicBackend(srv.address)
        rt = Runtime(backends=[be, "cpu"])
        _same(rt.xxh64(keys, seed=5), cpu.xxh64(keys, seed=5))
        _same(rt.xxh32(long_and_short, seed=1), cpu.xxh32(long_and_short, seed=1))
        _same(rt.delta_varint_encode(seqs), cpu.delta_varint_encode(seqs))
        st = rt.stats()
        assert st["fallbacks"] == [] and set(st["by_backend"]) == {"smartnic"}
        assert be.stats()["chunks"] > 30  # 1.6 MB of keys in frames of at most 64 KiB
        strict = Runtime(backends=[SmartNicBackend(srv.address)], fallback=False)
        with pytest.raises(
            BackendError,
            match=r"record 2 needs a frame of \d+ bytes, above the "
            r"service's limit of 65536",
        ) as ei:
            strict.xxh64([b"a", b"b", b"y" * 70_000, b"c"])
        assert ei.value.cause == "too_large" and ei.value.completed == 2
        rt.close()
        strict.close()


# ---------------------------------------------------------------------------------------------
# memory before authentication, the connection limit, closed connections' buffers
# ---------------------------------------------------------------------------------------------


def _raw_header(mtype: MsgType, meta_len: int, payload_len: int, bid: int = 1) -> bytes:
    """A well-formed header announcing a body that is not (all) sent."""
    head = HEADER.pack(MAGIC, VERSION, int(mtype), 0, bid, meta_len, 0, payload_len, 0, 0)[:36]
    return head + struct.pack("<I", crc32c(head))


def _hello(port: int) -> tuple[socket.socket, FrameReader]:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    r = FrameReader()
    assert _read_frames(s, r, 1)[0].type == MsgType.HELLO
    return s, r


def _health(address: str) -> dict:
    """The service's health over a fresh connection (closed afterwards, none kept in a pool)."""
    be = SmartNicBackend(address, pool_size=0)
    try:
        return be.health()
    finally:
        be.close()


def test_unauthenticated_peers_are_cut_off_at_the_header():
    """Before AUTH_OK only the small AUTH frame is read: a header announcing a max_frame-sized
    body (or an oversized AUTH) is refused from its 40 bytes, with a clear error, and the service
    holds a few KB per unauthenticated connection. An AUTH sent together with the first REQUEST
    is still served."""
    with ServerProcess(backend="cpu") as srv:  # max_frame 256 MiB
        max_frame = _health(srv.address)["max_frame"]
        too_large = (
            "AUTH frame with {} bytes of meta and {} of payload: an AUTH frame has at "
            "most 256 bytes of meta and no payload"
        )
        for mtype, meta_len, plen, error in (
            (MsgType.REQUEST, 40, max_frame - 8, (ErrorCode.OUT_OF_ORDER, "expected AUTH, got REQUEST")),
            (MsgType.AUTH, 0, max_frame - 8, (ErrorCode.TOO_LARGE, too_large.format(0, max_frame - 8))),
            (MsgType.AUTH, 60_000, 0, (ErrorCode.TOO_LARGE, too_large.format(60_000, 0))),
        ):
            s, r = _hello(srv.port)
            with s:
                s.sendall(_raw_header(mtype, meta_len, plen) + bytes(min(meta_len + plen, 2048)))
                err = _read_frames(s, r, 1)[0]
                assert err.type == MsgType.ERROR and parse_error(err.meta) == error
                assert _closed(s)
        idle, _ = _hello(srv.port)
        with idle:
            h = _health(srv.address)
            assert h["preauth_connections"] == 1 and 0 < h["preauth_buffered_bytes"] <= 4096
        # the handshake and a first request in one send: answered in order
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        with s:
            r = FrameReader()
            nonce = bytes.fromhex(parse_json(_read_frames(s, r, 1)[0].meta)["nonce"])
            meta, bufs = _xxh64_request(np.arange(4, dtype=np.uint64))
            _send(
                s,
                encode_frame(MsgType.AUTH, 0, auth_digest(b"unused", nonce))
                + encode_frame(MsgType.REQUEST, 1, meta, bufs),
            )
            ok, res = _read_frames(s, r, 2)
            assert ok.type == MsgType.AUTH_OK and res.type == MsgType.RESULT
        assert len(srv.events("protocol_error")) == 3 and srv.running()


def test_connection_limit_refuses_with_a_reason():
    with ServerProcess("--max-connections", "2", backend="cpu") as srv:
        a, _ = _hello(srv.port)
        pooled = SmartNicBackend(srv.address)
        assert pooled.availability().ok  # its connection stays open in its pool: 2 of 2
        why = "connection limit reached: this service serves at most 2 connections at a time; try again later"
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        with s:
            err = _read_frames(s, FrameReader(), 1)[0]
            assert err.type == MsgType.ERROR
            assert parse_error(err.meta) == (ErrorCode.TOO_MANY_CONNECTIONS, why)
            assert _closed(s)
        av = SmartNicBackend(srv.address).availability()
        assert not av.ok and av.reason.endswith(f"service error TOO_MANY_CONNECTIONS: {why}")
        strict = Runtime(backends=[SmartNicBackend(srv.address, availability_ttl=60)], fallback=False)
        a.close()
        t_end = time.monotonic() + 5
        while strict.availability("smartnic").reason.endswith(why) and time.monotonic() < t_end:
            time.sleep(0.05)  # the service sees the close
        keys = np.arange(10, dtype=np.uint64)
        assert strict.xxh64(keys).tolist() == offload.xxh64(keys, backend="cpu").tolist()
        h = pooled.health()
        assert h["max_connections"] == 2 and h["refused_connections"] == 2
        assert [e["reason"] for e in srv.events("connection_refused")] == [why, why]
        pooled.close()
        strict.close()


def test_serve_refuses_a_connection_limit_below_one(capsys):
    assert serve_main(["--max-connections", "0", "--port", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "offload serve: --max-connections must be >= 1, got 0"


def test_a_closed_connections_buffers_are_released_at_once():
    """A connection closed mid-frame gives back its buffers when it closes, not when the
    watchdog's next tick drops its last reference (the default --frame-timeout: a tick a second)."""
    with ServerProcess(backend="cpu") as srv:
        s, _ = _handshake(srv.port)
        big = 8 << 20
        s.sendall(_raw_header(MsgType.REQUEST, 0, big) + bytes(1 << 20))
        t_end = time.monotonic() + 5
        while _health(srv.address)["buffered_bytes"] < big and time.monotonic() < t_end:
            time.sleep(0.05)
        assert _health(srv.address)["buffered_bytes"] >= big  # the frame's buffer, sized from the header
        time.sleep(1.2)  # a watchdog tick while this is the only connection
        s.close()
        t0 = time.monotonic()
        h = _health(srv.address)
        while h["connections"] > 1 and time.monotonic() - t0 < 0.5:
            h = _health(srv.address)
        own = h["buffered_bytes"] - h["preauth_buffered_bytes"]  # the asking connection's reader
        assert h["connections"] == 1 and own < (512 << 10), h


def test_client_refuses_an_oversized_answer_from_its_header():
    """The client's counterpart of the service's header checks: a RESULT announcing more than the
    chunk's results can take (here 1 GiB for 10 keys) is refused from its 40 bytes, before any
    buffer is sized from it, and reported as a broken link."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)

    def fake_service() -> None:
        c, _ = lsock.accept()
        with c:
            r = FrameReader()
            _send(c, encode_frame(MsgType.HELLO, 0, b'{"nonce":"00","max_frame":1048576}'))
            _read_frames(c, r, 1)  # AUTH
            _send(c, encode_frame(MsgType.AUTH_OK, 0))
            _read_frames(c, r, 1)  # REQUEST
            c.sendall(_raw_header(MsgType.RESULT, 0, 1 << 30, bid=1))
            _closed(c)

    t = threading.Thread(target=fake_service, daemon=True)
    t.start()
    be = SmartNicBackend(f"127.0.0.1:{lsock.getsockname()[1]}", retries=0, timeout=5.0)
    t0 = time.monotonic()
    with pytest.raises(
        BackendError,
        match=r"link lost: ProtocolError: TOO_LARGE: payload of "
        r"1073741824 bytes exceeds 80",
    ) as ei:
        be.run(make_call("xxh64"), as_records(np.arange(10, dtype=np.uint64)))
    assert ei.value.cause == "connection_lost" and time.monotonic() - t0 < 4
    be.close()
    lsock.close()
    t.join(5)


def test_a_result_that_does_not_fit_its_chunk_keeps_the_chunks_before_it():
    """A service whose second answer's meta does not describe its chunk (received in place all
    the same): a framing failure whose partial result is exactly the first chunk's."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    keys = np.arange(20, dtype=np.uint64)
    hashes = offload.xxh64(keys, backend="cpu")

    def fake_service() -> None:
        c, _ = lsock.accept()
        with c:
            r = FrameReader()
            _send(c, encode_frame(MsgType.HELLO, 0, b'{"nonce":"00","max_frame":1048576}'))
            _read_frames(c, r, 1)  # AUTH
            _send(c, encode_frame(MsgType.AUTH_OK, 0))
            first, second = _read_frames(c, r, 2)
            n1 = codec.parse_request(first.meta, first.payload)[1].n
            _send(
                c,
                encode_frame(
                    MsgType.RESULT,
                    first.batch_id,
                    b'{"backend":"cpu","bufs":[["<u8",%d]]}' % n1,
                    [hashes[:n1]],
                ),
            )
            n2 = codec.parse_request(second.meta, second.payload)[1].n
            _send(
                c,
                encode_frame(
                    MsgType.RESULT,
                    second.batch_id,
                    b'{"backend":"cpu","bufs":[["<i8",%d]]}' % n2,
                    [hashes[n1 : n1 + n2]],
                ),
            )
            _closed(c)

    t = threading.Thread(target=fake_service, daemon=True)
    t.start()
    be = SmartNicBackend(
        f"127.0.0.1:{lsock.getsockname()[1]}", chunk_bytes=160, window=2, retries=0, timeout=5.0
    )
    with pytest.raises(
        BackendError,
        match=r"service result: buffers \[\['<i8', 10\]\] where "
        r"xxh64 returns \[\['<u8', 10\]\] after 10 of 20",
    ) as ei:
        be.run(make_call("xxh64"), as_records(keys))
    assert ei.value.cause == "framing" and ei.value.completed == 10
    _same(ei.value.partial, hashes[:10])
    be.close()
    lsock.close()
    t.join(5)
