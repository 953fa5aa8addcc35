"""A blocking client connection to ``offload serve`` with pipelined requests.

One :class:`Connection` is used by one thread at a time. Its socket is non-blocking and driven by a
selector, so a pipeline of requests is sent while results are received (no deadlock when both
directions are full), large payloads go out with ``sendmsg`` straight from the numpy buffers and
come in with ``recv_into`` straight into their result arrays.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .protocol import (
    ErrorCode,
    Flags,
    Frame,
    FrameReader,
    MsgType,
    ProtocolError,
    RemoteError,
    auth_digest,
    encode_frame,
    parse_error,
    parse_json,
)

__all__ = ["Connection", "ConnectionLost", "DeadlineExceeded", "parse_address"]

_IOV_MAX = 512


class ConnectionLost(ConnectionError):
    """The service closed the connection or the link dropped."""


class DeadlineExceeded(TimeoutError):
    """No answer from the service before the deadline. From :meth:`Connection.pipeline`:
    ``index`` is the request that missed its deadline of ``limit`` seconds."""

    index: int | None = None
    limit: float | None = None


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` to ``(host, port)`` (ValueError when malformed)."""
    a = address.strip()
    if a.startswith("["):
        host, sep, port = a[1:].partition("]:")
    else:
        host, sep, port = a.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"SmartNIC address {address!r} is not host:port")
    return host, int(port)


