"""The SmartNIC service protocol, version 2 (``docs/smartnic_protocol.md``).

Every message is one **frame**: a fixed 40-byte header, a small ``meta`` section and an optional
``payload`` of whole 64-bit words. The header and the body (meta + payload) each carry a CRC32C, so
a corrupted frame is detected rather than computed on. A request carries an operator call and its
batch in the batch's own buffers, a result the result's arrays (:mod:`.codec`).

This module is pure: no sockets. :class:`FrameReader` is the incremental decoder used by both the
server (as an ``asyncio.BufferedProtocol`` buffer) and the client (``recv_into``); whatever bytes it
is fed, it either returns frames or raises :class:`ProtocolError` (the fuzz tests hold it to that).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

import google_crc32c
import numpy as np

__all__ = [
    "MAGIC",
    "VERSION",
    "HEADER",
    "HEADER_SIZE",
    "MsgType",
    "ErrorCode",
    "FATAL_CODES",
    "Flags",
    "ProtocolError",
    "RemoteError",
    "Header",
    "Frame",
    "FrameReader",
    "crc32c",
    "encode_frame",
    "parse_header",
    "pack_error",
    "parse_error",
    "pack_located_error",
    "parse_located_error",
    "LocatedError",
    "pack_json",
    "parse_json",
    "auth_digest",
    "DEFAULT_MAX_META",
    "DEFAULT_MAX_FRAME",
    "HANDSHAKE_MAX_META",
    "HANDSHAKE_STAGING",
]

MAGIC = b"OFLD"
VERSION = 2
# magic, version, type, flags, batch_id, meta_len, reserved, payload_len, body_crc, header_crc
HEADER = struct.Struct("<4sBBHQIIQII")
HEADER_SIZE = HEADER.size  # 40
assert HEADER_SIZE == 40
_HEAD36 = struct.Struct("<4sBBHQIIQI")  # the header without its CRC (the CRC covers these bytes)
_U32 = struct.Struct("<I")
_value = google_crc32c.value

DEFAULT_MAX_META = 64 << 10
DEFAULT_MAX_FRAME = 64 << 20
_SMALL_PAYLOAD = 64 << 10  # payloads up to this size are assembled in the staging buffer
_STAGING = 256 << 10
# Before authentication a server accepts one AUTH frame: its meta is an HMAC-SHA256 digest (32
# bytes, or empty), it has no payload. A reader in handshake mode holds HANDSHAKE_STAGING bytes.
HANDSHAKE_MAX_META = 256
HANDSHAKE_STAGING = 4096


class MsgType(enum.IntEnum):
    HELLO = 1  # server -> client on connect: nonce, whether auth is required, limits
    AUTH = 2  # client -> server: HMAC-SHA256(token, nonce) (empty without a token)
    AUTH_OK = 3  # server -> client: the connection may send requests
    HEALTH = 4  # client -> server
    HEALTH_OK = 5  # server -> client: JSON status
    REQUEST = 6  # client -> server: one batch (call and layout in JSON meta; arrays in payload)
    RESULT = 7  # server -> client: the result's arrays; JSON meta (backend, timing, layout)
    ERROR = 8  # either way: code + message; fatal codes close the connection


_MSG_TYPES = {int(m): m for m in MsgType}


class Flags(enum.IntFlag):
    NONE = 0
    AUTH_REQUIRED = 1  # in HELLO
    DRAINING = 2  # in any server frame: the server is shutting down, do not send more


class ErrorCode(enum.IntEnum):
    BAD_FRAME = 1  # magic, version, header CRC, lengths, unknown type (fatal)
    BAD_CRC = 2  # body CRC mismatch (fatal)
    TOO_LARGE = 3  # meta or payload above the limits (fatal)
    OUT_OF_ORDER = 4  # a frame the connection's state does not allow (fatal)
    AUTH_FAILED = 5  # missing or wrong credential (fatal)
    BAD_REQUEST = 6  # the request's body is malformed or its parameters are refused
    VALUE_ERROR = 7  # the operator rejected the input (e.g. a truncated varint)
    BACKEND_FAILED = 8  # the service's runtime could not complete the batch
    SHUTTING_DOWN = 9  # the service is draining and takes no new batch
    INTERNAL = 10  # anything else
    TOO_MANY_CONNECTIONS = 11  # instead of HELLO: the service is at its connection limit (fatal)


FATAL_CODES = frozenset(
    {
        ErrorCode.BAD_FRAME,
        ErrorCode.BAD_CRC,
        ErrorCode.TOO_LARGE,
        ErrorCode.OUT_OF_ORDER,
        ErrorCode.AUTH_FAILED,
        ErrorCode.TOO_MANY_CONNECTIONS,
    }
)


class ProtocolError(Exception):
    """A frame that does not follow this protocol. ``code`` is an :class:`ErrorCode`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class RemoteError(Exception):
    """The peer answered with an ERROR frame."""

    def __init__(self, code: int, message: str, batch_id: int = 0) -> None:
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = f"code {code}"
        super().__init__(f"service error {name}: {message}")
        self.code = code
        self.name = name
        self.message = message
        self.batch_id = batch_id

    @property
    def fatal(self) -> bool:
        return self.code in FATAL_CODES


