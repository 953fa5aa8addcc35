"""offload.Feature and offload.FeatureSpec: construction and schema errors, the JSON form and the
fingerprint, transform over every input form, null policies, dictionary columns, streaming Parquet,
the backends' concurrency, compat ops as features, and the examples of docs/features.md."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import offload
from offload.compat import keras, spark, tf, torcharrow
from offload.features import (
    COMPAT_OPS,
    Feature,
    FeatureSpec,
    bench_rows,
    bench_spec,
    bench_table,
    logical_type,
)
from offload.host.cpu import CpuBackend
from offload.host.smartnic import SmartNicBackend
from offload.host.smartnic.testing import InProcessService

ROOT = Path(__file__).resolve().parents[1]
CPU = offload.Runtime(["cpu"])


def table(n: int = 50, seed: int = 1) -> pa.Table:
    """int64 and int32 ids, a dictionary and a plain string column, float32 prices, clicks."""
    rng = np.random.default_rng(seed)
    cats = np.array(["US|ios", "DE|web", "FR|android", ""], dtype=object)[rng.integers(0, 4, n)]
    lengths = rng.integers(0, 4, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return pa.table(
        {
            "user_id": rng.integers(-(2**62), 2**62, n, dtype=np.int64),
            "small_id": rng.integers(-1000, 1000, n, dtype=np.int32),
            "category": pa.array(cats, pa.string()).dictionary_encode(),
            "country": pa.array(cats, pa.string()),
            "price": rng.gamma(2.0, 20.0, n).astype(np.float32),
            "clicks": pa.ListArray.from_arrays(
                pa.array(offsets, pa.int32()), pa.array(rng.integers(0, 10**9, int(offsets[-1])))
            ),
            "label": rng.integers(0, 2, n, dtype=np.int8),
        }
    )


def five() -> FeatureSpec:
    return FeatureSpec(
        [
            Feature("user_id", "hash_bucket", num_buckets=1_000_003, dtype="int64"),
            Feature("user_id", "fid", slot=42, dtype="int64"),
            Feature("country", "xxh64", seed=7, dtype="string"),
            Feature("price", "bucketize", boundaries=[1.0, 10.0, 100.0], dtype="float32"),
            Feature("clicks", "delta_varint_encode", dtype="list<int64>"),
        ]
    )


def column(t: pa.Table, name: str) -> list:
    return t.column(name).to_pylist()


# ---------------------------------------------------------------------------------------------
# construction: the operators' own messages, defaults filled
# ---------------------------------------------------------------------------------------------


def test_parameters_are_validated_with_the_operators_messages() -> None:
    with pytest.raises(ValueError, match=re.escape("num_buckets must be in [1, 2**63], got 0")):
        Feature("a", "hash_bucket", num_buckets=0)
    with pytest.raises(TypeError, match=re.escape("hash_bucket() missing required parameter 'num_buckets'")):
        Feature("a", "hash_bucket")
    with pytest.raises(TypeError, match=re.escape("xxh64() got an unexpected parameter 'buckets'")):
        Feature("a", "xxh64", buckets=3)
    with pytest.raises(ValueError, match=re.escape("seed must be in [0, 2**32), got 4294967296")):
        Feature("a", "xxh32", seed=1 << 32)
    with pytest.raises(ValueError, match=re.escape("boundaries must be strictly increasing")):
        Feature("a", "bucketize", boundaries=[1.0, 1.0])
    with pytest.raises(
        TypeError,
        match=re.escape(
            "feature 'a_sigrid_hash': sigrid_hash does not take float32 columns (it takes int32 or int64)"
        ),
    ):
        Feature("a", "sigrid_hash", salt=0, max_value=3, dtype="float32")
    with pytest.raises(
        ValueError, match=re.escape("boundaries[0] = 0.5 is not exactly representable in int64")
    ):
        Feature("a", "bucketize", boundaries=[0.5], dtype="int64")


def test_compat_parameters_are_validated_with_the_drop_ins_messages() -> None:
    with pytest.raises(
        ValueError, match=re.escape("to_hash_bucket_fast: num_buckets must be in [1, 2**63), got 0")
    ):
        Feature("a", "compat.tf.to_hash_bucket_fast", num_buckets=0)
    with pytest.raises(
        TypeError, match=re.escape("compat.keras.hashing() missing required parameter 'num_bins'")
    ):
        Feature("a", "compat.keras.hashing")
    with pytest.raises(
        TypeError, match=re.escape("compat.spark.hash() got an unexpected parameter 'backend'")
    ):
        Feature("a", "compat.spark.hash", backend="cpu")
    with pytest.raises(ValueError, match=re.escape("sigrid_hash: max_value must be larger than 0, got 0")):
        Feature("a", "compat.torcharrow.sigrid_hash", salt=1, max_value=0)
    with pytest.raises(
        TypeError, match=re.escape("hashing: mask_value must be an int for int64 values, got str")
    ):
        Feature("a", "compat.keras.hashing", num_bins=3, mask_value="x", dtype="int64")


def test_feature_errors() -> None:
    with pytest.raises(
        ValueError, match=r"^unknown op 'xxh65': expected a registry operator \(xxh32, xxh64, "
    ):
        Feature("a", "xxh65")
    with pytest.raises(ValueError, match=re.escape("compat.tf.to_hash_bucket_fast, compat.keras.hashing, ")):
        Feature("a", "compat.tf.fingerprint")
    with pytest.raises(
        ValueError, match=re.escape("unknown dtype 'int16': expected one of int32, uint32, int64")
    ):
        Feature("a", "xxh64", dtype="int16")
    with pytest.raises(
        TypeError, match=re.escape("feature 'a_xxh64': xxh64 does not take float32 columns (it takes")
    ):
        Feature("a", "xxh64", dtype="float32")
    with pytest.raises(ValueError, match=re.escape("feature 'a_xxh64': cast=True needs dtype=")):
        Feature("a", "xxh64", cast=True)
    with pytest.raises(
        TypeError, match=re.escape("feature 'a_xxh64': nulls must be 'error', 'null' or a replacement")
    ):
        Feature("a", "xxh64", nulls=None)
    with pytest.raises(
        TypeError, match=re.escape("feature 'a_xxh64': the null replacement 'x' is not a int64")
    ):
        Feature("a", "xxh64", nulls="x", dtype="int64")
    with pytest.raises(TypeError, match=re.escape("column must be a non-empty str, got 3")):
        Feature(3, "xxh64")  # type: ignore[arg-type]


def test_defaults_are_filled_and_equal_features_are_equal() -> None:
    f = Feature("a", "hash_bucket", num_buckets=7)
    assert f.params == {"num_buckets": 7, "seed": 0, "method": "mod", "hash": "xxh64"}
    assert f == Feature("a", "hash_bucket", num_buckets=7, seed=0, method="mod", hash="xxh64")
    assert f.out == "a_hash_bucket"
    assert Feature("a", "compat.tf.to_hash_bucket_fast", num_buckets=3).out == "a_to_hash_bucket_fast"
    assert Feature("a", "compat.keras.hashing", num_bins=3).params == {"num_bins": 3, "mask_value": None}
    assert Feature("p", "bucketize", boundaries=[0, 1]) == Feature("p", "bucketize", boundaries=[0.0, 1.0])
    with pytest.raises(AttributeError, match="Feature is immutable"):
        f.out = "b"  # type: ignore[misc]


def test_duplicate_output_names_are_refused() -> None:
    with pytest.raises(
        ValueError, match=re.escape("duplicate output name 'a_xxh64' (features 0 and 2): give one")
    ):
        FeatureSpec([Feature("a", "xxh64"), Feature("b", "xxh64"), Feature("a", "xxh64", seed=1)])
    with pytest.raises(ValueError, match="a FeatureSpec needs at least one feature"):
        FeatureSpec([])
    with pytest.raises(TypeError, match="FeatureSpec: item 1 is a str, not a Feature"):
        FeatureSpec([Feature("a", "xxh64"), "b"])  # type: ignore[list-item]


# ---------------------------------------------------------------------------------------------
# the schema
# ---------------------------------------------------------------------------------------------


def test_a_missing_column_names_the_available_ones() -> None:
    spec = FeatureSpec([Feature("item_id", "xxh64")])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "feature 'item_id_xxh64': column 'item_id' is not in the table (its columns: 'user_id', "
        ),
    ):
        spec.transform(table())


def test_a_column_of_a_type_the_op_does_not_take_is_refused() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "feature 'price_xxh64': column 'price' is float32, xxh64 takes int32, uint32, int64, uint64, "
            "string or binary"
        ),
    ):
        FeatureSpec([Feature("price", "xxh64")]).transform(table())
    with pytest.raises(
        TypeError, match=re.escape("column 'label' is int8, bucketize takes int32, int64, float32")
    ):
        FeatureSpec([Feature("label", "bucketize", boundaries=[0])]).transform(table())
    with pytest.raises(
        TypeError, match=re.escape("column 'user_id' is int64, compat.tf.to_hash_bucket_fast takes")
    ):
        FeatureSpec([Feature("user_id", "compat.tf.to_hash_bucket_fast", num_buckets=3)]).transform(table())


def test_an_int32_column_where_the_spec_was_written_for_int64_is_an_error_unless_cast() -> None:
    t = table()
    with pytest.raises(
        TypeError,
        match=re.escape(
            "feature 'small_id_xxh64': column 'small_id' is int32, the spec was written for int64 "
            "(the same id would hash differently): cast the column, or declare the feature with cast=True"
        ),
    ):
        FeatureSpec([Feature("small_id", "xxh64", dtype="int64")]).transform(t)
    cast = FeatureSpec([Feature("small_id", "xxh64", dtype="int64", cast=True)]).transform(t)
    as_int64 = t.column("small_id").to_numpy().astype(np.int64)
    assert column(cast, "small_id_xxh64") == offload.xxh64(as_int64).tolist()
    assert column(cast, "small_id_xxh64") != offload.xxh64(t.column("small_id").to_numpy()).tolist()


def test_a_failing_cast_names_the_feature() -> None:
    t = pa.table({"a": pa.array([1, 2**40], pa.int64())})
    with pytest.raises(
        ValueError, match=re.escape("feature 'a_xxh64': cannot cast column 'a' from int64 to int32: ")
    ):
        FeatureSpec([Feature("a", "xxh64", dtype="int32", cast=True)]).transform(t)


def test_keep_columns_are_checked() -> None:
    spec = FeatureSpec([Feature("user_id", "xxh64")])
    with pytest.raises(
        ValueError, match=re.escape("keep column 'nope' is not in the table (its columns: 'user_id'")
    ):
        spec.transform(table(), keep=["nope"])
    with pytest.raises(
        ValueError, match=re.escape("keep column 'user_id_xxh64' is also a feature's output name")
    ):
        spec.transform(table().append_column("user_id_xxh64", pa.array([0] * 50)), keep=["user_id_xxh64"])
    with pytest.raises(
        TypeError, match=re.escape("keep must be a list of column names, got the str 'label'")
    ):
        spec.transform(table(), keep="label")  # type: ignore[arg-type]


def test_logical_types() -> None:
    assert logical_type(pa.dictionary(pa.int32(), pa.large_string())) == "string"
    assert logical_type(pa.string_view()) == "string"
    assert logical_type(pa.large_binary()) == "binary"
    assert logical_type(pa.large_list(pa.int64())) == "list<int64>"
    assert logical_type(pa.float32()) == "float32"
    assert logical_type(pa.int16()) == "int16"


def test_output_schema() -> None:
    spec = FeatureSpec(
        [
            Feature("user_id", "xxh32", nulls="null"),
            Feature("clicks", "delta_varint_encode"),
            Feature("user_id", "compat.spark.hash"),
        ]
    )
    schema = spec.output_schema(table().schema, keep=["label"])
    assert schema == pa.schema(
        [
            pa.field("user_id_xxh32", pa.uint32(), nullable=True),
            pa.field("clicks_delta_varint_encode", pa.large_binary(), nullable=False),
            pa.field("user_id_hash", pa.int32(), nullable=False),
            pa.field("label", pa.int8()),
        ]
    )


# ---------------------------------------------------------------------------------------------
# the JSON form and the fingerprint
# ---------------------------------------------------------------------------------------------


def rich() -> FeatureSpec:
    return FeatureSpec(
        [
            Feature("user_id", "hash_bucket", num_buckets=1_000_003, dtype="int64"),
            Feature("small_id", "xxh64", dtype="int64", cast=True, nulls=0),
            Feature("country", "fid", "country_fid", slot=7, version=1, nulls="null"),
            Feature("price", "bucketize", boundaries=[float("-inf"), 0.25, 2.0], dtype="float32"),
            Feature("country", "compat.keras.hashing", num_bins=10, mask_value=b"\x00\xff"),
            Feature("country", "murmur3_32", nulls="n/a", tail="spark"),
        ]
    )


def test_json_round_trip_is_exact() -> None:
    spec = rich()
    text = spec.to_json()
    back = FeatureSpec.from_json(text)
    assert back == spec
    assert back.to_json() == text
    assert back.fingerprint == spec.fingerprint
    d = json.loads(text)
    assert (d["format"], d["version"]) == ("offload.FeatureSpec", 1)
    assert d["features"][3]["params"]["boundaries"] == ["-inf", 0.25, 2]
    assert d["features"][4]["params"]["mask_value"] == {"bytes": "00ff"}
    assert d["features"][1]["nulls"] == {"replace": 0}


def test_json_unknown_keys_and_versions_are_refused() -> None:
    d = json.loads(rich().to_json())
    with pytest.raises(
        ValueError, match=re.escape("FeatureSpec JSON: unknown key 'comment' (expected features, ")
    ):
        FeatureSpec.from_json(json.dumps({**d, "comment": "x"}))
    d2 = json.loads(rich().to_json())
    d2["features"][2]["backend"] = "cpu"
    with pytest.raises(
        ValueError, match=re.escape("FeatureSpec JSON: feature 2: unknown key 'backend' (expected cast,")
    ):
        FeatureSpec.from_json(json.dumps(d2))
    with pytest.raises(
        ValueError, match=re.escape("FeatureSpec JSON: unsupported version 2 (this offload reads version 1)")
    ):
        FeatureSpec.from_json(json.dumps({**d, "version": 2}))
    with pytest.raises(
        ValueError, match=re.escape("FeatureSpec JSON: format must be 'offload.FeatureSpec', got None")
    ):
        FeatureSpec.from_json(json.dumps({"version": 1, "features": []}))
    with pytest.raises(ValueError, match=r"^FeatureSpec JSON: not valid JSON: "):
        FeatureSpec.from_json("{")
    d3 = json.loads(rich().to_json())
    d3["features"][0]["params"]["num_buckets"] = 0  # the operator's own check, as at construction
    with pytest.raises(ValueError, match=re.escape("num_buckets must be in [1, 2**63], got 0")):
        FeatureSpec.from_json(json.dumps(d3))


def test_a_hand_written_spec_gets_its_defaults() -> None:
    text = '{"format": "offload.FeatureSpec", "version": 1, "features": [{"column": "a", "op": "xxh64"}]}'
    assert FeatureSpec.from_json(text) == FeatureSpec([Feature("a", "xxh64", seed=0)])


#: The fingerprint of ``FeatureSpec([Feature("user_id", "xxh64", seed=7)])``: SHA-256 of its
#: canonical JSON, the same on every machine.
KNOWN_FINGERPRINT = "a3d2f30061f7036704c8d719d3a4ddd9a31197e02f78a8fc36dcf7157f6ecaa4"


def test_the_fingerprint_is_the_digest_of_the_canonical_form() -> None:
    spec = FeatureSpec([Feature("user_id", "xxh64", seed=7)])
    assert spec.fingerprint == KNOWN_FINGERPRINT
    assert re.fullmatch(r"[0-9a-f]{64}", rich().fingerprint)


def test_the_fingerprint_is_the_same_in_every_process() -> None:
    code = (
        "import json, sys\nfrom offload.features import FeatureSpec\n"
        "spec = FeatureSpec.from_json(sys.stdin.read())\nprint(spec.fingerprint)\n"
    )
    prints = set()
    for seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=rich().to_json(),
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        prints.add(out.stdout.strip())
    assert prints == {rich().fingerprint}


def variants() -> list[FeatureSpec]:
    """The same spec with one thing changed each time (every field and every parameter)."""
    base = dict(column="u", op="hash_bucket", num_buckets=97, dtype="int64")
    changes = [
        {},
        {"column": "v"},
        {"out": "other"},
        {"num_buckets": 98},
        {"seed": 1},
        {"method": "fastrange"},
        {"hash": "cityhash64"},
        {"nulls": "null"},
        {"nulls": 0},
        {"nulls": 1},
        {"dtype": "uint64"},
        {"cast": True},
        {"op": "fid", "num_buckets": None, "slot": 1},
    ]
    out = []
    for change in changes:
        kw = {**base, **change}
        kw = {k: v for k, v in kw.items() if v is not None}
        out.append(FeatureSpec([Feature(kw.pop("column"), kw.pop("op"), kw.pop("out", None), **kw)]))
    out.append(FeatureSpec([Feature("p", "bucketize", boundaries=[1.0, 2.0])]))
    out.append(FeatureSpec([Feature("p", "bucketize", boundaries=[1.0, 2.5])]))
    out.append(FeatureSpec([Feature("p", "bucketize", boundaries=[1.0, 2.0], right=False)]))
    out.append(FeatureSpec([Feature("p", "bucketize", boundaries=[1.0, 2.0], dtype="float32")]))
    two = [Feature("u", "xxh64"), Feature("v", "xxh64")]
    out += [FeatureSpec(two), FeatureSpec(two[::-1])]  # the order of the features is the columns'
    out.append(FeatureSpec([Feature("u", "compat.keras.hashing", num_bins=3)]))
    out.append(FeatureSpec([Feature("u", "compat.keras.hashing", num_bins=3, mask_value="")]))
    return out


def test_the_fingerprint_changes_when_anything_changes() -> None:
    prints = [s.fingerprint for s in variants()]
    assert len(set(prints)) == len(prints)


# ---------------------------------------------------------------------------------------------
# transform: every input form, keep=, equal to the operator calls
# ---------------------------------------------------------------------------------------------


def expected_five(t: pa.Table) -> dict[str, list]:
    """The five operator calls of :func:`five`, each on its column as plain numpy inputs."""
    ids = t.column("user_id").to_numpy()
    text = t.column("country").to_pylist()
    clicks = [np.array(c, np.int64) for c in t.column("clicks").to_pylist()]
    off, data = offload.delta_varint_encode(clicks, backend="cpu")
    return {
        "user_id_hash_bucket": offload.hash_bucket(ids, 1_000_003, backend="cpu").tolist(),
        "user_id_fid": offload.fid(ids, 42, backend="cpu").tolist(),
        "country_xxh64": offload.xxh64(text, 7, backend="cpu").tolist(),
        "price_bucketize": offload.bucketize(t.column("price").to_numpy(), [1.0, 10.0, 100.0]).tolist(),
        "clicks_delta_varint_encode": [data[off[i] : off[i + 1]].tobytes() for i in range(len(clicks))],
    }


def test_a_five_feature_spec_equals_the_operator_calls() -> None:
    t = table(500)
    out = five().transform(t, backend="cpu", runtime=CPU, keep=["label"])
    assert out.column_names == [*five().outputs, "label"]
    assert out.to_pydict() == {**expected_five(t), "label": column(t, "label")}
    assert out.schema == five().output_schema(t.schema, keep=["label"])


def test_every_input_form_gives_the_same_table(tmp_path: Path) -> None:
    t = table(300)
    want = five().transform(t, keep=["label"])
    batches = t.to_batches(max_chunksize=70)
    assert len(batches) == 5
    assert five().transform(batches[0], keep=["label"]) == want.slice(0, 70)
    assert five().transform(iter(batches), keep=["label"]) == want
    assert five().transform(pa.Table.from_batches(batches), keep=["label"]) == want
    pq.write_table(t, tmp_path / "one.parquet", row_group_size=64)
    assert five().transform(tmp_path / "one.parquet", keep=["label"]).combine_chunks() == want
    folder = tmp_path / "ds"
    folder.mkdir()
    pq.write_table(t.slice(0, 100), folder / "part-0.parquet")
    pq.write_table(t.slice(100), folder / "part-1.parquet")
    assert five().transform(str(folder), keep=["label"]).combine_chunks() == want


def test_transform_input_errors(tmp_path: Path) -> None:
    spec = five()
    with pytest.raises(
        TypeError, match=re.escape("transform takes a pa.Table, a pa.RecordBatch, an iterable")
    ):
        spec.transform(42)
    with pytest.raises(
        TypeError, match=re.escape("transform: item 1 of the iterable is a dict, not a pa.RecordBatch")
    ):
        spec.transform([table().to_batches()[0], {}])
    with pytest.raises(ValueError, match=re.escape("transform: the iterable of record batches is empty")):
        spec.transform([])
    with pytest.raises(ValueError, match=re.escape("cannot read the Parquet dataset ")):
        spec.transform(str(tmp_path / "missing.parquet"))
    with pytest.raises(
        ValueError, match=re.escape("unknown backend 'gpu': expected 'auto', 'cpu', 'sim', 'fpga'")
    ):
        spec.transform(table(), backend="gpu")
    with pytest.raises(ValueError, match=re.escape("backend= names 'nope', which is not a feature's output")):
        spec.transform(table(), backend={"nope": "cpu"})
    with pytest.raises(TypeError, match=re.escape("runtime must be an offload.Runtime or None, got str")):
        spec.transform(table(), runtime="cpu")  # type: ignore[arg-type]


def test_an_empty_table_gives_an_empty_result() -> None:
    t = table(0)
    out = five().transform(t, keep=["label"])
    assert out.num_rows == 0
    assert out.schema == five().output_schema(t.schema, keep=["label"])


def test_view_large_and_chunked_columns() -> None:
    words = ["a", "bb", "", "ccc"] * 5
    want = offload.xxh64(words).tolist()
    for arr in (
        pa.array(words, pa.string_view()),
        pa.array(words, pa.large_string()),
        pa.array(words, pa.large_binary()),
        pa.chunked_array([words[:3], words[3:]]),
    ):
        out = FeatureSpec([Feature("w", "xxh64")]).transform(pa.table({"w": arr}))
        assert column(out, "w_xxh64") == want


def test_identical_features_are_computed_once() -> None:
    rt = offload.Runtime(["cpu"])
    spec = FeatureSpec([Feature("user_id", "xxh64"), Feature("user_id", "xxh64", out="again")])
    out = spec.transform(table(40), runtime=rt)
    assert column(out, "user_id_xxh64") == column(out, "again")
    assert rt.stats()["records"] == 40


# ---------------------------------------------------------------------------------------------
# nulls
# ---------------------------------------------------------------------------------------------


def with_nulls() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([5, None, 7, None], pa.int64()),
            "word": pa.array(["x", None, "y", "x"]),
            "cat": pa.array(["x", None, "y", "x"]).dictionary_encode(),
            "clicks": pa.array([[1, 2], None, [], [3]], pa.list_(pa.int64())),
            "price": pa.array([None, 1.5, 0.5, 3.0], pa.float64()),
        }
    )


def test_a_null_is_an_error_naming_the_row_by_default() -> None:
    t = with_nulls()
    with pytest.raises(
        ValueError,
        match=re.escape(
            "feature 'id_xxh64': null at row 1 of column 'id' (nulls='error': declare nulls='null' or a "
            "replacement value)"
        ),
    ):
        FeatureSpec([Feature("id", "xxh64")]).transform(t)
    batches = [pa.record_batch({"id": pa.array([1, 2, 3], pa.int64())}), t.select(["id"]).to_batches()[0]]
    with pytest.raises(ValueError, match=re.escape("feature 'id_xxh64': null at row 4 of column 'id'")):
        FeatureSpec([Feature("id", "xxh64")]).transform(batches)  # rows counted from the first batch
    with pytest.raises(ValueError, match=re.escape("feature 'cat_xxh64': null at row 1 of column 'cat'")):
        FeatureSpec([Feature("cat", "xxh64")]).transform(t)


def test_nulls_null_gives_a_null_output_there() -> None:
    t = with_nulls()
    spec = FeatureSpec(
        [
            Feature("id", "xxh64", nulls="null"),
            Feature("word", "hash_bucket", num_buckets=10, nulls="null"),
            Feature("cat", "hash_bucket", num_buckets=10, nulls="null"),
            Feature("clicks", "delta_varint_encode", nulls="null"),
            Feature("price", "bucketize", boundaries=[1.0], nulls="null"),
            Feature("word", "compat.spark.xxhash64", nulls="null"),
        ]
    )
    out = spec.transform(t)
    x, y = offload.hash_bucket(["x", "y"], 10).tolist()
    assert column(out, "id_xxh64") == [
        offload.xxh64(np.array([5]))[0],
        None,
        offload.xxh64(np.array([7]))[0],
        None,
    ]
    assert column(out, "word_hash_bucket") == [x, None, y, x]
    assert column(out, "cat_hash_bucket") == [x, None, y, x]
    assert column(out, "clicks_delta_varint_encode") == [b"\x02\x02", None, b"", b"\x06"]
    assert column(out, "price_bucketize") == [None, 1, 0, 1]
    sx, sy = spark.xxhash64(["x", "y"]).tolist()
    assert column(out, "word_xxhash64") == [sx, None, sy, sx]
    assert out.schema.field("id_xxh64").nullable


def test_a_replacement_value_is_computed_in_place_of_the_nulls() -> None:
    t = with_nulls()
    spec = FeatureSpec(
        [
            Feature("id", "xxh64", nulls=-1),
            Feature("word", "xxh64", nulls="?"),
            Feature("cat", "xxh64", nulls="?"),
            Feature("clicks", "delta_varint_encode", nulls=[9]),
            Feature("price", "bucketize", boundaries=[1.0], nulls=2.5),
        ]
    )
    out = spec.transform(t)
    assert column(out, "id_xxh64") == offload.xxh64(np.array([5, -1, 7, -1])).tolist()
    assert column(out, "word_xxh64") == offload.xxh64(["x", "?", "y", "x"]).tolist()
    assert column(out, "cat_xxh64") == offload.xxh64(["x", "?", "y", "x"]).tolist()
    assert column(out, "clicks_delta_varint_encode") == [b"\x02\x02", b"\x12", b"", b"\x06"]
    assert column(out, "price_bucketize") == [1, 1, 0, 1]
    with pytest.raises(
        TypeError, match=re.escape("feature 'id_xxh64': the null replacement 'x' is not a int64")
    ):
        FeatureSpec([Feature("id", "xxh64", nulls="x")]).transform(t)


# ---------------------------------------------------------------------------------------------
# dictionary columns
# ---------------------------------------------------------------------------------------------


def test_a_dictionary_column_is_computed_once_per_distinct_value() -> None:
    words = [f"w{i % 7}" for i in range(1000)]
    rt = offload.Runtime(["cpu"])
    spec = FeatureSpec([Feature("w", "hash_bucket", num_buckets=13)])
    out = spec.transform(pa.table({"w": pa.array(words).dictionary_encode()}), runtime=rt)
    assert column(out, "w_hash_bucket") == offload.hash_bucket(words, 13).tolist()
    assert rt.stats()["records"] == 7  # only the dictionary reached the backend


def test_dictionary_columns_of_every_kind() -> None:
    ids = pa.array([3, 1, 3, 3, 1, 2], pa.int64())
    out = FeatureSpec([Feature("i", "xxh64"), Feature("i", "compat.keras.hashing", num_bins=5)]).transform(
        pa.table({"i": ids.dictionary_encode()})
    )
    assert column(out, "i_xxh64") == offload.xxh64(ids.to_numpy()).tolist()
    assert column(out, "i_hashing") == keras.hashing(ids.to_numpy(), 5).tolist()
    big = pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int32()), pa.array(["a", "b", "c", "d"]))
    out = FeatureSpec([Feature("s", "xxh64")]).transform(
        pa.table({"s": big})
    )  # decoded: larger than the column
    assert column(out, "s_xxh64") == offload.xxh64(["a", "b"]).tolist()
    chunked = pa.chunked_array(
        [pa.array(["a", "b"]).dictionary_encode(), pa.array(["c", "a"]).dictionary_encode()]
    )
    out = FeatureSpec([Feature("s", "xxh64")]).transform(pa.table({"s": chunked}))
    assert column(out, "s_xxh64") == offload.xxh64(["a", "b", "c", "a"]).tolist()
    cast = FeatureSpec([Feature("i", "xxh64", dtype="int64", cast=True)]).transform(
        pa.table({"i": pa.array([1, 2, 1], pa.int32()).dictionary_encode()})
    )
    assert column(cast, "i_xxh64") == offload.xxh64(np.array([1, 2, 1], np.int64)).tolist()


# ---------------------------------------------------------------------------------------------
# compat ops as features
# ---------------------------------------------------------------------------------------------


def test_every_compat_op_as_a_feature_equals_the_drop_in() -> None:
    t = table(200)
    text = t.column("country").to_pylist()
    ids = t.column("user_id").to_numpy()
    spec = FeatureSpec(
        [
            Feature("country", "compat.tf.to_hash_bucket_fast", num_buckets=1000),
            Feature("user_id", "compat.keras.hashing", num_bins=100, mask_value=0),
            Feature("category", "compat.keras.hashing", "cat_keras", num_bins=100, mask_value="US|ios"),
            Feature("small_id", "compat.spark.hash"),
            Feature("country", "compat.spark.xxhash64"),
            Feature("user_id", "compat.torcharrow.sigrid_hash", salt=3, max_value=1000),
        ]
    )
    out = spec.transform(t)
    assert column(out, "country_to_hash_bucket_fast") == tf.to_hash_bucket_fast(text, 1000).tolist()
    assert column(out, "user_id_hashing") == keras.hashing(ids, 100, mask_value=0).tolist()
    assert column(out, "cat_keras") == keras.hashing(text, 100, mask_value="US|ios").tolist()
    assert column(out, "small_id_hash") == spark.hash(t.column("small_id").to_numpy()).tolist()
    assert column(out, "country_xxhash64") == spark.xxhash64(text).tolist()
    assert column(out, "user_id_sigrid_hash") == torcharrow.sigrid_hash(ids, 3, 1000).tolist()
    assert sorted(COMPAT_OPS) == sorted(
        [
            "compat.tf.to_hash_bucket_fast",
            "compat.keras.hashing",
            "compat.spark.hash",
            "compat.spark.xxhash64",
            "compat.torcharrow.sigrid_hash",
        ]
    )


def test_a_compat_op_is_checked_against_the_column_type() -> None:
    spec = FeatureSpec([Feature("small_id", "compat.torcharrow.sigrid_hash", salt=0, max_value=9)])
    with pytest.raises(
        TypeError, match=re.escape("column 'small_id' is int32, compat.torcharrow.sigrid_hash takes int64")
    ):
        spec.transform(table())
    keras_int = FeatureSpec([Feature("country", "compat.keras.hashing", num_bins=3, mask_value=0)])
    with pytest.raises(
        TypeError, match=re.escape("hashing: mask_value must be a str or bytes for string values, got int")
    ):
        keras_int.transform(table())


# ---------------------------------------------------------------------------------------------
# transform_parquet
# ---------------------------------------------------------------------------------------------


def test_transform_parquet_round_trip(tmp_path: Path) -> None:
    t = table(1000)
    src = tmp_path / "src"
    src.mkdir()
    for k in range(3):
        pq.write_table(t.slice(k * 400, 400), src / f"part-{k}.parquet", row_group_size=150)
    dst = tmp_path / "features.parquet"
    stats = five().transform_parquet(src, dst, batch_rows=128, keep=["label"], progress=False)
    assert stats["rows"] == 1000 and stats["batches"] >= 8 and stats["path"] == str(dst)
    back = pq.read_table(dst)
    assert back.schema == five().output_schema(t.schema, keep=["label"])
    assert back.to_pydict() == five().transform(t, keep=["label"]).to_pydict()
    assert {p.name for p in tmp_path.iterdir()} == {"src", "features.parquet"}  # no temporary left


def test_a_failed_transform_parquet_leaves_no_file(tmp_path: Path) -> None:
    pq.write_table(with_nulls(), tmp_path / "src.parquet")
    dst = tmp_path / "out.parquet"
    with pytest.raises(ValueError, match=re.escape("feature 'id_xxh64': null at row 1 of column 'id'")):
        FeatureSpec([Feature("id", "xxh64")]).transform_parquet(tmp_path / "src.parquet", dst, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.parquet"]
    with pytest.raises(ValueError, match=re.escape("batch_rows must be a positive int, got 0")):
        five().transform_parquet(tmp_path / "src.parquet", dst, batch_rows=0)


def test_a_dataset_whose_files_differ_is_read_through_the_dataset_scanner(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()), "label": [0, 1]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": pa.array([3], pa.int64())}), tmp_path / "b.parquet")  # no label
    out = FeatureSpec([Feature("id", "xxh64")]).transform(tmp_path, keep=["label"])
    assert out.to_pydict() == {"id_xxh64": offload.xxh64(np.array([1, 2, 3])).tolist(), "label": [0, 1, None]}


def test_a_write_error_is_raised_and_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    pq.write_table(table(1000), tmp_path / "src.parquet")

    def full(self, batch, *args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", full)
    with pytest.raises(OSError, match="No space left on device"):
        five().transform_parquet(tmp_path / "src.parquet", tmp_path / "out.parquet", batch_rows=100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.parquet"]


def test_transform_parquet_keeps_nested_columns(tmp_path: Path) -> None:
    t = table(300)
    pq.write_table(t, tmp_path / "src.parquet")
    spec = FeatureSpec([Feature("price", "bucketize", boundaries=[1.0, 10.0])])
    spec.transform_parquet(tmp_path / "src.parquet", tmp_path / "out.parquet", keep=["clicks", "category"])
    assert (
        pq.read_table(tmp_path / "out.parquet").to_pydict()
        == spec.transform(t, keep=["clicks", "category"]).to_pydict()
    )


def test_transform_parquet_reads_a_row_group_a_batch_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """48 MB of int64 columns in one row group: what is in flight while writing stays a few
    batches (a reader decoding or pre-buffering whole row groups holds the 48 MB)."""
    n = 2_000_000
    rng = np.random.default_rng(0)
    cols = {k: rng.integers(0, 2**62, n) for k in "abc"}
    pq.write_table(pa.table(cols), tmp_path / "one_group.parquet", row_group_size=n)
    base = pa.total_allocated_bytes()
    in_flight = []
    write = pq.ParquetWriter.write_batch

    def watched(self, batch, *args, **kwargs):
        in_flight.append(pa.total_allocated_bytes() - base)
        return write(self, batch, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", watched)
    spec = FeatureSpec([Feature("a", "xxh64"), Feature("b", "xxh64")])
    stats = spec.transform_parquet(
        tmp_path / "one_group.parquet", tmp_path / "out.parquet", batch_rows=65_536, keep=["c"]
    )
    assert stats["rows"] == n and len(in_flight) == stats["batches"] == 31
    assert max(in_flight) < 32 << 20  # measured: 19 MB, the writer's open row group included


def test_the_progress_bar_is_quiet_off_a_terminal_and_shown_when_asked(tmp_path: Path, capfd) -> None:
    pq.write_table(table(100), tmp_path / "src.parquet")
    five().transform_parquet(tmp_path / "src.parquet", tmp_path / "a.parquet")
    assert capfd.readouterr().err == ""  # pytest's stderr is not a terminal
    five().transform_parquet(tmp_path / "src.parquet", tmp_path / "b.parquet", progress=True)
    assert "featurize" in capfd.readouterr().err
    five().transform_parquet(tmp_path / "src.parquet", tmp_path / "c.parquet", progress=False)
    assert capfd.readouterr().err == ""


# ---------------------------------------------------------------------------------------------
# backends: concurrency, placement, only the dictionary on a device
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service():
    with InProcessService(warmup=False) as svc:
        yield svc


class _Meeting:
    """Two backends' runs that must overlap: each waits (a while) for the other to start."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=20)
        self.threads: set[str] = set()

    def meet(self) -> None:
        self.threads.add(threading.current_thread().name)
        self.barrier.wait()  # BrokenBarrierError when the other backend's run never starts


