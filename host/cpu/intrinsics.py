"""The building blocks every CPU kernel is compiled from, and the decorator that compiles kernels.

A few LLVM intrinsics make the hot loops branch-free: unaligned little-endian loads and stores (one
machine load or store instead of eight bounds-wrapped byte accesses), and a ``select`` marked
``!unpredictable`` so binary-search and short-record steps stay ``cmov``s, rotates as funnel
shifts (one ``rol``/``vprolq`` even where LLVM would fold a shift into a multiply), and 32-bit
arithmetic on a ``uint64`` (16 lanes to a zmm register when a loop vectorises). None of these
checks bounds: the calling kernel guarantees the bytes are in bounds.

Everything here is inlined into the kernels that call it; only the kernels (:func:`kernel`) are
compiled on their own and cached on disk.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

if sys.byteorder != "little":  # pragma: no cover - the unaligned loads and stores assume it
    raise ImportError("offload.host.cpu needs a little-endian host")

__all__ = [
    "HAS_BMI2",
    "address",
    "clz64",
    "ctz64",
    "add32",
    "kernel",
    "load_half32",
    "load_u8",
    "load_u32",
    "load_u64",
    "mul32",
    "mulhi64",
    "mulhi64_halves",
    "pdep64",
    "peek_u8",
    "peek_u64",
    "pext64",
    "poke_u64",
    "popcount64",
    "rotl32",
    "rotl64",
    "select_unpredictable",
    "store_u64",
]

_U = np.uint64
_M32 = _U(0xFFFFFFFF)


# numba checks a cached kernel against the source of its own file only (a documented limit of
# its cache, numba issue #1833): an edit of this file, whose code every kernel inlines, would
# leave the kernels of the other files stale in the cache. So each kernel's stamp includes it.
_OWN_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def kernel(fn: Any) -> Any:
    """Compile ``fn`` as a CPU kernel: ``@njit(cache=True, nogil=True)``. A kernel runs one
    contiguous range of records on the calling thread with the GIL released, and numba keeps its
    machine code in an on-disk cache, so a process only compiles what no earlier one did. The
    cache entry is valid while the kernel's file and this file are unchanged."""
    dispatcher = njit(cache=True, nogil=True)(fn)
    # numba internals (checked by tests/test_cpu.py; without them numba's own stamp stays)
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    if cache_file is not None and hasattr(cache_file, "_source_stamp"):
        cache_file._source_stamp = (cache_file._source_stamp, _OWN_DIGEST)
    return dispatcher


@intrinsic
def select_unpredictable(typingctx, c, a, b):
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
def store_u64(typingctx, arr, idx, val):
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


# ---------------------------------------------------------------------------------------------
# Rotates and 32-bit arithmetic that stay what they are in vectorised loops
# ---------------------------------------------------------------------------------------------
# A rotate written as two shifts and an or is not always one: LLVM folds ``(k * C) << r`` into
# ``k * (C << r)`` before it matches rotates, so ``rotl64(k * P, 31)`` became a second vpmullq and
# a shift (measured: XXH64 of 8-byte keys at 0.88x xxHash's C). A funnel shift is one vprolq.
# XXH32 and MurmurHash3 keep their 32-bit state in a uint64; their arithmetic done on i32 lets
# LLVM vectorise 16 lanes to a zmm register instead of 8.

_I32, _I64, _I128 = ir.IntType(32), ir.IntType(64), ir.IntType(128)


def _fshl(builder: ir.IRBuilder, x: ir.Value, r: ir.Value) -> ir.Value:
    ty = x.type
    fn = builder.module.declare_intrinsic("llvm.fshl", [ty], ir.FunctionType(ty, [ty, ty, ty]))
    return builder.call(fn, [x, x, r])


@intrinsic
def rotl64(typingctx, x, r):
    """``x`` (uint64) rotated left by ``r`` bits (``llvm.fshl``: one ``rol``/``vprolq``)."""
    sig = types.uint64(types.uint64, types.int64)

    def codegen(context, builder, signature, args):
        return _fshl(builder, args[0], args[1])

    return sig, codegen


@intrinsic
def rotl32(typingctx, x, r):
    """The low 32 bits of ``x`` (a uint64; XXH32 keeps its state < 2**32 in one) rotated left by
    ``r`` bits within 32 bits, zero-extended (one ``rol``/``vprold``)."""
    sig = types.uint64(types.uint64, types.int64)

    def codegen(context, builder, signature, args):
        rot = _fshl(builder, builder.trunc(args[0], _I32), builder.trunc(args[1], _I32))
        return builder.zext(rot, _I64)

    return sig, codegen


