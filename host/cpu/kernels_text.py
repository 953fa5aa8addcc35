"""Integers as decimal text, and records equal to one byte string: the kernels behind Keras-style
hashing of integer ids (``offload.compat.keras``), which hashes ``tf.as_string(x)``: ``42`` as
``b"42"``, ``-7`` as ``b"-7"``.

:func:`format_decimal` writes every int32/int64 of a batch as its shortest decimal text (a ``-``
for negatives, no leading zeros, ``0`` for zero) into one ``(offsets int64[n+1], data uint8[])``
pair, the variable-length record form the hash kernels read. Two passes: the first counts the
digits of each value (comparisons against powers of ten) and sums them into the offsets, the
second writes each value backwards from its end, two digits per step from a 200-byte table of
"00".."99". No Python ``str`` is ever made. Large batches run both passes in chunks on the CPU
backend's worker threads (the offsets of a chunk start at its first value's offset, so the second
pass needs only the prefix sum of the first).
"""

from __future__ import annotations

import numpy as np

from .intrinsics import kernel
from .pool import default_threads, shared_pool

__all__ = ["decimal_lengths", "decimal_fill", "equal_records", "format_decimal"]

_U = np.uint64
# "00", "01", ..., "99": the two ASCII digits of k at [2k, 2k+1]
_PAIRS = np.frombuffer("".join(f"{k:02d}" for k in range(100)).encode(), np.uint8).copy()
# Below this many values one thread does both passes (the pool's hand-off costs more).
PARALLEL_MIN = 1 << 17


@kernel
def decimal_lengths(values, lo, hi, lengths):
    """``lengths[i]`` = the bytes of ``values[i]``'s decimal text, for ``lo <= i < hi``
    (``values`` int64; the magnitude is taken as uint64 so that -2**63 needs no special case)."""
    for i in range(lo, hi):
        v = values[i]
        neg = v < 0
        u = (_U(0) - _U(v)) if neg else _U(v)
        d = 1
        p = _U(10)
        while d < 20 and u >= p:  # 10**19 < 2**64 < 10**20: at most 20 digits
            d += 1
            p *= _U(10)
        lengths[i] = d + (1 if neg else 0)


@kernel
def decimal_fill(values, lo, hi, offsets, pairs, data):
    """Write ``values[i]``'s decimal text to ``data[offsets[i]:offsets[i+1]]`` for
    ``lo <= i < hi``, from the end: two digits per step (``pairs``), then a last digit, then the
    sign."""
    for i in range(lo, hi):
        v = values[i]
        neg = v < 0
        u = (_U(0) - _U(v)) if neg else _U(v)
        p = offsets[i + 1]
        while u >= _U(100):
            r = u % _U(100)
            u //= _U(100)
            p -= 2
            data[p] = pairs[2 * r]
            data[p + 1] = pairs[2 * r + 1]
        if u >= _U(10):
            p -= 2
            data[p] = pairs[2 * u]
            data[p + 1] = pairs[2 * u + 1]
        else:
            p -= 1
            data[p] = np.uint8(48 + u)
        if neg:
            data[p - 1] = np.uint8(45)  # "-"


@kernel
def equal_records(offsets, data, needle, out):
    """``out[i]`` = whether ``data[offsets[i]:offsets[i+1]]`` equals ``needle`` (bytes as uint8)."""
    m = needle.shape[0]
    for i in range(offsets.shape[0] - 1):
        s = offsets[i]
        same = offsets[i + 1] - s == m
        j = 0
        while same and j < m:
            same = data[s + j] == needle[j]
            j += 1
        out[i] = same


def _bounds(n: int, threads: int) -> list[int] | None:
    """Chunk edges for ``threads`` threads (more chunks than threads, so a busy core delays one
    chunk, not the call), or None to run on the calling thread alone."""
    if n < PARALLEL_MIN or threads < 2:
        return None
    k = 4 * threads
    return [n * j // k for j in range(k + 1)]


def format_decimal(values: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every value of an int32/int64 array (any shape, read flat) as decimal text: ``(offsets
    int64[n+1], data uint8[])``, record ``i`` being ``data[offsets[i]:offsets[i+1]]``, the ASCII
    of ``str(int(values[i]))`` (no ``str`` is made). ``threads``: default, the CPUs available."""
    if not isinstance(values, np.ndarray) or values.dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
        what = values.dtype if isinstance(values, np.ndarray) else type(values).__name__
        raise TypeError(f"format_decimal takes a numpy int32 or int64 array, got {what}")
    v = np.ascontiguousarray(values.reshape(-1), dtype=np.int64)
    n = v.shape[0]
    threads = default_threads() if threads is None else threads
    bounds = _bounds(n, threads)
    offsets = np.empty(n + 1, np.int64)
    offsets[0] = 0
    lengths = offsets[1:]
    if bounds is None:
        decimal_lengths(v, 0, n, lengths)
    else:
        shared_pool(threads - 1).run(lambda lo, hi: decimal_lengths(v, lo, hi, lengths), bounds)
    np.cumsum(lengths, out=lengths)
    data = np.empty(int(offsets[-1]), np.uint8)
    if bounds is None:
        decimal_fill(v, 0, n, offsets, _PAIRS, data)
    else:
        shared_pool(threads - 1).run(lambda lo, hi: decimal_fill(v, lo, hi, offsets, _PAIRS, data), bounds)
    return offsets, data
