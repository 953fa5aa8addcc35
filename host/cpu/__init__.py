"""The CPU backend (backend name ``"cpu"``): numba kernels for every operator, bit-exact with
:mod:`offload.golden`; always available.

Every kernel is ``@njit(cache=True, nogil=True)`` and runs one contiguous range of records on the
calling thread with the GIL released; the backend calls it on a whole small batch, or on chunks
of a large one from several threads.

- :mod:`.intrinsics`: LLVM intrinsics (unaligned loads and stores, an unpredictable ``select``),
  rotates, and the ``kernel`` decorator;
- :mod:`.kernels_hash`, :mod:`.kernels_bucketize`, :mod:`.kernels_varint`: the kernels, by
  operator family;
- :mod:`.pool`: the worker threads that run chunks next to the calling thread;
- :mod:`.backend`: :class:`CpuBackend` (dispatch, chunking, warm-up).
"""

from .backend import DEFAULT_PARALLEL_THRESHOLD, CpuBackend, hash_params, readonly
from .kernels_hash import MODE_FASTRANGE, MODE_FID, MODE_MOD, MODE_RAW, mod_magic, xxh64_fixed_ser

__all__ = [
    "CpuBackend",
    "DEFAULT_PARALLEL_THRESHOLD",
    "MODE_RAW",
    "MODE_MOD",
    "MODE_FASTRANGE",
    "MODE_FID",
    "hash_params",
    "mod_magic",
    "readonly",
    "xxh64_fixed_ser",
]
