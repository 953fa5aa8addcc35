"""``delta_varint_encode`` / ``delta_varint_decode`` kernels: zigzag deltas as LEB128 varints.

Encode builds each varint of up to 8 bytes in a register and stores it with one unaligned 8-byte
store: ``pdep`` spreads the value's 7-bit groups over the bytes, ``lzcnt`` of the result gives the
length, the continuation bits are a mask of the bytes below the top one. Decode loads 8 bytes at
a varint's start: the bytes without their high bit end varints (``tzcnt`` finds the first two),
one ``pext`` gathers the 7-bit groups of the first two varints when both end in the load. Varints
of 9 or 10 bytes (deltas of 2**55 and more), malformed ones and the last 7 bytes of a buffer take
an exact byte loop, so the kernels never read or write outside their buffers and report the
golden model's errors.

Decoding waits for the previous varints' length (load, ``tzcnt``, add), so the decoder runs two
independent stretches of sequences ("lanes") in one loop. The output of a lane starts at the
number of varints before it: a population count of the bytes without a high bit.

Where the CPU has no BMI2 (:data:`.intrinsics.HAS_BMI2`), ``pdep``/``pext`` are shifts and masks.

Serial calls (:func:`encode_ser`, :func:`decode_ser`) run in one pass over the data and allocate
their outputs with numpy (transparent huge pages: a third of the page-fault time of numba's
allocations). The parallel path runs in two passes, so that chunks of sequences can run on
several threads: encode sizes every sequence, the offsets are the sizes' running sum, then fills
the bytes; decode counts every sequence's values (and finds the first malformed varint), then
fills the values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from .intrinsics import (
    HAS_BMI2,
    address,
    clz64,
    ctz64,
    kernel,
    load_u64,
    pdep64,
    peek_u8,
    peek_u64,
    pext64,
    poke_u64,
    popcount64,
    store_u64,
)

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
_C80 = _U(0x8080808080808080)
_M7F = _U(0x7F7F7F7F7F7F7F7F)
_BIG = _U(1 << 56)  # zigzag values from here on take 9 or 10 bytes
# Independent decode chains in one loop. Measured on the bench's sequences (M values/s into a
# preallocated output): one value a step 395 with four lanes; two values a step 423 with two
# lanes, 405 with four; the load's address off the compare's chain 448 with two, 446 with three.
_LANES = 2


# ---------------------------------------------------------------------------------------------
# One value
# ---------------------------------------------------------------------------------------------


@njit(inline="always")
def _zigzag(v, prev):
    d = _U(v) - _U(prev)
    return (d << _U(1)) ^ (_U(0) - (d >> _U(63)))


@njit(inline="always")
def _unzigzag(z):
    return (z >> _U(1)) ^ (_U(0) - (z & _U(1)))


@njit(inline="always")
def _varint_len(z):
    """Bytes of the varint of ``z``: 1 + (bit length - 1) // 7."""
    return np.int64((_U(63) - clz64(z | _U(1))) // _U(7)) + 1


@njit(inline="always")
def _spread7(z, bmi2):
    """The low 56 bits of ``z`` as eight 7-bit groups, one per byte (high bits 0)."""
    if bmi2:
        return pdep64(z, _M7F)
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


@njit(inline="always")
def _gather7(w, bmi2):
    """The low 7 bits of each byte of ``w``, packed: the inverse of :func:`_spread7`."""
    if bmi2:
        return pext64(w, _M7F)
    return (
        (w & _U(0x7F))
        | ((w >> _U(1)) & _U(0x3F80))
        | ((w >> _U(2)) & _U(0x1FC000))
        | ((w >> _U(3)) & _U(0xFE00000))
        | ((w >> _U(4)) & _U(0x7F0000000))
        | ((w >> _U(5)) & _U(0x3F800000000))
        | ((w >> _U(6)) & _U(0x1FC0000000000))
        | ((w >> _U(7)) & _U(0xFE000000000000))
    )


# ---------------------------------------------------------------------------------------------
# Encode
# ---------------------------------------------------------------------------------------------


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


@njit
def _encode_slow(data, p, z):
    """The varint of ``z`` byte by byte at ``data[p:]``; returns the end."""
    while z >= _U(0x80):
        data[p] = np.uint8((z & _U(0x7F)) | _U(0x80))
        z >>= _U(7)
        p += 1
    data[p] = np.uint8(z)
    return p + 1


@njit(inline="always")
def _encode_range(vo, vals, offsets, data, lo, hi, p, lim, one_pass, bmi2):
    """Sequences ``lo..hi-1`` from byte ``p`` on; 8-byte stores only at or below ``lim``.

    The bytes an 8-byte store writes past its varint are this range's (``lim`` keeps them below
    the range's end) and are overwritten by the next varints, so the stores go in order. With
    ``one_pass`` (a literal), ``data`` has room for 10 bytes a value and 8 more, so no store
    needs the check, and ``offsets[i + 1]`` is set to the end of sequence i. Returns the end."""
    for i in range(lo, hi):
        prev = np.int64(0)
        for j in range(vo[i], vo[i + 1]):
            v = vals[_U(j)]  # an unsigned index: no negative-index wraparound in the loop
            z = _zigzag(v, prev)
            prev = v
            if z < _BIG and (one_pass or p <= lim):  # one pass: 10 bytes a value, always room
                s = _spread7(z, bmi2)
                top = (_U(63) - clz64(s | _U(1))) >> _U(3)  # index of the varint's last byte
                store_u64(data, p, s | (_C80 & ((_U(1) << (top << _U(3))) - _U(1))))
                p += np.int64(top) + 1
            else:  # 9-10 bytes, or the last 7 bytes of the range
                p = _encode_slow(data, p, z)
        if one_pass:
            offsets[i + 1] = p
    return p


@njit(inline="always")
def _encode_fill_range(vo, vals, offsets, data, lo, hi, bmi2):
    _encode_range(vo, vals, offsets, data, lo, hi, offsets[lo], offsets[hi] - 8, False, bmi2)


@njit(inline="always")
def _encode_one_pass(vo, vals, offsets, data, bmi2):
    """All sequences into ``data`` (room for 10 bytes a value); ``offsets[0]`` = 0; returns the
    byte count."""
    offsets[0] = 0
    return _encode_range(vo, vals, offsets, data, 0, vo.shape[0] - 1, 0, data.shape[0] - 8, True, bmi2)


# ---------------------------------------------------------------------------------------------
# Decode
# ---------------------------------------------------------------------------------------------

# Decode error codes (the messages are golden.delta_varint_decode_seq's).
_ERR_CUT, _ERR_LONG, _ERR_TENTH = 1, 2, 3


@njit
def _count_ends(data, a, b):
    """Bytes without their high bit (varint ends) in ``data[a:b]``."""
    c = 0
    p = a
    while p + 8 <= b:
        c += np.int64(popcount64(~load_u64(data, p) & _C80))
        p += 8
    while p < b:
        c += data[p] < 0x80
        p += 1
    return c


@njit
def _decode_slow(d, p, e):
    """The varint at byte ``p`` (< ``e``, the sequence's end) of the buffer at address ``d``,
    byte by byte as the golden model reads it: (z, end, error code or 0)."""
    z = _U(0)
    shift = _U(0)
    start = p
    code = -1
    while code < 0:
        if p >= e:
            code = _ERR_CUT
        else:
            byte = peek_u8(d + p)
            if p - start == 9 and byte >= _U(0x80):
                code = _ERR_LONG
            elif p - start == 9 and byte > _U(1):
                code = _ERR_TENTH
            else:
                z |= (byte & _U(0x7F)) << shift
                shift += _U(7)
                p += 1
                if byte < _U(0x80):
                    code = 0
    return z, p, code


def _decoder(bmi2: bool) -> Any:
    """The lane decoder, with ``pext`` where ``bmi2`` (a constant: no branch in the loop)."""

    @njit(inline="always")
    def next_seq(po, pvo, i, stop, k):
        """From sequence ``i`` on, past empty sequences (their value offsets set to ``k``):
        (i, its end byte); ``i == stop`` when the lane has none left."""
        while i < stop and peek_u64(po + 8 * i + 8) == peek_u64(po + 8 * i):
            poke_u64(pvo + 8 * i + 8, _U(k))
            i += 1
        return i, np.int64(peek_u64(po + 8 * min(i + 1, stop)))

    @njit(inline="always")
    def step(po, d, pvo, pout, lane, safe):
        """The next one or two varints of a lane (i, stop, byte p, sequence end e, address of
        its next value, running value, address of its error row): their values stored, on at
        the sequence's end. A malformed varint stops the lane (i = stop) with (code, sequence,
        offset) stored.

        One 8-byte load, at most at the buffer's last 8 bytes (``safe``: the last byte with 8
        bytes from it, negative for a buffer shorter than 8 bytes: no load at all). Its bytes
        without a high bit end varints; when the first two ends are in the load and the
        sequence, one ``pext`` gathers both varints' 7-bit groups; the slow path reads only the
        sequence's bytes (9- and 10-byte varints, the buffer's last 7 bytes, malformed ones)."""
        i, stop, p, e, pk, prev, perr = lane
        code = 0
        q = p
        fast = False
        if p <= safe:  # a predicted branch: the load's address waits for no compare
            w = peek_u64(d + p)
            t = ~w & _C80  # the high bit of each byte that ends a varint
            t2 = t & (t - _U(1))  # from the second end on
            n1 = np.int64(ctz64(t) >> _U(3)) + 1  # 9 if no byte of the load ends one
            n2 = np.int64(ctz64(t2) >> _U(3)) + 1
            r = e - p
            if (t != _U(0)) & (n1 <= r):
                fast = True
                g = _gather7(w & (t2 ^ (t2 - _U(1))), bmi2)  # both varints' groups (all if no t2)
                s1 = _U(7 * n1)
                v1 = prev + _unzigzag(g & ((_U(1) << s1) - _U(1)))
                poke_u64(pk, v1)
                if (t2 != _U(0)) & (n2 <= r):
                    prev = v1 + _unzigzag(g >> s1)
                    poke_u64(pk + 8, prev)
                    q = p + n2
                    pk += 16
                else:
                    prev = v1
                    q = p + n1
                    pk += 8
        if not fast:
            z, q, code = _decode_slow(d, p, e)
            if code != 0:
                poke_u64(perr, _U(code))
                poke_u64(perr + 8, _U(i))
                poke_u64(perr + 16, _U(p))
                i = stop
            else:
                prev += _unzigzag(z)
                poke_u64(pk, prev)
                pk += 8
        if (code == 0) & (q == e):
            k = (pk - pout) >> 3
            poke_u64(pvo + 8 * i + 8, _U(k))
            i, e = next_seq(po, pvo, i + 1, stop, k)
            prev = _U(0)
        return i, stop, q, e, pk, prev, perr

    @njit(inline="always")
    def lane(offsets, po, pvo, pout, perr, lo, hi, k):
        i, e = next_seq(po, pvo, lo, hi, k)
        return i, hi, np.int64(offsets[i]), e, pout + 8 * k, _U(0), perr

    @njit
    def decode_range(offsets, data, vo, out, starts, ks, err):
        """Sequences ``starts[0]..starts[2]-1`` into ``out`` and ``vo`` (offsets of values in
        ``out``), as two lanes: lane ``l`` takes sequences ``starts[l]..starts[l+1]-1`` and
        writes from ``out[ks[l]]`` on. Its first malformed varint goes to ``err[l]``."""
        safe = data.shape[0] - 8  # the last byte with 8 bytes of data from it
        po, d, pvo, pout, perr = address(offsets), address(data), address(vo), address(out), address(err)
        vo[starts[0]] = ks[0]
        l0 = lane(offsets, po, pvo, pout, perr, starts[0], starts[1], ks[0])
        l1 = lane(offsets, po, pvo, pout, perr + 24, starts[1], starts[2], ks[1])
        while l0[0] < l0[1] and l1[0] < l1[1]:
            l0 = step(po, d, pvo, pout, l0, safe)
            l1 = step(po, d, pvo, pout, l1, safe)
        while l0[0] < l0[1]:
            l0 = step(po, d, pvo, pout, l0, safe)
        while l1[0] < l1[1]:
            l1 = step(po, d, pvo, pout, l1, safe)

    return decode_range


_decode_lanes = _decoder(HAS_BMI2)


@njit
def _lane_bounds(offsets, data, k0, starts, ks):
    """Lanes of about equal bytes: their first sequences (``starts``, and the end) and the
    first value of each (``ks``: ``k0`` plus the varint ends before it)."""
    n = offsets.shape[0] - 1
    a = offsets[0]
    span = offsets[n] - a
    starts[0] = 0
    ks[0] = k0
    for ln in range(1, _LANES):
        s = np.searchsorted(offsets, a + span * ln // _LANES)
        starts[ln] = max(min(s, n), starts[ln - 1])
        ks[ln] = ks[ln - 1] + _count_ends(data, offsets[starts[ln - 1]], offsets[starts[ln]])
    starts[_LANES] = n


@njit
def _first_error(lane_err, err):
    """The first lane's error (lanes are in sequence order) into ``err``."""
    for ln in range(lane_err.shape[0]):
        if lane_err[ln, 0] != 0:
            err[0] = lane_err[ln, 0]
            err[1] = lane_err[ln, 1]
            err[2] = lane_err[ln, 2]
            return


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


# ---------------------------------------------------------------------------------------------
# Kernels: each runs one contiguous range on the calling thread with the GIL released; the
# backend calls them on the whole batch (small batches) or on chunks from several threads.
# ---------------------------------------------------------------------------------------------


@kernel
def encode_one_pass_ser(vo, vals, offsets, data):
    """All sequences into ``offsets`` (n + 1) and ``data`` (10 bytes a value); returns the byte
    count."""
    return _encode_one_pass(vo, vals, offsets, data, HAS_BMI2)


@kernel
def encode_sizes_ser(vo, vals, sizes):
    """``sizes[i + 1]`` = byte count of sequence i (``vo``/``sizes`` are matching slices)."""
    _encode_sizes_range(vo, vals, sizes, 0, vo.shape[0] - 1)


@kernel
def encode_fill_ser(vo, vals, offsets, data):
    _encode_fill_range(vo, vals, offsets, data, 0, vo.shape[0] - 1, HAS_BMI2)


@kernel
def count_ends_ser(offsets, data):
    """Varint ends (values, if well formed) in the bytes of all sequences of ``offsets``."""
    return _count_ends(data, offsets[0], offsets[offsets.shape[0] - 1])


@kernel
def decode_into_ser(offsets, data, vo, out, err):
    """All sequences of ``offsets`` (int64) into ``vo`` (n + 1) and ``out`` (sized by
    :func:`count_ends_ser`); the first malformed varint to ``err`` (3), the outputs then
    partial."""
    starts = np.empty(_LANES + 1, np.int64)
    ks = np.empty(_LANES + 1, np.int64)
    lane_err = np.zeros((_LANES, 3), np.int64)
    _lane_bounds(offsets, data, 0, starts, ks)
    _decode_lanes(offsets, data, vo, out, starts, ks, lane_err)
    _first_error(lane_err, err)


@kernel
def decode_count_ser(offsets, data, counts, err):
    """``counts[i + 1]`` = value count of sequence i; the range's first error goes to ``err``."""
    _decode_count_range(offsets, data, counts, 0, offsets.shape[0] - 1, err)


@kernel
def decode_fill_ser(offsets, data, vo, out):
    """The values of sequences the count pass found well formed (``vo``: their value offsets in
    ``out``). ``vo`` is left as it is (its ends are shared with the neighbouring chunks)."""
    offs = offsets.astype(np.int64)  # the lanes read int64 offsets by address
    starts = np.empty(_LANES + 1, np.int64)
    ks = np.empty(_LANES + 1, np.int64)
    _lane_bounds(offs, data, 0, starts, ks)
    for ln in range(_LANES + 1):
        ks[ln] = vo[starts[ln]]
    _decode_lanes(offs, data, vo.copy(), out, starts, ks, np.zeros((_LANES, 3), np.int64))


# ---------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------

# Above this many values, encode_ser runs two passes rather than reserve 10 bytes a value.
_ONE_PASS_MAX_VALUES = 1 << 27


def encode_ser(vo: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All sequences: (offsets int64[n + 1], data uint8). One pass into room for the longest
    encoding (10 bytes a value; pages never written cost nothing), then shrunk in place."""
    n = vo.shape[0] - 1
    m = int(vo[n]) - int(vo[0])
    offsets = np.empty(n + 1, np.int64)
    if m > _ONE_PASS_MAX_VALUES:
        offsets[0] = 0
        encode_sizes_ser(vo, vals, offsets)
        np.cumsum(offsets, out=offsets)
        data = np.empty(int(offsets[n]), np.uint8)
        encode_fill_ser(vo, vals, offsets, data)
        return offsets, data
    data = np.empty(10 * m + 8, np.uint8)
    size = encode_one_pass_ser(vo, vals, offsets, data)
    data.resize(size, refcheck=False)  # realloc: a large buffer shrinks in place (mremap)
    return offsets, data


def decode_ser(offsets: np.ndarray, data: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (value_offsets, values); on a malformed varint fills ``err`` and returns empties."""
    offsets = np.ascontiguousarray(offsets, np.int64)  # the lanes read by address
    data = np.ascontiguousarray(data)
    vo = np.empty(offsets.shape[0], np.int64)
    out = np.empty(count_ends_ser(offsets, data), np.int64)
    decode_into_ser(offsets, data, vo, out, err)
    if err[0] != 0:
        return vo, np.empty(0, np.int64)
    return vo, out


def decode_error(code: int, seq: int, off: int, data: np.ndarray) -> ValueError:
    """The error for a malformed varint that a count kernel reported in ``err``: its code,
    sequence and the byte offset of its first byte."""
    head = f"malformed varint in sequence {seq} at byte offset {off}: "
    if code == _ERR_CUT:
        return ValueError(head + "cut off at the end of the sequence")
    if code == _ERR_LONG:
        return ValueError(head + "longer than 10 bytes")
    return ValueError(head + f"10th byte is 0x{int(data[off + 9]):02x}, above 0x01 (value exceeds 64 bits)")