def _ro(buf: Any) -> np.ndarray:
    v = np.frombuffer(buf, np.uint8).view()
    v.flags.writeable = False
    return v


_extend = google_crc32c.extend
_ndarray = np.ndarray


def _crc_extend(crc: int, b: Any) -> int:
    """Extend ``crc`` over one buffer without copying it when the C extension takes it as is."""
    if type(b) is bytes:
        return _extend(crc, b) if b else crc
    if type(b) is _ndarray and b.flags.c_contiguous:
        if not b.nbytes:
            return crc
        try:
            return _extend(crc, b)  # numpy arrays export a read-only-compatible buffer
        except TypeError:
            pass
    n = b.nbytes if isinstance(b, (np.ndarray, memoryview)) else len(b)
    if not n:
        return crc
    # small buffers: a copy is cheaper than a read-only view
    return _extend(crc, bytes(b) if n <= 4096 else _ro(b))


def crc32c(*bufs: Any) -> int:
    """CRC32C (Castagnoli) over the concatenation of ``bufs`` (no copy)."""
    crc = 0
    for b in bufs:
        crc = _crc_extend(crc, b)
    return crc


class Header(NamedTuple):
    type: MsgType
    flags: int
    batch_id: int
    meta_len: int
    payload_len: int
    body_crc: int


@dataclass
class Frame:
    type: MsgType
    flags: int
    batch_id: int
    meta: bytes
    payload: np.ndarray  # uint8, length a multiple of 8 (``words`` views it as uint64)
    sunk: bool = False  # the payload was received into a buffer given by ``FrameReader.sink``

    @property
    def words(self) -> np.ndarray:
        return self.payload.view(np.uint64)


def encode_frame(
    mtype: MsgType,
    batch_id: int = 0,
    meta: bytes = b"",
    payload: tuple[Any, ...] | list[Any] = (),
    flags: int = 0,
) -> list[Any]:
    """A frame as a list of buffers for ``sendmsg``/``write``: header+meta, then the payload
    buffers untouched (numpy arrays are sent in place)."""
    out: list[Any] = [b""]
    plen = 0
    crc = _extend(0, meta) if meta else 0
    for p in payload:
        if type(p) is _ndarray:
            if not p.flags.c_contiguous:
                p = np.ascontiguousarray(p)
            n = p.nbytes
            if not n:
                continue
            crc = _crc_extend(crc, p)
            out.append(memoryview(p).cast("B"))
        else:
            if not isinstance(p, (bytes, memoryview)):
                # ndarray.data is memoryview(array) (numpy<2's stubs hide ndarray's buffer on 3.11)
                p = np.ascontiguousarray(p).data.cast("B")
            n = memoryview(p).nbytes if type(p) is not bytes else len(p)
            if not n:
                continue
            crc = _crc_extend(crc, p)
            out.append(p)
        plen += n
    if plen % 8:
        raise ValueError(f"payload length {plen} is not a multiple of 8")
    head = _HEAD36.pack(MAGIC, VERSION, int(mtype), int(flags), batch_id, len(meta), 0, plen, crc)
    out[0] = head + _U32.pack(_value(head)) + meta
    return out


