"""The SmartNIC service: its configuration, logs, runtimes, request execution and event loop.

One process, one event loop. :class:`Service` listens, accepts connections
(:class:`~.connection.PeerConnection`, one peer's state machine each), enforces the connection
limit, closes stalled connections (the watchdog) and drains on SIGTERM/SIGINT: stop accepting,
stop reading, finish and answer every request already received, close, exit 0. Requests run on
the service's own :class:`offload.runtime.Runtime` (a local chain: never ``smartnic``), one per
worker thread over shared backend instances: :meth:`Service.execute` turns one REQUEST frame into
its RESULT or ERROR frame, for any registered operator (:mod:`.codec`).

Logs are JSON lines on stderr. The CLI is :mod:`.server` (``offload serve``).
"""

from __future__ import annotations

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from offload.backend import Batch
from offload.batch import FixedKeys, Numbers, Sequences, VarChunk, VarRecords
from offload.ops import REGISTRY, OpCall, Operator, make_call

from . import codec
from .protocol import VERSION, ErrorCode, Frame, MsgType, encode_frame, pack_error, pack_located_error

if TYPE_CHECKING:
    from .connection import PeerConnection

__all__ = ["ServeConfig", "Service", "Logger", "LEVELS", "CHAINS", "is_loopback", "read_token"]

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
#: Requests up to this size run on the event loop (latency); larger ones in the thread pool.
INLINE_BYTES = 256 << 10


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
        self.level = LEVELS.get(level, 20)
        self.stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()

    def __call__(self, level: str, event: str, **fields: Any) -> None:
        if LEVELS[level] < self.level:
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


CHAINS = {"auto": ["fpga", "cpu"], "cpu": ["cpu"], "sim": ["sim", "cpu"], "fpga": ["fpga", "cpu"]}


class Service:
    """The service: listening socket, connections, runtimes (one per worker thread)."""

    def __init__(self, cfg: ServeConfig, log: Logger | None = None) -> None:
        if cfg.backend not in CHAINS:
            raise ValueError(f"unknown backend {cfg.backend!r}: expected auto, cpu, sim or fpga")
        self.cfg = cfg
        self.log = log or Logger(cfg.log_level)
        self.conns: set[PeerConnection] = set()
        # every connection object still in memory, open or closed (health's buffered_bytes)
        self.alive: weakref.WeakSet[PeerConnection] = weakref.WeakSet()
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
                    self._base = Runtime(backends=list(CHAINS[self.cfg.backend]), verify="off", fallback=True)
                    self._runtimes.append(self._base)
                    for name in self._base.order:
                        if not self._base.availability(name).ok:
                            continue
                        try:
                            self._instances.append(self._base.backend(name))
                        except BackendUnavailable:
                            pass
                rt = Runtime(backends=list(self._instances) or ["cpu"], verify="off", fallback=True)
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
        """Run every registered operator once, through the codec and the runtime, on every batch
        layout of its input kind, so that the first client batch does not pay for loading
        compiled kernels. Returns the seconds spent."""
        t0 = time.perf_counter()
        rt = self.runtime()
        for entry in list(REGISTRY.values()):
            for call, batch in _warm_runs(entry):
                try:
                    meta, arrays = codec.request_arrays(call, batch)
                    body, bufs = codec.request_body(meta, arrays)
                    payload = np.frombuffer(b"".join(bytes(memoryview(b).cast("B")) for b in bufs), np.uint8)
                    call2, batch2, _ = codec.parse_request(body, payload.copy())
                    codec.result_body(rt.run(call2, batch2))
                except Exception as e:  # noqa: BLE001 - warm-up is best effort
                    self.log("warning", "warmup_failed", op=call.op, error=f"{type(e).__name__}: {e}")
        rt.reset_stats()
        return time.perf_counter() - t0

    def execute(self, frame: Frame) -> tuple[list[Any], int, str]:
        """Run one request: ``(response buffers, records, backends)``; never raises."""
        t0 = time.perf_counter()
        bid = frame.batch_id
        try:
            call, batch, _deadline = codec.parse_request(frame.meta, frame.payload)
        except (ValueError, TypeError, KeyError) as e:  # codec.RequestError is a ValueError
            return self._error(bid, ErrorCode.BAD_REQUEST, f"{type(e).__name__}: {e}"), 0, ""
        except MemoryError:
            return self._error(bid, ErrorCode.BAD_REQUEST, "request too large to decode"), 0, ""
        rt = self.runtime()
        try:
            result = rt.run(call, batch)
            bufs_meta, out = codec.result_body(result)
        except (ValueError, TypeError) as e:
            # bad input: the message locates the record so the client restates it for its batch
            self.errors += 1
            return encode_frame(MsgType.ERROR, bid, pack_located_error(e)), 0, ""
        except Exception as e:  # noqa: BLE001 - the service must answer
            self.log("error", "batch_failed", batch_id=bid, op=call.op, error=f"{type(e).__name__}: {e}")
            return self._error(bid, ErrorCode.BACKEND_FAILED, f"{type(e).__name__}: {e}"), 0, ""
        names = _backends(rt.last_call().get("segments", []))
        # names are backend identifiers ([a-z,]); formatted by hand, this is on the latency path
        meta = b'{"backend":"%s","us":%d,"bufs":%s}' % (
            names.encode(),
            (time.perf_counter() - t0) * 1e6,
            bufs_meta,
        )
        return encode_frame(MsgType.RESULT, bid, meta, out), batch.n, names

    def _error(self, bid: int, code: ErrorCode, message: str) -> list[Any]:
        self.errors += 1
        return encode_frame(MsgType.ERROR, bid, pack_error(code, message))

    def chain(self) -> list[str]:
        """The names of the backends this service runs batches on, in order."""
        return [b.name for b in self._instances]

    def health(self) -> dict[str, Any]:
        alive = list(self.alive)
        preauth = [c for c in alive if not c.authed]
        return {
            "status": "draining" if self.draining else "ok",
            "proto": VERSION,
            "backend": self.cfg.backend,
            "chain": self.chain(),
            "ops": list(REGISTRY),  # the operators this service's registry holds
            "connections": len(self.conns),
            "batches": self.batches,
            "records": self.records,
            "errors": self.errors,
            "inflight_bytes": sum(c.inflight for c in self.conns),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "pid": os.getpid(),
            "auth": self.cfg.token is not None,
            "max_frame": self.cfg.max_frame,
            "max_connections": self.cfg.max_connections,
            "refused_connections": self.refused,
            # frame buffers held by every connection object in memory, open or closed
            "buffered_bytes": sum(c.reader.held_bytes for c in alive),
            "preauth_connections": sum(1 for c in preauth if not c.closed),
            "preauth_buffered_bytes": sum(c.reader.held_bytes for c in preauth),
        }

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
                    c.fatal(ErrorCode.BAD_FRAME, f"incomplete frame stalled for more than {limit:g} s")
            elif not c.authed and now - c.opened > limit:
                c.fatal(ErrorCode.AUTH_FAILED, f"no authentication within {limit:g} s")

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
        from .connection import PeerConnection

        server = await loop.create_server(
            lambda: PeerConnection(self), self.cfg.host, self.cfg.port, reuse_address=True, backlog=256
        )
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
        self.log(
            "info",
            "listening",
            host=self.cfg.host,
            port=self.port,
            backend=self.cfg.backend,
            loop=f"{type(loop).__module__}.{type(loop).__name__}",
            chain=avail,
            auth=self.cfg.token is not None,
            max_frame=self.cfg.max_frame,
            max_connections=self.cfg.max_connections,
            max_inflight=self.cfg.max_inflight,
            delay_ms=self.cfg.delay_ms,
        )
        watchdog = loop.create_task(self._watchdog())
        await self._stop.wait()
        watchdog.cancel()
        # graceful shutdown: stop accepting, stop reading, finish what was received
        server.close()
        self.draining = True
        conns = list(self.conns)
        self.log("info", "draining", connections=len(conns), queued=sum(len(c.queue) + c.busy for c in conns))
        for c in conns:
            c.begin_drain()
        waits = [c.done.wait() for c in conns]
        if waits:
            await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=self.cfg.drain_timeout)
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


