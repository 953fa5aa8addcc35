"""Per-row-seed hash kernels: one column step of Spark SQL's ``hash(c1, c2, ...)`` and
``xxhash64(c1, c2, ...)``.

Spark hashes a row column by column, each column's hash being the seed of the next and a null
leaving the running value unchanged. The host calls one of these kernels per column on the
running values ``seeds`` (initialised to 42), which each kernel updates in place:
``seeds[i] = hash(record i, seeds[i])`` where ``valid[i]``, unchanged where not. Ints and longs
are their 4 or 8 little-endian bytes; strings use Spark's Murmur3 tail (XXH64 has only one).

The fixed-width kernels hash every row and keep or drop the result with a ``cmov`` (nulls cost no
branch); the variable-width ones skip a null record's bytes altogether.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .intrinsics import kernel, select_unpredictable
from .kernels_hash import xxh64_k4, xxh64_k8, xxh64_record
from .kernels_murmur3 import murmur3_k4, murmur3_k8, murmur3_record

__all__ = [
    "murmur3_chain_fixed",
    "murmur3_chain_var",
    "xxh64_chain_fixed",
    "xxh64_chain_var",
]

_U = np.uint64
_M32 = _U(0xFFFFFFFF)


@kernel
def murmur3_chain_fixed(keys, valid, seeds):
    """``seeds[i] = murmur3_32(key i, seeds[i])`` where ``valid[i]``: ``keys`` of a 4-byte (Spark
    IntegerType) or 8-byte (LongType) integer dtype, ``valid`` bool or uint8, ``seeds`` uint32."""
    n = keys.shape[0]
    if keys.itemsize == 8:
        for i in range(n):
            s = _U(seeds[i])
            h = murmur3_k8(_U(keys[i]), s)
            seeds[i] = np.uint32(select_unpredictable(valid[i] != 0, h, s))
    else:
        for i in range(n):
            s = _U(seeds[i])
            h = murmur3_k4(_U(keys[i]) & _M32, s)
            seeds[i] = np.uint32(select_unpredictable(valid[i] != 0, h, s))


@kernel
def xxh64_chain_fixed(keys, valid, seeds):
    """``seeds[i] = xxh64(key i, seeds[i])`` where ``valid[i]``: ``keys`` of a 4- or 8-byte
    integer dtype, ``valid`` bool or uint8, ``seeds`` uint64."""
    n = keys.shape[0]
    if keys.itemsize == 8:
        for i in range(n):
            s = _U(seeds[i])
            seeds[i] = select_unpredictable(valid[i] != 0, xxh64_k8(_U(keys[i]), s), s)
    else:
        for i in range(n):
            s = _U(seeds[i])
            seeds[i] = select_unpredictable(valid[i] != 0, xxh64_k4(_U(keys[i]) & _M32, s), s)


@njit
def _murmur3_chain_var(offsets, data, valid, seeds):
    e = np.int64(offsets[0])
    for i in range(offsets.shape[0] - 1):
        s = e
        e = np.int64(offsets[i + 1])
        if valid[i]:
            seeds[i] = np.uint32(murmur3_record(data, s, e, _U(seeds[i]), True))


@kernel
def murmur3_chain_var(offsets, data, valid, seeds):
    """``seeds[i] = murmur3_32(data[offsets[i]:offsets[i+1]], seeds[i], Spark tail)`` where
    ``valid[i]``: ``offsets`` int32 or int64 with n + 1 entries, ``data`` uint8, ``valid`` bool or
    uint8, ``seeds`` uint32."""
    if offsets.shape[0] > 1:
        _murmur3_chain_var(offsets, data, valid, seeds)


@njit
def _xxh64_chain_var(offsets, data, valid, seeds):
    e = np.int64(offsets[0])
    for i in range(offsets.shape[0] - 1):
        s = e
        e = np.int64(offsets[i + 1])
        if valid[i]:
            seeds[i] = xxh64_record(data, s, e, _U(seeds[i]))


@kernel
def xxh64_chain_var(offsets, data, valid, seeds):
    """``seeds[i] = xxh64(data[offsets[i]:offsets[i+1]], seeds[i])`` where ``valid[i]``:
    ``offsets`` int32 or int64 with n + 1 entries, ``data`` uint8, ``valid`` bool or uint8,
    ``seeds`` uint64."""
    if offsets.shape[0] > 1:
        _xxh64_chain_var(offsets, data, valid, seeds)
