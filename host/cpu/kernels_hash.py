"""XXH64 and XXH32 kernels, with the XXH64 post-processing of ``hash_bucket`` and ``fid`` fused in.

All hash arithmetic is done on ``uint64``: every constant is an explicit ``np.uint64`` (numba
promotes ``uint64 op int64`` to ``float64``), multiplies wrap, rotates are funnel shifts
(:func:`.intrinsics.rotl64`), and XXH32 keeps its state in the low 32 bits of a ``uint64`` with
32-bit multiplies, adds and rotates (:func:`.intrinsics.mul32`), so its loops vectorise 16 keys to
a zmm register. XXH64 of fixed-width keys runs on :data:`u64x8` values (eight uint64 lanes in
one vector register: numba has no vector type, so this file defines one) in a software-pipelined
loop, :func:`_pipelined` (why, and why 32 + 3 keys a block); XXH32's loops are :func:`_plain`.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.imputils import lower_builtin
from numba.core.typing.templates import AbstractTemplate, infer_global, signature
from numba.extending import intrinsic, models, register_model

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
# Eight uint64 lanes in one vector register
# ---------------------------------------------------------------------------------------------
# LLVM vectorises a loop's body, but keeps nothing in vector registers from one iteration to the
# next: the software-pipelined loop (:func:`_pipelined`) needs that, so its state is held in
# u64x8 values, an LLVM <8 x i64> (one zmm register). The hash functions are written once: the
# operators below (and :func:`_rotl`) take u64x8 and uint64 operands alike, a scalar operand
# standing for eight copies of itself, and arithmetic wraps as on uint64.

_I32, _I64 = ir.IntType(32), ir.IntType(64)
_V8 = ir.VectorType(_I64, 8)


class U64x8(types.Type):
    """The numba type of eight uint64 lanes held in one vector register."""

    def __init__(self) -> None:
        super().__init__(name="u64x8")


#: The one instance of :class:`U64x8`.
u64x8 = U64x8()


@register_model(U64x8)
class _U64x8Model(models.PrimitiveModel):
    def __init__(self, dmm: Any, fe_type: Any) -> None:
        super().__init__(dmm, fe_type, _V8)


def _splat(builder: ir.IRBuilder, ty: Any, val: ir.Value) -> ir.Value:
    """``val`` of numba type ``ty`` as a <8 x i64>: a u64x8 as it is, an integer (converted
    to 64 bits as numba converts it to uint64) in every lane."""
    if isinstance(ty, U64x8):
        return val
    if val.type.width < 64:
        val = builder.sext(val, _I64) if ty.signed else builder.zext(val, _I64)
    undef = ir.Constant(_V8, ir.Undefined)
    one = builder.insert_element(undef, val, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(_I32, 8), [0] * 8))


def _overload_lanewise(pyops: tuple[Any, ...], name: str) -> None:
    """Type and lower ``pyops`` on a u64x8 and a u64x8 or an integer as the IR instruction
    ``name`` lane by lane (a typing template and a lowering, not ``@overload``: that compiles a
    wrapper function for every combination of operand types)."""

    class Lanewise(AbstractTemplate):
        def generic(self, args: tuple[Any, ...], kws: dict[str, Any]) -> Any:
            lanes = len(args) == 2 and any(isinstance(t, U64x8) for t in args)
            if lanes and not kws and all(isinstance(t, (U64x8, types.Integer)) for t in args):
                return signature(u64x8, *args)
            return None

    def lower(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
        x, y = (_splat(builder, t, v) for t, v in zip(sig.args, args))
        return getattr(builder, name)(x, y)

    for pyop in pyops:
        infer_global(pyop)(type(f"Lanewise_{pyop.__name__}", (Lanewise,), {"key": pyop}))
        for tys in ((U64x8, U64x8), (U64x8, types.Integer), (types.Integer, U64x8)):
            lower_builtin(pyop, *tys)(lower)


for _pyops, _name in (
    ((operator.add, operator.iadd), "add"),
    ((operator.sub, operator.isub), "sub"),
    ((operator.mul, operator.imul), "mul"),
    ((operator.xor, operator.ixor), "xor"),
    ((operator.and_, operator.iand), "and_"),
    ((operator.or_, operator.ior), "or_"),
    ((operator.rshift, operator.irshift), "lshr"),
    ((operator.lshift, operator.ilshift), "shl"),
):
    _overload_lanewise(_pyops, _name)


@intrinsic
def _rotl(typingctx, x, r):
    """``x`` (uint64 or u64x8) rotated left by ``r`` bits: a funnel shift, one ``rol`` or
    ``vprolq`` (as :func:`.intrinsics.rotl64`)."""
    if isinstance(x, U64x8):
        sig = u64x8(x, r)
    elif isinstance(x, types.Integer):
        sig = types.uint64(types.uint64, types.uint64)
    else:
        return None

    def codegen(context, builder, signature, args):
        xv, rv = args
        if isinstance(xv.type, ir.VectorType):
            rv, name = _splat(builder, signature.args[1], rv), "llvm.fshl.v8i64"
        else:
            name = "llvm.fshl.i64"
        fnty = ir.FunctionType(xv.type, [xv.type] * 3)
        fn = builder.module.globals.get(name) or ir.Function(builder.module, fnty, name)
        return builder.call(fn, [xv, xv, rv])

    return sig, codegen


@intrinsic
def _broadcast(typingctx, x):
    """The integer ``x`` in all eight lanes of a u64x8."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return _splat(builder, signature.args[0], args[0])

    return u64x8(x), codegen