def parse_header(
    buf: Any, *, max_meta: int = DEFAULT_MAX_META, max_payload: int = DEFAULT_MAX_FRAME
) -> Header:
    """Check and parse a 40-byte header (:class:`ProtocolError` when it is not one)."""
    b = buf[:HEADER_SIZE] if type(buf) is bytes else bytes(buf[:HEADER_SIZE])
    if len(b) != HEADER_SIZE:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"short header ({len(b)} bytes)")
    magic, version, mtype, flags, batch_id, meta_len, reserved, plen, body_crc, hcrc = HEADER.unpack(b)
    if magic != MAGIC:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"bad magic {magic!r}")
    if _value(b[:-4]) != hcrc:
        raise ProtocolError(ErrorCode.BAD_FRAME, "header CRC mismatch")
    if version != VERSION:
        raise ProtocolError(
            ErrorCode.BAD_FRAME,
            f"protocol version {version} is not supported: "
            f"this side speaks version {VERSION} (client and "
            "service must be the same offload release)",
        )
    t = _MSG_TYPES.get(mtype)
    if t is None:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"unknown message type {mtype}")
    if reserved != 0:
        raise ProtocolError(ErrorCode.BAD_FRAME, "reserved header field is not 0")
    if meta_len > max_meta:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"meta of {meta_len} bytes exceeds {max_meta}")
    if plen > max_payload:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"payload of {plen} bytes exceeds {max_payload}")
    if plen % 8:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"payload length {plen} is not whole words")
    return Header(t, flags, batch_id, meta_len, plen, body_crc)