def test_features_on_different_backends_run_concurrently(service) -> None:
    meeting = _Meeting()

    class Cpu(CpuBackend):
        def run(self, call, batch):
            meeting.meet()
            return super().run(call, batch)

    class Nic(SmartNicBackend):
        def run(self, call, batch):
            meeting.meet()
            return super().run(call, batch)

    rt = offload.Runtime([Nic(service.address), Cpu()])
    spec = FeatureSpec([Feature("user_id", "xxh64"), Feature("country", "xxh64")])
    t = table(100)
    out = spec.transform(t, runtime=rt, backend={"user_id_xxh64": "smartnic", "country_xxh64": "cpu"})
    assert out.to_pydict() == spec.transform(t, runtime=CPU).to_pydict()
    assert len(meeting.threads) == 2
    assert set(rt.stats()["by_backend"]) == {"smartnic", "cpu"}
    rt.close()


def test_features_on_one_backend_run_one_after_the_other(service) -> None:
    running = []

    class Cpu(CpuBackend):
        def run(self, call, batch):
            running.append(threading.current_thread().name)
            return super().run(call, batch)

    rt = offload.Runtime([Cpu()])
    five().transform(table(100), runtime=rt)
    assert set(running) == {threading.current_thread().name}


def test_auto_places_on_the_runtimes_chain_and_a_dictionary_travels_alone(service) -> None:
    rt = offload.Runtime(["smartnic", "cpu"], smartnic=service.address)
    words = [f"w{i % 5}" for i in range(400)]
    t = pa.table({"w": pa.array(words).dictionary_encode(), "i": np.arange(400, dtype=np.int64)})
    spec = FeatureSpec([Feature("w", "xxh64"), Feature("i", "compat.spark.hash")])
    out = spec.transform(t, runtime=rt)
    assert column(out, "w_xxh64") == offload.xxh64(words).tolist()
    assert column(out, "i_hash") == spark.hash(np.arange(400, dtype=np.int64)).tolist()
    by = rt.stats()["by_backend"]
    assert set(by) == {"smartnic"} and by["smartnic"]["records"] == 5 + 400
    rt.close()