def _lane_pointers(
    context: Any, builder: ir.IRBuilder, aryty: Any, ary: Any, idx: ir.Value
) -> list[ir.Value]:
    return [
        cgutils.get_item_pointer(context, builder, aryty, ary, [builder.add(idx, ir.Constant(idx.type, k))])
        for k in range(8)
    ]


@intrinsic
def _load8(typingctx, arr, idx):
    """``arr[idx:idx + 8]`` as a u64x8, each element converted as ``np.uint64(arr[i])`` (a 1-D
    array of 4- or 8-byte integers; the caller keeps ``idx + 8 <= len(arr)``). One vector load
    from a contiguous array, eight loads from a strided one."""
    ok = isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(arr.dtype, types.Integer)
    if not (ok and arr.dtype.bitwidth in (32, 64)):
        return None
    sig = u64x8(arr, types.intp)

    def codegen(context, builder, signature, args):
        aryty, (av, iv) = signature.args[0], args
        ary = context.make_array(aryty)(context, builder, av)
        lane = context.get_data_type(aryty.dtype)
        vty = ir.VectorType(lane, 8)
        if aryty.layout == "C":
            item = cgutils.get_item_pointer(context, builder, aryty, ary, [iv])
            v = builder.load(
                builder.bitcast(item, vty.as_pointer()), align=lane.width // 8 if aryty.aligned else 1
            )
        else:
            v = ir.Constant(vty, ir.Undefined)
            for k, ptr in enumerate(_lane_pointers(context, builder, aryty, ary, iv)):
                v = builder.insert_element(v, builder.load(ptr), ir.Constant(_I32, k))
        if lane.width == 64:
            return v
        return builder.sext(v, _V8) if aryty.dtype.signed else builder.zext(v, _V8)

    return sig, codegen


