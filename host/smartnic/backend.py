"""``SmartNicBackend``: run batches on an ``offload serve`` service over TCP.

A batch is split into chunks of whole records (``batch.slice``), each packed with the engine wire
format (:mod:`offload.wire`) and sent as one REQUEST frame; up to ``window`` chunks are in flight on
one pooled connection. Results come back in order. When the link drops the backend reconnects
(exponential backoff, ``retries`` times) and resends only the chunks not yet answered; when it
gives up, or a chunk misses its deadline, it raises :class:`~offload.backend.BackendError` with
``completed``/``partial`` covering exactly the leading chunks that were answered, so the runtime
recomputes the rest elsewhere: no record is lost or duplicated.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from offload.backend import (Availability, Backend, BackendError, Batch, Capabilities, Result,
                             concat_results, empty_result)
from offload import wire
from offload.ops import REGISTRY, OpCall, result_dtype

from . import codec
from ..deadline import DeadlineEstimator
from .client import Connection, ConnectionLost, DeadlineExceeded, parse_address
from .protocol import (HEADER_SIZE, ErrorCode, Frame, MsgType, ProtocolError, RemoteError,
                       encode_frame, pack_request)

__all__ = ["SmartNicBackend"]

ENV_ADDRESS = "OFFLOAD_SMARTNIC"
ENV_TOKEN = "OFFLOAD_SMARTNIC_TOKEN"
ENV_TOKEN_FILE = "OFFLOAD_SMARTNIC_TOKEN_FILE"


class SmartNicBackend(Backend):
    """Backend ``"smartnic"``.

    ``address``: ``"host:port"`` of ``offload serve`` (default: ``OFFLOAD_SMARTNIC``).
    ``token``/``token_file``: the shared secret (default: ``OFFLOAD_SMARTNIC_TOKEN`` or
    ``OFFLOAD_SMARTNIC_TOKEN_FILE``). ``timeout``: a fixed number of seconds a chunk may take from
    its turn (it started to go out, or the answer before it came in) until its result is in; by
    default (None) each chunk's deadline scales with its size and the rate measured on the chunks
    before it (``deadlines``, :mod:`offload.host.deadline`). ``chunk_bytes``: input bytes per
    request; ``window``: requests in flight; ``pool_size``: idle connections kept;
    ``retries``/``backoff``: reconnects after a dropped link (``backoff * 2**k`` seconds before
    attempt k+1).
    """

    name = "smartnic"

    def __init__(self, address: str | None = None, *, token: str | bytes | None = None,
                 token_file: str | None = None, timeout: float | None = None,
                 connect_timeout: float = 2.0, health_timeout: float = 1.0,
                 chunk_bytes: int = 4 << 20, window: int = 4, pool_size: int = 4,
                 retries: int = 2, backoff: float = 0.05, availability_ttl: float = 1.0,
                 **_ignored: Any) -> None:
        self.address = address if address is not None else os.environ.get(ENV_ADDRESS) or None
        self._config_error: str | None = None
        self.host, self.port = "", 0
        if self.address:
            try:
                self.host, self.port = parse_address(self.address)
            except ValueError as e:
                self._config_error = str(e)
        if token is None and token_file is None:
            token = os.environ.get(ENV_TOKEN) or None
            token_file = os.environ.get(ENV_TOKEN_FILE) or None
        if token is None and token_file:
            try:
                with open(token_file, "rb") as f:
                    token = f.read().strip()
            except OSError as e:
                self._config_error = f"cannot read token file {token_file}: {e}"
        self.token: bytes | None = token.encode() if isinstance(token, str) else token
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds (or None: scaled to each chunk), "
                             f"got {timeout}")
        self.timeout = None if timeout is None else float(timeout)
        self.deadlines: DeadlineEstimator | None = None  # made on the first connection
        self.connect_timeout = float(connect_timeout)
        self.health_timeout = float(health_timeout)
        self.chunk_bytes = max(8, int(chunk_bytes))
        self.window = max(1, int(window))
        self.pool_size = max(0, int(pool_size))
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.availability_ttl = float(availability_ttl)
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._avail: tuple[float, Availability] | None = None
        self._stats: dict[str, Any] = {"batches": 0, "chunks": 0, "records": 0, "bytes_sent": 0,
                                       "bytes_received": 0, "connects": 0, "reconnects": 0,
                                       "failures": {}, "server_backends": {}}

    # -- Backend interface --------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        return Capabilities(ops=frozenset(REGISTRY))

    def availability(self) -> Availability:
        if self._config_error:
            return Availability(False, self._config_error)
        if not self.address:
            return Availability(False, "no SmartNIC service configured: pass address='host:port' "
                                       f"or set {ENV_ADDRESS}")
        now = time.monotonic()
        cached = self._avail
        if cached is not None and now - cached[0] < self.availability_ttl:
            return cached[1]
        try:
            h = self.health()
            if h.get("status") != "ok":
                av = Availability(False, f"SmartNIC service at {self.address} is "
                                         f"{h.get('status')}")
            else:
                av = Availability(True, f"offload serve at {self.address} "
                                        f"(backends: {', '.join(h.get('chain', [])) or '?'})")
        except RemoteError as e:
            if e.code == ErrorCode.AUTH_FAILED:
                av = Availability(False, f"SmartNIC service at {self.address} refused the "
                                         f"credential ({'no token set: ' + ENV_TOKEN if self.token is None else 'wrong token'})")
            else:
                av = Availability(False, f"SmartNIC service at {self.address}: {e}")
        except (OSError, ProtocolError, ConnectionLost, DeadlineExceeded) as e:
            av = Availability(False, f"cannot reach SmartNIC service at {self.address}: "
                                     f"{type(e).__name__}: {e}")
        self._avail = (now, av)
        return av

    def run(self, call: OpCall, batch: Batch) -> Result:
        n = batch.n
        if n == 0:
            return empty_result(call.op)
        if self._config_error or not self.address:
            raise BackendError(self.availability().reason, cause="unavailable")
        # chunk bounds are set once the first connection has told the service's frame limit
        bounds: list[tuple[int, int]] = []
        results: list[Result] = []
        # 8-byte results are received straight into the final array: chunk [a, b) lands at words
        # a..b (its trailer on word b, which the next chunk then overwrites): no concatenation.
        rdt = call.operator.result_dtype
        direct = rdt is not None and rdt.itemsize == 8
        out = np.empty(n + 1, np.uint64) if direct else None
        out_bytes = out.view(np.uint8) if out is not None else None
        dt = np.dtype(result_dtype(call.op)) if direct else None
        completed = 0
        next_chunk = 0
        attempts = 0
        st = self._stats

        def fail(msg: str, cause: str, extra: Result | None = None, extra_n: int = 0) -> BackendError:
            self._avail = None
            with self._lock:
                st["failures"][cause] = st["failures"].get(cause, 0) + 1
            head = [out[:completed].view(dt)] if direct and completed else results
            parts = head + ([extra] if extra is not None and extra_n else [])
            return BackendError(f"smartnic ({self.address}): {msg} after {completed + extra_n} of "
                                f"{n} records", cause=cause, completed=completed + extra_n,
                                partial=concat_results(call.op, parts) if parts else None)

        while not bounds or next_chunk < len(bounds):
            try:
                conn = self._acquire(self.connect_timeout, fresh=attempts > 0)
            except RemoteError as e:
                raise fail(str(e), "auth" if e.code == ErrorCode.AUTH_FAILED else "refused") from e
            except (OSError, ProtocolError, ConnectionLost, DeadlineExceeded) as e:
                attempts += 1
                if attempts > self.retries:
                    raise fail(f"cannot connect: {type(e).__name__}: {e}", "connection_lost") from e
                time.sleep(self.backoff * (2 ** (attempts - 1)))
                continue
            if not bounds:
                bounds = _chunk_bounds(call, batch, self.chunk_bytes, conn.max_frame)
            deadlines = self._estimator(conn)
            sizes: dict[int, tuple[int, int]] = {}
            limits: dict[int, float] = {}
            jobs: dict[int, Any] = {}
            bids: dict[int, int] = {}
            base = next_chunk

            def sink(hdr: Any) -> np.ndarray | None:
                i = bids.get(hdr.batch_id)
                if i is None or hdr.type != MsgType.RESULT:
                    return None
                a, b = bounds[base + i]
                if hdr.payload_len != 8 * (b - a + 1):
                    return None
                return out_bytes[8 * a:8 * (b + 1)]

            def make(i: int, bid: int) -> list[Any]:
                job = self._fitted_job(call, batch, bounds, base + i, conn.max_frame)
                jobs[i] = job
                bids[bid] = i
                # the answer is at most out_words_max words: a larger RESULT header is refused
                # before anything is allocated for it
                conn.reader.max_payload = max(conn.reader.max_payload, 8 * job.out_words_max)
                sizes[i] = _job_size(job)
                limits[i] = self.timeout or deadlines.deadline(*sizes[i])
                meta, bufs = pack_request(job.regs, job.table, job.words,
                                          int(limits[i] * 1000))
                return encode_frame(MsgType.REQUEST, bid, meta, bufs)

            def took(i: int, seconds: float) -> None:
                deadlines.observe(*sizes.pop(i), seconds)
                limits.pop(i, None)

            def handle(i: int, f: Frame) -> None:
                nonlocal completed, next_chunk
                a, b = bounds[base + i]
                job = jobs.pop(i)
                if f.sunk:
                    magic, err, done = wire.parse_trailer(int.from_bytes(f.tail, "little"))
                    if magic != wire.TRAILER_MAGIC or err or done != b - a:
                        words = np.concatenate([out[a:b], np.frombuffer(f.tail, np.uint64)])
                        try:
                            codec.decode_result(job, words)
                        except BackendError as e:
                            raise _Partial(e) from None
                else:
                    try:
                        res = codec.decode_result(job, f.words)
                    except BackendError as e:
                        raise _Partial(e) from None
                    if direct:
                        out[a:b] = res.view(np.uint64)
                    else:
                        results.append(res)
                completed = b
                next_chunk = base + i + 1
                with self._lock:
                    st["chunks"] += 1
                    st["records"] += b - a
                    who = _meta_backend(f.meta)
                    st["server_backends"][who] = st["server_backends"].get(who, 0) + (b - a)

            sent0, recv0 = conn.bytes_sent, conn.bytes_received
            if direct:
                conn.reader.sink = sink
            try:
                conn.pipeline(lambda: len(bounds) - base, make, handle, window=self.window,
                              timeout=limits.__getitem__, took=took)
            except DeadlineExceeded as e:
                conn.close()
                raise fail(self._missed(e, bounds, base, sizes, deadlines), "timeout") from e
            except _TooLarge as e:
                self._release(conn)  # the chunks sent before were answered: the link is clean
                raise fail(str(e), "too_large") from None
            except _Partial as p:
                self._release(conn)
                e = p.error
                raise fail(str(e), e.cause, e.partial, e.completed) from e
            except RemoteError as e:
                if e.fatal:
                    conn.close()
                else:
                    self._release(conn)
                if e.code == ErrorCode.VALUE_ERROR:
                    # The input itself is bad: the caller gets the documented ValueError with
                    # indices into *its* batch, so re-check locally (only on this error path).
                    from offload.host.cpu import CpuBackend
                    CpuBackend().run(call, batch)
                raise fail(str(e), f"remote_{e.name.lower()}") from e
            except (OSError, ProtocolError, ConnectionLost) as e:
                conn.close()
                attempts += 1
                with self._lock:
                    st["reconnects"] += 1
                if attempts > self.retries:
                    raise fail(f"link lost: {type(e).__name__}: {e}", "connection_lost") from e
                time.sleep(self.backoff * (2 ** (attempts - 1)))
                continue
            finally:
                conn.reader.sink = None
                conn.reader.max_payload = 0
                with self._lock:
                    st["bytes_sent"] += conn.bytes_sent - sent0
                    st["bytes_received"] += conn.bytes_received - recv0
            self._release(conn)
        with self._lock:
            st["batches"] += 1
        if direct:
            return out[:n].view(dt)
        return concat_results(call.op, results)

    def _estimator(self, conn: Connection) -> DeadlineEstimator:
        """The chunk deadlines' estimator, made on the first connection: its prior (before any
        chunk is measured) fits the service's chain, from HELLO. A CPU chain: 2 s + 10 MB/s
        (a 100 Mbit/s link); a device, or a chain not told: the simulated device's ~20 k words/s
        (the old fixed 30 s for a 4 MiB chunk)."""
        with self._lock:
            if self.deadlines is None:
                cpu_only = conn.server.get("chain") == ["cpu"]
                self.deadlines = DeadlineEstimator(
                    prior_fixed_s=2.0 if cpu_only else 10.0,
                    prior_byte_s=1e-7 if cpu_only else 5e-5 / 8,
                    latency_s=0.05, floor_s=1.0, margin=4.0)
            return self.deadlines

    def _missed(self, e: DeadlineExceeded, bounds: list[tuple[int, int]], base: int,
                sizes: dict[int, tuple[int, int]], deadlines: DeadlineEstimator) -> str:
        """The message for a chunk that missed its deadline."""
        if e.index is None or e.limit is None:
            return str(e)
        a, b = bounds[base + e.index]
        why = "the given timeout" if self.timeout else deadlines.explain(*sizes[e.index])
        return f"no answer for records {a}..{b - 1} within {e.limit:.3g} s ({why})"

    @staticmethod
    def _fitted_job(call: OpCall, batch: Batch, bounds: list[tuple[int, int]], k: int,
                    max_frame: int) -> wire.WireJob:
        """The job of chunk ``bounds[k]``, first split (in place: ``bounds`` gains entries) until
        its REQUEST frame fits the service's ``max_frame``; a chunk's size is only an estimate
        until it is encoded (records differ in length)."""
        while True:
            a, b = bounds[k]
            job = codec.encode_job(call, batch.slice(a, b) if (a, b) != (0, batch.n) else batch)
            size = _request_frame_bytes(job)
            if size <= max_frame:
                return job
            if b - a == 1:
                raise _TooLarge(f"record {a} needs a frame of {size} bytes, above the service's "
                                f"limit of {max_frame}")
            m = a + max(1, min(b - a - 1, (b - a) * max_frame * 7 // (size * 8)))
            bounds[k:k + 1] = [(a, m), (m, b)]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            s = dict(self._stats)
            s["failures"] = dict(s["failures"])
            s["server_backends"] = dict(s["server_backends"])
            return s

    def health(self) -> dict[str, Any]:
        """The service's health record (raises on failure)."""
        conn = self._acquire(self.health_timeout)
        try:
            h = conn.health(self.health_timeout)
        except BaseException:
            conn.close()
            raise
        self._release(conn)
        return h

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    # -- pool ---------------------------------------------------------------------------------

    def _acquire(self, timeout: float, fresh: bool = False) -> Connection:
        with self._lock:
            idle = self._idle
            if fresh:
                stale, self._idle = idle, []
                idle = []
            else:
                stale = []
            conn = None
            while idle:
                c = idle.pop()
                if c.idle_ok():
                    conn = c
                    break
                stale.append(c)
        for c in stale:
            c.close()
        if conn is not None:
            return conn
        conn = Connection(self.host, self.port, token=self.token, connect_timeout=timeout)
        with self._lock:
            self._stats["connects"] += 1
        return conn

    def _release(self, conn: Connection) -> None:
        if conn.closed or conn.inbox or conn._eof:
            conn.close()
            return
        with self._lock:
            if len(self._idle) < self.pool_size:
                self._idle.append(conn)
                return
        conn.close()

    def __repr__(self) -> str:
        return f"SmartNicBackend({self.address!r})"