def _backends(segments: list[tuple[str, int, int]]) -> str:
    """Which backend(s) ran a call, from its runtime's segments ("cpu", or "fpga,cpu")."""
    if len(segments) == 1:
        return segments[0][0]
    return ",".join(sorted({s[0] for s in segments}))


# The batch layouts of each input kind, one per kernel signature: records as fixed keys of both
# widths (a large batch too: the parallel path) and as offsets + bytes; numbers of every dtype.
_WARM_NUMBER_DTYPES = (np.float32, np.float64, np.int32, np.int64)


def _warm_runs(entry: Operator) -> list[tuple[OpCall, Batch]]:
    """(call, batch) pairs that run ``entry`` on every batch layout of its input kind."""
    # bytes 0..39 are one-byte varints each: valid encoded input as well as records to hash
    var = VarRecords((VarChunk(np.array([0, 0, 3, 40], np.int64), np.arange(40, dtype=np.uint8)),))
    if entry.inputs == "numbers":
        return [
            (call, Numbers(np.arange(4, dtype=dt), (4,)))
            for dt in _WARM_NUMBER_DTYPES
            for call in _first_valid(entry, {"dtype": np.dtype(dt)})
        ]
    calls = _first_valid(entry, {})
    if entry.inputs == "sequences":
        batches: list[Batch] = [Sequences(np.array([0, 2, 4], np.int64), np.arange(4, dtype=np.int64))]
    elif entry.inputs == "encoded":
        batches = [var]
    else:
        keys = np.arange(1 << 17, dtype=np.uint64)
        batches = [var, FixedKeys(keys, keys.shape), FixedKeys(keys[:4].astype(np.uint32), (4,))]
    return [(call, b) for call in calls for b in batches]


def _first_valid(entry: Operator, extra: dict[str, Any]) -> list[OpCall]:
    """The first of the entry's examples that validates with ``extra`` (none: nothing to warm)."""
    for example in entry.examples:
        try:
            return [make_call(entry.name, **example, **extra)]
        except (TypeError, ValueError):
            continue
    return []
