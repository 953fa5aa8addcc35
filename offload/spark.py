"""Spark: a :class:`~offload.FeatureSpec` over a DataFrame, through ``mapInArrow``.

    import offload.spark

    features = offload.spark.featurize(df, spec, keep=["label"], backends=["fpga", "cpu"])

:func:`featurize` returns a DataFrame (lazy, like every Spark transformation) with one column per
feature, named ``out``, in spec order, then the ``keep`` columns: the rows of
``spec.transform(table, keep=keep)`` for the same data, in the DataFrame's row order. The
keyword arguments besides ``keep`` and ``backend`` are the :class:`~offload.Runtime`'s
(``backends=``, ``verify=``, ``fpga=``, ``smartnic=``, ...).

What runs where:

- **On the driver**, before any job: the spec is validated against the DataFrame's schema with
  the spec's own exact errors (a missing column, a wrong type, an int32 column where the spec
  was written for int64); the Runtime's options are checked by building it (no backend opens:
  a Runtime opens backends on first use) and pickled; the output schema is derived.
- **On the executors**, in each Python worker: the spec is rebuilt from its JSON
  (:meth:`FeatureSpec.from_json`) and its fingerprint compared with the driver's (a mismatch
  means the executor's offload reads the spec differently: an exact error, never different
  features); the Runtime is unpickled once per worker and kept across tasks (Spark reuses its
  Python workers), so a device opens once per worker, when the first batch reaches it; the CPU
  backend's kernel threads are the CPUs Spark gives a task (``spark.task.cpus``, 1 by default:
  Spark already runs one task per core), unless ``options={"cpu": {"threads": n}}`` says
  otherwise; each Arrow record batch of the partition goes through
  :meth:`FeatureSpec.transform_batches` (``spark.sql.execution.arrow.maxRecordsPerBatch`` rows).
  A data error (a null under ``nulls="error"``) names the row counted from the partition's
  first row, and a note names the partition.

Spark has no unsigned integers. The operators' uint32 results (``xxh32``, ``murmur3_32``) become
LongType with the same values; uint64 results (``xxh64``, ``fid``, ``farmhash64``,
``cityhash64``) become LongType holding the same 64 bits (a value of 2**63 or more reads as
itself minus 2**64, as Spark's own ``xxhash64`` returns it). int32 is IntegerType, int64 LongType,
an encoded sequence BinaryType, a decoded one ``array<bigint>``.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from offload import __version__
from offload.extras import message
from offload.features import FeatureSpec, logical_type
from offload.runtime import Runtime

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["featurize", "spark_type"]

#: Specs and Runtimes kept per Python worker (the most recent ones; an evicted Runtime is closed).
_CACHED = 4
_LOCK = threading.Lock()
_SPECS: dict[str, FeatureSpec] = {}
_RUNTIMES: dict[bytes, Runtime] = {}


def featurize(
    df: DataFrame,
    spec: FeatureSpec,
    *,
    keep: Sequence[str] = (),
    backend: str | Mapping[str, str] = "auto",
    **runtime_options: Any,
) -> DataFrame:
    """``df`` with ``spec`` applied on the executors: one column per feature, then ``keep``.

    ``backend``: as :meth:`FeatureSpec.transform` takes it (``"auto"``, a backend name, or a
    mapping from output name to backend). ``runtime_options``: the keyword arguments of
    :class:`~offload.Runtime`, built on each executor. Every error of the spec, ``keep``,
    ``backend`` and the options is raised here, on the driver, before any job runs."""
    _pyspark()
    from pyspark.sql import DataFrame

    if not isinstance(df, DataFrame):
        raise TypeError(f"featurize takes a pyspark.sql.DataFrame, got {type(df).__name__}")
    if not isinstance(spec, FeatureSpec):
        raise TypeError(f"featurize takes an offload.FeatureSpec, got {type(spec).__name__}")
    task_cpus = int(df.sparkSession.conf.get("spark.task.cpus", "1") or "1")
    rt = Runtime(**_cpu_threads(runtime_options, task_cpus))
    blob = pickle.dumps(rt)  # a backend instance that cannot travel is refused here
    for _ in spec.transform_batches((), backend=backend, runtime=rt, keep=keep):
        pass  # no batch: checks keep= and backend= with the spec's own messages
    keep = list(keep)
    needed = list(dict.fromkeys([*spec.columns, *keep]))
    large = df.sparkSession.conf.get("spark.sql.execution.arrow.useLargeVarTypes", "false") == "true"
    arrow_out = spec.output_schema(_arrow_schema(df.schema, needed, large), keep)  # the spec's errors
    out = _output_schema(arrow_out, len(spec.features), df.schema, keep)
    types = [_to_arrow(f.dataType, large) for f in out.fields[: len(spec.features)]]
    fn = _Featurize(spec.to_json(indent=None), spec.fingerprint, blob, backend, keep, types)
    return df.select(*[_col(c) for c in needed]).mapInArrow(fn, out)


def spark_type(t: pa.DataType) -> Any:
    """The Spark type a feature's Arrow result type becomes (see the module docstring)."""
    from pyspark.sql import types as T

    if t in (pa.uint32(), pa.uint64(), pa.int64()):
        return T.LongType()
    if t == pa.int32():
        return T.IntegerType()
    if pa.types.is_large_binary(t) or pa.types.is_binary(t):
        return T.BinaryType()
    if (pa.types.is_large_list(t) or pa.types.is_list(t)) and t.value_type == pa.int64():
        return T.ArrayType(T.LongType(), containsNull=False)
    raise TypeError(f"a feature result of Arrow type {logical_type(t)} has no Spark type")