def test_features_with_one_call_go_to_a_device_in_one_transfer(service) -> None:
    rt = offload.Runtime(["smartnic"], smartnic=service.address, fallback=False)
    t = table(300).append_column("item_id", pa.array(np.arange(300, dtype=np.uint64)))
    spec = FeatureSpec(
        [
            Feature("user_id", "xxh64", seed=7),
            Feature("item_id", "xxh64", seed=7),
            Feature("country", "xxh64", seed=7),
            Feature("category", "xxh64", seed=7),
            Feature("price", "bucketize", boundaries=[1.0, 50.0]),
            Feature("small_id", "xxh64", seed=7),
        ]
    )
    out = spec.transform(t, runtime=rt)
    assert out.to_pydict() == spec.transform(t, runtime=CPU).to_pydict()
    nic = rt.stats()["by_backend"]["smartnic"]
    # int64 and uint64 keys: one call; the two string columns: one call (the dictionary's 4
    # values and 300 strings); price alone; int32 keys alone
    assert nic["batches"] == 4
    assert nic["records"] == 600 + 304 + 300 + 300
    rt.close()


def test_an_all_null_dictionary_column() -> None:
    empty = pa.DictionaryArray.from_arrays(pa.array([None, None], pa.int32()), pa.array([], pa.string()))
    out = FeatureSpec([Feature("s", "xxh64", nulls="null")]).transform(pa.table({"s": empty}))
    assert column(out, "s_xxh64") == [None, None]
    out = FeatureSpec([Feature("s", "xxh64", nulls="z")]).transform(pa.table({"s": empty}))
    assert column(out, "s_xxh64") == offload.xxh64(["z", "z"]).tolist()


