"""TensorFlow's string hashing: ``tf.strings.to_hash_bucket_fast``.

``to_hash_bucket_fast(strings, num_buckets)`` is FarmHash ``Fingerprint64`` of each string's bytes
(``tf.fingerprint``'s hash; a ``str`` hashes as its UTF-8), reduced with the *unsigned* modulo
``Fingerprint64 % num_buckets`` and returned as int64 (always in ``[0, num_buckets)``). It is
``offload.hash_bucket(strings, num_buckets, hash="farmhash64")``; ``categorical_column_with_hash_bucket``
of a string feature column hashes the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from offload.compat import check_count, describe, read_text, runtime_of, text_kind
from offload.runtime import BackendChoice, Runtime, VerifyMode

__all__ = ["to_hash_bucket_fast"]

_WHO = "to_hash_bucket_fast"


def to_hash_bucket_fast(
    strings: Any,
    num_buckets: int,
    *,
    backend: BackendChoice = "auto",
    verify: VerifyMode | None = None,
    runtime: Runtime | None = None,
) -> np.ndarray:
    """``tf.strings.to_hash_bucket_fast(strings, num_buckets)``: int64, shaped like a numpy input.

    ``strings``: a numpy ``str``/``bytes``/object array (any shape), a sequence of ``str`` or
    ``bytes``, a pyarrow string/binary array or chunked array (no nulls), or one ``str``/``bytes``
    (a 0-d result). Numbers are refused, as TensorFlow refuses them.
    """
    n = check_count(_WHO, "num_buckets", num_buckets)
    if not text_kind(strings):
        raise TypeError(
            f"{_WHO} takes strings, got a {describe(strings)} "
            "(TensorFlow refuses other dtypes: offload.compat.keras.hashing hashes integers as Keras does)"
        )
    text = read_text(strings, _WHO, nulls_allowed=False)
    rt = runtime_of(runtime, _WHO)
    out = rt.hash_bucket(text.records, n, hash="farmhash64", backend=backend, verify=verify)
    return out.reshape(text.shape)