# ---------------------------------------------------------------------------------------------
# the driver's side
# ---------------------------------------------------------------------------------------------


def _pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name != "pyspark":
            raise
        raise ModuleNotFoundError(message("offload.spark", "pyspark"), name="pyspark") from None


def _cpu_threads(runtime_options: dict[str, Any], task_cpus: int) -> dict[str, Any]:
    """The options with the CPU backend's kernel threads set to the CPUs Spark gives a task
    (``spark.task.cpus``), unless they name a number: Spark runs as many tasks at once as its
    executors have cores, each in its own Python worker."""
    options = runtime_options.get("options")
    if options is not None and not isinstance(options, Mapping):
        return runtime_options  # the Runtime refuses it with its own message
    options = dict(options or {})
    cpu = options.get("cpu", {})
    if not isinstance(cpu, Mapping) or "threads" in cpu:
        return runtime_options
    options["cpu"] = {**cpu, "threads": task_cpus}
    return {**runtime_options, "options": options}


def _arrow_schema(schema: Any, needed: Sequence[str], large: bool) -> pa.Schema:
    """The Arrow schema the executors' batches will have, for the columns read; the others
    keep only their names (for the spec's "its columns" in a missing-column error)."""
    names = schema.fieldNames()
    fields = []
    for field in schema.fields:
        if field.name not in needed:
            fields.append(pa.field(field.name, pa.null()))
            continue
        if names.count(field.name) > 1:
            raise ValueError(
                f"column {field.name!r} appears {names.count(field.name)} times in the DataFrame: "
                "rename or drop the others first"
            )
        fields.append(pa.field(field.name, _to_arrow(field.dataType, large)))
    return pa.schema(fields)


def _to_arrow(dt: Any, large: bool) -> pa.DataType:
    from pyspark.errors import PySparkTypeError
    from pyspark.sql.pandas.types import to_arrow_type

    try:
        return to_arrow_type(dt, prefers_large_types=large)
    except PySparkTypeError:
        raise TypeError(
            f"a Spark {dt.simpleString()} column cannot go through Arrow (mapInArrow): "
            "select or cast it first"
        ) from None


