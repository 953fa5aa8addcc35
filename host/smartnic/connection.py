"""One peer of the SmartNIC service: :class:`PeerConnection`, its state machine.

An ``asyncio.BufferedProtocol`` whose frames are received straight into their final numpy
buffers. States: HELLO sent (only the small AUTH frame is read, into a 4 KiB buffer), then
authenticated (full limits; HEALTH and REQUEST frames), then closed. Requests are queued per
connection and answered in order by the connection's worker task; a request that finds its
connection idle and is at most 256 KiB is answered directly from the read callback (no hop
through the worker task). Memory is bounded: the connection stops being read (TCP backpressure)
while its queued request bytes exceed ``--max-inflight-mb`` or while its peer is not reading
results.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import socket
import time
from collections import deque
from typing import Any, cast

from .protocol import (
    DEFAULT_MAX_META,
    VERSION,
    ErrorCode,
    Flags,
    Frame,
    FrameReader,
    MsgType,
    ProtocolError,
    auth_digest,
    encode_frame,
    pack_error,
    pack_json,
)
from .service import INLINE_BYTES, LEVELS, Service

__all__ = ["PeerConnection"]

_COALESCE_BYTES = 256 << 10  # responses up to this size are written with one send


class PeerConnection(asyncio.BufferedProtocol):
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
        self._debug = svc.log.level <= LEVELS["debug"]

    # -- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (asyncio's, or uvloop's: not an ``asyncio.Transport`` subclass)
        stream = self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        stream.set_write_buffer_limits(high=8 << 20, low=1 << 20)
        self.svc.alive.add(self)
        limit = self.svc.cfg.max_connections
        if len(self.svc.conns) >= limit:
            self._refuse(
                f"connection limit reached: this service serves at most {limit} "
                "connections at a time; try again later"
            )
            return
        self.svc.conns.add(self)
        self.svc.log("info", "connection_open", peer=self.peer)
        flags = Flags.AUTH_REQUIRED if self.svc.cfg.token is not None else 0
        self._send(
            encode_frame(
                MsgType.HELLO,
                0,
                pack_json(
                    {
                        "nonce": self.nonce.hex(),
                        "proto": VERSION,
                        "server": "offload",
                        "max_frame": self.svc.cfg.max_frame,
                        "auth": self.svc.cfg.token is not None,
                        "chain": self.svc.chain(),
                    }
                ),
                flags=flags,
            )
        )
        self.worker = asyncio.get_running_loop().create_task(self._work())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:
            return
        try:
            frames = self.reader.buffer_updated(nbytes)
        except ProtocolError as e:
            self.fatal(e.code, e.message)
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
                    frames = self.reader.admit(max_meta=DEFAULT_MAX_META, max_payload=self.svc.cfg.max_frame)
                except ProtocolError as e:
                    self.fatal(e.code, e.message)
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
            self.svc.log(
                "info",
                "connection_closed",
                peer=self.peer,
                error=None if exc is None else f"{type(exc).__name__}: {exc}",
                dropped=len(self.queue),
            )
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
                self.fatal(ErrorCode.OUT_OF_ORDER, f"expected AUTH, got {f.type.name}")
                return
            token = self.svc.cfg.token
            if token is not None and not hmac.compare_digest(auth_digest(token, self.nonce), f.meta):
                self.fatal(
                    ErrorCode.AUTH_FAILED,
                    "missing or wrong credential" if f.meta else "this service requires a token",
                )
                return
            self.authed = True
            self._send(encode_frame(MsgType.AUTH_OK, f.batch_id))
            return
        if f.type == MsgType.HEALTH:
            self._send(
                encode_frame(
                    MsgType.HEALTH_OK,
                    f.batch_id,
                    pack_json(self.svc.health()),
                    flags=Flags.DRAINING if self.svc.draining else 0,
                )
            )
            return
        if f.type == MsgType.REQUEST:
            if f.batch_id <= self.last_bid:
                self.fatal(ErrorCode.OUT_OF_ORDER, f"batch id {f.batch_id} after {self.last_bid}")
                return
            self.last_bid = f.batch_id
            if (
                not self.queue
                and not self.busy
                and not self.write_paused
                and self._inline_ok
                and f.payload.nbytes <= INLINE_BYTES
                and not self.svc.draining
            ):
                # the latency path: nothing is queued or being answered on this connection, so
                # answer right here (no hop through the worker task and another loop iteration)
                self._run_inline(f)
                return
            self.queue.append((f, time.monotonic()))
            self.inflight += f.payload.nbytes
            self.wake.set()
            self._flow()
            return
        self.fatal(ErrorCode.OUT_OF_ORDER, f"a client does not send {f.type.name}")

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
            svc.log(
                "debug",
                "batch",
                peer=self.peer,
                batch_id=f.batch_id,
                records=nrec,
                backend=names,
                ms=round((time.monotonic() - t_recv) * 1e3, 3),
            )
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
        pause = (
            self.inflight > self.svc.cfg.max_inflight
            or self.write_paused
            or self.svc.draining
            or self.reader.failed is not None
        )
        if pause and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
        elif not pause and self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def fatal(self, code: ErrorCode, message: str) -> None:
        level = "warning"
        self.svc.log(
            level,
            "auth_refused" if code == ErrorCode.AUTH_FAILED else "protocol_error",
            peer=self.peer,
            code=code.name,
            message=message,
        )
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
        self._send(encode_frame(MsgType.ERROR, 0, pack_error(ErrorCode.TOO_MANY_CONNECTIONS, message)))
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
                    if f.payload.nbytes <= INLINE_BYTES and not delay:
                        bufs, nrec, names = svc.execute(f)
                    else:
                        bufs, nrec, names = await loop.run_in_executor(svc.pool, svc.execute, f)
                    if self.closed:
                        break
                    svc.batches += 1
                    svc.records += nrec
                    if self._debug:
                        svc.log(
                            "debug",
                            "batch",
                            peer=self.peer,
                            batch_id=f.batch_id,
                            records=nrec,
                            backend=names,
                            ms=round((time.monotonic() - t_recv) * 1e3, 3),
                        )
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
