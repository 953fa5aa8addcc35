"""offload.spark.featurize on a real local Spark (``local[2]``): the result equals
``spec.transform`` on the same rows (several partitions, every null policy, ints, strings, binary,
lists, floats, keep columns), schema and option errors are raised on the driver before any job,
an empty DataFrame, Spark's own ``hash``/``xxhash64`` equal the compat ops run as features, and
the executor's fingerprint check. Without a JVM the Spark tests skip (in CI they fail)."""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import offload
import offload.spark
from offload import Feature, FeatureSpec
from offload.spark import _cpu_threads, _executor_runtime, _Featurize

pytestmark = [
    pytest.mark.xdist_group("spark"),
    # pyspark warns on import when pandas 3 is installed; offload.spark uses Arrow, not pandas
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]


def _no_jvm() -> str | None:
    """Why Spark cannot start here, or None."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return None
    if shutil.which("java"):
        return None
    return "no JVM: java is not on PATH and JAVA_HOME names none (Spark needs a JDK, e.g. OpenJDK 17)"


def _require(why: str | None) -> None:
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"Spark must run in CI: {why}")
        pytest.skip(reason=why)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """A local Spark with two cores, its Python workers on this interpreter (they import offload)."""
    _require(_no_jvm())
    try:
        from pyspark.sql import SparkSession
    except ModuleNotFoundError:
        _require("pyspark is not installed (the 'spark' extra)")
    old = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("offload-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "64")  # several batches a partition
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        if old is None:
            os.environ.pop("PYSPARK_PYTHON", None)
        else:
            os.environ["PYSPARK_PYTHON"] = old


def events(n: int = 600, seed: int = 3) -> pa.Table:
    """Every column type a feature takes from Spark, nulls in some, and a row number."""
    rng = np.random.default_rng(seed)
    words = np.array(["US|ios", "DE|web", "", "Ünïcødé|€", "a" * 40], dtype=object)
    country = words[rng.integers(0, len(words), n)]
    lengths = rng.integers(0, 5, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    every7 = np.arange(n) % 7 == 3
    return pa.table(
        {
            "row": np.arange(n, dtype=np.int64),
            "user_id": rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64),
            "small_id": rng.integers(-(2**31), 2**31 - 1, n, dtype=np.int32),
            "country": pa.array(country, pa.string(), mask=every7),
            "payload": pa.array([c.encode() for c in country], pa.binary()),
            "price": pa.array(rng.gamma(2.0, 20.0, n).astype(np.float32), mask=np.arange(n) % 5 == 1),
            "clicks": pa.ListArray.from_arrays(
                pa.array(offsets), pa.array(rng.integers(1_700_000_000, 1_700_100_000, int(offsets[-1])))
            ),
            "label": rng.random(n),
        }
    )


def mixed_spec() -> FeatureSpec:
    return FeatureSpec(
        [
            Feature("user_id", "hash_bucket", num_buckets=1_000_003, dtype="int64"),
            Feature("user_id", "xxh64", seed=7),  # uint64: LongType, the same bits
            Feature("user_id", "fid", slot=42),
            Feature("small_id", "murmur3_32", dtype="int32"),  # uint32: LongType, the same value
            Feature("country", "hash_bucket", num_buckets=97, nulls="null"),
            Feature("country", "xxh32", nulls="unknown", dtype="string"),
            Feature("country", "compat.spark.xxhash64", out="country_spark", nulls="null"),
            Feature("payload", "farmhash64", dtype="binary"),
            Feature("price", "bucketize", boundaries=[1.0, 10.0, 100.0], nulls=-1.0, dtype="float32"),
            Feature("clicks", "delta_varint_encode"),
        ]
    )


def in_spark_types(table: pa.Table) -> dict[str, list[Any]]:
    """``spec.transform``'s columns as Spark returns them (offload.spark's docstring): uint64
    as the same bits signed, uint32 widened, large binary and lists as their plain form."""
    out = {}
    for name, col in zip(table.column_names, table.columns):
        col = col.combine_chunks()
        if col.type == pa.uint64():
            col = col.view(pa.int64())
        elif col.type == pa.uint32():
            col = col.cast(pa.int64())
        out[name] = col.to_pylist()
    return out


def collected(df: Any, by: str = "row") -> dict[str, list[Any]]:
    """A DataFrame's columns, rows in ``by`` order (Spark's partitions come back in any order)."""
    table = df.toArrow()
    table = table.sort_by(by) if table.num_rows else table
    return {name: table.column(name).to_pylist() for name in table.column_names}


# ---------------------------------------------------------------------------------------------
# the result equals spec.transform
# ---------------------------------------------------------------------------------------------


def test_featurize_equals_spec_transform_over_several_partitions(spark) -> None:
    data = events()
    df = spark.createDataFrame(data).repartition(3)
    assert df.rdd.getNumPartitions() == 3
    spec = mixed_spec()
    got = collected(offload.spark.featurize(df, spec, keep=["label", "row"], backends=["cpu"]))
    expected = in_spark_types(spec.transform(data, keep=["label", "row"], runtime=offload.Runtime(["cpu"])))
    assert got == expected
    assert min(got["user_id_xxh64"]) < 0  # hashes of 2**63 and above come back negative
    assert None in got["country_hash_bucket"] and got["price_bucketize"].count(None) == 0


def test_the_output_schema_is_derived_from_the_spec_and_the_input(spark) -> None:
    from pyspark.sql import types as T

    data = events(20)
    df = spark.createDataFrame(data)
    spec = FeatureSpec(
        [
            Feature("small_id", "compat.spark.hash"),
            Feature("user_id", "xxh64"),
            Feature("country", "xxh32", nulls="null"),
            Feature("clicks", "delta_varint_encode"),
            Feature("payload", "delta_varint_decode"),
        ]
    )
    out = offload.spark.featurize(df, spec, keep=["price"])
    assert out.schema == T.StructType(
        [
            T.StructField("small_id_hash", T.IntegerType(), False),
            T.StructField("user_id_xxh64", T.LongType(), False),
            T.StructField("country_xxh32", T.LongType(), True),
            T.StructField("clicks_delta_varint_encode", T.BinaryType(), False),
            T.StructField("payload_delta_varint_decode", T.ArrayType(T.LongType(), False), False),
            df.schema["price"],
        ]
    )


def test_an_encoded_column_decodes_to_spark_arrays(spark) -> None:
    data = events(50)
    encode = FeatureSpec([Feature("clicks", "delta_varint_encode", out="enc")])
    encoded = offload.spark.featurize(spark.createDataFrame(data), encode, keep=["row", "clicks"])
    decode = FeatureSpec([Feature("enc", "delta_varint_decode", out="dec")])
    got = collected(offload.spark.featurize(encoded, decode, keep=["row", "clicks"]))
    assert got["dec"] == got["clicks"] == data.column("clicks").to_pylist()


def test_an_empty_dataframe_gives_an_empty_result(spark) -> None:
    full = spark.createDataFrame(events(1))
    empty = spark.createDataFrame([], full.schema)
    spec = mixed_spec()
    out = offload.spark.featurize(empty, spec, keep=["row"])
    assert out.collect() == []
    assert out.schema == offload.spark.featurize(full, spec, keep=["row"]).schema
    assert out.columns == [*spec.outputs, "row"]


# ---------------------------------------------------------------------------------------------
# Spark's own hashes equal the compat ops as features (a check against the real library)
# ---------------------------------------------------------------------------------------------


def test_spark_hash_and_xxhash64_equal_the_compat_ops_as_features(spark) -> None:
    from pyspark.sql import functions as F

    df = spark.createDataFrame(events()).repartition(2)
    spark_cols = {}
    for c in ("user_id", "small_id", "country", "payload"):
        spark_cols[f"spark_hash_{c}"] = F.hash(c)
        spark_cols[f"spark_xxhash64_{c}"] = F.xxhash64(c)
    df = df.withColumns(spark_cols)
    features = []
    for c in ("user_id", "small_id", "country", "payload"):
        features.append(Feature(c, "compat.spark.hash", out=f"hash_{c}", nulls="null"))
        features.append(Feature(c, "compat.spark.xxhash64", out=f"xxhash64_{c}", nulls="null"))
    got = collected(offload.spark.featurize(df, FeatureSpec(features), keep=["row", *spark_cols]))
    for c in ("user_id", "small_id", "country", "payload"):
        for fn in ("hash", "xxhash64"):
            ours, theirs = got[f"{fn}_{c}"], got[f"spark_{fn}_{c}"]
            assert [o if o is not None else 42 for o in ours] == theirs, (fn, c)  # Spark: null -> 42
    assert None in got["hash_country"]


# ---------------------------------------------------------------------------------------------
# errors: on the driver before any job, or the data's on the executors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "features, kwargs, error, message",
    [
        (
            [Feature("missing", "xxh64")],
            {},
            ValueError,
            "feature 'missing_xxh64': column 'missing' is not in the table (its columns: 'row', "
            "'user_id', 'small_id', 'country', 'payload', 'price', 'clicks', 'label')",
        ),
        (
            [Feature("small_id", "hash_bucket", num_buckets=7, dtype="int64")],
            {},
            TypeError,
            "feature 'small_id_hash_bucket': column 'small_id' is int32, the spec was written for "
            "int64 (the same id would hash differently): cast the column, or declare the feature "
            "with cast=True",
        ),
        (
            [Feature("label", "xxh64")],
            {},
            TypeError,
            "feature 'label_xxh64': column 'label' is float64, xxh64 takes int32, uint32, int64, "
            "uint64, string or binary",
        ),
        (
            [Feature("user_id", "xxh64")],
            {"keep": ["nope"]},
            ValueError,
            "keep column 'nope' is not in the table (its columns: 'row', 'user_id', 'small_id', "
            "'country', 'payload', 'price', 'clicks', 'label')",
        ),
        (
            [Feature("user_id", "xxh64", out="label")],
            {"keep": ["label"]},
            ValueError,
            "keep column 'label' is also a feature's output name: rename the feature (out=...)",
        ),
        ([Feature("user_id", "xxh64")], {"keep": "label"}, TypeError, "keep must be a list of column names"),
        (
            [Feature("user_id", "xxh64")],
            {"backend": "gpu"},
            ValueError,
            "unknown backend 'gpu': expected 'auto', 'cpu', 'sim', 'fpga' or 'smartnic'",
        ),
        (
            [Feature("user_id", "xxh64")],
            {"verify": "often"},
            ValueError,
            "unknown verify mode 'often': expected 'off', 'sample' or 'full'",
        ),
        (
            [Feature("user_id", "xxh64")],
            {"backends": ["tpu"]},
            ValueError,
            "unknown backend 'tpu': expected one of cpu, sim, fpga, smartnic",
        ),
    ],
)
def test_errors_are_raised_on_the_driver_before_any_job(spark, features, kwargs, error, message) -> None:
    df = spark.createDataFrame(events(10))
    sc = spark.sparkContext
    sc.setJobGroup("offload-driver-errors", "featurize must fail before any job")
    try:
        with pytest.raises(error) as e:
            offload.spark.featurize(df, FeatureSpec(features), **kwargs)
    finally:
        sc.setJobGroup("", "")
    assert str(e.value).startswith(message)
    assert sc.statusTracker().getJobIdsForGroup("offload-driver-errors") == []


def test_a_column_spark_cannot_send_through_arrow_is_named(spark) -> None:
    df = spark.sql("SELECT make_interval(1) AS span, 1L AS id")
    with pytest.raises(TypeError, match=r"^a Spark interval column cannot go through Arrow \(mapInArrow\)"):
        offload.spark.featurize(df, FeatureSpec([Feature("span", "xxh64")]))
    out = offload.spark.featurize(df, FeatureSpec([Feature("id", "xxh64")]))  # another column: fine
    assert out.collect()[0]["id_xxh64"] == np.uint64(offload.xxh64(np.array([1]))[0]).view(np.int64)


def test_argument_types_are_checked(spark) -> None:
    spec = FeatureSpec([Feature("user_id", "xxh64")])
    with pytest.raises(TypeError, match=r"^featurize takes a pyspark.sql.DataFrame, got Table$"):
        offload.spark.featurize(events(3), spec)
    with pytest.raises(TypeError, match=r"^featurize takes an offload.FeatureSpec, got str$"):
        offload.spark.featurize(spark.createDataFrame(events(3)), spec.to_json())


def test_a_null_under_nulls_error_fails_the_job_naming_the_row_and_partition(spark) -> None:
    df = spark.createDataFrame(events(40)).coalesce(1)
    spec = FeatureSpec([Feature("country", "xxh64")])
    with pytest.raises(Exception) as e:
        offload.spark.featurize(df, spec).collect()
    text = str(e.value)
    assert (
        "ValueError: feature 'country_xxh64': null at row 3 of column 'country' (nulls='error': "
        "declare nulls='null' or a replacement value)" in text
    )
    assert "offload.spark: in Spark partition 0 (rows counted from its first row)" in text


def test_an_executor_whose_spec_has_another_fingerprint_refuses_to_run(spark) -> None:
    df = spark.createDataFrame(events(10)).select("user_id")
    spec = FeatureSpec([Feature("user_id", "xxh64")])
    wrong = "0" * 64
    fn = _Featurize(spec.to_json(), wrong, pickle.dumps(offload.Runtime()), "auto", [], [pa.int64()])
    with pytest.raises(Exception) as e:
        df.mapInArrow(fn, "user_id_xxh64 long").collect()
    assert (
        f"RuntimeError: offload.spark: the spec rebuilt on this executor has fingerprint "
        f"{spec.fingerprint}, the driver's is {wrong}: this executor's offload ({offload.__version__}) "
        "reads the spec differently; install the driver's offload version on every executor"
    ) in str(e.value)


def test_the_runtime_shipped_has_the_options_and_one_cpu_thread_per_task(spark, monkeypatch) -> None:
    shipped = []

    def recording(*args: Any) -> _Featurize:
        shipped.append(pickle.loads(args[2]))
        return _Featurize(*args)

    monkeypatch.setattr(offload.spark, "_Featurize", recording)
    spec = FeatureSpec([Feature("user_id", "xxh64")])
    offload.spark.featurize(spark.createDataFrame(events(3)), spec, backends=["cpu"], verify="sample")
    (rt,) = shipped
    assert (rt.order, rt.verify) == (("cpu",), "sample")
    assert rt.backend("cpu").threads == 1  # spark.task.cpus, 1 by default


def test_the_cpu_threads_are_set_unless_the_options_name_them() -> None:
    assert _cpu_threads({}, 2) == {"options": {"cpu": {"threads": 2}}}
    options = {"verify": "full", "options": {"cpu": {"parallel_threshold": 9}, "fpga": {"device": "sim"}}}
    assert _cpu_threads(options, 1) == {
        "verify": "full",
        "options": {"cpu": {"parallel_threshold": 9, "threads": 1}, "fpga": {"device": "sim"}},
    }
    named = {"options": {"cpu": {"threads": 4}}}
    assert _cpu_threads(named, 1) is named
    wrong = {"options": ["cpu"]}
    assert _cpu_threads(wrong, 1) is wrong  # Runtime's own error follows


# ---------------------------------------------------------------------------------------------
# without a JVM: the executor's side run in this process, the missing extra
# ---------------------------------------------------------------------------------------------


def test_the_executor_function_gives_spark_types_batch_by_batch() -> None:
    data = events(30)
    spec = mixed_spec()
    types = [pa.int64(), pa.int64(), pa.int64(), pa.int64(), pa.int64(), pa.int64(), pa.int64()]
    types += [pa.int64(), pa.int32(), pa.binary()]
    fn = _Featurize(
        spec.to_json(), spec.fingerprint, pickle.dumps(offload.Runtime(["cpu"])), "auto", ["row"], types
    )
    batches = list(fn(iter(data.to_batches(max_chunksize=8))))
    assert [b.num_rows for b in batches] == [8, 8, 8, 6]
    assert [b.schema.types for b in batches][0] == [*types, pa.int64()]
    got = pa.Table.from_batches(batches)
    assert in_spark_types(got) == in_spark_types(spec.transform(data, keep=["row"]))


def test_the_executor_keeps_one_runtime_per_options_and_closes_evicted_ones() -> None:
    blobs = [pickle.dumps(offload.Runtime(["cpu"], sample_size=k)) for k in range(1, 7)]
    first = _executor_runtime(blobs[0])
    assert _executor_runtime(blobs[0]) is first
    assert first.sample_size == 1 and first.order == ("cpu",)
    first.xxh64(np.arange(3, dtype=np.uint64))  # opens its CPU backend
    for b in blobs[1:]:
        _executor_runtime(b)
    assert first._slots["cpu"].backend is None  # evicted: closed
    assert _executor_runtime(blobs[0]) is not first


def test_without_pyspark_the_extra_is_named(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(ModuleNotFoundError) as e:
        offload.spark.featurize(object(), FeatureSpec([Feature("a", "xxh64")]))
    assert str(e.value) == (
        "offload.spark needs the 'spark' extra: pip install 'offload[spark]' (missing module 'pyspark')"
    )


def test_spark_types_of_every_operator_result() -> None:
    pytest.importorskip("pyspark", reason="pyspark is not installed (the 'spark' extra)")
    from pyspark.sql import types as T

    from offload.features import COMPAT_OPS, _result_type
    from offload.ops import REGISTRY

    for op in [*REGISTRY, *COMPAT_OPS]:
        assert offload.spark.spark_type(_result_type(op)) is not None, op
    assert offload.spark.spark_type(pa.uint64()) == T.LongType()
    assert offload.spark.spark_type(pa.uint32()) == T.LongType()
    assert offload.spark.spark_type(pa.int32()) == T.IntegerType()
    assert offload.spark.spark_type(pa.large_binary()) == T.BinaryType()
    assert offload.spark.spark_type(pa.large_list(pa.int64())) == T.ArrayType(T.LongType(), False)
    with pytest.raises(TypeError, match=r"^a feature result of Arrow type float32 has no Spark type$"):
        offload.spark.spark_type(pa.float32())