class Connection:
    """One authenticated connection (handshake done in the constructor).

    ``max_payload``: the largest payload accepted in a frame from the service, checked from its
    header before anything is allocated. HELLO, AUTH_OK, HEALTH_OK and ERROR have none, so it is
    0 until the caller raises it to the size of the results it asks for (``reader.max_payload``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        token: bytes | None = None,
        connect_timeout: float = 2.0,
        max_payload: int = 0,
    ) -> None:
        self.address = f"{host}:{port}"
        deadline = time.monotonic() + connect_timeout
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.setblocking(False)
            self.sel = selectors.DefaultSelector()
            self.sel.register(self.sock, selectors.EVENT_READ)
            self._events = selectors.EVENT_READ
            self.reader = FrameReader(max_payload=max_payload)
            self.inbox: deque[Frame] = deque()
            self.next_bid = 1
            self.closed = False
            self._eof = False
            self.bytes_sent = 0
            self.bytes_received = 0
            self.send_s = 0.0  # time inside sendmsg (bytes_sent / send_s: payload rate out)
            self.recv_s = 0.0  # time inside recv_into + decoding (rate in)
            self.server: dict[str, Any] = {}
            self._handshake(token, deadline)
        except BaseException:
            self.sock.close()
            raise

    # -- low level ----------------------------------------------------------------------------

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sel.close()
            except Exception:  # noqa: BLE001
                pass
            self.sock.close()

    def _wait(self, events: int, deadline: float) -> int:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(f"no answer from {self.address} before the deadline")
        if events != self._events:
            self.sel.modify(self.sock, events)
            self._events = events
        ready = self.sel.select(remaining)
        if not ready:
            raise DeadlineExceeded(f"no answer from {self.address} before the deadline")
        return ready[0][1]

    def _recv(self) -> None:
        """Read what is available (non-blocking); decoded frames go to ``inbox``."""
        if self._eof:
            raise ConnectionLost(f"{self.address} closed the connection")
        for _ in range(64):
            buf = self.reader.get_buffer()
            t0 = time.perf_counter()
            try:
                n = self.sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                raise ConnectionLost(f"link to {self.address} failed: {e}") from None
            if n == 0:
                self._eof = True  # frames already received are still delivered
                if not self.inbox:
                    raise ConnectionLost(f"{self.address} closed the connection")
                return
            self.bytes_received += n
            self.inbox.extend(self.reader.buffer_updated(n))
            self.recv_s += time.perf_counter() - t0
            if n < len(buf):
                return

    def _send(self, out: deque[memoryview]) -> None:
        """Send as much of ``out`` as the socket takes (non-blocking)."""
        while out:
            t0 = time.perf_counter()
            try:
                n = self.sock.sendmsg(list(out)[:_IOV_MAX] if len(out) > 1 else [out[0]])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                raise ConnectionLost(f"link to {self.address} failed: {e}") from None
            self.send_s += time.perf_counter() - t0
            self.bytes_sent += n
            while n and out:
                head = out[0]
                if n >= len(head):
                    n -= len(head)
                    out.popleft()
                else:
                    out[0] = head[n:]
                    n = 0
            if out:
                return  # partial send: the socket buffer is full, the selector says when

    def _send_all(self, bufs: list[Any], deadline: float) -> None:
        out = deque(memoryview(b).cast("B") for b in bufs)
        while out:
            self._send(out)
            if out:
                ev = self._wait(selectors.EVENT_READ | selectors.EVENT_WRITE, deadline)
                if ev & selectors.EVENT_READ:
                    self._recv()

    def _next_frame(self, deadline: float) -> Frame:
        if not self.inbox:
            self._recv()
        while not self.inbox:
            self._wait(selectors.EVENT_READ, deadline)
            self._recv()
        f = self.inbox.popleft()
        if f.type == MsgType.ERROR:
            code, msg = parse_error(f.meta)
            raise RemoteError(code, msg, f.batch_id)
        return f

    def _handshake(self, token: bytes | None, deadline: float) -> None:
        hello = self._next_frame(deadline)
        if hello.type != MsgType.HELLO:
            raise ProtocolError(ErrorCode.OUT_OF_ORDER, f"expected HELLO, got {hello.type.name}")
        info = parse_json(hello.meta)
        self.server = info
        try:
            nonce = bytes.fromhex(str(info.get("nonce", "")))
        except ValueError:
            raise ProtocolError(ErrorCode.BAD_FRAME, "bad nonce in HELLO") from None
        if hello.flags & Flags.AUTH_REQUIRED and token is None:
            # send the empty credential anyway: the refusal is logged by the service
            pass
        digest = auth_digest(token, nonce) if token is not None else b""
        self._send_all(encode_frame(MsgType.AUTH, 0, digest), deadline)
        ok = self._next_frame(deadline)
        if ok.type != MsgType.AUTH_OK:
            raise ProtocolError(ErrorCode.OUT_OF_ORDER, f"expected AUTH_OK, got {ok.type.name}")

    @property
    def at_eof(self) -> bool:
        """The service closed its side (frames received before are still delivered)."""
        return self._eof

    @property
    def max_frame(self) -> int:
        return int(self.server.get("max_frame", 64 << 20))

    def idle_ok(self) -> bool:
        """A pooled connection is usable: nothing unexpected arrived, not closed by the peer."""
        if self.closed or self.inbox:
            return False
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        return False  # EOF (b"") or an unexpected frame: either way not reusable

    # -- requests -----------------------------------------------------------------------------

    def health(self, timeout: float = 1.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        bid = self.next_bid
        self.next_bid += 1
        self._send_all(encode_frame(MsgType.HEALTH, bid), deadline)
        f = self._next_frame(deadline)
        if f.type != MsgType.HEALTH_OK or f.batch_id != bid:
            raise ProtocolError(
                ErrorCode.OUT_OF_ORDER, f"expected HEALTH_OK {bid}, got {f.type.name} {f.batch_id}"
            )
        return parse_json(f.meta)

    def pipeline(
        self,
        count: int | Callable[[], int],
        make: Callable[[int, int], list[Any]],
        handle: Callable[[int, Frame], None],
        *,
        window: int = 4,
        timeout: float | Callable[[int], float] = 30.0,
        took: Callable[[int, float], None] | None = None,
    ) -> None:
        """Send requests ``make(i, batch_id)`` for ``i < count`` with at most ``window``
        outstanding and give each answer to ``handle(i, frame)`` in order. ``count`` may be a
        callable, read again after every ``make`` (which may split its request and so add one).
        An exception from ``make`` is raised once the requests already sent are answered.

        The service answers in order, so request ``i``'s turn starts when it started to go out
        or when the answer before it arrived, whichever is later. A request not answered
        ``timeout`` seconds (``timeout(i)`` when callable) into its turn raises
        :class:`DeadlineExceeded`; ``took(i, seconds)`` is told the time each answered request
        took from its turn. An ERROR answer raises :class:`RemoteError`."""
        limit = timeout if callable(timeout) else (lambda i: timeout)
        given = count if callable(count) else (lambda: count)
        refused: Exception | None = None  # raised by ``make``: raised once the sent are answered

        def total() -> int:
            return nxt if refused is not None else given()

        outstanding: deque[tuple[int, int, float]] = deque()
        out: deque[memoryview] = deque()
        nxt = done = 0
        answered = 0.0  # when the last answer was handled
        R, W = selectors.EVENT_READ, selectors.EVENT_WRITE
        while done < total():
            while not out and nxt < total() and len(outstanding) < window:
                bid = self.next_bid
                try:
                    frame = make(nxt, bid)
                except Exception as e:  # noqa: BLE001 - re-raised below
                    refused = e
                    break
                self.next_bid += 1
                out.extend(memoryview(b).cast("B") for b in frame)
                outstanding.append((nxt, bid, time.monotonic()))
                nxt += 1
            if out:
                self._send(out)
            while self.inbox and outstanding:
                f = self.inbox.popleft()
                i, bid, _ = outstanding[0]
                if f.type == MsgType.ERROR:
                    code, msg = parse_error(f.meta)
                    raise RemoteError(code, msg, f.batch_id)
                if f.type != MsgType.RESULT or f.batch_id != bid:
                    raise ProtocolError(
                        ErrorCode.OUT_OF_ORDER, f"expected RESULT {bid}, got {f.type.name} {f.batch_id}"
                    )
                t_answer = time.monotonic()
                turn = max(outstanding.popleft()[2], answered)
                handle(i, f)
                if took is not None:
                    took(i, t_answer - turn)
                answered = time.monotonic()
                done += 1
            if done >= total():
                break
            if not out and (nxt < total() and len(outstanding) < window):
                continue
            if not self.inbox:
                # on loopback the answer is often in already (the service ran while we sent):
                # one non-blocking read before asking the selector saves a poll and a wakeup
                self._recv()
                if self.inbox:
                    continue
            i, _, sent = outstanding[0]
            try:
                ev = self._wait(R | (W if out else 0), max(sent, answered) + limit(i))
            except DeadlineExceeded as e:
                e.index, e.limit = i, limit(i)
                raise
            if ev & R:
                self._recv()
            if ev & W and out:
                self._send(out)
        if refused is not None:
            raise refused