@intrinsic
def _store8(typingctx, arr, idx, val):
    """``arr[idx:idx + 8] = val`` (a u64x8 into a 1-D uint64 array; the caller keeps ``idx + 8
    <= len(arr)``): one vector store into a contiguous array, eight into a strided one."""
    ok = isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.uint64
    if not (ok and isinstance(val, U64x8)):
        return None
    sig = types.void(arr, types.intp, val)

    def codegen(context, builder, signature, args):
        aryty, (av, iv, vv) = signature.args[0], args
        ary = context.make_array(aryty)(context, builder, av)
        if aryty.layout == "C":
            item = cgutils.get_item_pointer(context, builder, aryty, ary, [iv])
            builder.store(vv, builder.bitcast(item, _V8.as_pointer()), align=8 if aryty.aligned else 1)
        else:
            for k, ptr in enumerate(_lane_pointers(context, builder, aryty, ary, iv)):
                builder.store(builder.extract_element(vv, ir.Constant(_I32, k)), ptr)
        return context.get_dummy_value()

    return sig, codegen


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


# XXH64 of an 8- or 4-byte key in three stages of about equal work (the software-pipelined loop
# runs them on different keys at once): _k8_a or _k4_a, then _k8_b or _k4_b, then _mix_c. Each
# takes uint64 or u64x8 keys (the 4-byte key < 2**32). Functions of numbers only are left to
# LLVM's inliner: numba's own (inline="always") copies a callee's IR at every call site, which
# made compiling the 8 pipelined loops several times slower.


@njit
def _mix_b(h):
    """The first half of XXH64's avalanche."""
    return (h ^ (h >> _U(33))) * _P64_2


@njit
def _mix_c(h):
    """The second half of XXH64's avalanche."""
    h ^= h >> _U(29)
    h *= _P64_3
    return h ^ (h >> _U(32))


@njit
def _k8_a(k, seed):
    return _rotl((seed + _P64_5 + _U(8)) ^ (_rotl(k * _P64_2, 31) * _P64_1), 27)


@njit
def _k8_b(h):
    return _mix_b(h * _P64_1 + _P64_4)


@njit
def _k4_a(k, seed):
    return _rotl((seed + _P64_5 + _U(4)) ^ (k * _P64_1), 23)


@njit
def _k4_b(h):
    return _mix_b(h * _P64_2 + _P64_3)


@njit(inline="always")
def _xxh64_k8(k, seed):
    """XXH64 of one 8-byte little-endian key."""
    return _mix_c(_k8_b(_k8_a(k, seed)))


@njit(inline="always")
def _xxh64_k4(k, seed):
    """XXH64 of one 4-byte little-endian key (``k`` < 2**32)."""
    return _mix_c(_k4_b(_k4_a(k, seed)))


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


def _xxh64_posts(mod, mulhi):
    """The four post-processings (MODE_*, their order) of an XXH64 ``h`` (uint64 or u64x8),
    with the given ``h % d`` and multiply-high."""

    @njit
    def raw(h, a, b, sh):
        return h

    @njit
    def modulo(h, a, b, sh):
        return mod(h, a, b, sh)

    @njit
    def fastrange(h, a, b, sh):
        return mulhi(h, a)

    @njit
    def fid(h, a, b, sh):
        return (h & a) | b

    return raw, modulo, fastrange, fid


# The software-pipelined loop. On AMD Zen 4 (measured by the "multiplier ceiling" row of
# offload/bench_hashes.py) vpmullq and vprolq share two pipes, a zmm op of either a cycle;
# shifts use the two others and logic any of the four. XXH64 of 8 keys is 7 zmm multiplies and
# rotates and 7 other ops: 7 cycles if all four pipes were busy. A loop that hashes keys start to
# finish (xxHash's C, gcc -O3 -march=native) takes 10.5: a vector's 15 dependent ops span about
# 27 cycles, and the scheduler fills up with ops that wait for their inputs. Here an iteration
# runs the three stages on three different blocks (stage 1 of block t, stage 2 of block t - 1,
# stage 3 of block t - 2), whose ops are independent, the blocks in between held in registers
# (through memory it is slower than not pipelining at all). 3 keys of each block go to the scalar
# unit, whose multiplier idles. Measured: 4 vectors a block beat 3 by 10 % (5: 1 % more, for
# more code to compile), 3 keys beat 2, 4, 5 or 6, and a fourth stage gains nothing (in C).
_PIPE_VECS = 4
_PIPE = 8 * _PIPE_VECS + 3