# ---------------------------------------------------------------------------------------------
# the benchmark rows, pickling, docs/features.md
# ---------------------------------------------------------------------------------------------


def test_bench_rows_have_the_bench_format() -> None:
    from offload.bench import row

    rows = bench_rows(True)
    assert [set(r) for r in rows] == [set(row("x", 1.0, "u"))] * 2
    assert [r["target"] for r in rows] == [0.8, 5]
    assert bench_spec().transform(bench_table(1000)).num_rows == 1000


def test_a_spec_pickles_as_its_canonical_form() -> None:
    import pickle

    spec = rich()
    back = pickle.loads(pickle.dumps(spec))
    assert back == spec and back.fingerprint == spec.fingerprint


FEATURES_MD = ROOT / "docs" / "features.md"


def doc_blocks() -> list[tuple[int, str]]:
    text = FEATURES_MD.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start(1)) + 1, m[1])
        for m in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M)
    ]


@pytest.mark.parametrize(("line", "block"), doc_blocks(), ids=[f"L{n}" for n, _ in doc_blocks()])
def test_the_documented_example_runs_as_written(line, block, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"docs/features.md:{line}", "exec"), {})


def test_a_wrong_documented_example_fails(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    line, block = next((n, b) for n, b in doc_blocks() if "== [" in b)
    wrong = block.replace("== [", "== [1 + ", 1)
    with pytest.raises((AssertionError, TypeError)):
        exec(compile(wrong, f"docs/features.md:{line}", "exec"), {})