# REQUEST bytes besides the input words: header, request meta (every register), slack
_REQUEST_OVERHEAD = HEADER_SIZE + 24 + 8 * 16 + 64


def _job_size(job: wire.WireJob) -> tuple[int, int]:
    """A chunk's size for its deadline: records, and words sent and (at most) received, in
    bytes (as for the fpga backend's DMA chunks)."""
    return job.n, 8 * (job.table.shape[0] + job.words.shape[0] + job.out_words_max)


def _request_frame_bytes(job: wire.WireJob) -> int:
    """The size of the REQUEST frame of ``job`` (what the service compares with its limit)."""
    return _REQUEST_OVERHEAD + 8 * (job.table.shape[0] + job.words.shape[0])


def _chunk_bounds(call: OpCall, batch: Batch, chunk_bytes: int,
                  max_frame: int) -> list[tuple[int, int]]:
    """Chunks of whole records of about ``chunk_bytes`` input bytes, each expected to fit a
    REQUEST frame of ``max_frame`` bytes (a record takes at most its bytes plus 16 on the wire;
    ``_fitted_job`` splits a chunk that does not fit all the same)."""
    n = batch.n
    nbytes = int(getattr(batch, "nbytes", 0))
    per = [n]
    est = nbytes + 8 * n
    if est > chunk_bytes:
        per.append(n * chunk_bytes // est)
    boundaries = getattr(call, "boundaries", None)  # bucketize only
    table = 0 if boundaries is None else len(boundaries)
    room = max_frame - _REQUEST_OVERHEAD - 8 * (table + 1)
    worst = nbytes + 16 * n
    if worst > room:
        per.append(n * max(0, room) // worst)
    size = max(1, min(per))
    return [(a, min(a + size, n)) for a in range(0, n, size)]


_BACKEND_PREFIX = b'{"backend":"'


def _meta_backend(meta: bytes) -> str:
    """The ``backend`` field of a RESULT's JSON meta ("?" when absent or unreadable). The service
    writes ``{"backend":"cpu",...}``: that form is read without a JSON parse (latency path)."""
    if meta.startswith(_BACKEND_PREFIX):
        end = meta.find(b'"', len(_BACKEND_PREFIX))
        name = meta[len(_BACKEND_PREFIX):end]
        if end > 0 and b"\\" not in name:
            try:
                return name.decode("ascii")
            except UnicodeDecodeError:
                pass
    import json
    try:
        obj = json.loads(meta)
    except (ValueError, RecursionError):
        return "?"
    who = obj.get("backend", "?") if isinstance(obj, dict) else "?"
    return who if isinstance(who, str) else str(who)


class _TooLarge(Exception):
    pass


class _Partial(Exception):
    def __init__(self, error: BackendError) -> None:
        super().__init__(str(error))
        self.error = error