def _pipelined(stage_a, stage_b, post_v, post_s):
    """A loop ``out[i] = post(XXH64 of keys[i])`` over ``lo <= i < hi`` for keys hashed by
    ``_mix_c(stage_b(stage_a(key, seed)))``: blocks of :data:`_PIPE` keys software-pipelined
    (``post_v`` for the vectors, ``post_s`` for the keys on the scalar unit), then the last
    keys (fewer than two blocks: a few hundred cycles) on the scalar unit."""

    @njit
    def full(k, seed, a, b, sh):
        return post_s(_mix_c(stage_b(stage_a(k, seed))), a, b, sh)

    @njit(inline="always")
    def scalars(keys, seed, a, b, sh, out, i):
        # unsigned indexes: numba then adds no branch for negative ones
        for j in range(8 * _PIPE_VECS, _PIPE):
            k = _U(i) + _U(j)
            out[k] = full(_U(keys[k]), seed, a, b, sh)

    @njit(inline="always")
    def step(keys, seed, a, b, sh, out, i, c, x, y):
        """Stage 3 of the vector ``y`` into ``out[c:c + 8]``, stage 2 of ``x``, stage 1 of
        ``keys[i:i + 8]``: the next (x, y)."""
        _store8(out, c, post_v(_mix_c(y), a, b, sh))
        return stage_a(_load8(keys, i), seed), stage_b(x)

    @njit
    def loop(keys, seed, a, b, sh, out, lo, hi):
        blocks = (hi - lo) // _PIPE
        if blocks >= 2:
            # No prologue or epilogue (less code to compile): the first two iterations store
            # their unfinished vectors into the block they load, finished two iterations later,
            # and the last two load block 0 again, whose hashes go nowhere.
            x0 = x1 = x2 = x3 = y0 = y1 = y2 = y3 = _broadcast(_U(0))
            for t in range(blocks + 2):
                i = lo + t * _PIPE
                c = i - 2 * _PIPE if t >= 2 else i
                i = i if t < blocks else lo
                x0, y0 = step(keys, seed, a, b, sh, out, i, c, x0, y0)
                x1, y1 = step(keys, seed, a, b, sh, out, i + 8, c + 8, x1, y1)
                x2, y2 = step(keys, seed, a, b, sh, out, i + 16, c + 16, x2, y2)
                x3, y3 = step(keys, seed, a, b, sh, out, i + 24, c + 24, x3, y3)
                scalars(keys, seed, a, b, sh, out, c)
            lo += blocks * _PIPE
        for i in range(lo, hi):
            out[i] = full(_U(keys[i]), seed, a, b, sh)

    return loop


def _xxh64_loops(stage_a, stage_b):
    """One loop per MODE_* (their order) for keys hashed by ``_mix_c(stage_b(stage_a(key,
    seed)))``."""
    vec = _xxh64_posts(_modm, mulhi64_halves)
    scal = _xxh64_posts(_modm_scalar, mulhi64)
    return tuple(_pipelined(stage_a, stage_b, v, s) for v, s in zip(vec, scal))


_K8_RAW, _K8_MOD, _K8_FASTRANGE, _K8_FID = _xxh64_loops(_k8_a, _k8_b)
_K4_RAW, _K4_MOD, _K4_FASTRANGE, _K4_FID = _xxh64_loops(_k4_a, _k4_b)


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
    """A loop ``out[i] = hash_fn(keys, i, seed, a, b, sh)`` over ``lo <= i < hi`` for hashes
    with 32-bit lanes (LLVM vectorises it: 16 keys to a zmm register need about as many vector
    cycles as 2 keys need scalar multiplies, so no key rides along on the scalar unit). The loop
    indexes keys and out directly, so any strides work (contiguous ones vectorise)."""

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
