"""``offload serve``: the SmartNIC service (asyncio TCP, protocol of ``docs/smartnic_protocol.md``).

One process, one event loop. Each connection is an ``asyncio.BufferedProtocol`` whose frames are
received straight into their final numpy buffers; requests are queued per connection and executed
in order on the service's own :class:`offload.runtime.Runtime` (a local chain: never
``smartnic``), in a thread pool for large batches and inline for small ones. Memory is bounded:
a frame is at most ``--max-frame-mb``; a connection stops being read (TCP backpressure) while its
queued request bytes exceed ``--max-inflight-mb`` or while its peer is not reading results.

Logs are JSON lines on stderr. SIGTERM/SIGINT: stop accepting, stop reading, finish and answer
every request already received, close, exit 0.

The event loop is uvloop's when uvloop is installed (optional), asyncio's otherwise;
``OFFLOAD_SERVE_LOOP=asyncio`` forces asyncio's. A request that finds its connection idle and is at
most 256 KiB is answered directly from the read callback (no hop through the worker task).

Run: ``python -m offload.host.smartnic.server --port 0`` (or ``offload serve``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import json
import os
import signal
import socket
import sys
import threading
import time
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from offload import wire

from . import codec
from .protocol import (DEFAULT_MAX_META, ErrorCode, Flags, Frame, FrameReader, MsgType,
                       ProtocolError, auth_digest, encode_frame, pack_error, pack_json,
                       parse_request, VERSION)

__all__ = ["ServeConfig", "Service", "main", "is_loopback", "read_token"]

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_INLINE_BYTES = 256 << 10   # requests up to this size run on the event loop (latency)
_COALESCE_BYTES = 256 << 10  # responses up to this size are written with one send


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def read_token(path: str) -> bytes:
    with open(path, "rb") as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


class Logger:
    """JSON lines on a stream (stderr by default)."""

    def __init__(self, level: str = "info", stream: Any = None) -> None:
        self.level = _LEVELS.get(level, 20)
        self.stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()

    def __call__(self, level: str, event: str, **fields: Any) -> None:
        if _LEVELS[level] < self.level:
            return
        rec = {"ts": round(time.time(), 6), "level": level, "event": event, "pid": os.getpid()}
        rec.update(fields)
        line = json.dumps(rec, default=str) + "\n"
        with self._lock:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (OSError, ValueError):
                pass


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 7878
    backend: str = "auto"
    token: bytes | None = None
    max_frame: int = 256 << 20
    max_inflight: int = 512 << 20
    delay_ms: float = 0.0
    drain_timeout: float = 30.0
    workers: int = 0
    log_level: str = "info"
    port_file: str | None = None
    warmup: bool = True
    # A connection that holds part of a frame, or has not authenticated, for this long is closed
    # (a slow or stalled sender must not hold a connection and its buffer forever).
    frame_timeout: float = 30.0
    # Connections served at a time; one more is refused (ERROR TOO_MANY_CONNECTIONS, closed).
    max_connections: int = 256


_CHAINS = {"auto": ["fpga", "cpu"], "cpu": ["cpu"], "sim": ["sim", "cpu"], "fpga": ["fpga", "cpu"]}


class Service:
    """The service: listening socket, connections, runtimes (one per worker thread)."""

    def __init__(self, cfg: ServeConfig, log: Logger | None = None) -> None:
        if cfg.backend not in _CHAINS:
            raise ValueError(f"unknown backend {cfg.backend!r}: expected auto, cpu, sim or fpga")
        self.cfg = cfg
        self.log = log or Logger(cfg.log_level)
        self.conns: set[_Conn] = set()
        # every connection object still in memory, open or closed (health's buffered_bytes)
        self.alive: weakref.WeakSet[_Conn] = weakref.WeakSet()
        self.refused = 0
        self.draining = False
        self.started = time.monotonic()
        self.batches = 0
        self.records = 0
        self.errors = 0
        self._tls = threading.local()
        self._runtimes: list[Any] = []
        self._base: Any = None
        self._instances: list[Any] = []
        self._rt_lock = threading.Lock()
        workers = cfg.workers or min(4, os.cpu_count() or 1)
        if cfg.backend in ("fpga", "sim"):
            workers = 1  # one device
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="offload-serve")
        self._stop: asyncio.Event | None = None
        self.port: int | None = None

    # -- runtime ------------------------------------------------------------------------------

    def runtime(self) -> Any:
        """This thread's Runtime. Backend instances are shared by all threads (one device, one
        CPU thread pool); each thread has its own Runtime so a call's provenance is its own."""
        rt = getattr(self._tls, "rt", None)
        if rt is None:
            from offload.backend import BackendUnavailable
            from offload.runtime import Runtime
            with self._rt_lock:
                if self._base is None:
                    self._base = Runtime(backends=list(_CHAINS[self.cfg.backend]), verify="off",
                                         fallback=True)
                    self._runtimes.append(self._base)
                    for name in self._base.order:
                        if not self._base.availability(name).ok:
                            continue
                        try:
                            self._instances.append(self._base.backend(name))
                        except BackendUnavailable:
                            pass
                rt = Runtime(backends=list(self._instances) or ["cpu"], verify="off",
                             fallback=True)
            self._tls.rt = rt
        return rt

    def check_backend(self) -> tuple[list[str], str | None]:
        """The chain's available backends; an error string when the named one is unavailable."""
        self.runtime()
        rt = self._base
        avail = [b.name for b in self._instances]
        if self.cfg.backend in ("cpu", "sim", "fpga"):
            av = rt.availability(self.cfg.backend)
            if not av.ok:
                return avail, f"backend {self.cfg.backend!r} is unavailable: {av.reason}"
        return avail, None

    def warmup(self) -> float:
        """Run every operator once through the codec and the runtime so that the first client
        batch does not pay for loading compiled kernels. Returns the seconds spent."""
        from offload.batch import as_encoded, as_numbers, as_records, as_sequences
        from offload.ops import make_call
        t0 = time.perf_counter()
        rt = self.runtime()
        keys = np.arange(1 << 17, dtype=np.uint64)
        x = np.arange(4, dtype=np.float64)
        samples = [
            (make_call("xxh64"), as_records(keys)),
            (make_call("xxh64"), as_records(keys[:4].astype(np.uint32))),
            (make_call("xxh32"), as_records(keys[:4])),
            (make_call("xxh32"), as_records([b"ab", b""])),
            (make_call("xxh64"), as_records([b"ab", b""])),
            (make_call("hash_bucket", num_buckets=7), as_records(keys[:4])),
            (make_call("hash_bucket", num_buckets=7, method="fastrange"), as_records([b"a"])),
            (make_call("fid", slot=1, version=1), as_records(keys[:4])),
            (make_call("fid", slot=1, version=2), as_records([b"a"])),
            (make_call("bucketize", boundaries=x[:2], dtype=x.dtype), as_numbers(x)),
            (make_call("bucketize", boundaries=x[:2].astype(np.float32), dtype=np.float32,
                       right=False), as_numbers(x.astype(np.float32))),
            (make_call("delta_varint_encode"), as_sequences([np.arange(3, dtype=np.int64)])),
            (make_call("delta_varint_decode"), as_encoded(np.array([0, 2], np.int64),
                                                          np.array([2, 4], np.uint8))),
        ]
        for call, batch in samples:
            try:
                job = codec.encode_job(call, batch)
                call2, batch2 = codec.decode_job(job.regs, job.table, job.words)
                res = rt.run(call2, batch2)
                codec.decode_result(job, np.concatenate(codec.encode_result(call2, res)))
            except Exception as e:  # noqa: BLE001 - warm-up is best effort
                self.log("warning", "warmup_failed", op=call.op, error=f"{type(e).__name__}: {e}")
        rt.reset_stats()
        return time.perf_counter() - t0

    def execute(self, frame: Frame) -> tuple[list[Any], int, str]:
        """Run one request: ``(response buffers, records, backends)``; never raises."""
        t0 = time.perf_counter()
        bid = frame.batch_id
        try:
            regs, table, words, _deadline = parse_request(frame)
            call, batch = codec.decode_job(regs, table, words)
        except (ProtocolError, wire.WireError, ValueError, TypeError, KeyError) as e:
            return self._error(bid, ErrorCode.BAD_REQUEST, f"{type(e).__name__}: {e}"), 0, ""
        except MemoryError:
            return self._error(bid, ErrorCode.BAD_REQUEST, "request too large to decode"), 0, ""
        rt = self.runtime()
        try:
            result = rt.run(call, batch)
            out = codec.encode_result(call, result)
        except (ValueError, TypeError) as e:
            return self._error(bid, ErrorCode.VALUE_ERROR, f"{type(e).__name__}: {e}"), 0, ""
        except Exception as e:  # noqa: BLE001 - the service must answer
            self.log("error", "batch_failed", batch_id=bid, op=call.op, error=f"{type(e).__name__}: {e}")
            return self._error(bid, ErrorCode.BACKEND_FAILED, f"{type(e).__name__}: {e}"), 0, ""
        segs = rt._stats.last_call.get("segments", [])
        names = segs[0][0] if len(segs) == 1 else ",".join(sorted({s[0] for s in segs}))
        # names are backend identifiers ([a-z,]); formatted by hand, this is on the latency path
        meta = b'{"backend":"%s","us":%d}' % (names.encode(), (time.perf_counter() - t0) * 1e6)
        return encode_frame(MsgType.RESULT, bid, meta, out), batch.n, names

    def _error(self, bid: int, code: ErrorCode, message: str) -> list[Any]:
        self.errors += 1
        return encode_frame(MsgType.ERROR, bid, pack_error(code, message))

    def health(self) -> dict[str, Any]:
        alive = list(self.alive)
        preauth = [c for c in alive if not c.authed]
        return {"status": "draining" if self.draining else "ok", "proto": VERSION,
                "backend": self.cfg.backend,
                "chain": [b.name for b in self._instances],
                "connections": len(self.conns), "batches": self.batches, "records": self.records,
                "errors": self.errors,
                "inflight_bytes": sum(c.inflight for c in self.conns),
                "uptime_s": round(time.monotonic() - self.started, 3), "pid": os.getpid(),
                "auth": self.cfg.token is not None, "max_frame": self.cfg.max_frame,
                "max_connections": self.cfg.max_connections, "refused_connections": self.refused,
                # frame buffers held by every connection object in memory, open or closed
                "buffered_bytes": sum(c.reader.held_bytes for c in alive),
                "preauth_connections": sum(1 for c in preauth if not c.closed),
                "preauth_buffered_bytes": sum(c.reader.held_bytes for c in preauth)}

    # -- lifetime -----------------------------------------------------------------------------

    def stop(self) -> None:
        if self._stop is not None and not self._stop.is_set():
            self.log("info", "signal", action="draining")
            self._stop.set()

    async def _watchdog(self) -> None:
        """Close connections stalled mid-frame or still unauthenticated after ``frame_timeout``."""
        period = max(0.05, min(1.0, self.cfg.frame_timeout / 4))
        while True:
            await asyncio.sleep(period)
            # one call per tick: no local of this coroutine keeps a connection alive between ticks
            self._sweep(time.monotonic())

    def _sweep(self, now: float) -> None:
        limit = self.cfg.frame_timeout
        for c in list(self.conns):
            if c.closed:
                continue
            # A partial frame is timed from its first byte (stamped on receipt, so the
            # diagnosis does not depend on when this loop happens to run); while one is
            # pending, its stall timer, not the authentication timer, closes the
            # connection: both end it within 2 * limit, and the message names the cause.
            if c.reader.pending_bytes and c.partial_since is not None:
                if now - c.partial_since > limit:
                    c._fatal(ErrorCode.BAD_FRAME, f"incomplete frame stalled for more than "
                                                  f"{limit:g} s")
            elif not c.authed and now - c.opened > limit:
                c._fatal(ErrorCode.AUTH_FAILED, f"no authentication within {limit:g} s")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        avail, err = await loop.run_in_executor(self.pool, self.check_backend)
        if err:
            self.log("error", "backend_unavailable", error=err)
            return 2
        if self.cfg.warmup:
            secs = await loop.run_in_executor(self.pool, self.warmup)
            self.log("info", "warmed_up", seconds=round(secs, 3))
        server = await loop.create_server(lambda: _Conn(self), self.cfg.host, self.cfg.port,
                                          reuse_address=True, backlog=256)
        # everything loaded so far (modules, compiled kernels, warm-up) lives as long as the
        # process: keep it out of the collector's generations so collections stay cheap
        gc.collect()
        gc.freeze()
        self.port = server.sockets[0].getsockname()[1]
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        if self.cfg.port_file:
            tmp = self.cfg.port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(self.port))
            os.replace(tmp, self.cfg.port_file)
        self.log("info", "listening", host=self.cfg.host, port=self.port, backend=self.cfg.backend,
                 loop=f"{type(loop).__module__}.{type(loop).__name__}",
                 chain=avail, auth=self.cfg.token is not None, max_frame=self.cfg.max_frame,
                 max_connections=self.cfg.max_connections,
                 max_inflight=self.cfg.max_inflight, delay_ms=self.cfg.delay_ms)
        watchdog = loop.create_task(self._watchdog())
        await self._stop.wait()
        watchdog.cancel()
        # graceful shutdown: stop accepting, stop reading, finish what was received
        server.close()
        self.draining = True
        conns = list(self.conns)
        self.log("info", "draining", connections=len(conns),
                 queued=sum(len(c.queue) + c.busy for c in conns))
        for c in conns:
            c.begin_drain()
        waits = [c.done.wait() for c in conns]
        if waits:
            _, pending = await asyncio.wait([asyncio.ensure_future(w) for w in waits],
                                            timeout=self.cfg.drain_timeout)
            for c in self.conns:
                if not c.done.is_set():
                    c.abort("drain timeout")
        await server.wait_closed()
        self.pool.shutdown(wait=True)
        for rt in self._runtimes:
            try:
                rt.close()
            except Exception:  # noqa: BLE001
                pass
        self.log("info", "stopped", batches=self.batches, records=self.records)
        return 0


