"""The building blocks every CPU kernel is compiled from, and the decorator that compiles kernels.

A few LLVM intrinsics make the hot loops branch-free: unaligned little-endian loads and stores (one
machine load or store instead of eight bounds-wrapped byte accesses), and a ``select`` marked
``!unpredictable`` so binary-search and short-record steps stay ``cmov``s. The rotates are two
shifts and an or on ``uint64``. None of these checks bounds: the calling kernel guarantees the
bytes are in bounds.

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
from numba.extending import intrinsic

if sys.byteorder != "little":  # pragma: no cover - the unaligned loads and stores assume it
    raise ImportError("offload.host.cpu needs a little-endian host")

__all__ = [
    "kernel",
    "load_u8",
    "load_u32",
    "load_u64",
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


@njit(inline="always")
def rotl64(x, r):
    """``x`` (uint64) rotated left by ``r`` bits, 0 < r < 64."""
    return (x << _U(r)) | (x >> _U(64 - r))


@njit(inline="always")
def rotl32(x, r):
    """``x`` (< 2**32 held in a uint64, as XXH32's state is) rotated left by ``r`` bits within 32
    bits, 0 < r < 32."""
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
load_u64 = _make_load(64)
load_u32 = _make_load(32)
load_u8 = _make_load(8)
