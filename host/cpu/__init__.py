"""The CPU backend (backend name ``"cpu"``): numba kernels for every operator, bit-exact with
:mod:`offload.golden`; always available."""

from .backend import (DEFAULT_PARALLEL_THRESHOLD, MODE_FASTRANGE, MODE_FID, MODE_MOD, MODE_RAW,
                      CpuBackend, hash_params, mod_magic, readonly, xxh64_fixed_ser)

__all__ = ["CpuBackend", "DEFAULT_PARALLEL_THRESHOLD", "MODE_RAW", "MODE_MOD", "MODE_FASTRANGE",
           "MODE_FID", "hash_params", "mod_magic", "readonly", "xxh64_fixed_ser"]
