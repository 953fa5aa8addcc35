"""CityHash64 v1.1 (with and without seed) and FarmHash Fingerprint64 kernels.

The golden models (``offload.golden_cityhash``) are the specification. The two hashes are one
function up to 32 bytes, so both kernels share :func:`_short` (records of 0..32 bytes, the
common case) and the fixed-key paths; they differ on 33..64 bytes and the 64-byte-chunk loop.

Arithmetic is on ``uint64`` with explicit ``np.uint64`` constants (numba promotes
``uint64 op int64`` to ``float64``); multiplies wrap; a rotate is two shifts and an or.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from offload.golden_cityhash import CITY_K0, CITY_K1, CITY_K2, CITY_KMUL, FARM_SEED

from .intrinsics import kernel, load_u8, load_u32, load_u64, select_unpredictable

__all__ = [
    "cityhash64_fixed_ser",
    "cityhash64_var_ser",
    "farmhash64_fixed_ser",
    "farmhash64_var_ser",
]

_U = np.uint64
_M32 = _U(0xFFFFFFFF)
_FF = _U(0xFF)
_M64 = (1 << 64) - 1
# numba freezes globals into a kernel when it compiles it: fine for constants that never change.
_K0, _K1, _K2, _KMUL = _U(CITY_K0), _U(CITY_K1), _U(CITY_K2), _U(CITY_KMUL)
# farmhashna::Hash64's start state for records over 64 bytes (x before its first fetch, y, z).
_FARM_X = _U(FARM_SEED * CITY_K2 & _M64)
_farm_y = (FARM_SEED * CITY_K1 + 113) & _M64
_farm_z = (_farm_y * CITY_K2 + 113) & _M64
_FARM_Y = _U(_farm_y)
_FARM_Z = _U(((_farm_z ^ (_farm_z >> 47)) * CITY_K2) & _M64)


# ---------------------------------------------------------------------------------------------
# Memory access of the vectorised short-record loop
# ---------------------------------------------------------------------------------------------
# LLVM vectorises a loop of short records (gathers and 64-bit vector multiplies where the CPU has
# them) only if it knows that the stores to ``out`` do not change the offsets and data it loads;
# with data-dependent addresses it cannot check that at run time. These loads and the store carry
# LLVM scoped-noalias metadata saying so: true, as the backend allocates ``out`` for the call.


def _inputs_scope(module: ir.Module) -> ir.MDValue:
    domain = module.add_metadata([ir.MetaDataString(module, "offload.cityhash")])
    scope = module.add_metadata([ir.MetaDataString(module, "offload.cityhash.inputs"), domain])
    return module.add_metadata([scope])


@intrinsic
def _in_u64(typingctx, arr, idx):
    """``load_u64`` (unaligned little-endian 8 bytes of a uint8 array), in the inputs' scope."""
    sig = types.uint64(arr, idx)

    def codegen(context, builder, signature, args):
        av, iv = args
        ary = context.make_array(signature.args[0])(context, builder, av)
        ptr = builder.bitcast(builder.gep(ary.data, [iv]), ir.IntType(64).as_pointer())
        val = builder.load(ptr)
        val.align = 1
        val.set_metadata("alias.scope", _inputs_scope(builder.module))
        return val

    return sig, codegen


@intrinsic
def _in_offset(typingctx, arr, idx):
    """``np.int64(arr[idx])`` of an int32 or int64 array (any strides, ``idx >= 0``), in the
    inputs' scope."""
    sig = types.int64(arr, idx)

    def codegen(context, builder, signature, args):
        av, iv = args
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, av)
        val = builder.load(cgutils.get_item_pointer(context, builder, aryty, ary, [iv]))
        val.set_metadata("alias.scope", _inputs_scope(builder.module))
        return builder.sext(val, ir.IntType(64)) if val.type.width < 64 else val

    return sig, codegen


@intrinsic
def _out_store(typingctx, arr, idx, val):
    """``arr[idx] = val`` (uint64 array, any strides, ``idx >= 0``), known not to alias the
    inputs."""
    sig = types.void(arr, idx, val)

    def codegen(context, builder, signature, args):
        av, iv, vv = args
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, av)
        store = builder.store(vv, cgutils.get_item_pointer(context, builder, aryty, ary, [iv]))
        store.set_metadata("noalias", _inputs_scope(builder.module))
        return context.get_dummy_value()

    return sig, codegen


# ---------------------------------------------------------------------------------------------
# Building blocks (inlined into the kernels)
# ---------------------------------------------------------------------------------------------


@njit(inline="always")
def _rotr(v, r):
    return (v >> _U(r)) | (v << _U(64 - r))