class FrameReader:
    """Incremental frame decoder with caller-visible buffers (no intermediate copies of large
    payloads: they are received straight into their final array).

    Use: ``buf = r.get_buffer()``; fill ``k`` bytes of it (``sock.recv_into(buf)``);
    ``frames = r.buffer_updated(k)``. Or ``r.feed(data)`` for tests.

    ``handshake=True`` (a server before authentication): only an AUTH frame of at most
    ``HANDSHAKE_MAX_META`` bytes of meta and no payload is accepted; any other frame is refused
    from its header (``OUT_OF_ORDER``, ``TOO_LARGE``) before any of its body is buffered. The
    reader holds ``HANDSHAKE_STAGING`` bytes and stops after that one frame; :meth:`admit` then
    applies ``max_meta``/``max_payload`` and returns the frames that followed it.
    """

    def __init__(
        self,
        *,
        max_meta: int = DEFAULT_MAX_META,
        max_payload: int = DEFAULT_MAX_FRAME,
        handshake: bool = False,
    ) -> None:
        self.max_meta = max_meta
        self.max_payload = max_payload
        self.handshake = handshake
        self._held = False  # handshake mode: the one frame was returned; the rest waits
        size = HANDSHAKE_STAGING if handshake else self._staging_size()
        self._buf = bytearray(size)
        self._mv = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._hdr: Header | None = None
        self._meta: bytes | None = None
        self._direct: np.ndarray | None = None
        self._direct_pos = 0
        self._sunk = False
        self.failed: ProtocolError | None = None
        # Optional: ``sink(header)`` returns a writable uint8 array of exactly ``payload_len``
        # bytes to receive that frame's payload into (e.g. a slice of a result array), or None.
        self.sink: Any = None

    def _staging_size(self) -> int:
        return max(_STAGING, HEADER_SIZE + self.max_meta + _SMALL_PAYLOAD + 4096)

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame held (0 between frames)."""
        return (
            (self._end - self._start)
            + (self._direct_pos if self._direct is not None else 0)
            + (HEADER_SIZE if self._hdr is not None else 0)
        )

    @property
    def held_bytes(self) -> int:
        """Bytes of buffer this reader holds: its staging buffer and the array an incomplete
        large payload is being received into (its full size, allocated from the header)."""
        return len(self._buf) + (self._direct.nbytes if self._direct is not None else 0)

    def admit(self, *, max_meta: int, max_payload: int) -> list[Frame]:
        """Leave handshake mode (the peer is authenticated): apply these limits and return the
        frames already received after the handshake frame."""
        self.max_meta, self.max_payload = max_meta, max_payload
        self.handshake = self._held = False
        size = self._staging_size()
        if len(self._buf) < size:
            n = self._end - self._start
            buf = bytearray(size)
            buf[:n] = self._mv[self._start : self._end]
            self._buf, self._mv = buf, memoryview(buf)
            self._start, self._end = 0, n
        return self.buffer_updated(0)

    def release(self) -> None:
        """Drop every buffer at once (the connection is closed); later bytes are discarded."""
        self._buf = bytearray(0)
        self._mv = memoryview(self._buf)
        self._direct, self._direct_pos, self._hdr, self._meta = None, 0, None, None
        self._start = self._end = 0
        self.sink = None
        self.failed = self.failed or ProtocolError(ErrorCode.BAD_FRAME, "connection closed")

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        if self.failed is not None:
            raise self.failed
        if self._direct is not None:
            return self._direct.data[self._direct_pos :]  # ndarray.data: memoryview(self._direct)
        if len(self._buf) - self._end < min(_SMALL_PAYLOAD, len(self._buf) // 2):
            n = self._end - self._start
            self._buf[:n] = self._mv[self._start : self._end]
            self._start, self._end = 0, n
        if self._end == len(self._buf):  # only when held in handshake mode: a full buffer
            self.failed = ProtocolError(
                ErrorCode.TOO_LARGE, f"more than {len(self._buf)} bytes sent before authentication"
            )
            raise self.failed
        return self._mv[self._end :]

    def buffer_updated(self, nbytes: int) -> list[Frame]:
        if self.failed is not None:
            raise self.failed
        try:
            if self._direct is not None:
                self._direct_pos += nbytes
                if self._direct_pos < self._direct.shape[0]:
                    return []
                payload, self._direct, self._direct_pos = self._direct, None, 0
                return [self._finish(payload)]
            self._end += nbytes
            return self._parse()
        except ProtocolError as e:
            self.failed = e
            raise

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        mv = memoryview(data)
        while len(mv):
            buf = self.get_buffer()
            k = min(len(buf), len(mv))
            buf[:k] = mv[:k]
            mv = mv[k:]
            frames.extend(self.buffer_updated(k))
        return frames

    def _finish(self, payload: np.ndarray) -> Frame:
        hdr, meta = self._hdr, self._meta
        assert hdr is not None and meta is not None
        self._hdr = self._meta = None
        sunk, self._sunk = self._sunk, False
        if crc32c(meta, payload) != hdr.body_crc:
            raise ProtocolError(
                ErrorCode.BAD_CRC, f"body CRC mismatch in {hdr.type.name} frame {hdr.batch_id}"
            )
        return Frame(hdr.type, hdr.flags, hdr.batch_id, meta, payload, sunk)

    def _target(self, hdr: Header) -> np.ndarray:
        if self.sink is not None and hdr.payload_len:
            buf = self.sink(hdr)
            if buf is not None and buf.dtype == np.uint8 and buf.shape == (hdr.payload_len,):
                self._sunk = True
                return buf
        return np.empty(hdr.payload_len, np.uint8)

    def _header(self) -> Header:
        head = self._mv[self._start : self._start + HEADER_SIZE]
        if not self.handshake:
            return parse_header(head, max_meta=self.max_meta, max_payload=self.max_payload)
        hdr = parse_header(head, max_meta=1 << 32, max_payload=1 << 64)
        if hdr.type != MsgType.AUTH:
            raise ProtocolError(ErrorCode.OUT_OF_ORDER, f"expected AUTH, got {hdr.type.name}")
        if hdr.meta_len > HANDSHAKE_MAX_META or hdr.payload_len:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                (
                    f"AUTH frame with {hdr.meta_len} bytes of meta and {hdr.payload_len} of payload: "
                    f"an AUTH frame has at most {HANDSHAKE_MAX_META} bytes of meta and no payload"
                ),
            )
        return hdr

    def _parse(self) -> list[Frame]:
        frames: list[Frame] = []
        mv = self._mv
        while not self._held:
            if self._hdr is None:
                if self._end - self._start < HEADER_SIZE:
                    break
                self._hdr = self._header()
                self._start += HEADER_SIZE
            hdr = self._hdr
            if self._meta is None:
                if self._end - self._start < hdr.meta_len:
                    break
                self._meta = bytes(mv[self._start : self._start + hdr.meta_len])
                self._start += hdr.meta_len
            avail = self._end - self._start
            plen = hdr.payload_len
            if plen <= avail:
                if self.sink is None or not plen:
                    payload = np.frombuffer(self._buf, np.uint8, plen, self._start).copy()
                else:
                    payload = self._target(hdr)
                    payload[:] = np.frombuffer(self._buf, np.uint8, plen, self._start)
                self._start += plen
                frames.append(self._finish(payload))
                self._held = self.handshake
                continue
            if plen <= _SMALL_PAYLOAD:
                break
            payload = self._target(hdr)
            payload[:avail] = np.frombuffer(mv[self._start : self._end], np.uint8)
            self._direct, self._direct_pos = payload, avail
            self._start = self._end = 0
            break
        if self._start == self._end:
            self._start = self._end = 0
        return frames


# ---------------------------------------------------------------------------------------------
# message bodies (REQUEST and RESULT bodies: :mod:`.codec`)
# ---------------------------------------------------------------------------------------------

_ERR = struct.Struct("<HH")


def pack_error(code: ErrorCode, message: str) -> bytes:
    m = message.encode("utf-8", "replace")[:4000]
    return _ERR.pack(int(code), 0) + m


def parse_error(meta: bytes) -> tuple[int, str]:
    if len(meta) < _ERR.size:
        raise ProtocolError(ErrorCode.BAD_FRAME, "error meta too short")
    code, _ = _ERR.unpack_from(meta, 0)
    return code, meta[_ERR.size :].decode("utf-8", "replace")


# A VALUE_ERROR names the record (and byte) where the input is bad in the chunk the service got;
# its message is JSON locating those numbers so that the client restates them for its own batch.
_RECORD = re.compile(r"\b(?:sequence|record|index) (\d+)")
_BYTE = re.compile(r"\bbyte offset (\d+)")


def pack_located_error(error: ValueError | TypeError) -> bytes:
    """A VALUE_ERROR's meta: ``{"type", "message", "record": [start, end] | null, "byte": ...}``
    where the spans are the characters of the message holding the chunk's record index and byte
    offset (the first "sequence N"/"record N"/"index N" and "byte offset M")."""
    message = str(error)
    spans: dict[str, Any] = {
        "type": "TypeError" if isinstance(error, TypeError) else "ValueError",
        "message": message,
    }
    for key, pattern in (("record", _RECORD), ("byte", _BYTE)):
        m = pattern.search(message)
        spans[key] = [m.start(1), m.end(1)] if m else None
    return pack_error(ErrorCode.VALUE_ERROR, json.dumps(spans, separators=(",", ":")))


class LocatedError(NamedTuple):
    """A VALUE_ERROR's content: the exception type to raise, its message and the spans of the
    message holding the record index and the byte offset (None: not in the message)."""

    type: type[ValueError] | type[TypeError]
    message: str
    record: tuple[int, int] | None
    byte: tuple[int, int] | None


def parse_located_error(message: str) -> LocatedError:
    """A VALUE_ERROR's message read (spans checked: each holds a decimal number of the message;
    an unreadable one is None; a message that is not located JSON is a plain ValueError's)."""
    try:
        obj = json.loads(message)
        text = obj["message"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return LocatedError(ValueError, message, None, None)
    if not isinstance(text, str):
        return LocatedError(ValueError, message, None, None)
    kind = TypeError if obj.get("type") == "TypeError" else ValueError

    def span(key: str) -> tuple[int, int] | None:
        v = obj.get(key)
        if (
            isinstance(v, list)
            and len(v) == 2
            and all(type(x) is int for x in v)
            and 0 <= v[0] < v[1] <= len(text)
            and text[v[0] : v[1]].isdigit()
        ):
            return v[0], v[1]
        return None

    return LocatedError(kind, text, span("record"), span("byte"))


def pack_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def parse_json(meta: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(meta.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"bad JSON meta: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "JSON meta is not an object")
    return obj


def auth_digest(token: bytes, nonce: bytes) -> bytes:
    """The client's answer to a HELLO challenge: HMAC-SHA256(token, nonce)."""
    return hmac.new(token, nonce, hashlib.sha256).digest()
