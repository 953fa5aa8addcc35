"""One batch's trip through the SmartNIC service: :class:`ChunkPipeline`.

The batch is cut into chunks of whole records that fit the service's frame limit; up to
``window`` chunks are in flight on one connection and their results are placed in order (a
one-value-per-record result is received straight into the final array). When the link drops the
pipeline reconnects and resends only the chunks not yet answered; when it gives up, a chunk misses
its deadline or the service refuses one, it raises :class:`~offload.backend.BackendError` whose
``completed``/``partial`` cover exactly the leading chunks answered. Bad input the service reports
(``VALUE_ERROR``) is raised as the service's ``ValueError``, its record index and byte offset
restated for the caller's batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from offload.backend import BackendError, Batch, Result, concat_results
from offload.batch import VarRecords
from offload.ops import OpCall

from ..deadline import DeadlineEstimator
from . import codec
from .client import Connection, ConnectionLost, DeadlineExceeded
from .pool import ConnectionPool, Counters
from .protocol import (
    ErrorCode,
    Frame,
    Header,
    LocatedError,
    MsgType,
    ProtocolError,
    RemoteError,
    encode_frame,
    parse_json,
    parse_located_error,
)

__all__ = ["ChunkPipeline", "Settings", "chunk_bounds"]


class Settings(Protocol):
    """What a pipeline reads of its backend (``SmartNicBackend``'s public attributes)."""

    address: str | None
    timeout: float | None
    connect_timeout: float
    chunk_bytes: int
    window: int
    retries: int
    backoff: float
    pool: ConnectionPool
    counters: Counters

    def estimator(self, conn: Connection) -> DeadlineEstimator: ...


@dataclass
class _Chunk:
    """One chunk on its way: records ``[a, b)`` of the batch, as sent."""

    k: int  # its index in the pipeline's bounds
    a: int
    b: int
    meta: bytes
    bufs: codec.Buffers
    size: tuple[int, int]  # records, bytes sent + received at most (its deadline's measure)
    limit: float  # seconds it may take from its turn
    bound: int  # the largest RESULT payload accepted for it
    offsets: np.ndarray | None  # the byte offsets sent (var layout): a reported byte is restated


class ChunkPipeline:
    """Run ``call`` on ``batch`` on the service of ``settings`` (one use: :meth:`run`)."""

    def __init__(self, settings: Settings, call: OpCall, batch: Batch) -> None:
        self.s = settings
        self.call, self.batch, self.n = call, batch, batch.n
        self.bounds: list[tuple[int, int]] = []  # set once a connection told the frame limit
        self.completed = 0  # leading records answered
        self.next = 0  # the first chunk not answered
        self.attempts = 0  # links lost or connects failed: ``retries`` of them for the batch
        self.dtype = call.operator.result_dtype
        # a one-value-per-record result is received in place: chunk [a, b) at bytes
        # itemsize*a.., its padding overwritten by the chunk after it
        self.out = None if self.dtype is None else np.empty(self.dtype.itemsize * self.n + 8, np.uint8)
        self.parts: list[Result] = []

    def run(self) -> Result:
        while not self.bounds or self.next < len(self.bounds):
            conn = self._connect()
            if conn is None:
                continue
            if not self.bounds:
                self.bounds = chunk_bounds(self.call, self.batch, self.s.chunk_bytes, conn.max_frame)
            if self._pass(conn):
                self.s.pool.release(conn)
        self.s.counters.add(batches=1)
        return self._head()

    # -- results --------------------------------------------------------------------------------

    def _head(self) -> Result:
        """The results of the leading ``completed`` records."""
        if self.out is not None:
            assert self.dtype is not None
            return self.out[: self.dtype.itemsize * self.completed].view(self.dtype)
        return concat_results(self.call.op, self.parts)

    def _fail(self, message: str, cause: str) -> BackendError:
        self.s.counters.failure(cause)
        return BackendError(
            f"smartnic ({self.s.address}): {message} after {self.completed} of {self.n} records",
            cause=cause,
            completed=self.completed,
            partial=self._head() if self.completed else None,
        )

    def _place(self, chunk: _Chunk, f: Frame) -> None:
        try:
            meta = parse_json(f.meta)
        except ProtocolError as e:
            raise _Framing(BackendError(f"service result: {e.message}", cause="framing")) from None
        try:
            if f.sunk:
                codec.check_sunk(self.call, chunk.b - chunk.a, meta)
            else:
                res = codec.parse_result(self.call, chunk.b - chunk.a, meta, f.payload)
                if self.out is not None and isinstance(res, np.ndarray):
                    lo = res.dtype.itemsize * chunk.a
                    self.out[lo : lo + res.nbytes] = res.view(np.uint8)
                else:
                    self.parts.append(res)
        except BackendError as e:
            raise _Framing(e) from None
        self.completed, self.next = chunk.b, chunk.k + 1
        who = meta.get("backend", "?")
        self.s.counters.answered(chunk.b - chunk.a, who if isinstance(who, str) else str(who))

    # -- connections ----------------------------------------------------------------------------

    def _connect(self) -> Connection | None:
        """A connection, or None after a failed attempt that may be retried (backoff slept)."""
        try:
            return self.s.pool.acquire(self.s.connect_timeout, fresh=self.attempts > 0)
        except RemoteError as e:
            raise self._fail(str(e), "auth" if e.code == ErrorCode.AUTH_FAILED else "refused") from e
        except (OSError, ProtocolError, ConnectionLost, DeadlineExceeded) as e:
            self._retry_or_fail(f"cannot connect: {type(e).__name__}: {e}", e)
            return None

    def _retry_or_fail(self, message: str, e: Exception) -> None:
        self.attempts += 1
        if self.attempts > self.s.retries:
            raise self._fail(message, "connection_lost") from e
        time.sleep(self.s.backoff * (2 ** (self.attempts - 1)))

    # -- one pass over one connection -------------------------------------------------------------

    def _pass(self, conn: Connection) -> bool:
        """Send the chunks not yet answered on ``conn``: True when all were answered, False when
        the link was lost and the pipeline should reconnect."""
        base = self.next
        flight: dict[int, _Chunk] = {}  # by position in this pass
        by_bid: dict[int, _Chunk] = {}
        deadlines = self.s.estimator(conn)

        def make(i: int, bid: int) -> list[Any]:
            chunk = self._chunk(base + i, conn.max_frame, deadlines)
            flight[i] = by_bid[bid] = chunk
            # the answer is at most ``bound`` bytes: a larger RESULT header is refused before
            # anything is allocated for it
            conn.reader.max_payload = max(conn.reader.max_payload, chunk.bound)
            return encode_frame(MsgType.REQUEST, bid, chunk.meta, chunk.bufs)

        def took(i: int, seconds: float) -> None:
            deadlines.observe(*flight.pop(i).size, seconds)

        sent0, recv0 = conn.bytes_sent, conn.bytes_received
        conn.reader.sink = lambda hdr: self._sink(by_bid, hdr)
        try:
            conn.pipeline(
                lambda: len(self.bounds) - base,
                make,
                lambda i, f: self._place(flight[i], f),
                window=self.s.window,
                timeout=lambda i: flight[i].limit,
                took=took,
            )
        except DeadlineExceeded as e:
            conn.close()
            raise self._fail(self._missed(e, flight, deadlines), "timeout") from e
        except _TooLarge as e:
            self.s.pool.release(conn)  # the chunks sent before were answered: the link is clean
            raise self._fail(str(e), "too_large") from None
        except _Framing as e:
            conn.close()
            raise self._fail(str(e.error), e.error.cause) from None
        except RemoteError as e:
            if e.fatal:
                conn.close()
            else:
                self.s.pool.release(conn)
            if e.code == ErrorCode.VALUE_ERROR and e.batch_id in by_bid:
                located = parse_located_error(e.message)
                raise located.type(self._restated(located, by_bid[e.batch_id])) from None
            raise self._fail(str(e), f"remote_{e.name.lower()}") from e
        except (OSError, ProtocolError, ConnectionLost) as e:
            conn.close()
            self.s.counters.add(reconnects=1)
            self._retry_or_fail(f"link lost: {type(e).__name__}: {e}", e)
            return False
        finally:
            conn.reader.sink = None
            conn.reader.max_payload = 0
            self.s.counters.add(
                bytes_sent=conn.bytes_sent - sent0, bytes_received=conn.bytes_received - recv0
            )
        return True

    def _sink(self, by_bid: dict[int, _Chunk], hdr: Header) -> np.ndarray | None:
        """Where a RESULT's payload is received: its place in the final array when it is the
        one-array result of a chunk in flight (None: a buffer of its own)."""
        chunk = by_bid.get(hdr.batch_id)
        if chunk is None or hdr.type != MsgType.RESULT or self.out is None or self.dtype is None:
            return None
        size = self.dtype.itemsize
        lo, plen = size * chunk.a, codec.padded(size * (chunk.b - chunk.a))
        return self.out[lo : lo + plen] if hdr.payload_len == plen else None

    def _chunk(self, k: int, max_frame: int, deadlines: DeadlineEstimator) -> _Chunk:
        """Chunk ``bounds[k]`` ready to send, first split (``bounds`` gains entries) until its
        payload fits the service's ``max_frame``: a chunk's size is an estimate until it is
        encoded (records differ in length)."""
        while True:
            a, b = self.bounds[k]
            sub = self.batch if (a, b) == (0, self.n) else self.batch.slice(a, b)
            meta, arrays = codec.request_arrays(self.call, sub)
            nbytes = codec.body_bytes(arrays)
            if nbytes <= max_frame:
                break
            if b - a == 1:
                raise _TooLarge(
                    f"record {a} needs a frame of {nbytes} bytes, above the service's limit of {max_frame}"
                )
            m = a + max(1, min(b - a - 1, (b - a) * max_frame * 7 // (nbytes * 8)))
            self.bounds[k : k + 1] = [(a, m), (m, b)]
        bound = codec.result_bound(self.call, b - a, nbytes)
        size = (b - a, nbytes + (bound if self.dtype is not None else nbytes))
        limit = self.s.timeout or deadlines.deadline(*size)
        body, bufs = codec.request_body(meta, arrays, int(limit * 1000))
        offsets = arrays[-2] if meta["batch"] == "var" else None
        return _Chunk(k, a, b, body, bufs, size, limit, bound, offsets)

    def _missed(self, e: DeadlineExceeded, flight: dict[int, _Chunk], deadlines: DeadlineEstimator) -> str:
        """The message for a chunk that missed its deadline."""
        if e.index is None or e.limit is None or e.index not in flight:
            return str(e)
        c = flight[e.index]
        why = "the given timeout" if self.s.timeout else deadlines.explain(*c.size)
        return f"no answer for records {c.a}..{c.b - 1} within {e.limit:.3g} s ({why})"

    # -- the service's ValueError, restated for the caller's batch --------------------------------

    def _restated(self, located: LocatedError, chunk: _Chunk) -> str:
        """The service's message with the chunk's record index (and byte offset, for records
        sent as offsets + bytes) restated for the caller's batch."""
        text, rec, byte = located.message, located.record, located.byte
        if rec is None:
            if chunk.a == 0:
                return text
            return f"{text} (a position in records {chunk.a}..{chunk.b - 1} counted from {chunk.a})"
        local = int(text[rec[0] : rec[1]])
        edits = [(rec, chunk.a + local)]
        if byte is not None and chunk.offsets is not None and local < chunk.offsets.shape[0] - 1:
            start = record_start(self.batch, chunk.a + local)
            if start is not None:
                edits.append((byte, int(text[byte[0] : byte[1]]) - int(chunk.offsets[local]) + start))
        for (lo, hi), value in sorted(edits, reverse=True):
            text = text[:lo] + str(value) + text[hi:]
        return text


def record_start(batch: Batch, i: int) -> int | None:
    """Where record ``i`` of a :class:`VarRecords` batch starts in its chunk's bytes (the byte
    offsets the CPU backend reports), None for other batches."""
    if not isinstance(batch, VarRecords):
        return None
    for c in batch.chunks:
        if i < c.n:
            return int(c.offsets[i])
        i -= c.n
    return None


# request bytes of a chunk besides its records' (each record takes at most its bytes and an
# 8-byte offset): one more offset and the padding of the bytes
_SLACK = 16


def chunk_bounds(call: OpCall, batch: Batch, chunk_bytes: int, max_frame: int) -> list[tuple[int, int]]:
    """Chunks of whole records of about ``chunk_bytes`` request bytes, each expected to fit a
    payload of ``max_frame`` bytes with the call's array parameters (:meth:`ChunkPipeline._chunk`
    splits one that does not, all the same)."""
    n = batch.n
    nbytes = int(batch.nbytes)
    params = sum(codec.padded(v.nbytes) for v in call.params.values() if isinstance(v, np.ndarray))
    per = [n]
    est = nbytes + 8 * n
    if est > chunk_bytes:
        per.append(n * chunk_bytes // est)
    room = max_frame - params - _SLACK
    if est > room:
        per.append(n * max(0, room) // est)
    size = max(1, min(per))
    return [(a, min(a + size, n)) for a in range(0, n, size)]


class _TooLarge(Exception):
    pass


class _Framing(Exception):
    def __init__(self, error: BackendError) -> None:
        super().__init__(str(error))
        self.error = error