@njit(inline="always")
def _bswap64(v):
    # LLVM turns this pattern into one bswap instruction.
    v = ((v & _U(0x00FF00FF00FF00FF)) << _U(8)) | ((v >> _U(8)) & _U(0x00FF00FF00FF00FF))
    v = ((v & _U(0x0000FFFF0000FFFF)) << _U(16)) | ((v >> _U(16)) & _U(0x0000FFFF0000FFFF))
    return (v << _U(32)) | (v >> _U(32))


@njit(inline="always")
def _shift_mix(v):
    return v ^ (v >> _U(47))


@njit(inline="always")
def _h16(u, v, mul):
    """City's HashLen16(u, v, mul); HashLen16(u, v) is ``mul = _KMUL``."""
    a = (u ^ v) * mul
    a ^= a >> _U(47)
    b = (v ^ a) * mul
    b ^= b >> _U(47)
    return b * mul


@njit(inline="always")
def _with_seed(h, seed):
    """CityHash64WithSeed from CityHash64: HashLen16(h - k2, seed)."""
    return _h16(h - _K2, seed, _KMUL)


@njit(inline="always")
def _k8(k):
    """Both hashes of one 8-byte little-endian key: HashLen0to16 with len 8, whose two fetches
    are the key itself."""
    mul = _K2 + _U(16)
    a = k + _K2
    return _h16(_rotr(k, 37) * mul + a, (_rotr(a, 25) + k) * mul, mul)


@njit(inline="always")
def _k4(k):
    """Both hashes of one 4-byte key (``k`` < 2**32): HashLen0to16 with len 4."""
    return _h16(_U(4) + (k << _U(3)), k, _K2 + _U(8))


@njit(inline="always")
def _short(d, s, e):
    """Both hashes of ``d[s:e]`` for ``e - s <= 32`` without data-dependent branches: the
    inputs of HashLen16 for 17..32, 8..16 and 4..7 bytes are all computed and one is kept by
    ``cmov``s (one HashLen16 for the three), then the 1..3-byte and empty results are selected.
    Random lengths cost no branch mispredictions, and a loop of it vectorises. Needs
    ``len(d) >= 8``: a fetch that the record's length does not use reads ``d[0:8]`` instead. On
    a longer record it stays in bounds (its result is then garbage)."""
    n = e - s
    un = _U(n)
    mul = _K2 + un + un
    big = n > 16
    mid = n >= 8
    w0 = _in_u64(d, select_unpredictable(mid, s, np.int64(0)))  # Fetch64(s)
    w1 = _in_u64(d, select_unpredictable(big, s + 8, np.int64(0)))  # Fetch64(s + 8)
    top = select_unpredictable(e >= 8, e, np.int64(8))
    we = _in_u64(d, top - 8)  # Fetch64(e - 8), for n < 8 the word holding the record
    we2 = _in_u64(d, select_unpredictable(big, e - 16, np.int64(0)))  # Fetch64(e - 16)
    # HashLen17to32
    a = w0 * _K1
    c = we * mul
    u17 = _rotr(a + w1, 43) + _rotr(c, 30) + we2 * _K2
    v17 = a + _rotr(w1 + _K2, 18) + c
    # HashLen0to16, 8..16 bytes
    a8 = w0 + _K2
    u8 = _rotr(we, 37) * mul + a8
    v8 = (_rotr(a8, 25) + we) * mul
    # 0..7 bytes: the record is in the low bytes of t (bytes above it are garbage)
    t = we >> _U((8 * (s - top + 8)) & 63)
    u4 = un + ((t & _M32) << _U(3))
    v4 = (t >> _U((8 * (n - 4)) & 63)) & _M32  # Fetch32(e - 4)
    u = select_unpredictable(big, u17, select_unpredictable(mid, u8, u4))
    v = select_unpredictable(big, v17, select_unpredictable(mid, v8, v4))
    h = _h16(u, v, mul)
    # 1..3 bytes: s[0], s[n >> 1], s[n - 1]
    y = (t & _FF) + (((t >> _U(8 * (n >> 1))) & _FF) << _U(8))
    z = un + (((t >> _U((8 * (n - 1)) & 63)) & _FF) << _U(2))
    h3 = _shift_mix((y * _K2) ^ (z * _K0)) * _K2
    return select_unpredictable(n >= 4, h, select_unpredictable(n > 0, h3, _K2))


