"""offload: one operator set, four executions that agree bit for bit.

    import offload
    h = offload.xxh64(values, seed=7)                    # backend="auto"
    h = offload.xxh64(values, seed=7, backend="fpga")    # "cpu" | "sim" | "fpga" | "smartnic"
    rt = offload.Runtime(backends=["fpga", "smartnic", "cpu"], verify="sample")
    h = rt.xxh64(values, seed=7); rt.stats()

The operator contract is docs/operators.md; :mod:`offload.golden` is its executable form.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from offload.backend import Backend, BackendError, BackendUnavailable, BitExactError, Capabilities
from offload.features import Feature, FeatureSpec
from offload.ops import HashBucketMethod, HashName, Murmur3Tail, OperatorName
from offload.runtime import BackendChoice, Output, Runtime, VerifyMode, default_runtime

__version__ = "0.1.0"
__all__ = [
    "xxh32",
    "xxh64",
    "hash_bucket",
    "fid",
    "bucketize",
    "delta_varint_encode",
    "delta_varint_decode",
    "farmhash64",
    "cityhash64",
    "murmur3_32",
    "sigrid_hash",
    "decimal_hash_bucket",
    "Feature",
    "FeatureSpec",
    "Runtime",
    "Backend",
    "Capabilities",
    "BackendError",
    "BackendUnavailable",
    "BitExactError",
    "backends",
    "call",
    "operators",
    "__version__",
    "BackendChoice",
    "VerifyMode",
    "Output",
    "HashBucketMethod",
    "HashName",
    "Murmur3Tail",
    "OperatorName",
]


def xxh32(
    values: Any,
    seed: int = 0,
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    nulls: Any = "error",
    output: Output = "numpy",
    out: np.ndarray | None = None,
) -> Any:
    """XXH32 of each record: uint32, shaped like a numpy key array, else 1-D."""
    return default_runtime().xxh32(
        values, seed, backend=backend, verify=verify, nulls=nulls, output=output, out=out
    )


def xxh64(
    values: Any,
    seed: int = 0,
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    nulls: Any = "error",
    output: Output = "numpy",
    out: np.ndarray | None = None,
) -> Any:
    """XXH64 of each record: uint64, shaped like a numpy key array, else 1-D."""
    return default_runtime().xxh64(
        values, seed, backend=backend, verify=verify, nulls=nulls, output=output, out=out
    )


def hash_bucket(
    values: Any,
    num_buckets: int,
    seed: int | None = None,
    method: HashBucketMethod = "mod",
    hash: HashName = "xxh64",
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    nulls: Any = "error",
    output: Output = "numpy",
    out: np.ndarray | None = None,
) -> Any:
    """``h % num_buckets`` (``"mod"``) or ``(h * num_buckets) >> 64`` (``"fastrange"``) of the
    hash ``h`` named by ``hash`` (``seed``: the hash's seed; None is its default)."""
    return default_runtime().hash_bucket(
        values,
        num_buckets,
        seed,
        method,
        hash,
        backend=backend,
        verify=verify,
        nulls=nulls,
        output=output,
        out=out,
    )


def fid(
    values: Any,
    slot: int,
    version: int = 2,
    seed: int | None = None,
    hash: HashName = "xxh64",
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    nulls: Any = "error",
    output: Output = "numpy",
    out: np.ndarray | None = None,
) -> Any:
    """Monolith-layout feature ids: ``slot`` above the hash signature (v1: 10+54, v2: 15+48 bits)."""
    return default_runtime().fid(
        values, slot, version, seed, hash, backend=backend, verify=verify, nulls=nulls, output=output, out=out
    )


def farmhash64(
    values: Any,
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    nulls: Any = "error",
    output: Output = "numpy",
    out: np.ndarray | None = None,
) -> Any:
    """FarmHash ``Fingerprint64`` of each record (TensorFlow's ``tf.fingerprint``): uint64."""
    return default_runtime().farmhash64(
        values, backend=backend, verify=verify, nulls=nulls, output=output, out=out
    )


def cityhash64(
    values: Any,
    seed: int | None = None,
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    nulls: Any = "error",
    output: Output = "numpy",
    out: np.ndarray | None = None,
) -> Any:
    """CityHash64 v1.1 of each record, ``CityHash64WithSeed`` when ``seed`` is given: uint64."""
    return default_runtime().cityhash64(
        values, seed, backend=backend, verify=verify, nulls=nulls, output=output, out=out
    )


def murmur3_32(
    values: Any,
    seed: int = 0,
    tail: Murmur3Tail = "standard",
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    nulls: Any = "error",
    output: Output = "numpy",
    out: np.ndarray | None = None,
) -> Any:
    """MurmurHash3_x86_32 of each record (``tail="spark"``: Spark SQL's string tail): uint32."""
    return default_runtime().murmur3_32(
        values, seed, tail, backend=backend, verify=verify, nulls=nulls, output=output, out=out
    )


def sigrid_hash(
    values: Any,
    salt: int,
    max_value: int,
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    nulls: Any = "error",
    output: Output = "numpy",
    out: np.ndarray | None = None,
) -> Any:
    """TorchArrow's ``sigrid_hash`` of int64 ids (int64 in ``[0, max_value)``)."""
    return default_runtime().sigrid_hash(
        values, salt, max_value, backend=backend, verify=verify, nulls=nulls, output=output, out=out
    )


def decimal_hash_bucket(
    values: Any,
    num_buckets: int,
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    nulls: Any = "error",
    output: Output = "numpy",
    out: np.ndarray | None = None,
) -> Any:
    """``farmhash64(str(v)) % num_buckets`` of int32/int64 values: Keras ``Hashing`` (no mask)
    and TensorFlow's hash buckets of integer features (int64 in ``[0, num_buckets)``)."""
    return default_runtime().decimal_hash_bucket(
        values, num_buckets, backend=backend, verify=verify, nulls=nulls, output=output, out=out
    )


def bucketize(
    x: Any,
    boundaries: Any,
    right: bool = True,
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    nulls: Any = "error",
    output: Output = "numpy",
    out: np.ndarray | None = None,
) -> Any:
    """Bucket index of each value of ``x`` among strictly increasing ``boundaries`` (int32)."""
    return default_runtime().bucketize(
        x, boundaries, right, backend=backend, verify=verify, nulls=nulls, output=output, out=out
    )


def delta_varint_encode(
    sequences: Any,
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    nulls: Any = "error",
    output: Output = "numpy",
) -> Any:
    """Delta + zigzag + LEB128 of int64 sequences: ``(offsets int64[n+1], data uint8[])``."""
    return default_runtime().delta_varint_encode(
        sequences, backend=backend, verify=verify, nulls=nulls, output=output
    )


def delta_varint_decode(
    offsets: Any,
    data: Any = None,
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    nulls: Any = "error",
    output: Output = "numpy",
) -> Any:
    """Inverse of :func:`delta_varint_encode`: ``(value_offsets int64[n+1], values int64[])``."""
    return default_runtime().delta_varint_decode(
        offsets, data, backend=backend, verify=verify, nulls=nulls, output=output
    )


def call(
    op: OperatorName | str,
    values: Any,
    /,
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    nulls: Any = "error",
    output: Output = "numpy",
    **params: Any,
) -> Any:
    """Any registered operator by name: ``offload.call("xxh64", keys, seed=7)``."""
    return default_runtime().call(
        op, values, backend=backend, verify=verify, nulls=nulls, output=output, **params
    )


def operators() -> list[str]:
    """The names of the registered operators (``offload.ops.REGISTRY``), in registration order."""
    from offload.ops import REGISTRY

    return list(REGISTRY)


def backends() -> list[tuple[str, bool, str]]:
    """``(name, available, reason)`` of every backend known to the default runtime."""
    return default_runtime().backends()