def _make_op32(op: str) -> Any:
    @intrinsic
    def _op32(typingctx, a, b):
        sig = types.uint64(types.uint64, types.uint64)

        def codegen(context, builder, signature, args):
            a32, b32 = (builder.trunc(v, _I32) for v in args)
            return builder.zext(getattr(builder, op)(a32, b32), _I64)

        return sig, codegen

    return _op32


#: ``(a * b) mod 2**32`` of two uint64 (only their low 32 bits count): one ``imul``/``vpmulld``.
mul32 = _make_op32("mul")
#: ``(a + b) mod 2**32`` of two uint64 (only their low 32 bits count).
add32 = _make_op32("add")


@intrinsic
def mulhi64(typingctx, a, b):
    """High 64 bits of the 128-bit product of two uint64 (one ``mul`` on x86-64; scalar: a loop
    that calls it does not vectorise)."""
    sig = types.uint64(types.uint64, types.uint64)

    def codegen(context, builder, signature, args):
        p = builder.mul(builder.zext(args[0], _I128), builder.zext(args[1], _I128))
        return builder.trunc(builder.lshr(p, ir.Constant(_I128, 64)), _I64)

    return sig, codegen


@njit(inline="always")
def mulhi64_halves(a, b):
    """:func:`mulhi64` from 32-bit halves: four ``vpmuludq`` where a loop vectorises (LLVM keeps
    a 128-bit multiply scalar)."""
    a_lo = a & _M32
    a_hi = a >> _U(32)
    b_lo = b & _M32
    b_hi = b >> _U(32)
    p1 = a_lo * b_hi
    p2 = a_hi * b_lo
    mid = ((a_lo * b_lo) >> _U(32)) + (p1 & _M32) + (p2 & _M32)
    return a_hi * b_hi + (p1 >> _U(32)) + (p2 >> _U(32)) + (mid >> _U(32))


@intrinsic
def load_half32(typingctx, arr, idx, half):
    """The low (``half`` 0) or high (1) 32 bits of the 8-byte element ``arr[idx]`` (any strides,
    ``0 <= idx < len(arr)``), zero-extended: a loop over consecutive keys vectorises as 32-bit
    lanes (two zmm loads split by ``vpermt2d``), 16 keys to a register."""
    sig = types.uint64(arr, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        av, iv, hv = args
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, av)
        item = cgutils.get_item_pointer(context, builder, aryty, ary, [iv])
        ptr = builder.gep(builder.bitcast(item, _I32.as_pointer()), [hv])
        return builder.zext(builder.load(ptr, align=4 if aryty.aligned else 1), _I64)

    return sig, codegen


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
load_u64 = _make_load(64)
load_u32 = _make_load(32)
load_u8 = _make_load(8)


# ---------------------------------------------------------------------------------------------
# Bit scans, population count and BMI2 deposit/extract (the varint kernels)
# ---------------------------------------------------------------------------------------------


def _codegen_features() -> set[str]:
    """The CPU features numba compiles for (its ``NUMBA_CPU_FEATURES`` if set, else the host's)."""
    from numba.core import config

    features = getattr(config, "CPU_FEATURES", None)  # set from the environment at import
    if features is not None:
        flat = str(features)
    else:
        import llvmlite.binding as ll

        try:
            flat = ll.get_host_cpu_features().flatten()
        except RuntimeError:  # pragma: no cover - llvmlite cannot read the features on some hosts
            flat = ""
    return {f[1:] for f in flat.split(",") if f.startswith("+")}


#: The code numba generates has x86 BMI2 (``pdep``/``pext`` are one fast instruction). Kernels
#: branch on it to portable paths; numba's cache is keyed by the CPU name and features, so a
#: cached kernel never runs on a CPU it was not compiled for.
HAS_BMI2: bool = "bmi2" in _codegen_features()


def _make_bitcount(op: str) -> Any:
    @intrinsic
    def _count(typingctx, x):
        sig = types.uint64(types.uint64)

        def codegen(context, builder, signature, args):
            if op == "ctpop":
                return builder.ctpop(args[0])
            # zero is defined (64), not poison: the callers rely on it
            return getattr(builder, op)(args[0], ir.Constant(ir.IntType(1), 0))

        return sig, codegen

    return _count


#: Leading zero bits of a uint64 (64 for 0): ``lzcnt`` where the CPU has it.
clz64 = _make_bitcount("ctlz")
#: Trailing zero bits of a uint64 (64 for 0): ``tzcnt`` where the CPU has it.
ctz64 = _make_bitcount("cttz")
#: Set bits of a uint64: ``popcnt`` (and ``vpopcntq`` in vectorised loops) where the CPU has it.
popcount64 = _make_bitcount("ctpop")