@njit(inline="always")
def _len0to16(d, s, e):
    """HashLen0to16 with fetches inside the record only (any ``len(d)``)."""
    n = e - s
    if n >= 8:
        mul = _K2 + _U(2 * n)
        a = load_u64(d, s) + _K2
        b = load_u64(d, e - 8)
        return _h16(_rotr(b, 37) * mul + a, (_rotr(a, 25) + b) * mul, mul)
    if n >= 4:
        return _h16(_U(n) + (load_u32(d, s) << _U(3)), load_u32(d, e - 4), _K2 + _U(2 * n))
    if n > 0:
        y = load_u8(d, s) + (load_u8(d, s + (n >> 1)) << _U(8))
        z = _U(n) + (load_u8(d, e - 1) << _U(2))
        return _shift_mix((y * _K2) ^ (z * _K0)) * _K2
    return _K2


@njit(inline="always")
def _len17to32(d, s, e):
    mul = _K2 + _U(2 * (e - s))
    a = load_u64(d, s) * _K1
    b = load_u64(d, s + 8)
    c = load_u64(d, e - 8) * mul
    dd = load_u64(d, e - 16) * _K2
    return _h16(_rotr(a + b, 43) + _rotr(c, 30) + dd, a + _rotr(b + _K2, 18) + c, mul)


@njit(inline="always")
def _weak32(d, p, a, b):
    """WeakHashLen32WithSeeds of ``d[p:p+32]``, ``a`` and ``b``."""
    w = load_u64(d, p)
    z = load_u64(d, p + 24)
    a += w
    b = _rotr(b + a + z, 21)
    c = a
    a += load_u64(d, p + 8) + load_u64(d, p + 16)
    b += _rotr(a, 44)
    return a + z, b + c


@njit(inline="always")
def _city33to64(d, s, e):
    mul = _K2 + _U(2 * (e - s))
    a = load_u64(d, s) * _K2
    b = load_u64(d, s + 8)
    c = load_u64(d, e - 24)
    dd = load_u64(d, e - 32)
    ee = load_u64(d, s + 16) * _K2
    f = load_u64(d, s + 24) * _U(9)
    g = load_u64(d, e - 8)
    h = load_u64(d, e - 16) * mul
    u = _rotr(a + g, 43) + (_rotr(b, 30) + c) * _U(9)
    v = ((a + g) ^ dd) + f + _U(1)
    w = _bswap64((u + v) * mul) + h
    x = _rotr(ee + f, 42) + c
    y = (_bswap64((v + w) * mul) + g) * mul
    z = ee + f + c
    a = _bswap64((x + z) * mul + y) + b
    b = _shift_mix((z + a) * mul + dd + h) * mul
    return b + x


@njit(inline="always")
def _farm33to64(d, s, e):
    mul = _K2 + _U(2 * (e - s))
    a = load_u64(d, s) * _K2
    b = load_u64(d, s + 8)
    c = load_u64(d, e - 8) * mul
    dd = load_u64(d, e - 16) * _K2
    y = _rotr(a + b, 43) + _rotr(c, 30) + dd
    z = _h16(y, a + _rotr(b + _K2, 18) + c, mul)
    ee = load_u64(d, s + 16) * mul
    f = load_u64(d, s + 24)
    g = (y + load_u64(d, e - 32)) * mul
    h = (z + load_u64(d, e - 24)) * mul
    return _h16(_rotr(ee + f, 43) + _rotr(g, 30) + h, ee + _rotr(f + a, 18) + g, mul)


@njit(inline="always")
def _chunks(d, s, e, x, y, z, v0, v1, w0, w1):
    """The rounds over the whole 64-byte chunks from ``s`` that leave 1..64 bytes before ``e``
    (both hashes, ``e - s > 64``); returns the state (x, y, z, v0, v1, w0, w1)."""
    p = s
    end = s + (((e - s - 1) >> 6) << 6)
    while p < end:
        x = _rotr(x + y + v0 + load_u64(d, p + 8), 37) * _K1
        y = _rotr(y + v1 + load_u64(d, p + 48), 42) * _K1
        x ^= w1
        y += v0 + load_u64(d, p + 40)
        z = _rotr(z + w0, 33) * _K1
        v0, v1 = _weak32(d, p, v1 * _K1, x + w0)
        w0, w1 = _weak32(d, p + 32, z + w1, y + load_u64(d, p + 16))
        x, z = z, x
        p += 64
    return x, y, z, v0, v1, w0, w1


