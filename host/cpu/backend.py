"""The CPU backend: numba kernels for every operator, bit-exact with :mod:`offload.golden`.

Every kernel is ``@njit(cache=True, nogil=True)`` and runs one contiguous range of records on the
calling thread with the GIL released. Small batches make one kernel call (dispatch stays lean:
no re-validation, one output allocation); from ``CpuBackend.parallel_threshold`` records up a
batch is cut into ``4 * threads`` chunks that the calling thread and a small pool of worker
threads take in turn (:class:`_Pool`), each chunk a kernel call on slices of the same arrays.
(numba ``prange``/``parallel=True`` kernels were tried first; see :class:`_Pool` for why they were
dropped. Fewer kernels also halve the first-run compile time.)

All hash arithmetic is done on ``uint64``: every constant is an explicit ``np.uint64`` (numba
promotes ``uint64 op int64`` to ``float64``), multiplies wrap, rotates are two shifts, and XXH32
keeps its state in the low 32 bits of a ``uint64`` masked after every add/multiply. A few LLVM
intrinsics make the hot loops branch-free: unaligned little-endian loads/stores, and a ``select``
marked ``!unpredictable`` so binary-search and short-record steps stay ``cmov``s.

Kernel inputs are passed as read-only views (:func:`readonly`) so each kernel has one signature per
dtype whatever the caller's buffer (Arrow buffers are read-only, numpy arrays usually are not):
fewer compilations, and a warm cache covers every batch form.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from offload.backend import (Availability, Backend, Batch, Capabilities, Result, empty_result)
from offload.batch import FixedKeys, Numbers, Sequences, VarRecords
from offload.golden import FID_LAYOUT, XXH32_PRIMES, XXH64_PRIMES
from offload.ops import HASH_OPS, OPERATORS, OpCall

if sys.byteorder != "little":  # pragma: no cover - the unaligned-load intrinsics assume it
    raise ImportError("offload.host.cpu needs a little-endian host")

__all__ = ["CpuBackend", "DEFAULT_PARALLEL_THRESHOLD", "MODE_RAW", "MODE_MOD", "MODE_FASTRANGE",
           "MODE_FID", "hash_params", "mod_magic"]

_U = np.uint64
_M32 = _U(0xFFFFFFFF)
_P32_1, _P32_2, _P32_3, _P32_4, _P32_5 = (_U(p) for p in XXH32_PRIMES)
_P64_1, _P64_2, _P64_3, _P64_4, _P64_5 = (_U(p) for p in XXH64_PRIMES)

# Post-processing of an XXH64 inside the hash kernels (fused: one pass over the keys).
MODE_RAW = 0        # xxh64
MODE_MOD = 1        # hash_bucket "mod":       h % a
MODE_FASTRANGE = 2  # hash_bucket "fastrange": (h * a) >> 64
MODE_FID = 3        # fid:                     (h & a) | b

DEFAULT_PARALLEL_THRESHOLD = 1 << 16

_jit = dict(cache=True, nogil=True)


# ---------------------------------------------------------------------------------------------
# Scalar building blocks (compiled into the kernels that call them)
# ---------------------------------------------------------------------------------------------

@intrinsic
def _select_unpredictable(typingctx, c, a, b):
    """``a if c else b`` as an LLVM ``select`` marked ``!unpredictable``, so x86 keeps a ``cmov``
    (LLVM's cmov-to-branch conversion would otherwise turn binary-search steps into branches
    that mispredict half of the time on random data)."""
    sig = a(types.boolean, a, a)

    def codegen(context, builder, signature, args):
        cv, av, bv = args
        if cv.type.width != 1:
            cv = builder.trunc(cv, ir.IntType(1))
        inst = builder.select(cv, av, bv)
        inst.set_metadata("unpredictable", builder.module.add_metadata([]))
        return inst
    return sig, codegen


@intrinsic
def _store_u64_le(typingctx, arr, idx, val):
    """Unaligned little-endian 8-byte store of ``val`` at ``arr[idx:idx+8]`` (uint8 array; the
    caller guarantees ``idx + 8 <= len(arr)``)."""
    sig = types.void(arr, idx, val)

    def codegen(context, builder, signature, args):
        av, iv, vv = args
        ary = context.make_array(signature.args[0])(context, builder, av)
        ptr = builder.bitcast(builder.gep(ary.data, [iv]), ir.IntType(64).as_pointer())
        builder.store(vv, ptr).align = 1
        return context.get_dummy_value()
    return sig, codegen


@njit(inline="always")
def _rotl64(x, r):
    return (x << _U(r)) | (x >> _U(64 - r))


@njit(inline="always")
def _rotl32(x, r):
    return ((x << _U(r)) | (x >> _U(32 - r))) & _M32


def _make_load(bits):
    @intrinsic
    def _load(typingctx, arr, idx):
        sig = types.uint64(arr, idx)

        def codegen(context, builder, signature, args):
            av, iv = args
            ary = context.make_array(signature.args[0])(context, builder, av)
            ptr = builder.bitcast(builder.gep(ary.data, [iv]), ir.IntType(bits).as_pointer())
            val = builder.load(ptr)
            val.align = 1
            return builder.zext(val, ir.IntType(64)) if bits < 64 else val
        return sig, codegen
    return _load


# Unaligned little-endian loads from a uint8 array (x86 is little-endian; the caller guarantees
# the bytes are in bounds): one machine load instead of eight bounds-wrapped byte loads.
_rd64 = _make_load(64)
_rd32 = _make_load(32)
_rd8 = _make_load(8)


@njit(inline="always")
def _round64(acc, lane):
    acc = acc + lane * _P64_2
    acc = (acc << _U(31)) | (acc >> _U(33))
    return acc * _P64_1


@njit(inline="always")
def _merge64(h, v):
    h ^= _round64(_U(0), v)
    return h * _P64_1 + _P64_4


@njit(inline="always")
def _aval64(h):
    h ^= h >> _U(33)
    h *= _P64_2
    h ^= h >> _U(29)
    h *= _P64_3
    h ^= h >> _U(32)
    return h


@njit(inline="always")
def _round32(acc, lane):
    acc = (acc + lane * _P32_2) & _M32
    acc = ((acc << _U(13)) | (acc >> _U(19))) & _M32
    return (acc * _P32_1) & _M32


@njit(inline="always")
def _aval32(h):
    h ^= h >> _U(15)
    h = (h * _P32_2) & _M32
    h ^= h >> _U(13)
    h = (h * _P32_3) & _M32
    h ^= h >> _U(16)
    return h


@njit(inline="always")
def _mulhi64(a, b):
    """High 64 bits of the 128-bit product of two uint64, from 32-bit halves."""
    a_lo = a & _M32
    a_hi = a >> _U(32)
    b_lo = b & _M32
    b_hi = b >> _U(32)
    p0 = a_lo * b_lo
    p1 = a_lo * b_hi
    p2 = a_hi * b_lo
    p3 = a_hi * b_hi
    mid = (p0 >> _U(32)) + (p1 & _M32) + (p2 & _M32)
    return p3 + (p1 >> _U(32)) + (p2 >> _U(32)) + (mid >> _U(32))


@njit(inline="always")
def _modm(h, d, m, sh):
    """``h % d`` without a division (Granlund-Montgomery, "Division by invariant integers using
    multiplication", fig. 4.1): ``m``/``sh`` from :func:`mod_magic`; exact for every uint64 h and
    1 <= d < 2**64."""
    t1 = _mulhi64(m, h)
    q = (t1 + ((h - t1) >> (sh & _U(0xFF)))) >> (sh >> _U(8))
    return h - q * d


@njit(inline="always")
def _xxh64_k8(k, seed):
    """XXH64 of one 8-byte little-endian key."""
    h = seed + _P64_5 + _U(8)
    h ^= _round64(_U(0), k)
    h = _rotl64(h, 27) * _P64_1 + _P64_4
    return _aval64(h)


@njit(inline="always")
def _xxh64_k4(k, seed):
    """XXH64 of one 4-byte little-endian key (``k`` < 2**32)."""
    h = seed + _P64_5 + _U(4)
    h ^= k * _P64_1
    h = _rotl64(h, 23) * _P64_2 + _P64_3
    return _aval64(h)


@njit(inline="always")
def _xxh32_k4(k, seed):
    """XXH32 of one 4-byte key; ``seed`` and the result are < 2**32 held in uint64."""
    h = (seed + _P32_5 + _U(4)) & _M32
    h = (h + k * _P32_3) & _M32
    h = (_rotl32(h, 17) * _P32_4) & _M32
    return _aval32(h)


@njit(inline="always")
def _xxh32_k8(k, seed):
    h = (seed + _P32_5 + _U(8)) & _M32
    h = (h + (k & _M32) * _P32_3) & _M32
    h = (_rotl32(h, 17) * _P32_4) & _M32
    h = (h + (k >> _U(32)) * _P32_3) & _M32
    h = (_rotl32(h, 17) * _P32_4) & _M32
    return _aval32(h)


@njit(inline="always")
def _xxh64_long(d, s, e, seed):
    """XXH64 of ``d[s:e]`` for any length (the stripe loop for ``e - s >= 32``, then the tail
    with ordinary loops)."""
    n = e - s
    p = s
    if n >= 32:
        v1 = seed + _P64_1 + _P64_2
        v2 = seed + _P64_2
        v3 = seed
        v4 = seed - _P64_1
        lim = e - 32
        while p <= lim:
            v1 = _round64(v1, _rd64(d, p))
            v2 = _round64(v2, _rd64(d, p + 8))
            v3 = _round64(v3, _rd64(d, p + 16))
            v4 = _round64(v4, _rd64(d, p + 24))
            p += 32
        h = _rotl64(v1, 1) + _rotl64(v2, 7) + _rotl64(v3, 12) + _rotl64(v4, 18)
        h = _merge64(h, v1)
        h = _merge64(h, v2)
        h = _merge64(h, v3)
        h = _merge64(h, v4)
    else:
        h = seed + _P64_5
    h += _U(n)
    while p + 8 <= e:
        h ^= _round64(_U(0), _rd64(d, p))
        h = _rotl64(h, 27) * _P64_1 + _P64_4
        p += 8
    if p + 4 <= e:
        h ^= _rd32(d, p) * _P64_1
        h = _rotl64(h, 23) * _P64_2 + _P64_3
        p += 4
    while p < e:
        h ^= _rd8(d, p) * _P64_5
        h = _rotl64(h, 11) * _P64_1
        p += 1
    return _aval64(h)


@njit(inline="always")
def _tail_word(d, e, t):
    """The last ``t`` (0..7) bytes before ``e`` in the low bytes of a uint64 (higher bytes are
    garbage): one unaligned load of the 8 bytes ending at ``e``, or of ``d[0:8]`` when ``e < 8``
    (needs ``len(d) >= 8``; with ``t == 0`` the result is garbage and must be unused)."""
    top = _select_unpredictable(e >= 8, e, np.int64(8))
    return _rd64(d, top - 8) >> _U((8 * (e - t - top + 8)) & 63)


@njit(inline="always")
def _xxh64_short(d, s, e, seed):
    """XXH64 of ``d[s:e]`` for ``e - s < 32`` without data-dependent branches: every step is
    computed and kept or dropped by a ``cmov``, so random record lengths cost no branch
    mispredictions (needs ``len(d) >= 8``: dropped 8-byte steps read ``d[0:8]``). The 4-byte
    step and the byte steps take their input from one load of the record's last 8 bytes."""
    n = e - s
    h = seed + _P64_5 + _U(n)
    nl = n >> 3
    for k in range(3):
        c = k < nl
        lane = _rd64(d, _select_unpredictable(c, s + 8 * k, np.int64(0)))
        h = _select_unpredictable(c, _rotl64(h ^ _round64(_U(0), lane), 27) * _P64_1 + _P64_4, h)
    tail = _tail_word(d, e, n & 7)
    c = (n & 4) != 0
    h = _select_unpredictable(
        c, _rotl64(h ^ ((tail & _M32) * _P64_1), 23) * _P64_2 + _P64_3, h)
    tail >>= _U((n & 4) * 8)  # the 0..3 single bytes
    nt = n & 3
    for k in range(3):
        c = k < nt
        b = (tail >> _U(8 * k)) & _U(0xFF)
        h = _select_unpredictable(c, _rotl64(h ^ (b * _P64_5), 11) * _P64_1, h)
    return _aval64(h)


@njit(inline="always")
def _xxh64_rec(d, s, e, seed, short_ok):
    if short_ok and e - s < 32:
        return _xxh64_short(d, s, e, seed)
    return _xxh64_long(d, s, e, seed)


@njit(inline="always")
def _xxh32_long(d, s, e, seed):
    """XXH32 of ``d[s:e]`` (``seed`` < 2**32 in a uint64), any length, ordinary loops."""
    n = e - s
    p = s
    if n >= 16:
        v1 = (seed + _P32_1 + _P32_2) & _M32
        v2 = (seed + _P32_2) & _M32
        v3 = seed
        v4 = (seed - _P32_1) & _M32
        lim = e - 16
        while p <= lim:
            v1 = _round32(v1, _rd32(d, p))
            v2 = _round32(v2, _rd32(d, p + 4))
            v3 = _round32(v3, _rd32(d, p + 8))
            v4 = _round32(v4, _rd32(d, p + 12))
            p += 16
        h = (_rotl32(v1, 1) + _rotl32(v2, 7) + _rotl32(v3, 12) + _rotl32(v4, 18)) & _M32
    else:
        h = (seed + _P32_5) & _M32
    h = (h + _U(n)) & _M32
    while p + 4 <= e:
        h = (h + _rd32(d, p) * _P32_3) & _M32
        h = (_rotl32(h, 17) * _P32_4) & _M32
        p += 4
    while p < e:
        h = (h + _rd8(d, p) * _P32_5) & _M32
        h = (_rotl32(h, 11) * _P32_1) & _M32
        p += 1
    return _aval32(h)


@njit(inline="always")
def _xxh32_short(d, s, e, seed):
    """XXH32 of ``d[s:e]`` for ``e - s < 32``, branch-free like :func:`_xxh64_short`: at most
    one 16-byte stripe (computed always, kept if ``n >= 16``), 0..3 4-byte steps, 0..3 byte
    steps from one load of the record's last 8 bytes (needs ``len(d) >= 8``)."""
    n = e - s
    big = n >= 16
    q = _select_unpredictable(big, s, np.int64(0))
    w0 = _rd64(d, q)
    w1 = _rd64(d, q + 8)
    v1 = _round32((seed + _P32_1 + _P32_2) & _M32, w0 & _M32)
    v2 = _round32((seed + _P32_2) & _M32, w0 >> _U(32))
    v3 = _round32(seed, w1 & _M32)
    v4 = _round32((seed - _P32_1) & _M32, w1 >> _U(32))
    hs = _rotl32(v1, 1) + _rotl32(v2, 7) + _rotl32(v3, 12) + _rotl32(v4, 18)
    h = _select_unpredictable(big, hs, seed + _P32_5)
    h = (h + _U(n)) & _M32
    p = s + (n & 16)
    nw = (n & 15) >> 2
    for k in range(3):
        c = k < nw
        x = _rd32(d, _select_unpredictable(c, p + 4 * k, np.int64(0)))
        h = _select_unpredictable(c, (_rotl32((h + x * _P32_3) & _M32, 17) * _P32_4) & _M32, h)
    nt = n & 3
    tail = _tail_word(d, e, nt)
    for k in range(3):
        c = k < nt
        b = (tail >> _U(8 * k)) & _U(0xFF)
        h = _select_unpredictable(c, (_rotl32((h + b * _P32_5) & _M32, 11) * _P32_1) & _M32, h)
    return _aval32(h)


@njit(inline="always")
def _xxh32_rec(d, s, e, seed, short_ok):
    if short_ok and e - s < 32:
        return _xxh32_short(d, s, e, seed)
    return _xxh32_long(d, s, e, seed)


# ---------------------------------------------------------------------------------------------
# Per-range bodies (shared by the serial and the parallel kernels)
# ---------------------------------------------------------------------------------------------

@njit
def _xxh64_fixed_range(keys, seed, mode, a, b, sh, out, lo, hi, width):
    # One tight loop per (width, mode): no per-key branching.
    if width == 8:
        if mode == MODE_RAW:
            for i in range(lo, hi):
                out[i] = _xxh64_k8(_U(keys[i]), seed)
        elif mode == MODE_MOD:
            for i in range(lo, hi):
                out[i] = _modm(_xxh64_k8(_U(keys[i]), seed), a, b, sh)
        elif mode == MODE_FASTRANGE:
            for i in range(lo, hi):
                out[i] = _mulhi64(_xxh64_k8(_U(keys[i]), seed), a)
        else:
            for i in range(lo, hi):
                out[i] = (_xxh64_k8(_U(keys[i]), seed) & a) | b
    else:
        if mode == MODE_RAW:
            for i in range(lo, hi):
                out[i] = _xxh64_k4(_U(keys[i]), seed)
        elif mode == MODE_MOD:
            for i in range(lo, hi):
                out[i] = _modm(_xxh64_k4(_U(keys[i]), seed), a, b, sh)
        elif mode == MODE_FASTRANGE:
            for i in range(lo, hi):
                out[i] = _mulhi64(_xxh64_k4(_U(keys[i]), seed), a)
        else:
            for i in range(lo, hi):
                out[i] = (_xxh64_k4(_U(keys[i]), seed) & a) | b


@njit
def _xxh32_fixed_range(keys, seed, out, lo, hi, width):
    if width == 8:
        for i in range(lo, hi):
            out[i] = np.uint32(_xxh32_k8(_U(keys[i]), seed))
    else:
        for i in range(lo, hi):
            out[i] = np.uint32(_xxh32_k4(_U(keys[i]), seed))


@njit(inline="always")
def _xxh64_var_loop(offsets, data, seed, mode, a, b, sh, out, lo, hi, ok):
    # One loop per mode (no per-record branching on it); each offset is loaded once (a record's
    # end is the next one's start); everything is inlined: no calls, no NRT refcounting per record.
    e = np.int64(offsets[lo])
    if mode == MODE_RAW:
        i = lo
        while i + 2 <= hi:
            s0 = e
            s1 = np.int64(offsets[i + 1])
            e = np.int64(offsets[i + 2])
            if ok and _U(s1 - s0) < _U(32) and _U(e - s1) < _U(32):
                h0 = _xxh64_short(data, s0, s1, seed)
                h1 = _xxh64_short(data, s1, e, seed)
            else:
                h0 = _xxh64_rec(data, s0, s1, seed, ok)
                h1 = _xxh64_rec(data, s1, e, seed, ok)
            out[i] = h0
            out[i + 1] = h1
            i += 2
        if i < hi:
            out[i] = _xxh64_rec(data, e, np.int64(offsets[i + 1]), seed, ok)
    elif mode == MODE_MOD:
        for i in range(lo, hi):
            s = e
            e = np.int64(offsets[i + 1])
            out[i] = _modm(_xxh64_rec(data, s, e, seed, ok), a, b, sh)
    elif mode == MODE_FASTRANGE:
        for i in range(lo, hi):
            s = e
            e = np.int64(offsets[i + 1])
            out[i] = _mulhi64(_xxh64_rec(data, s, e, seed, ok), a)
    else:
        for i in range(lo, hi):
            s = e
            e = np.int64(offsets[i + 1])
            out[i] = (_xxh64_rec(data, s, e, seed, ok) & a) | b


@njit
def _xxh64_var_range(offsets, data, seed, mode, a, b, sh, out, lo, hi):
    if hi <= lo:
        return
    # The branch-free short-record path may read data[0:8]: only with at least 8 bytes.
    if data.shape[0] >= 8:
        _xxh64_var_loop(offsets, data, seed, mode, a, b, sh, out, lo, hi, True)
    else:
        _xxh64_var_loop(offsets, data, seed, mode, a, b, sh, out, lo, hi, False)


@njit
def _xxh32_var_range(offsets, data, seed, out, lo, hi):
    if hi <= lo:
        return
    e = np.int64(offsets[lo])
    if data.shape[0] >= 8:
        for i in range(lo, hi):
            s = e
            e = np.int64(offsets[i + 1])
            out[i] = np.uint32(_xxh32_rec(data, s, e, seed, True))
    else:
        for i in range(lo, hi):
            s = e
            e = np.int64(offsets[i + 1])
            out[i] = np.uint32(_xxh32_long(data, s, e, seed))


@njit(inline="always")
def _le(a, b):
    return a <= b


@njit(inline="always")
def _lt(a, b):
    return a < b


def _make_bucketize_range(cmp):
    """Count of boundaries ``b`` with ``cmp(b, x)``, by branchless binary search (``cmov`` steps),
    four values interleaved so their independent searches overlap. NaN goes to len(boundaries);
    ``-0.0 == 0.0`` and infinities follow IEEE comparisons."""

    @njit
    def _range(x, bnd, out, lo, hi):
        nb = bnd.shape[0]
        if nb == 0:
            for i in range(lo, hi):
                out[i] = 0
            return
        i = lo
        while i + 4 <= hi:
            v0 = x[i]
            v1 = x[i + 1]
            v2 = x[i + 2]
            v3 = x[i + 3]
            b0 = 0
            b1 = 0
            b2 = 0
            b3 = 0
            n = nb
            while n > 1:
                half = n >> 1
                b0 = _select_unpredictable(cmp(bnd[b0 + half], v0), b0 + half, b0)
                b1 = _select_unpredictable(cmp(bnd[b1 + half], v1), b1 + half, b1)
                b2 = _select_unpredictable(cmp(bnd[b2 + half], v2), b2 + half, b2)
                b3 = _select_unpredictable(cmp(bnd[b3 + half], v3), b3 + half, b3)
                n -= half
            out[i] = nb if v0 != v0 else b0 + (1 if cmp(bnd[b0], v0) else 0)
            out[i + 1] = nb if v1 != v1 else b1 + (1 if cmp(bnd[b1], v1) else 0)
            out[i + 2] = nb if v2 != v2 else b2 + (1 if cmp(bnd[b2], v2) else 0)
            out[i + 3] = nb if v3 != v3 else b3 + (1 if cmp(bnd[b3], v3) else 0)
            i += 4
        while i < hi:
            v0 = x[i]
            b0 = 0
            n = nb
            while n > 1:
                half = n >> 1
                b0 = _select_unpredictable(cmp(bnd[b0 + half], v0), b0 + half, b0)
                n -= half
            out[i] = nb if v0 != v0 else b0 + (1 if cmp(bnd[b0], v0) else 0)
            i += 1

    return _range


_bucketize_right_range = _make_bucketize_range(_le)  # right=True: count of b <= x
_bucketize_left_range = _make_bucketize_range(_lt)   # right=False: count of b < x


@njit
def _bucketize_range(x, bnd, right, out, lo, hi):
    if right:
        _bucketize_right_range(x, bnd, out, lo, hi)
    else:
        _bucketize_left_range(x, bnd, out, lo, hi)


@njit(inline="always")
def _zigzag(v, prev):
    d = _U(v) - _U(prev)
    return (d << _U(1)) ^ (_U(0) - (d >> _U(63)))


@njit(inline="always")
def _varint_len(z):
    return (1 + (z >= _U(1 << 7)) + (z >= _U(1 << 14)) + (z >= _U(1 << 21)) + (z >= _U(1 << 28))
            + (z >= _U(1 << 35)) + (z >= _U(1 << 42)) + (z >= _U(1 << 49)) + (z >= _U(1 << 56))
            + (z >= _U(1 << 63)))


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
    return ((z & _U(0x7F)) | ((z << _U(1)) & _U(0x7F00)) | ((z << _U(2)) & _U(0x7F0000))
            | ((z << _U(3)) & _U(0x7F000000)) | ((z << _U(4)) & _U(0x7F00000000))
            | ((z << _U(5)) & _U(0x7F0000000000)) | ((z << _U(6)) & _U(0x7F000000000000))
            | ((z << _U(7)) & _U(0x7F00000000000000)))


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
                _store_u64_le(data, p, _spread7(z) | (_C80 & ((_U(1) << _U(8 * n - 8)) - _U(1))))
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

@njit(**_jit)
def xxh64_fixed_ser(keys, seed, mode, a, b, sh, out):
    _xxh64_fixed_range(keys, seed, mode, a, b, sh, out, 0, keys.shape[0], keys.itemsize)


@njit(**_jit)
def xxh32_fixed_ser(keys, seed, out):
    _xxh32_fixed_range(keys, seed, out, 0, keys.shape[0], keys.itemsize)


@njit(**_jit)
def xxh64_var_ser(offsets, data, seed, mode, a, b, sh, out):
    _xxh64_var_range(offsets, data, seed, mode, a, b, sh, out, 0, offsets.shape[0] - 1)


@njit(**_jit)
def xxh32_var_ser(offsets, data, seed, out):
    _xxh32_var_range(offsets, data, seed, out, 0, offsets.shape[0] - 1)


@njit(**_jit)
def bucketize_ser(x, bnd, right, out):
    _bucketize_range(x, bnd, right, out, 0, x.shape[0])


@njit(**_jit)
def encode_ser(vo, vals):
    n = vo.shape[0] - 1
    offsets = np.zeros(n + 1, np.int64)
    _encode_sizes_range(vo, vals, offsets, 0, n)
    for i in range(n):
        offsets[i + 1] += offsets[i]
    data = np.empty(offsets[n], np.uint8)
    _encode_fill_range(vo, vals, offsets, data, 0, n)
    return offsets, data


@njit(**_jit)
def encode_sizes_ser(vo, vals, sizes):
    """``sizes[i + 1]`` = byte count of sequence i (``vo``/``sizes`` are matching slices)."""
    _encode_sizes_range(vo, vals, sizes, 0, vo.shape[0] - 1)


@njit(**_jit)
def encode_fill_ser(vo, vals, offsets, data):
    _encode_fill_range(vo, vals, offsets, data, 0, vo.shape[0] - 1)


@njit(**_jit)
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


@njit(**_jit)
def decode_count_ser(offsets, data, counts, err):
    """``counts[i + 1]`` = value count of sequence i; the range's first error goes to ``err``."""
    _decode_count_range(offsets, data, counts, 0, offsets.shape[0] - 1, err)


@njit(**_jit)
def decode_fill_ser(offsets, data, vo, out):
    _decode_fill_range(offsets, data, vo, out, 0, offsets.shape[0] - 1)


# ---------------------------------------------------------------------------------------------
# Python side
# ---------------------------------------------------------------------------------------------

def readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view (one kernel signature per dtype, whatever the caller's buffer)."""
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def mod_magic(d: int) -> tuple[int, int]:
    """(m, sh) for :func:`_modm`: ``h % d`` as a multiply-high, shifts and a multiply."""
    ell = (d - 1).bit_length()  # ceil(log2(d))
    m = ((1 << 64) * ((1 << ell) - d)) // d + 1
    return m, min(ell, 1) | (max(ell - 1, 0) << 8)


def hash_params(call: OpCall) -> tuple[int, np.uint64, np.uint64, np.uint64]:
    """(mode, a, b, sh) of the fused XXH64 post-processing for an xxh64 / hash_bucket / fid call."""
    op = call.op
    if op == "hash_bucket":
        if call.method == "mod":
            m, sh = mod_magic(call.num_buckets)
            return MODE_MOD, _U(call.num_buckets), _U(m), _U(sh)
        return MODE_FASTRANGE, _U(call.num_buckets), _U(0), _U(0)
    if op == "fid":
        sig_bits = FID_LAYOUT[call.version][1]
        return MODE_FID, _U((1 << sig_bits) - 1), _U(call.slot << sig_bits), _U(0)
    return MODE_RAW, _U(0), _U(0), _U(0)


def _decode_error(code: int, seq: int, off: int, data: np.ndarray) -> ValueError:
    head = f"malformed varint in sequence {seq} at byte offset {off}: "
    if code == _ERR_CUT:
        return ValueError(head + "cut off at the end of the sequence")
    if code == _ERR_LONG:
        return ValueError(head + "longer than 10 bytes")
    return ValueError(head + f"10th byte is 0x{int(data[off + 9]):02x}, above 0x01 "
                             "(value exceeds 64 bits)")


class _Pool:
    """Worker threads that run chunks of one call alongside the calling thread.

    A call is cut into more chunks than threads; every participant (the caller included) takes
    the next chunk until none is left, and the caller waits only for chunks actually taken. So a
    core busy with another process slows a call down by at most one chunk instead of stalling it
    at a barrier (measured: numba's OpenMP ``prange`` fell to 1/20 of the serial speed on this
    shared 2-core machine under load, while this degrades to the serial speed).
    """

    def __init__(self, workers: int) -> None:
        import concurrent.futures as cf
        self._ex = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="offload-cpu")
        self.workers = workers

    def run(self, fn: Any, bounds: list[int]) -> None:
        """Call ``fn(lo, hi)`` for each consecutive pair of ``bounds``, in parallel."""
        nchunks = len(bounds) - 1
        lock = threading.Lock()
        state = {"next": 0, "done": 0, "error": None}
        finished = threading.Event()

        def work() -> None:
            while True:
                with lock:
                    k = state["next"]
                    if k >= nchunks:
                        return
                    state["next"] = k + 1
                try:
                    fn(bounds[k], bounds[k + 1])
                except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                    state["error"] = state["error"] or e
                with lock:
                    state["done"] += 1
                    if state["done"] == nchunks:
                        finished.set()

        for _ in range(min(self.workers, nchunks - 1)):
            self._ex.submit(work)
        work()
        finished.wait()
        if state["error"] is not None:
            raise state["error"]


_POOLS: dict[int, _Pool] = {}
_POOLS_LOCK = threading.Lock()


def _pool(workers: int) -> _Pool:
    with _POOLS_LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = _Pool(workers)
        return _POOLS[workers]


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_CPU_CAPS = Capabilities(ops=frozenset(OPERATORS))


class CpuBackend(Backend):
    """All seven operators on the host CPU (numba); always available.

    ``threads``: threads for batches of at least ``parallel_threshold`` records (default: the
    CPUs this process may run on). ``threads=1`` runs everything on the calling thread. Smaller
    batches always run on the calling thread: one kernel call and one output allocation.
    """

    name = "cpu"

    def __init__(self, threads: int | None = None,
                 parallel_threshold: int = DEFAULT_PARALLEL_THRESHOLD) -> None:
        if threads is None:
            threads = _default_threads()
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        self.threads = int(threads)
        self.parallel_threshold = int(parallel_threshold)

    # -- Backend interface ----------------------------------------------------------------------

    def availability(self) -> Availability:
        return Availability(True, "numba CPU kernels")

    def capabilities(self) -> Capabilities:
        return _CPU_CAPS

    def supports(self, call: OpCall, batch: Batch) -> str | None:
        return None if call.op in _CPU_CAPS.ops else f"cpu does not implement {call.op}"

    def run(self, call: OpCall, batch: Batch) -> Result:
        op = call.op
        if op in HASH_OPS:
            return self._hash(call, batch)  # type: ignore[arg-type]
        if op == "bucketize":
            return self._bucketize(call, batch)  # type: ignore[arg-type]
        if op == "delta_varint_encode":
            return self._encode(batch)  # type: ignore[arg-type]
        if op == "delta_varint_decode":
            return self._decode(batch)  # type: ignore[arg-type]
        raise ValueError(f"unknown operator {op!r}")

    # -- helpers --------------------------------------------------------------------------------

    def _bounds(self, n: int) -> list[int] | None:
        """Chunk bounds for a parallel run over ``n`` records, or None to run serially."""
        if self.threads < 2 or n < self.parallel_threshold or n < 2:
            return None
        nchunks = min(n, 4 * self.threads)
        return [k * n // nchunks for k in range(nchunks + 1)]

    def _seq_bounds(self, n: int, work: int) -> list[int] | None:
        """Chunk bounds over ``n`` sequences holding ``work`` values (or bytes), or None."""
        if self.threads < 2 or n < 2 or max(n, work) < self.parallel_threshold:
            return None
        nchunks = min(n, 4 * self.threads)
        return [k * n // nchunks for k in range(nchunks + 1)]

    def _chunks(self, fn: Any, bounds: list[int]) -> None:
        _pool(self.threads - 1).run(fn, bounds)

    def _hash(self, call: OpCall, batch: FixedKeys | VarRecords) -> np.ndarray:
        op = call.op
        n = batch.n
        seed = _U(call.seed)
        if op == "xxh32":
            out = np.empty(n, np.uint32)
            if type(batch) is FixedKeys:
                keys = readonly(batch.keys)
                bounds = self._bounds(n)
                if bounds is None:
                    xxh32_fixed_ser(keys, seed, out)
                else:
                    self._chunks(lambda lo, hi: xxh32_fixed_ser(keys[lo:hi], seed, out[lo:hi]),
                                 bounds)
                return out
            base = 0
            for c in batch.chunks:
                cn = c.offsets.shape[0] - 1
                if cn <= 0:
                    continue
                o, d, dst = readonly(c.offsets), readonly(c.data), out[base:base + cn]
                bounds = self._bounds(cn)
                if bounds is None:
                    xxh32_var_ser(o, d, seed, dst)
                else:
                    self._chunks(lambda lo, hi, o=o, d=d, dst=dst:
                                 xxh32_var_ser(o[lo:hi + 1], d, seed, dst[lo:hi]), bounds)
                base += cn
            return out
        mode, a, b, sh = hash_params(call)
        out = np.empty(n, np.uint64)
        if type(batch) is FixedKeys:
            keys = readonly(batch.keys)
            bounds = self._bounds(n)
            if bounds is None:
                xxh64_fixed_ser(keys, seed, mode, a, b, sh, out)
            else:
                self._chunks(lambda lo, hi: xxh64_fixed_ser(keys[lo:hi], seed, mode, a, b, sh,
                                                            out[lo:hi]), bounds)
        else:
            base = 0
            for c in batch.chunks:
                cn = c.offsets.shape[0] - 1
                if cn <= 0:
                    continue
                o, d, dst = readonly(c.offsets), readonly(c.data), out[base:base + cn]
                bounds = self._bounds(cn)
                if bounds is None:
                    xxh64_var_ser(o, d, seed, mode, a, b, sh, dst)
                else:
                    self._chunks(lambda lo, hi, o=o, d=d, dst=dst:
                                 xxh64_var_ser(o[lo:hi + 1], d, seed, mode, a, b, sh, dst[lo:hi]),
                                 bounds)
                base += cn
        return out.view(np.int64) if op == "hash_bucket" else out

    def _bucketize(self, call: OpCall, batch: Numbers) -> np.ndarray:
        x = readonly(batch.values)
        bnd = call.boundaries
        assert bnd is not None
        if bnd.dtype != x.dtype:  # ops.check_boundaries casts to x's dtype; be safe anyway
            bnd = bnd.astype(x.dtype)
        bnd = readonly(np.ascontiguousarray(bnd))
        right = bool(call.right)
        n = x.shape[0]
        out = np.empty(n, np.int32)
        bounds = self._bounds(n)
        if bounds is None:
            bucketize_ser(x, bnd, right, out)
        else:
            self._chunks(lambda lo, hi: bucketize_ser(x[lo:hi], bnd, right, out[lo:hi]), bounds)
        return out

    def _encode(self, batch: Sequences) -> tuple[np.ndarray, np.ndarray]:
        vo, vals = readonly(batch.value_offsets), readonly(batch.values)
        n = vo.shape[0] - 1
        if n <= 0:
            return empty_result("delta_varint_encode")  # type: ignore[return-value]
        # Sequences can be long: the threshold counts values as well as sequences.
        bounds = self._seq_bounds(n, int(vo[-1]) - int(vo[0]))
        if bounds is None:
            return encode_ser(vo, vals)
        offsets = np.zeros(n + 1, np.int64)
        self._chunks(lambda lo, hi: encode_sizes_ser(vo[lo:hi + 1], vals, offsets[lo:hi + 1]),
                     bounds)
        np.cumsum(offsets, out=offsets)
        data = np.empty(int(offsets[-1]), np.uint8)
        self._chunks(lambda lo, hi: encode_fill_ser(vo[lo:hi + 1], vals, offsets[lo:hi + 1],
                                                    data), bounds)
        return offsets, data

    def _decode(self, batch: VarRecords) -> tuple[np.ndarray, np.ndarray]:
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        seq_base = 0
        for c in batch.chunks:
            cn = c.offsets.shape[0] - 1
            if cn <= 0:
                continue
            parts.append(self._decode_chunk(readonly(c.offsets), readonly(c.data), seq_base))
            seq_base += cn
        if not parts:
            return empty_result("delta_varint_decode")  # type: ignore[return-value]
        if len(parts) == 1:
            return parts[0]
        offs = [np.zeros(1, np.int64)]
        base = 0
        for vo, _ in parts:
            offs.append(vo[1:] + base)
            base += int(vo[-1])
        return np.concatenate(offs), np.concatenate([v for _, v in parts])

    def _decode_chunk(self, offsets: np.ndarray, data: np.ndarray,
                      seq_base: int) -> tuple[np.ndarray, np.ndarray]:
        n = offsets.shape[0] - 1
        bounds = self._seq_bounds(n, (int(offsets[-1]) - int(offsets[0])) // 2)
        if bounds is None:
            err = np.zeros(3, np.int64)
            vo, out = decode_ser(offsets, data, err)
            if err[0]:
                raise _decode_error(int(err[0]), seq_base + int(err[1]), int(err[2]), data)
            return vo, out
        vo = np.zeros(n + 1, np.int64)
        errs = np.zeros((len(bounds) - 1, 3), np.int64)
        index = {lo: k for k, lo in enumerate(bounds[:-1])}
        self._chunks(lambda lo, hi: decode_count_ser(offsets[lo:hi + 1], data, vo[lo:hi + 1],
                                                     errs[index[lo]]), bounds)
        bad = np.flatnonzero(errs[:, 0])
        if bad.size:  # chunks are consecutive ranges: the first bad chunk has the first error
            k = int(bad[0])
            code, seq, off = (int(v) for v in errs[k])
            raise _decode_error(code, seq_base + bounds[k] + seq, off, data)
        np.cumsum(vo, out=vo)
        out = np.empty(int(vo[-1]), np.int64)
        self._chunks(lambda lo, hi: decode_fill_ser(offsets[lo:hi + 1], data, vo[lo:hi + 1], out),
                     bounds)
        return vo, out

    # -- warm-up --------------------------------------------------------------------------------

    def warmup(self) -> None:
        """Compile (or load from numba's cache) every kernel signature the backend can call."""
        from offload.ops import make_call
        saved = self.parallel_threshold
        try:
            for thr in (1 << 62, 0):  # serial, then chunked paths
                self.parallel_threshold = thr
                if thr == 0 and self.threads < 2:
                    continue
                for dt in (np.uint32, np.uint64):
                    keys = FixedKeys(np.arange(4, dtype=dt), (4,))
                    for call in _warm_hash_calls(make_call):
                        self.run(call, keys)
                for odt in (np.int32, np.int64):
                    recs = VarRecords((_warm_chunk(odt),))
                    for call in _warm_hash_calls(make_call):
                        self.run(call, recs)
                for dt in (np.float32, np.float64, np.int32, np.int64):
                    x = Numbers(np.arange(4, dtype=dt), (4,))
                    self.run(make_call("bucketize", boundaries=[1, 2], dtype=dt), x)
                seqs = Sequences(np.array([0, 2, 4], np.int64), np.arange(4, dtype=np.int64))
                offs, data = self.run(OpCall("delta_varint_encode"), seqs)
                self.run(OpCall("delta_varint_decode"), VarRecords(((_vc(offs, data)),)))
        finally:
            self.parallel_threshold = saved


def _vc(offsets: np.ndarray, data: np.ndarray) -> Any:
    from offload.batch import VarChunk
    return VarChunk(offsets, data)


def _warm_chunk(odt: Any) -> Any:
    return _vc(np.array([0, 0, 3, 40], odt), np.arange(40, dtype=np.uint8))


def _warm_hash_calls(make_call: Any) -> list[OpCall]:
    return [make_call("xxh32"), make_call("xxh64"),
            make_call("hash_bucket", num_buckets=10), make_call("fid", slot=1)]