def _pdep_soft(x, mask):
    """``pdep`` bit by bit (CPUs without BMI2)."""
    out = _U(0)
    bit = _U(1)
    while mask != _U(0):
        low = mask & (_U(0) - mask)
        if x & bit:
            out |= low
        mask ^= low
        bit <<= _U(1)
    return out


def _pext_soft(x, mask):
    """``pext`` bit by bit (CPUs without BMI2)."""
    out = _U(0)
    bit = _U(1)
    while mask != _U(0):
        low = mask & (_U(0) - mask)
        if x & low:
            out |= bit
        mask ^= low
        bit <<= _U(1)
    return out


def _make_bmi2(name: str, soft: Any) -> Any:
    @intrinsic
    def _bmi2(typingctx, x, mask):
        sig = types.uint64(types.uint64, types.uint64)

        def codegen(context, builder, signature, args):
            if not HAS_BMI2:  # LLVM cannot select the instruction for such a CPU
                return context.compile_internal(builder, soft, signature, args)
            i64 = ir.IntType(64)
            fnty = ir.FunctionType(i64, [i64, i64])
            fn = builder.module.declare_intrinsic(f"llvm.x86.bmi.{name}.64", fnty=fnty)
            return builder.call(fn, args)

        return sig, codegen

    return _bmi2


#: ``pdep``: the low bits of ``x`` deposited at the set bits of ``mask``. One instruction where
#: :data:`HAS_BMI2`, a loop over the mask's bits elsewhere (callers with a fixed mask branch on
#: :data:`HAS_BMI2` to a shift-and-mask form).
pdep64 = _make_bmi2("pdep", _pdep_soft)
#: ``pext``: the bits of ``x`` at the set bits of ``mask``, packed low (as :func:`pdep64`).
pext64 = _make_bmi2("pext", _pext_soft)


# ---------------------------------------------------------------------------------------------
# Addresses: loads and stores for loops whose state must stay scalars
# ---------------------------------------------------------------------------------------------
# numba's inliner passes an array to an inlined function as a new reference: in a loop whose
# inlined step branches (a fast and a slow path), the reference counting calls stay in the loop
# (measured: 10x slower varint decoding). A loop that keeps several independent states (the
# varint decoder's lanes) passes addresses instead; the caller keeps the arrays alive and in
# bounds.


@intrinsic
def address(typingctx, arr):
    """The address of ``arr``'s first element, as an int64 (C-contiguous arrays only: others
    do not compile)."""
    if not (isinstance(arr, types.Array) and arr.layout == "C"):
        return None
    sig = types.int64(arr)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.ptrtoint(ary.data, ir.IntType(64))

    return sig, codegen


def _make_peek(bits: int) -> Any:
    @intrinsic
    def _peek(typingctx, addr):
        sig = types.uint64(types.int64)

        def codegen(context, builder, signature, args):
            val = builder.load(builder.inttoptr(args[0], ir.IntType(bits).as_pointer()))
            val.align = 1
            return builder.zext(val, ir.IntType(64)) if bits < 64 else val

        return sig, codegen

    return _peek


#: Unaligned little-endian load of 8 bytes at an address (as :func:`load_u64`).
peek_u64 = _make_peek(64)
#: The byte at an address.
peek_u8 = _make_peek(8)


@intrinsic
def poke_u64(typingctx, addr, val):
    """Unaligned little-endian 8-byte store of ``val`` (uint64) at an address."""
    sig = types.void(types.int64, types.uint64)

    def codegen(context, builder, signature, args):
        builder.store(args[1], builder.inttoptr(args[0], ir.IntType(64).as_pointer())).align = 1
        return context.get_dummy_value()

    return sig, codegen


# ---------------------------------------------------------------------------------------------
# AVX-512 byte permutes (the varint decoder's block kernel)
# ---------------------------------------------------------------------------------------------

#: The code numba generates has the AVX-512 subsets of a 64-byte block decoder (F and BW:
#: byte masks, masked loads and stores; VBMI: ``vpermb``, ``vpmultishiftqb``; VBMI2:
#: ``vpcompressb``) and BMI2. Kernels that use them are chosen at import by this flag (LLVM
#: cannot select those instructions for another CPU), the portable ones otherwise.
HAS_AVX512_VBMI2: bool = {"avx512f", "avx512bw", "avx512vbmi", "avx512vbmi2", "bmi2"} <= _codegen_features()
