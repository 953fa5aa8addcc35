"""``bucketize`` kernels: a value's bucket is the count of boundaries below it (``right=True``: at
or below it), found by a branchless binary search."""

from __future__ import annotations

from numba import njit

from .intrinsics import kernel, select_unpredictable

__all__ = ["bucketize_ser"]


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
                b0 = select_unpredictable(cmp(bnd[b0 + half], v0), b0 + half, b0)
                b1 = select_unpredictable(cmp(bnd[b1 + half], v1), b1 + half, b1)
                b2 = select_unpredictable(cmp(bnd[b2 + half], v2), b2 + half, b2)
                b3 = select_unpredictable(cmp(bnd[b3 + half], v3), b3 + half, b3)
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
                b0 = select_unpredictable(cmp(bnd[b0 + half], v0), b0 + half, b0)
                n -= half
            out[i] = nb if v0 != v0 else b0 + (1 if cmp(bnd[b0], v0) else 0)
            i += 1

    return _range


_bucketize_right_range = _make_bucketize_range(_le)  # right=True: count of b <= x
_bucketize_left_range = _make_bucketize_range(_lt)  # right=False: count of b < x


@njit
def _bucketize_range(x, bnd, right, out, lo, hi):
    if right:
        _bucketize_right_range(x, bnd, out, lo, hi)
    else:
        _bucketize_left_range(x, bnd, out, lo, hi)


@kernel
def bucketize_ser(x, bnd, right, out):
    _bucketize_range(x, bnd, right, out, 0, x.shape[0])
