"""XXH64 and XXH32 kernels, with the XXH64 post-processing of ``hash_bucket`` and ``fid`` fused in.

All hash arithmetic is done on ``uint64``: every constant is an explicit ``np.uint64`` (numba
promotes ``uint64 op int64`` to ``float64``), multiplies wrap, rotates are funnel shifts
(:func:`.intrinsics.rotl64`), and XXH32 keeps its state in the low 32 bits of a ``uint64`` with
32-bit multiplies, adds and rotates (:func:`.intrinsics.mul32`), so its loops vectorise 16 keys to
a zmm register. The fixed-key loops are in :func:`_lanes` (why 16 + 2 keys an iteration).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from offload.golden import XXH32_PRIMES, XXH64_PRIMES

from .intrinsics import (
    add32,
    kernel,
    load_half32,
    load_u8,
    load_u32,
    load_u64,
    mul32,
    mulhi64,
    mulhi64_halves,
    rotl32,
    rotl64,
    select_unpredictable,
)

__all__ = [
    "MODE_FASTRANGE",
    "MODE_FID",
    "MODE_MOD",
    "MODE_RAW",
    "mod_magic",
    "post64_ser",
    "xxh64_k4",
    "xxh64_k8",
    "xxh64_record",
    "xxh32_fixed_ser",
    "xxh32_var_ser",
    "xxh64_fixed_ser",
    "xxh64_var_ser",
]

_U = np.uint64
_M32 = _U(0xFFFFFFFF)
# numba freezes globals into a kernel when it compiles it, and its cache does not watch
# offload.golden: fine for the primes, which never change.
_P32_1, _P32_2, _P32_3, _P32_4, _P32_5 = (_U(p) for p in XXH32_PRIMES)
_P64_1, _P64_2, _P64_3, _P64_4, _P64_5 = (_U(p) for p in XXH64_PRIMES)

# Post-processing of an XXH64 inside the hash kernels (fused: one pass over the keys).
MODE_RAW = 0  # xxh64
MODE_MOD = 1  # hash_bucket "mod":       h % a
MODE_FASTRANGE = 2  # hash_bucket "fastrange": (h * a) >> 64
MODE_FID = 3  # fid:                     (h & a) | b


# ---------------------------------------------------------------------------------------------
# Scalar building blocks (compiled into the kernels that call them)
# ---------------------------------------------------------------------------------------------


@njit(inline="always")
def _round64(acc, lane):
    return rotl64(acc + lane * _P64_2, 31) * _P64_1


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
    return mul32(rotl32(add32(acc, mul32(lane, _P32_2)), 13), _P32_1)


@njit(inline="always")
def _aval32(h):
    h ^= h >> _U(15)
    h = mul32(h, _P32_2)
    h ^= h >> _U(13)
    h = mul32(h, _P32_3)
    h ^= h >> _U(16)
    return h


@njit(inline="always")
def _modm(h, d, m, sh):
    """``h % d`` without a division (Granlund-Montgomery, "Division by invariant integers using
    multiplication", fig. 4.1): ``m``/``sh`` from :func:`mod_magic`; exact for every uint64 h and
    1 <= d < 2**64."""
    t1 = mulhi64_halves(m, h)
    q = (t1 + ((h - t1) >> (sh & _U(0xFF)))) >> (sh >> _U(8))
    return h - q * d


@njit(inline="always")
def _modm_scalar(h, d, m, sh):
    """:func:`_modm` with a one-instruction multiply-high (for the keys on the scalar unit)."""
    t1 = mulhi64(m, h)
    q = (t1 + ((h - t1) >> (sh & _U(0xFF)))) >> (sh >> _U(8))
    return h - q * d


@njit(inline="always")
def _xxh64_k8(k, seed):
    """XXH64 of one 8-byte little-endian key."""
    h = seed + _P64_5 + _U(8)
    h ^= _round64(_U(0), k)
    h = rotl64(h, 27) * _P64_1 + _P64_4
    return _aval64(h)


@njit(inline="always")
def _xxh64_k4(k, seed):
    """XXH64 of one 4-byte little-endian key (``k`` < 2**32)."""
    h = seed + _P64_5 + _U(4)
    h ^= k * _P64_1
    h = rotl64(h, 23) * _P64_2 + _P64_3
    return _aval64(h)


@njit(inline="always")
def _xxh32_k4(k, seed):
    """XXH32 of one 4-byte key; ``seed`` and the result are < 2**32 held in uint64."""
    h = add32(seed, _P32_5 + _U(4))
    h = mul32(rotl32(add32(h, mul32(k, _P32_3)), 17), _P32_4)
    return _aval32(h)


@njit(inline="always")
def _xxh32_k8(lo, hi, seed):
    """XXH32 of one 8-byte key given as its low and high 32-bit words."""
    h = add32(seed, _P32_5 + _U(8))
    h = mul32(rotl32(add32(h, mul32(lo, _P32_3)), 17), _P32_4)
    h = mul32(rotl32(add32(h, mul32(hi, _P32_3)), 17), _P32_4)
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
            v1 = _round64(v1, load_u64(d, p))
            v2 = _round64(v2, load_u64(d, p + 8))
            v3 = _round64(v3, load_u64(d, p + 16))
            v4 = _round64(v4, load_u64(d, p + 24))
            p += 32
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18)
        h = _merge64(h, v1)
        h = _merge64(h, v2)
        h = _merge64(h, v3)
        h = _merge64(h, v4)
    else:
        h = seed + _P64_5
    h += _U(n)
    while p + 8 <= e:
        h ^= _round64(_U(0), load_u64(d, p))
        h = rotl64(h, 27) * _P64_1 + _P64_4
        p += 8
    if p + 4 <= e:
        h ^= load_u32(d, p) * _P64_1
        h = rotl64(h, 23) * _P64_2 + _P64_3
        p += 4
    while p < e:
        h ^= load_u8(d, p) * _P64_5
        h = rotl64(h, 11) * _P64_1
        p += 1
    return _aval64(h)


@njit(inline="always")
def _tail_word(d, e, t):
    """The last ``t`` (0..7) bytes before ``e`` in the low bytes of a uint64 (higher bytes are
    garbage): one unaligned load of the 8 bytes ending at ``e``, or of ``d[0:8]`` when ``e < 8``
    (needs ``len(d) >= 8``; with ``t == 0`` the result is garbage and must be unused)."""
    top = select_unpredictable(e >= 8, e, np.int64(8))
    return load_u64(d, top - 8) >> _U((8 * (e - t - top + 8)) & 63)


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
        lane = load_u64(d, select_unpredictable(c, s + 8 * k, np.int64(0)))
        h = select_unpredictable(c, rotl64(h ^ _round64(_U(0), lane), 27) * _P64_1 + _P64_4, h)
    tail = _tail_word(d, e, n & 7)
    c = (n & 4) != 0
    h = select_unpredictable(c, rotl64(h ^ ((tail & _M32) * _P64_1), 23) * _P64_2 + _P64_3, h)
    tail >>= _U((n & 4) * 8)  # the 0..3 single bytes
    nt = n & 3
    for k in range(3):
        c = k < nt
        b = (tail >> _U(8 * k)) & _U(0xFF)
        h = select_unpredictable(c, rotl64(h ^ (b * _P64_5), 11) * _P64_1, h)
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
            v1 = _round32(v1, load_u32(d, p))
            v2 = _round32(v2, load_u32(d, p + 4))
            v3 = _round32(v3, load_u32(d, p + 8))
            v4 = _round32(v4, load_u32(d, p + 12))
            p += 16
        h = (rotl32(v1, 1) + rotl32(v2, 7) + rotl32(v3, 12) + rotl32(v4, 18)) & _M32
    else:
        h = (seed + _P32_5) & _M32
    h = (h + _U(n)) & _M32
    while p + 4 <= e:
        h = (h + load_u32(d, p) * _P32_3) & _M32
        h = (rotl32(h, 17) * _P32_4) & _M32
        p += 4
    while p < e:
        h = (h + load_u8(d, p) * _P32_5) & _M32
        h = (rotl32(h, 11) * _P32_1) & _M32
        p += 1
    return _aval32(h)


@njit(inline="always")
def _xxh32_short(d, s, e, seed):
    """XXH32 of ``d[s:e]`` for ``e - s < 32``, branch-free like :func:`_xxh64_short`: at most
    one 16-byte stripe (computed always, kept if ``n >= 16``), 0..3 4-byte steps, 0..3 byte
    steps from one load of the record's last 8 bytes (needs ``len(d) >= 8``)."""
    n = e - s
    big = n >= 16
    q = select_unpredictable(big, s, np.int64(0))
    w0 = load_u64(d, q)
    w1 = load_u64(d, q + 8)
    v1 = _round32((seed + _P32_1 + _P32_2) & _M32, w0 & _M32)
    v2 = _round32((seed + _P32_2) & _M32, w0 >> _U(32))
    v3 = _round32(seed, w1 & _M32)
    v4 = _round32((seed - _P32_1) & _M32, w1 >> _U(32))
    hs = rotl32(v1, 1) + rotl32(v2, 7) + rotl32(v3, 12) + rotl32(v4, 18)
    h = select_unpredictable(big, hs, seed + _P32_5)
    h = (h + _U(n)) & _M32
    p = s + (n & 16)
    nw = (n & 15) >> 2
    for k in range(3):
        c = k < nw
        x = load_u32(d, select_unpredictable(c, p + 4 * k, np.int64(0)))
        h = select_unpredictable(c, (rotl32((h + x * _P32_3) & _M32, 17) * _P32_4) & _M32, h)
    nt = n & 3
    tail = _tail_word(d, e, nt)
    for k in range(3):
        c = k < nt
        b = (tail >> _U(8 * k)) & _U(0xFF)
        h = select_unpredictable(c, (rotl32((h + b * _P32_5) & _M32, 11) * _P32_1) & _M32, h)
    return _aval32(h)


@njit(inline="always")
def _xxh32_rec(d, s, e, seed, short_ok):
    if short_ok and e - s < 32:
        return _xxh32_short(d, s, e, seed)
    return _xxh32_long(d, s, e, seed)


# ---------------------------------------------------------------------------------------------
# Per-range bodies (shared by the serial and the parallel kernels)
# ---------------------------------------------------------------------------------------------


# Fixed-width keys: 16 keys an iteration go to the vector unit (two zmm registers of 8 uint64
# lanes, or one of 16 uint32 lanes), 2 more to the scalar unit alongside them. The vector unit
# is the bottleneck of a vectorised hash (on AMD Zen 4, xxHash's own C loop keeps its multiply
# and shift pipes busy), while the scalar multiplier idles: the 2 keys ride along for free
# (measured: XXH64 of 8-byte keys 1.08x faster than 16 + 0, and faster than 16 + 3 or 32 + 4).
# The loops index keys and out directly, so any strides work (contiguous ones vectorise).
_VEC = 16
_BLOCK = 18


def _lanes(hash_v, hash_s):
    """A loop ``out[i] = hash(keys, i, seed, a, b, sh)`` over ``lo <= i < hi``: ``hash_v`` for
    the keys of the vector unit, ``hash_s`` (the same function, written for scalar code) for the
    others. Both are inlined, so each loop compiles to straight-line code per mode."""

    @njit(inline="always")
    def loop(keys, seed, a, b, sh, out, lo, hi):
        i = lo
        while i + _BLOCK <= hi:
            for j in range(_VEC):
                out[i + j] = hash_v(keys, i + j, seed, a, b, sh)
            for j in range(_VEC, _BLOCK):
                out[i + j] = hash_s(keys, i + j, seed, a, b, sh)
            i += _BLOCK
        while i < hi:
            out[i] = hash_s(keys, i, seed, a, b, sh)
            i += 1

    return loop


def _xxh64_post(key_hash, mod, mulhi):
    """The four post-processings (MODE_*) of the XXH64 ``key_hash(key, seed)`` of ``keys[i]``,
    with the given ``h % d`` and multiply-high."""

    @njit(inline="always")
    def raw(keys, i, seed, a, b, sh):
        return key_hash(_U(keys[i]), seed)

    @njit(inline="always")
    def modulo(keys, i, seed, a, b, sh):
        return mod(key_hash(_U(keys[i]), seed), a, b, sh)

    @njit(inline="always")
    def fastrange(keys, i, seed, a, b, sh):
        return mulhi(key_hash(_U(keys[i]), seed), a)

    @njit(inline="always")
    def fid(keys, i, seed, a, b, sh):
        return (key_hash(_U(keys[i]), seed) & a) | b

    return raw, modulo, fastrange, fid


def _xxh64_loops(key_hash):
    """One loop per MODE_* (their order) for keys hashed by ``key_hash``."""
    vec = _xxh64_post(key_hash, _modm, mulhi64_halves)
    scal = _xxh64_post(key_hash, _modm_scalar, mulhi64)
    return tuple(_lanes(v, s) for v, s in zip(vec, scal))


_K8_RAW, _K8_MOD, _K8_FASTRANGE, _K8_FID = _xxh64_loops(_xxh64_k8)
_K4_RAW, _K4_MOD, _K4_FASTRANGE, _K4_FID = _xxh64_loops(_xxh64_k4)


@njit
def _xxh64_fixed_range(keys, seed, mode, a, b, sh, out, lo, hi, width):
    # One loop per (width, mode): no per-key branching.
    if width == 8:
        if mode == MODE_RAW:
            _K8_RAW(keys, seed, a, b, sh, out, lo, hi)
        elif mode == MODE_MOD:
            _K8_MOD(keys, seed, a, b, sh, out, lo, hi)
        elif mode == MODE_FASTRANGE:
            _K8_FASTRANGE(keys, seed, a, b, sh, out, lo, hi)
        else:
            _K8_FID(keys, seed, a, b, sh, out, lo, hi)
    elif mode == MODE_RAW:
        _K4_RAW(keys, seed, a, b, sh, out, lo, hi)
    elif mode == MODE_MOD:
        _K4_MOD(keys, seed, a, b, sh, out, lo, hi)
    elif mode == MODE_FASTRANGE:
        _K4_FASTRANGE(keys, seed, a, b, sh, out, lo, hi)
    else:
        _K4_FID(keys, seed, a, b, sh, out, lo, hi)


@njit(inline="always")
def _xxh32_key8(keys, i, seed, a, b, sh):
    # the key's two 32-bit words, loaded as such: the loop vectorises 16 keys to a register
    return np.uint32(_xxh32_k8(load_half32(keys, i, 0), load_half32(keys, i, 1), seed))


@njit(inline="always")
def _xxh32_key4(keys, i, seed, a, b, sh):
    return np.uint32(_xxh32_k4(_U(keys[i]), seed))


def _plain(hash_fn):
    """A plain loop of ``hash_fn`` (as :func:`_lanes`' loops) for hashes with 32-bit lanes: 16
    keys to a zmm register need about as many vector cycles as 2 keys need scalar multiplies,
    so no key rides along on the scalar unit."""

    @njit(inline="always")
    def loop(keys, seed, a, b, sh, out, lo, hi):
        for i in range(lo, hi):
            out[i] = hash_fn(keys, i, seed, a, b, sh)

    return loop


_XXH32_K8 = _plain(_xxh32_key8)
_XXH32_K4 = _plain(_xxh32_key4)


@njit
def _xxh32_fixed_range(keys, seed, out, lo, hi, width):
    z = _U(0)
    if width == 8:
        _XXH32_K8(keys, seed, z, z, z, out, lo, hi)
    else:
        _XXH32_K4(keys, seed, z, z, z, out, lo, hi)


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
            out[i] = mulhi64_halves(_xxh64_rec(data, s, e, seed, ok), a)
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


# ---------------------------------------------------------------------------------------------
# Kernels: each runs one contiguous range on the calling thread with the GIL released; the
# backend calls them on the whole batch (small batches) or on chunks from several threads.
# ---------------------------------------------------------------------------------------------


@kernel
def xxh64_fixed_ser(keys, seed, mode, a, b, sh, out):
    _xxh64_fixed_range(keys, seed, mode, a, b, sh, out, 0, keys.shape[0], keys.itemsize)


@kernel
def xxh32_fixed_ser(keys, seed, out):
    _xxh32_fixed_range(keys, seed, out, 0, keys.shape[0], keys.itemsize)


@kernel
def xxh64_var_ser(offsets, data, seed, mode, a, b, sh, out):
    _xxh64_var_range(offsets, data, seed, mode, a, b, sh, out, 0, offsets.shape[0] - 1)


@kernel
def xxh32_var_ser(offsets, data, seed, out):
    _xxh32_var_range(offsets, data, seed, out, 0, offsets.shape[0] - 1)


@kernel
def post64_ser(h, mode, a, b, sh, out):
    """hash_bucket's and fid's post-processing (``mode``, ``a``, ``b``, ``sh`` of
    ``backend.hash_params``) of 64-bit hashes computed by another kernel (a second pass; the
    XXH64 kernels fuse it instead)."""
    n = h.shape[0]
    if mode == MODE_MOD:
        for i in range(n):
            out[i] = _modm(_U(h[i]), a, b, sh)
    elif mode == MODE_FASTRANGE:
        for i in range(n):
            out[i] = mulhi64_halves(_U(h[i]), a)
    elif mode == MODE_FID:
        for i in range(n):
            out[i] = (_U(h[i]) & a) | b
    else:
        for i in range(n):
            out[i] = _U(h[i])


# Building blocks for other kernel files (inlined where they are called): XXH64 of one 8- or
# 4-byte key held in a uint64, and of the record data[s:e] (any length; data must hold >= 8 bytes).
xxh64_k8 = _xxh64_k8
xxh64_k4 = _xxh64_k4


@njit(inline="always")
def xxh64_record(data, s, e, seed):
    return _xxh64_rec(data, s, e, seed, data.shape[0] >= 8)


# ---------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------


def mod_magic(d: int) -> tuple[int, int]:
    """(m, sh) for :func:`_modm`: ``h % d`` as a multiply-high, shifts and a multiply."""
    ell = (d - 1).bit_length()  # ceil(log2(d))
    m = ((1 << 64) * ((1 << ell) - d)) // d + 1
    return m, min(ell, 1) | (max(ell - 1, 0) << 8)