@njit(inline="always")
def _city_long(d, s, e):
    """CityHash64 of more than 64 bytes: a start state from the last 64 bytes, then the chunks."""
    un = _U(e - s)
    x = load_u64(d, e - 40)
    y = load_u64(d, e - 16) + load_u64(d, e - 56)
    z = _h16(load_u64(d, e - 48) + un, load_u64(d, e - 24), _KMUL)
    v0, v1 = _weak32(d, e - 64, un, z)
    w0, w1 = _weak32(d, e - 32, y + _K1, x)
    x = x * _K1 + load_u64(d, s)
    x, y, z, v0, v1, w0, w1 = _chunks(d, s, e, x, y, z, v0, v1, w0, w1)
    return _h16(_h16(v0, w0, _KMUL) + _shift_mix(y) * _K1 + z, _h16(v1, w1, _KMUL) + x, _KMUL)


@njit(inline="always")
def _farm_long(d, s, e):
    """Fingerprint64 of more than 64 bytes: a constant start, the chunks, then a last round over
    the last 64 bytes with a multiplier from z (and the ``* 9``s)."""
    zero = _U(0)
    x, y, z, v0, v1, w0, w1 = _chunks(
        d, s, e, _FARM_X + load_u64(d, s), _FARM_Y, _FARM_Z, zero, zero, zero, zero
    )
    mul = _K1 + ((z & _FF) << _U(1))
    p = e - 64
    w0 += _U((e - s - 1) & 63)
    v0 += w0
    w0 += v0
    x = _rotr(x + y + v0 + load_u64(d, p + 8), 37) * mul
    y = _rotr(y + v1 + load_u64(d, p + 48), 42) * mul
    x ^= w1 * _U(9)
    y += v0 * _U(9) + load_u64(d, p + 40)
    z = _rotr(z + w0, 33) * mul
    v0, v1 = _weak32(d, p, v1 * mul, x + w0)
    w0, w1 = _weak32(d, p + 32, z + w1, y + load_u64(d, p + 16))
    return _h16(_h16(v0, w0, mul) + _shift_mix(y) * _K0 + x, _h16(v1, w1, mul) + z, mul)


@njit(inline="always")
def _city_rec(d, s, e):
    """CityHash64 of ``d[s:e]``, fetches inside the record only (any ``len(d)``)."""
    n = e - s
    if n <= 16:
        return _len0to16(d, s, e)
    if n <= 32:
        return _len17to32(d, s, e)
    if n <= 64:
        return _city33to64(d, s, e)
    return _city_long(d, s, e)


@njit(inline="always")
def _farm_rec(d, s, e):
    """Fingerprint64 of ``d[s:e]``, fetches inside the record only (any ``len(d)``)."""
    n = e - s
    if n <= 16:
        return _len0to16(d, s, e)
    if n <= 32:
        return _len17to32(d, s, e)
    if n <= 64:
        return _farm33to64(d, s, e)
    return _farm_long(d, s, e)


# ---------------------------------------------------------------------------------------------
# Loops over records, a block at a time. Records whose lengths take one path of the hash (fixed
# length, or e.g. all 8..16 bytes) go one by one through the hash's branches, which the CPU then
# predicts. Mixed short lengths (random lengths 0..32 mispredict a branch or two per record) go
# through the branch-free short path in a vectorised loop, and the few records over 32 bytes are
# then hashed again by their own path.
# ---------------------------------------------------------------------------------------------

_BLOCK = 256  # records: a block's offsets stay in L1 between its passes


@njit(inline="always")
def _path(n):
    """Which branch of the hash a record of ``n`` bytes takes (0, 1..3, 4..7, 8..16, 17..32,
    33..64, over 64)."""
    return (n > 0) + (n >= 4) + (n >= 8) + (n > 16) + (n > 32) + (n > 64)


@njit(inline="always")
def _block_stats(offsets, lo, hi):
    """(records over 32 bytes, shortest length, longest length) of records lo..hi-1. Written to
    vectorise: loads without numba's negative-index wrap, ``select``s for min and max."""
    n_long = np.int64(0)
    lmin = np.int64(1) << 62
    lmax = np.int64(0)
    for i in range(lo, hi):
        n = _in_offset(offsets, i + 1) - _in_offset(offsets, i)
        n_long += np.int64(n > 32)
        lmin = select_unpredictable(n < lmin, n, lmin)
        lmax = select_unpredictable(n > lmax, n, lmax)
    return n_long, lmin, lmax


@njit(inline="always")
def _use_short_path(data, offsets, lo, hi):
    """Whether block lo..hi is hashed by the vectorised short path (then records over 32 bytes
    again) rather than record by record; the second result: it has records over 32 bytes."""
    n_long, lmin, lmax = _block_stats(offsets, lo, hi)
    # The short path's spare fetches read data[0:8]: only with at least 8 bytes.
    mixed = data.shape[0] >= 8 and _path(lmin) != _path(lmax)
    # Hashing a long record again costs a mispredicted branch or two: measured on random short
    # lengths with a fraction of 33..200-byte records, the short path wins below about 1/16.
    return mixed and 16 * n_long < hi - lo, n_long > 0


