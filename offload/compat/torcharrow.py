"""TorchArrow's ``functional.sigrid_hash`` on int64 ids (Meta's recommendation preprocessing).

``sigrid_hash(values, salt, max_value)``: folly's ``twang_mix64(x)``, then
``hash_128_to_64(salt, that)`` read as a signed int64, then the floor modulo by ``max_value`` (in
``[0, max_value)`` even for a negative hash; ``max_value == 1`` gives 0). It is
``offload.sigrid_hash`` on int64 ids; TorchArrow's Velox UDF is defined on int64 only, and so is
this drop-in (cast int32 ids explicitly; their sign-extended value is the id).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from offload.compat import arrow_nulls, arrow_type, describe, first_index, is_arrow, runtime_of
from offload.runtime import BackendChoice, Runtime, VerifyMode

__all__ = ["sigrid_hash"]

_WHO = "sigrid_hash"
_TAKES = f"{_WHO} takes int64 ids (TorchArrow's sigrid_hash is defined on int64)"


def sigrid_hash(
    values: Any,
    salt: int,
    max_value: int,
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    runtime: Runtime | None = None,
) -> np.ndarray:
    """``torcharrow.functional.sigrid_hash(values, salt, max_value)``: int64, shaped like a numpy
    input. ``values``: a numpy int64 array (any shape) or a pyarrow int64 array or chunked array
    without nulls."""
    if isinstance(max_value, (int, np.integer)) and not isinstance(max_value, (bool, np.bool_)):
        if max_value <= 0:  # TorchArrow's (Velox's) check, before any other
            raise ValueError(f"{_WHO}: max_value must be larger than 0, got {int(max_value)}")
    ids = _ids(values)
    rt = runtime_of(runtime, _WHO)
    out: np.ndarray = rt.sigrid_hash(ids, salt, max_value, backend=backend, verify=verify)
    return out


def _ids(values: Any) -> np.ndarray:
    if is_arrow(values):
        import pyarrow as pa

        if arrow_type(values) != pa.int64():
            raise TypeError(f"{_TAKES}, got a {describe(values)}")
        nulls = arrow_nulls(values)
        if nulls is not None:
            where = first_index(nulls)
            raise ValueError(
                f"{_WHO}: null at index {where}: fill or drop nulls first (TorchArrow keeps them)"
            )
        if pa.types.is_dictionary(values.type):
            values = values.cast(pa.int64())
        return np.asarray(values.to_numpy(zero_copy_only=False))
    if isinstance(values, np.ndarray) and values.dtype.kind == "i" and values.dtype.itemsize == 8:
        return values.astype(values.dtype.newbyteorder("="), copy=False)  # big-endian: the same ids
    raise TypeError(f"{_TAKES}, got a {describe(values)}")