def _output_schema(arrow_out: pa.Schema, n: int, schema: Any, keep: Sequence[str]) -> Any:
    """The Spark schema of the result: the features' Arrow fields in Spark's types, then the
    ``keep`` fields as the DataFrame has them."""
    from pyspark.sql import types as T

    fields = [T.StructField(f.name, spark_type(f.type), nullable=f.nullable) for f in list(arrow_out)[:n]]
    return T.StructType(fields + [schema[k] for k in keep])


def _col(name: str) -> Any:
    """A column by its exact name (dots and backticks are not paths)."""
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


# ---------------------------------------------------------------------------------------------
# the executors' side
# ---------------------------------------------------------------------------------------------


class _Featurize:
    """The function ``mapInArrow`` runs on each partition. Pickled by reference to this module
    (the executors need offload installed, the same version: the fingerprint checks it)."""

    def __init__(
        self,
        spec_json: str,
        fingerprint: str,
        runtime: bytes,
        backend: str | Mapping[str, str],
        keep: list[str],
        types: list[pa.DataType],
    ) -> None:
        self.spec_json = spec_json
        self.fingerprint = fingerprint
        self.runtime = runtime
        self.backend = backend if isinstance(backend, str) else dict(backend)
        self.keep = keep
        self.types = types

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        spec = _executor_spec(self.spec_json, self.fingerprint)
        rt = _executor_runtime(self.runtime)
        names = [*spec.outputs, *self.keep]
        try:
            for out in spec.transform_batches(batches, backend=self.backend, runtime=rt, keep=self.keep):
                arrays = [_as_spark(out.column(i), t) for i, t in enumerate(self.types)]
                arrays += out.columns[len(self.types) :]  # keep columns: Spark's own arrays, as read
                yield pa.RecordBatch.from_arrays(arrays, names=names)
        except Exception as e:
            _note_partition(e)
            raise


def _as_spark(col: pa.Array, t: pa.DataType) -> pa.Array:
    """A feature's result in the Arrow type Spark reads for its column."""
    if col.type == t:
        return col
    if col.type == pa.uint64():
        return col.view(t)  # the same 64 bits, signed (Spark has no unsigned type)
    return col.cast(t)


def _note_partition(e: BaseException) -> None:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is not None:
        e.add_note(f"offload.spark: in Spark partition {ctx.partitionId()} (rows counted from its first row)")


def _executor_spec(spec_json: str, fingerprint: str) -> FeatureSpec:
    """The spec shipped as JSON, rebuilt (once per worker) and checked against the driver's
    fingerprint."""
    with _LOCK:
        spec = _SPECS.get(spec_json)
    if spec is None:
        spec = FeatureSpec.from_json(spec_json)
        if spec.fingerprint != fingerprint:
            raise RuntimeError(
                f"offload.spark: the spec rebuilt on this executor has fingerprint {spec.fingerprint}, "
                f"the driver's is {fingerprint}: this executor's offload ({__version__}) reads the "
                "spec differently; install the driver's offload version on every executor"
            )
        with _LOCK:
            _evict(_SPECS)
            _SPECS[spec_json] = spec
    return spec


def _executor_runtime(blob: bytes) -> Runtime:
    """The Runtime pickled on the driver, unpickled once per worker (no backend opens until a
    batch needs it) and reused by the worker's later tasks."""
    with _LOCK:
        rt = _RUNTIMES.get(blob)
        if rt is None:
            rt = pickle.loads(blob)
            if not isinstance(rt, Runtime):
                raise TypeError(f"offload.spark: the runtime shipped is a {type(rt).__name__}")
            for old in _evict(_RUNTIMES):
                old.close()
            _RUNTIMES[blob] = rt
    return rt


def _evict(cache: dict[Any, Any]) -> list[Any]:
    """Make room for one more entry: the oldest ones out (returned)."""
    gone = []
    while len(cache) >= _CACHED:
        gone.append(cache.pop(next(iter(cache))))
    return gone