@njit(inline="always")
def _short_block(offsets, data, seeded, seed, out, lo, hi):
    # Two branch-free loops (seeded or not): LLVM vectorises them.
    e = _in_offset(offsets, lo)
    if seeded:
        for i in range(lo, hi):
            s = e
            e = _in_offset(offsets, i + 1)
            _out_store(out, i, _with_seed(_short(data, s, e), seed))
    else:
        for i in range(lo, hi):
            s = e
            e = _in_offset(offsets, i + 1)
            _out_store(out, i, _short(data, s, e))


@njit
def _city_block(offsets, data, seeded, seed, out, lo, hi, over):
    """CityHash64 (or WithSeed) of the records lo..hi-1 longer than ``over`` bytes, one by one
    (a function of its own: inlined into the kernel, its loop compiles worse)."""
    e = np.int64(offsets[lo])
    if seeded:
        for i in range(lo, hi):
            s = e
            e = np.int64(offsets[i + 1])
            if e - s > over:
                out[i] = _with_seed(_city_rec(data, s, e), seed)
    else:
        for i in range(lo, hi):
            s = e
            e = np.int64(offsets[i + 1])
            if e - s > over:
                out[i] = _city_rec(data, s, e)


@njit
def _farm_block(offsets, data, out, lo, hi, over):
    """Fingerprint64 of the records lo..hi-1 longer than ``over`` bytes, one by one."""
    e = np.int64(offsets[lo])
    for i in range(lo, hi):
        s = e
        e = np.int64(offsets[i + 1])
        if e - s > over:
            out[i] = _farm_rec(data, s, e)


@njit(inline="always")
def _city_var(offsets, data, seeded, seed, out):
    n = offsets.shape[0] - 1
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        short, has_long = _use_short_path(data, offsets, lo, hi)
        if not short:
            _city_block(offsets, data, seeded, seed, out, lo, hi, -1)
            continue
        _short_block(offsets, data, seeded, seed, out, lo, hi)
        if has_long:
            _city_block(offsets, data, seeded, seed, out, lo, hi, 32)


@njit(inline="always")
def _farm_var(offsets, data, out):
    n = offsets.shape[0] - 1
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        short, has_long = _use_short_path(data, offsets, lo, hi)
        if not short:
            _farm_block(offsets, data, out, lo, hi, -1)
            continue
        _short_block(offsets, data, False, _U(0), out, lo, hi)
        if has_long:
            _farm_block(offsets, data, out, lo, hi, 32)


# ---------------------------------------------------------------------------------------------
# Kernels: each runs a whole batch on the calling thread with the GIL released
# ---------------------------------------------------------------------------------------------


@kernel
def cityhash64_fixed_ser(keys, seeded, seed, out):
    """CityHash64 (``seeded`` False) or CityHash64WithSeed(``seed``) of each 8-byte (uint64
    ``keys``) or 4-byte (uint32) little-endian key."""
    n = keys.shape[0]
    if keys.itemsize == 8:
        if seeded:
            for i in range(n):
                out[i] = _with_seed(_k8(_U(keys[i])), seed)
        else:
            for i in range(n):
                out[i] = _k8(_U(keys[i]))
    else:
        if seeded:
            for i in range(n):
                out[i] = _with_seed(_k4(_U(keys[i])), seed)
        else:
            for i in range(n):
                out[i] = _k4(_U(keys[i]))


@kernel
def farmhash64_fixed_ser(keys, out):
    """Fingerprint64 of each 8-byte (uint64 ``keys``) or 4-byte (uint32) key."""
    if keys.itemsize == 8:
        for i in range(keys.shape[0]):
            out[i] = _k8(_U(keys[i]))
    else:
        for i in range(keys.shape[0]):
            out[i] = _k4(_U(keys[i]))


@kernel
def cityhash64_var_ser(offsets, data, seeded, seed, out):
    """CityHash64 (or WithSeed) of each record ``data[offsets[i]:offsets[i+1]]`` (``out`` must
    not overlap ``offsets`` or ``data``)."""
    _city_var(offsets, data, seeded, seed, out)


@kernel
def farmhash64_var_ser(offsets, data, out):
    """Fingerprint64 of each record ``data[offsets[i]:offsets[i+1]]`` (``out`` must not overlap
    ``offsets`` or ``data``)."""
    _farm_var(offsets, data, out)