class _Conn(asyncio.BufferedProtocol):
    """One client connection: handshake, frame decoding, an ordered request queue."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        # until AUTH_OK only the small AUTH frame is read (a few KB held per connection)
        self.reader = FrameReader(handshake=True)
        self.transport: asyncio.Transport | None = None
        self.authed = False
        self.nonce = os.urandom(32)
        self.queue: deque[tuple[Frame, float]] = deque()
        self.inflight = 0
        self.busy = 0
        self.last_bid = 0
        self.closed = False
        self.eof = False
        self.read_paused = False
        self.write_paused = False
        self.peer = "?"
        self.wake = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.done = asyncio.Event()
        self.worker: asyncio.Task[None] | None = None
        self.opened = time.monotonic()
        self.partial_since: float | None = None
        self._inline_ok = not svc.cfg.delay_ms
        self._debug = svc.log.level <= _LEVELS["debug"]

    # -- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (asyncio's, or uvloop's: not an ``asyncio.Transport`` subclass)
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        transport.set_write_buffer_limits(high=8 << 20, low=1 << 20)
        self.svc.alive.add(self)
        limit = self.svc.cfg.max_connections
        if len(self.svc.conns) >= limit:
            self._refuse(f"connection limit reached: this service serves at most {limit} "
                         "connections at a time; try again later")
            return
        self.svc.conns.add(self)
        self.svc.log("info", "connection_open", peer=self.peer)
        flags = Flags.AUTH_REQUIRED if self.svc.cfg.token is not None else 0
        self._send(encode_frame(MsgType.HELLO, 0, pack_json(
            {"nonce": self.nonce.hex(), "proto": VERSION, "server": "offload",
             "max_frame": self.svc.cfg.max_frame, "auth": self.svc.cfg.token is not None,
             "chain": [b.name for b in self.svc._instances]}),
            flags=flags))
        self.worker = asyncio.get_running_loop().create_task(self._work())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:
            return
        try:
            frames = self.reader.buffer_updated(nbytes)
        except ProtocolError as e:
            self._fatal(e.code, e.message)
            return
        # The stall watchdog times a partial frame from the byte that started it.
        if not self.reader.pending_bytes:
            self.partial_since = None
        elif frames or self.partial_since is None:
            self.partial_since = time.monotonic()
        while frames:
            for f in frames:
                if self.closed:
                    return
                self._on_frame(f)
            frames = []
            if self.authed and self.reader.handshake:
                # the AUTH frame was accepted: full limits; frames sent right after it follow
                try:
                    frames = self.reader.admit(max_meta=DEFAULT_MAX_META,
                                               max_payload=self.svc.cfg.max_frame)
                except ProtocolError as e:
                    self._fatal(e.code, e.message)
                    return
                if not self.reader.pending_bytes:
                    self.partial_since = None

    def eof_received(self) -> bool:
        # the client is done sending; answer what was received, then close
        self.svc.log("debug", "eof", peer=self.peer)
        self.eof = True
        self.wake.set()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reader.release()  # at once, whoever still holds this object
        refused = self not in self.svc.conns
        self.svc.conns.discard(self)
        self.wake.set()
        self.writable.set()
        if not refused:
            self.svc.log("info", "connection_closed", peer=self.peer,
                         error=None if exc is None else f"{type(exc).__name__}: {exc}",
                         dropped=len(self.queue))
        self.queue.clear()
        self.inflight = 0
        self.done.set()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.writable.clear()
        self._flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.writable.set()
        self._flow()

    # -- frames -------------------------------------------------------------------------------

    def _on_frame(self, f: Frame) -> None:
        if not self.authed:
            if f.type != MsgType.AUTH:
                self._fatal(ErrorCode.OUT_OF_ORDER, f"expected AUTH, got {f.type.name}")
                return
            token = self.svc.cfg.token
            if token is not None:
                import hmac
                if not hmac.compare_digest(auth_digest(token, self.nonce), f.meta):
                    self._fatal(ErrorCode.AUTH_FAILED, "missing or wrong credential"
                                if f.meta else "this service requires a token")
                    return
            self.authed = True
            self._send(encode_frame(MsgType.AUTH_OK, f.batch_id))
            return
        if f.type == MsgType.HEALTH:
            self._send(encode_frame(MsgType.HEALTH_OK, f.batch_id, pack_json(self.svc.health()),
                                    flags=Flags.DRAINING if self.svc.draining else 0))
            return
        if f.type == MsgType.REQUEST:
            if f.batch_id <= self.last_bid:
                self._fatal(ErrorCode.OUT_OF_ORDER, f"batch id {f.batch_id} after {self.last_bid}")
                return
            self.last_bid = f.batch_id
            if (not self.queue and not self.busy and not self.write_paused and self._inline_ok
                    and f.payload.nbytes <= _INLINE_BYTES and not self.svc.draining):
                # the latency path: nothing is queued or being answered on this connection, so
                # answer right here (no hop through the worker task and another loop iteration)
                self._run_inline(f)
                return
            self.queue.append((f, time.monotonic()))
            self.inflight += f.payload.nbytes
            self.wake.set()
            self._flow()
            return
        self._fatal(ErrorCode.OUT_OF_ORDER, f"a client does not send {f.type.name}")

    def _run_inline(self, f: Frame) -> None:
        svc = self.svc
        t_recv = time.monotonic() if self._debug else 0.0
        try:
            bufs, nrec, names = svc.execute(f)
        except Exception as e:  # noqa: BLE001 - as in the worker: log, close the connection
            svc.log("error", "worker_failed", peer=self.peer, error=f"{type(e).__name__}: {e}")
            self.closed = True
            self.queue.clear()
            self.wake.set()
            if self.transport is not None:
                self.transport.close()
            return
        svc.batches += 1
        svc.records += nrec
        if self._debug:
            svc.log("debug", "batch", peer=self.peer, batch_id=f.batch_id, records=nrec,
                    backend=names, ms=round((time.monotonic() - t_recv) * 1e3, 3))
        self._send(bufs)

    def _send(self, bufs: list[Any]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if len(bufs) > 1:
            size = 0
            for b in bufs:
                size += b.nbytes if type(b) is memoryview else memoryview(b).nbytes
            if size <= _COALESCE_BYTES:
                # one send (one wakeup of the peer) for a small frame
                transport.write(b"".join(bufs))
                return
        for b in bufs:
            transport.write(b)

    def _flow(self) -> None:
        if self.closed or self.transport is None:
            return
        pause = (self.inflight > self.svc.cfg.max_inflight or self.write_paused
                 or self.svc.draining or self.reader.failed is not None)
        if pause and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
        elif not pause and self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def _fatal(self, code: ErrorCode, message: str) -> None:
        level = "warning"
        self.svc.log(level, "auth_refused" if code == ErrorCode.AUTH_FAILED else "protocol_error",
                     peer=self.peer, code=code.name, message=message)
        self.svc.errors += 1
        self._send(encode_frame(MsgType.ERROR, 0, pack_error(code, message)))
        self.closed = True
        self.reader.release()  # nothing more is read; the ERROR may wait for a slow peer
        self.queue.clear()
        self.wake.set()
        if self.transport is not None:
            self.transport.close()

    def _refuse(self, message: str) -> None:
        """Instead of HELLO: say why this connection is not served, then close it."""
        self.svc.refused += 1
        self.svc.log("warning", "connection_refused", peer=self.peer, reason=message)
        self._send(encode_frame(MsgType.ERROR, 0, pack_error(ErrorCode.TOO_MANY_CONNECTIONS,
                                                             message)))
        self.closed = True
        self.reader.release()
        self.done.set()
        if self.transport is not None:
            self.transport.close()

    def abort(self, why: str) -> None:
        self.svc.log("warning", "connection_abort", peer=self.peer, reason=why)
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def begin_drain(self) -> None:
        self._flow()
        self.wake.set()

    # -- the worker ---------------------------------------------------------------------------

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        svc = self.svc
        delay = svc.cfg.delay_ms / 1000.0
        try:
            while not self.closed:
                if not self.queue:
                    if svc.draining or (self.transport is not None and self.transport.is_closing()):
                        break
                    if self.eof:
                        break
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                f, t_recv = self.queue.popleft()
                # busy until the answer is written: the inline path in ``_on_frame`` must not
                # overtake a result that is computed but not yet sent
                self.busy = 1
                try:
                    if delay:
                        await asyncio.sleep(delay)
                    if f.payload.nbytes <= _INLINE_BYTES and not delay:
                        bufs, nrec, names = svc.execute(f)
                    else:
                        bufs, nrec, names = await loop.run_in_executor(svc.pool, svc.execute, f)
                    if self.closed:
                        break
                    svc.batches += 1
                    svc.records += nrec
                    if self._debug:
                        svc.log("debug", "batch", peer=self.peer, batch_id=f.batch_id,
                                records=nrec, backend=names,
                                ms=round((time.monotonic() - t_recv) * 1e3, 3))
                    if not self.writable.is_set():
                        await self.writable.wait()
                    self._send(bufs)
                finally:
                    self.busy = 0
                self.inflight -= f.payload.nbytes
                self._flow()
        except Exception as e:  # noqa: BLE001
            svc.log("error", "worker_failed", peer=self.peer, error=f"{type(e).__name__}: {e}")
        finally:
            if not self.closed and self.transport is not None:
                self.closed = True
                self.transport.close()  # flushes what was written, then closes
            if self.transport is None:
                self.done.set()
            # otherwise connection_lost sets ``done`` once the written results are flushed


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def _env(name: str, default: Any) -> Any:
    v = os.environ.get(name)
    return default if v in (None, "") else v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="offload serve",
        description="Run the offload SmartNIC service: execute batches sent by SmartNicBackend "
                    "clients on a local backend chain (docs/smartnic_protocol.md).")
    p.add_argument("--host", default=_env("OFFLOAD_SERVE_HOST", "127.0.0.1"),
                   help="address to bind (default 127.0.0.1; env OFFLOAD_SERVE_HOST). A "
                        "non-loopback address requires --token-file.")
    p.add_argument("--port", type=int, default=int(_env("OFFLOAD_SERVE_PORT", 7878)),
                   help="TCP port (default 7878, 0 = ephemeral; env OFFLOAD_SERVE_PORT)")
    p.add_argument("--backend", choices=sorted(_CHAINS), default=_env("OFFLOAD_SERVE_BACKEND", "auto"),
                   help="local backend: auto (fpga if available, else cpu), cpu, sim or fpga; "
                        "cpu is always the fallback (env OFFLOAD_SERVE_BACKEND)")
    p.add_argument("--token-file", default=_env("OFFLOAD_SERVE_TOKEN_FILE", None),
                   help="file holding the shared secret; clients must answer the HMAC-SHA256 "
                        "challenge with it (env OFFLOAD_SERVE_TOKEN_FILE)")
    p.add_argument("--max-frame-mb", type=float, default=float(_env("OFFLOAD_SERVE_MAX_FRAME_MB", 256)),
                   help="largest accepted frame in MiB (default 256)")
    p.add_argument("--max-inflight-mb", type=float,
                   default=float(_env("OFFLOAD_SERVE_MAX_INFLIGHT_MB", 512)),
                   help="per connection: stop reading while queued request bytes exceed this")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds to finish in-flight batches after SIGTERM (default 30)")
    p.add_argument("--frame-timeout", type=float,
                   default=float(_env("OFFLOAD_SERVE_FRAME_TIMEOUT", 30.0)),
                   help="close a connection stalled mid-frame or unauthenticated this long (s)")
    p.add_argument("--max-connections", type=int,
                   default=int(_env("OFFLOAD_SERVE_MAX_CONNECTIONS", 256)),
                   help="connections served at a time (default 256; env "
                        "OFFLOAD_SERVE_MAX_CONNECTIONS); one more gets an ERROR saying so and "
                        "is closed")
    p.add_argument("--workers", type=int, default=0, help="executor threads (default min(4, cpus))")
    p.add_argument("--log-level", choices=sorted(_LEVELS, key=_LEVELS.__getitem__),
                   default=_env("OFFLOAD_SERVE_LOG_LEVEL", "info"))
    p.add_argument("--no-warmup", action="store_true",
                   help="do not run every operator once before listening")
    p.add_argument("--port-file", default=None,
                   help="write the bound port to this file once listening")
    p.add_argument("--debug-delay-ms", type=float,
                   default=float(_env("OFFLOAD_SERVE_DEBUG_DELAY_MS", 0)),
                   help=argparse.SUPPRESS)  # test only: sleep before each batch
    return p


def config_from_args(argv: list[str] | None) -> ServeConfig:
    a = build_parser().parse_args(argv)
    token = None
    if a.token_file:
        token = read_token(a.token_file)
    if not (0 <= a.port <= 65535):
        raise ValueError(f"--port must be in [0, 65535], got {a.port}")
    if not a.frame_timeout > 0:
        raise ValueError(f"--frame-timeout must be > 0, got {a.frame_timeout}")
    if a.max_connections < 1:
        raise ValueError(f"--max-connections must be >= 1, got {a.max_connections}")
    return ServeConfig(host=a.host, port=a.port, backend=a.backend, token=token,
                       max_frame=int(a.max_frame_mb * (1 << 20)),
                       max_inflight=int(a.max_inflight_mb * (1 << 20)),
                       delay_ms=a.debug_delay_ms, drain_timeout=a.drain_timeout,
                       workers=a.workers, log_level=a.log_level, port_file=a.port_file,
                       warmup=not a.no_warmup, frame_timeout=a.frame_timeout,
                       max_connections=a.max_connections)


def event_loop_factory() -> Any:
    """uvloop's event loop when it is installed (a faster loop: lower per-request latency), else
    None (asyncio's own). ``OFFLOAD_SERVE_LOOP=asyncio`` forces the pure-asyncio loop."""
    if os.environ.get("OFFLOAD_SERVE_LOOP", "auto").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_loop(coro: Any) -> Any:
    """Run ``coro`` to completion on the service's event loop (see :func:`event_loop_factory`)."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(coro)


def main(argv: list[str] | None = None) -> int:
    """``offload serve [--host H] [--port P] [--backend B] [--token-file F]``; returns the exit code."""
    log = Logger("info")
    try:
        cfg = config_from_args(argv)
    except (OSError, ValueError) as e:
        log("error", "bad_config", error=str(e))
        print(f"offload serve: {e}", file=sys.stderr)
        return 2
    log = Logger(cfg.log_level)
    if not is_loopback(cfg.host) and cfg.token is None:
        msg = (f"refusing to listen on non-loopback address {cfg.host!r} without authentication: "
               "pass --token-file PATH (or OFFLOAD_SERVE_TOKEN_FILE)")
        log("error", "refused", error=msg)
        print(f"offload serve: {msg}", file=sys.stderr)
        return 2
    svc = Service(cfg, log)
    try:
        return run_loop(svc.run())
    except OSError as e:
        log("error", "listen_failed", host=cfg.host, port=cfg.port, error=str(e))
        print(f"offload serve: cannot listen on {cfg.host}:{cfg.port}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
