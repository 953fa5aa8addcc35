"""``delta_varint_encode`` / ``delta_varint_decode`` kernels: zigzag deltas as LEB128 varints.

Both directions run in two passes, so that chunks of sequences can run on several threads: encode
sizes every sequence, the offsets are the sizes' running sum, then fills the bytes; decode counts
every sequence's values (and finds the first malformed varint), then fills the values.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .intrinsics import kernel, store_u64

__all__ = [
    "decode_count_ser",
    "decode_error",
    "decode_fill_ser",
    "decode_ser",
    "encode_fill_ser",
    "encode_ser",
    "encode_sizes_ser",
]

_U = np.uint64


@njit(inline="always")
def _zigzag(v, prev):
    d = _U(v) - _U(prev)
    return (d << _U(1)) ^ (_U(0) - (d >> _U(63)))


@njit(inline="always")
def _varint_len(z):
    return (
        1
        + (z >= _U(1 << 7))
        + (z >= _U(1 << 14))
        + (z >= _U(1 << 21))
        + (z >= _U(1 << 28))
        + (z >= _U(1 << 35))
        + (z >= _U(1 << 42))
        + (z >= _U(1 << 49))
        + (z >= _U(1 << 56))
        + (z >= _U(1 << 63))
    )


@njit
def _encode_sizes_range(vo, vals, sizes, lo, hi):
    """``sizes[i + 1]`` = encoded byte count of sequence i (for a cumsum into offsets)."""
    for i in range(lo, hi):
        prev = np.int64(0)
        tot = 0
        for j in range(vo[i], vo[i + 1]):
            v = vals[j]
            tot += _varint_len(_zigzag(v, prev))
            prev = v
        sizes[i + 1] = tot


_C80 = _U(0x8080808080808080)


@njit(inline="always")
def _spread7(z):
    """The low 56 bits of ``z`` as eight 7-bit groups, one per byte (high bits 0)."""
    return (
        (z & _U(0x7F))
        | ((z << _U(1)) & _U(0x7F00))
        | ((z << _U(2)) & _U(0x7F0000))
        | ((z << _U(3)) & _U(0x7F000000))
        | ((z << _U(4)) & _U(0x7F00000000))
        | ((z << _U(5)) & _U(0x7F0000000000))
        | ((z << _U(6)) & _U(0x7F000000000000))
        | ((z << _U(7)) & _U(0x7F00000000000000))
    )


@njit
def _encode_fill_range(vo, vals, offsets, data, lo, hi):
    for i in range(lo, hi):
        prev = np.int64(0)
        p = offsets[i]
        lim = offsets[i + 1] - 8  # never store past this sequence (another thread may own it)
        for j in range(vo[i], vo[i + 1]):
            v = vals[j]
            z = _zigzag(v, prev)
            prev = v
            if z < _U(1 << 14) or z >= _U(1 << 56) or p > lim:
                # 1-2 bytes (a short loop is fastest), 9-10 bytes, or the sequence's last 8 bytes
                while z >= _U(0x80):
                    data[p] = np.uint8((z & _U(0x7F)) | _U(0x80))
                    z >>= _U(7)
                    p += 1
                data[p] = np.uint8(z)
                p += 1
            else:
                # 3..8 bytes: build the whole varint in a word, one unaligned 8-byte store (the
                # bytes past the varint belong to this sequence and are overwritten next)
                n = _varint_len(z)
                store_u64(data, p, _spread7(z) | (_C80 & ((_U(1) << _U(8 * n - 8)) - _U(1))))
                p += n


# Decode error codes (the messages are golden.delta_varint_decode_seq's).
_ERR_CUT, _ERR_LONG, _ERR_TENTH = 1, 2, 3


@njit
def _decode_count_range(offsets, data, counts, lo, hi, err):
    """``counts[i + 1]`` = value count of sequence i; the first malformed varint of the range
    goes to ``err`` = (code, sequence, byte offset of the varint's first byte) and stops."""
    for i in range(lo, hi):
        s = np.int64(offsets[i])
        e = np.int64(offsets[i + 1])
        count = 0
        run = 0
        start = s
        for p in range(s, e):
            byte = data[p]
            if run == 0:
                start = p
            run += 1
            if byte < 0x80:
                if run == 10 and byte > 1:
                    err[0] = _ERR_TENTH
                    err[1] = i
                    err[2] = start
                    return
                count += 1
                run = 0
            elif run == 10:
                err[0] = _ERR_LONG
                err[1] = i
                err[2] = start
                return
        if run:
            err[0] = _ERR_CUT
            err[1] = i
            err[2] = start
            return
        counts[i + 1] = count


@njit
def _decode_fill_range(offsets, data, vo, out, lo, hi):
    for i in range(lo, hi):
        p = np.int64(offsets[i])
        e = np.int64(offsets[i + 1])
        k = vo[i]
        prev = _U(0)
        while p < e:
            z = _U(0)
            shift = _U(0)
            while True:
                byte = data[p]
                p += 1
                z |= (_U(byte) & _U(0x7F)) << shift
                shift += _U(7)
                if byte < 0x80:
                    break
            prev += (z >> _U(1)) ^ (_U(0) - (z & _U(1)))
            out[k] = np.int64(prev)
            k += 1


# ---------------------------------------------------------------------------------------------
# Kernels: each runs one contiguous range on the calling thread with the GIL released; the
# backend calls them on the whole batch (small batches) or on chunks from several threads.
# ---------------------------------------------------------------------------------------------


@kernel
def encode_ser(vo, vals):
    n = vo.shape[0] - 1
    offsets = np.zeros(n + 1, np.int64)
    _encode_sizes_range(vo, vals, offsets, 0, n)
    for i in range(n):
        offsets[i + 1] += offsets[i]
    data = np.empty(offsets[n], np.uint8)
    _encode_fill_range(vo, vals, offsets, data, 0, n)
    return offsets, data


@kernel
def encode_sizes_ser(vo, vals, sizes):
    """``sizes[i + 1]`` = byte count of sequence i (``vo``/``sizes`` are matching slices)."""
    _encode_sizes_range(vo, vals, sizes, 0, vo.shape[0] - 1)


@kernel
def encode_fill_ser(vo, vals, offsets, data):
    _encode_fill_range(vo, vals, offsets, data, 0, vo.shape[0] - 1)


@kernel
def decode_ser(offsets, data, err):
    """Returns (value_offsets, values); on a malformed varint fills ``err`` and returns empties."""
    n = offsets.shape[0] - 1
    vo = np.zeros(n + 1, np.int64)
    _decode_count_range(offsets, data, vo, 0, n, err)
    if err[0] != 0:
        return vo, np.empty(0, np.int64)
    for i in range(n):
        vo[i + 1] += vo[i]
    out = np.empty(vo[n], np.int64)
    _decode_fill_range(offsets, data, vo, out, 0, n)
    return vo, out


@kernel
def decode_count_ser(offsets, data, counts, err):
    """``counts[i + 1]`` = value count of sequence i; the range's first error goes to ``err``."""
    _decode_count_range(offsets, data, counts, 0, offsets.shape[0] - 1, err)


@kernel
def decode_fill_ser(offsets, data, vo, out):
    _decode_fill_range(offsets, data, vo, out, 0, offsets.shape[0] - 1)


# ---------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------


def decode_error(code: int, seq: int, off: int, data: np.ndarray) -> ValueError:
    """The error for a malformed varint that a count kernel reported in ``err``: its code,
    sequence and the byte offset of its first byte."""
    head = f"malformed varint in sequence {seq} at byte offset {off}: "
    if code == _ERR_CUT:
        return ValueError(head + "cut off at the end of the sequence")
    if code == _ERR_LONG:
        return ValueError(head + "longer than 10 bytes")
    return ValueError(head + f"10th byte is 0x{int(data[off + 9]):02x}, above 0x01 (value exceeds 64 bits)")
