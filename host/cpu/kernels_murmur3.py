"""MurmurHash3_x86_32 kernels (standard and Spark SQL string tail) and the SigridHash kernel.

Like the XXH32 kernels, the 32-bit state lives in the low half of a ``uint64`` and its multiplies,
adds and rotates are 32-bit operations (:func:`.intrinsics.mul32`, ``add32``, ``rotl32``: numba
would promote ``uint32`` arithmetic to 64 bits), so a loop over keys vectorises 16 lanes to a zmm
register. Every constant is an explicit ``np.uint64``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from offload.golden_murmur3 import (
    MURMUR3_C1,
    MURMUR3_C2,
    MURMUR3_FMIX1,
    MURMUR3_FMIX2,
    MURMUR3_H_ADD,
)
from offload.golden_sigrid import HASH128_KMUL

from .intrinsics import (
    add32,
    kernel,
    load_half32,
    load_u8,
    load_u32,
    mul32,
    mulhi64,
    rotl32,
    select_unpredictable,
)

__all__ = [
    "murmur3_fixed_ser",
    "murmur3_k4",
    "murmur3_k8",
    "murmur3_record",
    "murmur3_var_ser",
    "sigrid_ser",
]

_U = np.uint64
_M32 = _U(0xFFFFFFFF)
_C1 = _U(MURMUR3_C1)
_C2 = _U(MURMUR3_C2)
_HADD = _U(MURMUR3_H_ADD)
_F1 = _U(MURMUR3_FMIX1)
_F2 = _U(MURMUR3_FMIX2)
_KMUL = _U(HASH128_KMUL)


# ---------------------------------------------------------------------------------------------
# Scalar building blocks (inlined into the kernels that call them; public ones are used by
# kernels_chain)
# ---------------------------------------------------------------------------------------------


@njit(inline="always")
def _mix_k1(k):
    return mul32(rotl32(mul32(k, _C1), 15), _C2)


@njit(inline="always")
def _mix_h1(h, k):
    return add32(mul32(rotl32(h ^ k, 13), _U(5)), _HADD)


@njit(inline="always")
def _fmix(h, n):
    h ^= _U(n) & _M32
    h ^= h >> _U(16)
    h = mul32(h, _F1)
    h ^= h >> _U(13)
    h = mul32(h, _F2)
    h ^= h >> _U(16)
    return h


@njit(inline="always")
def murmur3_k4(k, seed):
    """MurmurHash3_x86_32 of one 4-byte little-endian key (``k`` < 2**32; ``seed`` < 2**32, both
    held in uint64); the result is < 2**32 in a uint64."""
    return _fmix(_mix_h1(seed, _mix_k1(k)), 4)


@njit(inline="always")
def _k8_words(lo, hi, seed):
    h = _mix_h1(seed, _mix_k1(lo))
    h = _mix_h1(h, _mix_k1(hi))
    return _fmix(h, 8)


@njit(inline="always")
def murmur3_k8(k, seed):
    """MurmurHash3_x86_32 of one 8-byte little-endian key held in a uint64."""
    return _k8_words(k & _M32, k >> _U(32), seed)


@njit(inline="always")
def _sext8(b):
    """A byte (< 256) sign-extended to 32 bits, as Java widens a ``byte`` to an ``int``."""
    return ((b ^ _U(0x80)) - _U(0x80)) & _M32


@njit(inline="always")
def _tail_k(d, e, t):
    """The ``t`` (0..3) bytes before ``e`` in the low bytes of a uint64, the higher bytes zero:
    one unaligned load of the 4 bytes ending at ``e``, or of ``d[0:4]`` when ``e < 4`` (needs
    ``len(d) >= 4``)."""
    top = select_unpredictable(e >= 4, e, np.int64(4))
    return load_u32(d, top - 4) >> _U((8 * (e - t - top + 4)) & 63) & ((_U(1) << _U(8 * t)) - _U(1))


@njit(inline="always")
def _record(d, s, e, h, spark_tail, word_tail):
    """MurmurHash3_x86_32 of ``d[s:e]`` from state ``h``. The block loop branches (it is short
    and its exit is the record's one unpredictable branch); the 0..3 tail bytes come from one load
    (``word_tail``, needs ``len(d) >= 4``) and are mixed without branches: the standard tail's
    ``mix_k1(0)`` is 0, so an empty tail needs no test, and each of Spark's byte rounds is kept
    or dropped by a ``cmov``."""
    p = s
    while p + 4 <= e:
        h = _mix_h1(h, _mix_k1(load_u32(d, p)))
        p += 4
    t = e - p
    if word_tail:
        w = _tail_k(d, e, t)
    else:
        w = _U(0)
        for k in range(t):
            w |= load_u8(d, p + k) << _U(8 * k)
    if spark_tail:
        for k in range(3):
            b = (w >> _U(8 * k)) & _U(0xFF)
            h = select_unpredictable(k < t, _mix_h1(h, _mix_k1(_sext8(b))), h)
    else:
        h ^= _mix_k1(w)
    return _fmix(h, e - s)


@njit(inline="always")
def murmur3_record(d, s, e, seed, spark_tail):
    """MurmurHash3_x86_32 of ``d[s:e]`` with ``seed`` (< 2**32 in a uint64); ``spark_tail``
    selects Spark SQL's tail (each trailing byte sign-extended and given a full round) over the
    standard one (the trailing bytes packed into one word, mixed into the state without a
    round). Reads only inside ``d``."""
    if d.shape[0] >= 4:
        return _record(d, s, e, seed, spark_tail, True)
    return _record(d, s, e, seed, spark_tail, False)


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@kernel
def murmur3_fixed_ser(keys, seed, out):
    """``out[i] = murmur3_32(key i as 4 or 8 little-endian bytes, seed)``: ``keys`` of a 4- or
    8-byte integer dtype (a 4-byte key is its 32-bit pattern), ``seed`` < 2**32, ``out`` uint32."""
    n = keys.shape[0]
    seed = _U(seed) & _M32
    if keys.itemsize == 8:  # each key's two 32-bit words loaded as such: 16 keys to a register
        for i in range(n):
            out[i] = np.uint32(_k8_words(load_half32(keys, i, 0), load_half32(keys, i, 1), seed))
    else:
        for i in range(n):
            out[i] = np.uint32(murmur3_k4(_U(keys[i]) & _M32, seed))


@njit(inline="always")
def _var_loop(offsets, data, seed, spark_tail, word_tail, out):
    # each offset is loaded once (a record's end is the next one's start)
    e = np.int64(offsets[0])
    for i in range(offsets.shape[0] - 1):
        s = e
        e = np.int64(offsets[i + 1])
        out[i] = np.uint32(_record(data, s, e, seed, spark_tail, word_tail))


@njit
def _murmur3_var_range(offsets, data, seed, spark_tail, out):
    # one loop per (tail, data of >= 4 bytes): no per-record branch on either
    if offsets.shape[0] <= 1:
        return
    if data.shape[0] >= 4:
        if spark_tail:
            _var_loop(offsets, data, seed, True, True, out)
        else:
            _var_loop(offsets, data, seed, False, True, out)
    elif spark_tail:
        _var_loop(offsets, data, seed, True, False, out)
    else:
        _var_loop(offsets, data, seed, False, False, out)


@kernel
def murmur3_var_ser(offsets, data, seed, spark_tail, out):
    """``out[i] = murmur3_32(data[offsets[i]:offsets[i+1]], seed, tail)``: ``offsets`` int32 or
    int64 with n + 1 entries, ``data`` uint8, ``spark_tail`` a bool (Spark SQL's tail when true),
    ``out`` uint32."""
    _murmur3_var_range(offsets, data, _U(seed) & _M32, spark_tail, out)


# ---------------------------------------------------------------------------------------------
# SigridHash (TorchArrow): floor(hash_128_to_64(salt, twang_mix64(v))) mod max_value
# ---------------------------------------------------------------------------------------------


@njit(inline="always")
def _twang_mix64(k):
    k = (~k) + (k << _U(21))
    k ^= k >> _U(24)
    k = k + (k << _U(3)) + (k << _U(8))
    k ^= k >> _U(14)
    k = k + (k << _U(2)) + (k << _U(4))
    k ^= k >> _U(28)
    return k + (k << _U(31))


@njit(inline="always")
def _hash_128_to_64(upper, lower):
    a = (lower ^ upper) * _KMUL
    a ^= a >> _U(47)
    b = (upper ^ a) * _KMUL
    b ^= b >> _U(47)
    return b * _KMUL


@njit(inline="always")
def _mod_magic(d):
    """(m, s1, s2) for ``u % d`` by a multiply-high (Granlund and Montgomery, "Division by
    invariant integers using multiplication", fig. 4.1): ``ell = ceil(log2 d)``,
    ``m = floor(2**64 * (2**ell - d) / d) + 1`` by long division, ``s1 = min(ell, 1)``,
    ``s2 = max(ell - 1, 0)``. Needs 1 <= d < 2**63."""
    ell = 0
    while ell < 63 and (_U(1) << _U(ell)) < d:  # bounded: a bad d must not loop forever
        ell += 1
    r = (_U(1) << _U(ell)) - d  # < d, so r << 1 never overflows (d < 2**63)
    q = _U(0)
    for _ in range(64):
        r <<= _U(1)
        q <<= _U(1)
        if r >= d:
            r -= d
            q |= _U(1)
    return q + _U(1), _U(min(ell, 1)), _U(max(ell - 1, 0))


@kernel
def sigrid_ser(values, salt, max_value, out):
    """``out[i] = sigrid_hash(values[i], salt, max_value)`` (int64 in and out; the caller has
    checked ``1 <= max_value < 2**63``; any other value gives meaningless results, never a hang).
    The floor modulo is taken as Velox takes it: on the sign-folded ``u = sign ^ h`` (in
    [0, 2**63)) by an unsigned multiply-high, then unfolded (``h = -u - 1`` has floor modulo
    ``d - 1 - u % d``). The mixing vectorises; the multiply-high stays a scalar ``mul`` per id
    (LLVM turns a multiply-high from 32-bit halves back into it here)."""
    salt_u = _U(np.int64(salt))
    d = _U(np.int64(max_value))
    m, s1, s2 = _mod_magic(d)
    for i in range(values.shape[0]):
        h = _hash_128_to_64(salt_u, _twang_mix64(_U(values[i])))
        neg = (h >> _U(63)) != _U(0)
        u = select_unpredictable(neg, ~h, h)
        t = mulhi64(m, u)
        r = u - ((t + ((u - t) >> s1)) >> s2) * d
        out[i] = np.int64(select_unpredictable(neg, d - _U(1) - r, r))
