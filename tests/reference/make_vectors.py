"""Regenerate the reference vectors of tests/reference/*.json with the real libraries.

    python tests/reference/make_vectors.py [--only NAME[,NAME...]] [--venv-dir DIR]
                                           [--sigrid-sources TORCHARROW_GIT FOLLY_GIT]

For every output (farmhash, cityhash, murmur3, tensorflow, spark, sigrid) this creates throwaway
virtual environments with ``python3.11 -m venv`` under a temporary folder (or under ``--venv-dir``,
reused when its pinned requirements match), pip-installs the pinned library there, runs this same
file inside it as ``python make_vectors.py --step STEP OUT`` (a step imports its library, computes
its groups over the input sets of ``inputs.py``, imported by path, and writes them to OUT), and
merges the steps into ``tests/reference/NAME.json``. Libraries stay apart: ``pyfarmhash`` and
``cityhash`` both install a top-level module named ``farmhash``. Only the standard library is
imported at the top of this file: it runs under the caller's Python and under each venv's.

Each JSON holds ``meta`` (libraries with their exact versions, the Python and platform of every
step, notes), ``input_sets`` (count and sha256 of each input set used, recomputed by
tests/test_reference_vectors.py) and ``groups`` (see load.py for their meaning).

``sigrid`` needs no venv but git clones of TorchArrow and folly (``--sigrid-sources``; without them
sigrid.json is left as it is) and g++: TorchArrow is archived and has no wheel, so its own
sigrid_hash functions, cut out of its header, are compiled with folly's hash functions, checked
against TorchArrow's published unit-test values (SIGRID_UNIT_TESTS below, also stored), and run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
PYTHON = "python3.11"

# pinned requirements of each throwaway venv (exact versions: they are recorded in the JSON meta)
VENVS: dict[str, list[str]] = {
    "tf": ["tensorflow-cpu==2.21.0", "keras==3.15.1", "numpy==2.4.6", "pyfarmhash==0.5.1"],
    "cityhash": ["cityhash==0.4.10"],
    "clickhouse-cityhash": ["clickhouse-cityhash==1.0.2.6"],
    "mmh3": ["mmh3==5.3.1"],
    "pyspark": ["pyspark==4.3.0"],
}

# output name -> the (venv, step) pairs whose results are merged into it
OUTPUTS: dict[str, list[tuple[str, str]]] = {
    "farmhash": [("tf", "farmhash"), ("cityhash", "farmhash_cityhash_pkg")],
    "cityhash": [("cityhash", "cityhash"), ("clickhouse-cityhash", "clickhouse_cityhash")],
    "murmur3": [("mmh3", "murmur3")],
    "tensorflow": [("tf", "tensorflow")],
    "spark": [("pyspark", "spark")],
    "sigrid": [],
}


# ---------------------------------------------------------------------------------------------
# helpers shared by the steps (they run inside the venvs)


def load_inputs() -> ModuleType:
    """inputs.py, imported by path (the venvs do not have the repository on sys.path)."""
    spec = importlib.util.spec_from_file_location("reference_inputs", HERE / "inputs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass-free, but keep the module findable by name
    spec.loader.exec_module(module)
    return module


def versions(*packages: str) -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in packages}


def group(
    name: str, function: str, params: dict[str, Any], input_type: str, expected: list[int], **src: Any
) -> dict[str, Any]:
    """A group record; ``src`` is ``input_set=NAME`` or ``inputs=[explicit values]``."""
    return {
        "name": name,
        "function": function,
        "params": params,
        "input_type": input_type,
        **src,
        "expected": expected,
    }


def hexed(value: Any) -> Any:
    """A param or explicit input as JSON: bytes become {"hex": ...}."""
    return {"hex": value.hex()} if isinstance(value, bytes) else value


# ---------------------------------------------------------------------------------------------
# steps


def step_farmhash(inp: ModuleType) -> dict[str, Any]:
    """Fingerprint64 from pyfarmhash and from tf.fingerprint (8 little-endian bytes per row)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import farmhash
    import tensorflow as tf

    data = inp.input_set("bytes")
    ours = [farmhash.fingerprint64(d) for d in data]
    rows = tf.fingerprint(tf.constant(data, dtype=tf.string), method="farmhash64").numpy()
    theirs = [int.from_bytes(r.tobytes(), "little") for r in rows]
    bad = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert not bad, f"pyfarmhash and tf.fingerprint disagree at input indexes {bad[:10]}"
    fn = "farmhash.fingerprint64(data) (pyfarmhash), equal to tf.fingerprint(data, method='farmhash64')"
    return {
        "libraries": versions("pyfarmhash", "tensorflow-cpu"),
        "meta": {
            "sources": [
                "pyfarmhash farmhash.fingerprint64 (Google FarmHash farmhash::Fingerprint64)",
                "tensorflow tf.fingerprint(method='farmhash64'), 8 bytes per row read little-endian",
            ],
            "agreement": f"both sources agree on all {len(data)} inputs (asserted by the generator)",
        },
        "groups": [group("Fingerprint64", fn, {}, "bytes", ours, input_set="bytes")],
    }


def step_farmhash_cityhash_pkg(inp: ModuleType) -> dict[str, Any]:
    """A third binding of Fingerprint64: the ``farmhash`` module of PyPI ``cityhash``."""
    import farmhash

    data = inp.input_set("bytes")
    values = [farmhash.Fingerprint64(d) for d in data]
    return {"libraries": versions("cityhash"), "check": {"Fingerprint64": values}}


# CityHash 1.1's own test program (src/city-test.cc of google/cityhash): row i hashes i bytes at
# offset i*i of a generated buffer (row 299: the whole 1 MiB buffer). Columns: CityHash64,
# CityHash64WithSeed(kSeed0=1234567), CityHash64WithSeeds(kSeed0, k0). A few rows, as data.
CITY_TEST_ROWS: list[tuple[int, int, int, int]] = [
    (0, 0x9AE16A3B2F90404F, 0x75106DB890237A4A, 0x3FEAC5F636039766),
    (1, 0x541150E87F415E96, 0x1AEF0D24B3148A1A, 0xBACC300E1E82345A),
    (4, 0x11DF592596F41D88, 0x843EC0BCE9042F9C, 0xCCE2EA1E08B1EB30),
    (8, 0xA0F10149A0E538D6, 0x69D008C20F87419F, 0x41B36376185B3E9E),
    (16, 0x3EAD5F21D344056, 0xFB6420393CFB05C3, 0x407932394CBBD303),
    (17, 0x6ABBFDE37EE03B5B, 0x83FEBF188D2CC113, 0xCDA7B62D94D5B8EE),
    (32, 0x782FA1B08B475E7, 0xFB7138951C61B23B, 0x9829105E234FB11E),
    (33, 0xC5DC19B876D37A80, 0x15FFCFF666CFD710, 0xE8C30C72003103E2),
    (64, 0xE88419922B87176F, 0xBCF32F41A7DDBF6F, 0xD6EBEFD8085C1A0F),
    (65, 0x105191E0EC8F7F60, 0x5918DBFCCA971E79, 0x6B285C8A944767B9),
    (200, 0x7FC98006E25CAC9, 0x77FEE0484CDA86A7, 0x376EC3D447060456),
    (299, 0x5FB5E48AC7B7FA4F, 0xA96170F08F5ACBC7, 0xBBF5C63D4F52A1E5),
]
CITY_K0 = 0xC3A5C85C97CB3127
CITY_SEED0 = 1234567


def city_test_buffer() -> bytes:
    """The 1 MiB buffer of city-test.cc's setup()."""
    mask = 2**64 - 1
    a, b = 9, 777
    out = bytearray(1 << 20)
    for i in range(len(out)):
        a = (a + b) & mask
        b = (b + a) & mask
        a = ((a ^ (a >> 41)) * CITY_K0) & mask
        b = (((b ^ (b >> 41)) * CITY_K0) + i) & mask
        out[i] = (b >> 37) & 0xFF
    return bytes(out)


def city_version_check(city: Any) -> str:
    buf = city_test_buffer()
    for i, h, hs, hss in CITY_TEST_ROWS:
        data = buf if i == 299 else buf[i * i : i * i + i]
        got = (city.CityHash64(data), city.CityHash64WithSeed(data, CITY_SEED0))
        got += (city.CityHash64WithSeeds(data, CITY_SEED0, CITY_K0),)
        assert got == (h, hs, hss), f"city-test.cc row {i}: {got} != {(h, hs, hss)}: not CityHash v1.1"
    rows = ", ".join(str(r[0]) for r in CITY_TEST_ROWS)
    return (
        "CityHash v1.1: CityHash64, CityHash64WithSeed and CityHash64WithSeeds reproduce the "
        f"expected values of rows {rows} of CityHash 1.1's test program (google/cityhash "
        "src/city-test.cc), checked by the generator"
    )


def step_cityhash(inp: ModuleType) -> dict[str, Any]:
    import cityhash

    data = inp.input_set("bytes")
    groups = [
        group(
            "CityHash64",
            "cityhash.CityHash64(data)",
            {},
            "bytes",
            [cityhash.CityHash64(d) for d in data],
            input_set="bytes",
        )
    ]
    for seed in inp.cityhash_seeds():
        values = [cityhash.CityHash64WithSeed(d, seed) for d in data]
        fn = "cityhash.CityHash64WithSeed(data, seed)"
        groups.append(
            group(f"CityHash64WithSeed/seed={seed}", fn, {"seed": seed}, "bytes", values, input_set="bytes")
        )
    return {
        "libraries": versions("cityhash"),
        "meta": {"cityhash_version": city_version_check(cityhash)},
        "groups": groups,
        "check": {"CityHash64": groups[0]["expected"]},
    }


def step_clickhouse_cityhash(inp: ModuleType) -> dict[str, Any]:
    from clickhouse_cityhash import cityhash as ch

    data = inp.input_set("bytes")
    return {
        "libraries": versions("clickhouse-cityhash"),
        "check": {"CityHash64": [ch.CityHash64(d) for d in data]},
    }


def step_murmur3(inp: ModuleType) -> dict[str, Any]:
    import mmh3

    data = inp.input_set("bytes")
    groups = []
    for seed in inp.murmur3_seeds():
        values = [mmh3.hash(d, seed, signed=False) for d in data]
        fn = "mmh3.hash(data, seed, signed=False)"
        groups.append(
            group(f"MurmurHash3_x86_32/seed={seed}", fn, {"seed": seed}, "bytes", values, input_set="bytes")
        )
    return {
        "libraries": versions("mmh3"),
        "meta": {"algorithm": "MurmurHash3_x86_32, unsigned"},
        "groups": groups,
    }


TF_NUM_BUCKETS = [1, 2, 10, 1000, 2**31 - 1, 2**62, 2**63 - 1]  # 2**63 - 1: the largest int64 attr
KERAS_NUM_BINS = [2, 3, 1000, 2**31 - 1]
KERAS_INT_MASKS = [0, -1, 42]
KERAS_STRING_MASKS = [b"", b"hello"]


def step_tensorflow(inp: ModuleType) -> dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    def ints(t: Any) -> list[int]:
        arr = np.asarray(t)
        assert arr.dtype == np.int64, arr.dtype
        return [int(v) for v in arr.reshape(-1)]

    strings = tf.constant(inp.input_set("bytes"), dtype=tf.string)
    groups = []
    for n in TF_NUM_BUCKETS:
        fn = "tf.strings.to_hash_bucket_fast(strings, num_buckets)"
        values = ints(tf.strings.to_hash_bucket_fast(strings, n))
        groups.append(
            group(
                f"to_hash_bucket_fast/num_buckets={n}",
                fn,
                {"num_buckets": n},
                "bytes",
                values,
                input_set="bytes",
            )
        )
    tensors = {
        "bytes": strings,
        "int32": np.array(inp.input_set("int32"), dtype=np.int32),
        "int64": np.array(inp.input_set("int64"), dtype=np.int64),
    }
    for kind, tensor in tensors.items():
        masks: list[Any] = [None] + (KERAS_STRING_MASKS if kind == "bytes" else KERAS_INT_MASKS)
        for n in KERAS_NUM_BINS:
            for mask in masks:
                layer = keras.layers.Hashing(num_bins=n, mask_value=mask)
                params = {"num_bins": n, "mask_value": hexed(mask)}
                name = f"keras.Hashing/{kind}/num_bins={n}/mask_value={mask!r}"
                fn = "keras.layers.Hashing(num_bins=num_bins, mask_value=mask_value)(values)"
                groups.append(group(name, fn, params, kind, ints(layer(tensor)), input_set=kind))
    groups += categorical_columns(inp, tf, ints)
    return {
        "libraries": versions("tensorflow-cpu", "keras", "numpy"),
        "meta": {
            "keras_backend": keras.backend.backend(),
            "tensor_dtypes": "bytes: tf.string; int32/int64: numpy int32/int64 arrays; outputs int64",
            "largest_num_buckets": "2**63 - 1 (the op's int64 attr; 2**63 raises OverflowError)",
        },
        "groups": groups,
    }


def categorical_columns(inp: ModuleType, tf: Any, ints: Callable[[Any], list[int]]) -> list[dict[str, Any]]:
    """tf.feature_column.categorical_column_with_hash_bucket (deprecated but present in TF 2.21),
    on the inputs it does not treat as missing (b"" for strings, -1 for integers)."""
    from tensorflow.python.feature_column import feature_column_v2 as fc

    out = []
    for kind, set_name, dtype in (
        ("bytes", "bytes_nonempty", tf.string),
        ("int64", "int64_not_minus1", tf.int64),
    ):
        values = inp.input_set(set_name)
        for n in (10, 1000, 2**31 - 1):
            col = tf.feature_column.categorical_column_with_hash_bucket("x", n, dtype=dtype)
            cache = fc.FeatureTransformationCache({"x": tf.constant([[v] for v in values], dtype=dtype)})
            ids = col.get_sparse_tensors(cache, None).id_tensor
            assert ids.values.shape[0] == len(values), "an input was dropped as missing"
            fn = "tf.feature_column.categorical_column_with_hash_bucket(key, hash_bucket_size, dtype) ids"
            name = f"categorical_column_with_hash_bucket/{kind}/hash_bucket_size={n}"
            out.append(group(name, fn, {"num_buckets": n}, kind, ints(ids.values), input_set=set_name))
    return out


SPARK_SETS = [
    ("spark_string", ["string"]),
    ("spark_int32", ["int32"]),
    ("spark_int64", ["int64"]),
    ("spark_mixed", ["int32", "int64", "string"]),
    ("spark_int_string", ["string", "int32"]),
]


def step_spark(inp: ModuleType) -> dict[str, Any]:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spark_types = {"int32": T.IntegerType(), "int64": T.LongType(), "string": T.StringType()}
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("offload-reference-vectors")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    try:
        groups = []
        for set_name, types in SPARK_SETS:
            rows = inp.input_set(set_name)
            cols = [f"c{i}" for i in range(len(types))]
            fields = [T.StructField("idx", T.LongType(), False)]
            fields += [T.StructField(c, spark_types[t], True) for c, t in zip(cols, types)]
            df = spark.createDataFrame([(i, *r) for i, r in enumerate(rows)], T.StructType(fields))
            out = (
                df.select("idx", F.hash(*cols).alias("h"), F.xxhash64(*cols).alias("x"))
                .orderBy("idx")
                .collect()
            )
            assert [r["idx"] for r in out] == list(range(len(rows)))
            args = ", ".join(cols)
            kind = ",".join(types)
            h = [int(r["h"]) for r in out]
            x = [int(r["x"]) for r in out]
            groups.append(
                group(f"hash/{kind}", f"pyspark.sql.functions.hash({args})", {}, kind, h, input_set=set_name)
            )
            groups.append(
                group(
                    f"xxhash64/{kind}",
                    f"pyspark.sql.functions.xxhash64({args})",
                    {},
                    kind,
                    x,
                    input_set=set_name,
                )
            )
        jvm = spark.sparkContext._jvm
        java = f"{jvm.System.getProperty('java.vendor')} {jvm.System.getProperty('java.version')}"
        meta = {"spark_version": spark.version, "java": java, "master": "local[1]"}
    finally:
        spark.stop()
    meta["column_types"] = "int32 = IntegerType, int64 = LongType, string = StringType; None = null"
    meta["outputs"] = "hash: IntegerType (signed int32); xxhash64: LongType (signed int64)"
    return {"libraries": versions("pyspark"), "meta": meta, "groups": groups}


STEPS: dict[str, Callable[[ModuleType], dict[str, Any]]] = {
    "farmhash": step_farmhash,
    "farmhash_cityhash_pkg": step_farmhash_cityhash_pkg,
    "cityhash": step_cityhash,
    "clickhouse_cityhash": step_clickhouse_cityhash,
    "murmur3": step_murmur3,
    "tensorflow": step_tensorflow,
    "spark": step_spark,
}


def run_step(name: str, out: Path) -> None:
    """Inside a venv: run one step and write its result (with the digests of its inputs) to out."""
    inp = load_inputs()
    result = STEPS[name](inp)
    used = {g["input_set"] for g in result.get("groups", []) if "input_set" in g} | {"bytes"}
    result["digests"] = {s: inp.digest(inp.input_set(s)) for s in sorted(used)}
    result["python"] = f"{platform.python_implementation()} {platform.python_version()}"
    result["platform"] = platform.platform()
    out.write_text(json.dumps(result), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# sigrid_hash: TorchArrow's unit-test values (data), and TorchArrow's code compiled (TorchArrow has
# no wheel for this Python)

TORCHARROW_COMMIT = "15a7f7124d4c73c8c541547aef072264baab63b7"
# (where, inputs, expected), all with salt 0 and max_value 100; list cases are flattened (the
# function maps each element of a list independently)
SIGRID_UNIT_TESTS: list[tuple[str, list[int], list[int]]] = [
    (
        "Velox UDF test SigridHashTest.Val (csrc/velox/functions/rec/tests/SigridHashTest.cpp)",
        list(range(1, 17)),
        [60, 54, 54, 9, 4, 91, 11, 67, 79, 2, 25, 92, 98, 83, 66, 2],
    ),
    (
        "Velox UDF test SigridHashTest.ValList, lists [1] and [14, 15, 16] flattened",
        [1, 14, 15, 16],
        [60, 83, 66, 2],
    ),
    (
        "Python test test_sigrid_hash (torcharrow/test/transformation/test_sigrid_hash.py), range(16)",
        list(range(16)),
        [6, 60, 54, 54, 9, 4, 91, 11, 67, 79, 2, 25, 92, 98, 83, 66],
    ),
    (
        "Python test test_sigrid_hash_list, lists [0..3], [4..6], [7..9] flattened",
        list(range(10)),
        [6, 60, 54, 54, 9, 4, 91, 11, 67, 79],
    ),
    (
        "docstring example of torcharrow.functional.sigrid_hash",
        [1, 2, 3, 5, 8, 10, 11],
        [60, 54, 54, 4, 67, 2, 25],
    ),
]


# TorchArrow's own sigrid_hash code (csrc/velox/functions/rec/sigrid_hash.h: computeMultiperAndShift
# and computeSigridHash, cut out of the header at TORCHARROW_COMMIT) compiled with folly's hash
# functions (folly/hash/Hash.h at FOLLY_COMMIT) by g++, driven like the Velox UDF drives them:
SIGRID_HEADER = "csrc/velox/functions/rec/sigrid_hash.h"
FOLLY_COMMIT = "ff98381ea68687a95c6185326db933aa6124d4c5"
SIGRID_DRIVER = """#include <cmath>
#include <cstdint>
#include <cstdio>
#include <tuple>
#include <folly/hash/Hash.h>
namespace torcharrow_sigrid {
@FUNCTIONS@
}  // namespace torcharrow_sigrid
// one "x salt max_value" per line in, sigrid_hash(x, salt, max_value) out, as sigridHash::callNullFree
int main() {
  long long x, salt, max_value;
  while (std::scanf("%lld %lld %lld", &x, &salt, &max_value) == 3) {
    if (max_value <= 0) return 2;
    auto [multiplier, shift] = torcharrow_sigrid::computeMultiperAndShift(max_value, 63);
    std::printf("%lld\\n", (long long)torcharrow_sigrid::computeSigridHash(
        (int64_t)x, (int64_t)salt, (int64_t)max_value, multiplier, shift));
  }
  return 0;
}
"""
CXX = ["g++", "-std=c++20", "-O2"]


def git_show(repo: Path, commit: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def build_sigrid(torcharrow: Path, folly: Path, work: Path) -> Path:
    """The compiled driver (work/sigrid), from the git repositories of TorchArrow and folly."""
    header = git_show(torcharrow, TORCHARROW_COMMIT, SIGRID_HEADER)
    functions = header[header.index("using uint128_t") : header.index("template <typename TExecParams>")]
    paths = [f":(glob)folly/{d}*.h" for d in ("", "hash/", "lang/", "portability/")]
    archive = subprocess.run(
        ["git", "-C", str(folly), "archive", FOLLY_COMMIT, "--", *paths], capture_output=True
    )
    subprocess.run(["tar", "x", "-C", str(work)], input=archive.stdout, check=True)
    if not (work / "folly" / "hash" / "Hash.h").exists():
        raise SystemExit(
            f"no folly/hash/Hash.h at {FOLLY_COMMIT} in {folly}: {archive.stderr.decode()[-500:]}"
        )
    # what CMake would generate, and fmt: only a formatter specialization of folly's string views
    # (not used by the hash functions) needs it
    (work / "folly" / "folly-config.h").write_text("#pragma once\n")
    (work / "fmt").mkdir()
    fmt = (
        "namespace fmt { template <typename T, typename Char = char, typename E = void> struct formatter; }\n"
    )
    (work / "fmt" / "format.h").write_text(fmt)
    (work / "sigrid.cpp").write_text(SIGRID_DRIVER.replace("@FUNCTIONS@", functions))
    subprocess.run([*CXX, "-I", str(work), str(work / "sigrid.cpp"), "-o", str(work / "sigrid")], check=True)
    return work / "sigrid"


def run_sigrid(program: Path, cases: list[tuple[int, int, int]]) -> list[int]:
    text = "".join(f"{x} {salt} {m}\n" for x, salt, m in cases)
    out = subprocess.run([str(program)], input=text, capture_output=True, text=True, check=True).stdout
    return [int(v) for v in out.split()]


def sigrid_document(sources: tuple[Path, Path]) -> dict[str, Any]:
    inp = load_inputs()
    with tempfile.TemporaryDirectory(prefix="offload-sigrid-") as tmp:
        program = build_sigrid(*sources, Path(tmp))
        groups = []
        fn = "torcharrow.functional.sigrid_hash(values, salt, max_value)"
        for i, (where, inputs, expected) in enumerate(SIGRID_UNIT_TESTS):
            got = run_sigrid(program, [(x, 0, 100) for x in inputs])
            assert got == expected, f"the compiled sigrid_hash does not reproduce {where}: {got}"
            params = {"salt": 0, "max_value": 100}
            name = f"sigrid_hash/unit_test_{i}"
            groups.append(group(name, fn, params, "int64", expected, inputs=inputs, source=where))
        ids = inp.input_set("int64")
        for salt in inp.sigrid_salts():
            for m in inp.sigrid_max_values():
                values = run_sigrid(program, [(x, salt, m) for x in ids])
                params = {"salt": salt, "max_value": m}
                name = f"sigrid_hash/salt={salt}/max_value={m}"
                groups.append(group(name, fn, params, "int64", values, input_set="int64", source="compiled"))
    compiler = subprocess.run([CXX[0], "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    meta = {
        "name": "sigrid",
        "generator": "tests/reference/make_vectors.py --sigrid-sources TORCHARROW_GIT FOLLY_GIT",
        "libraries": {"torcharrow": f"git {TORCHARROW_COMMIT}", "folly": f"git {FOLLY_COMMIT}"},
        "unit_tests": (
            "groups with source != 'compiled' hold TorchArrow's published unit-test values for sigrid_hash "
            f"(github.com/pytorch/torcharrow at commit {TORCHARROW_COMMIT}): the Velox UDF's C++ tests, "
            "the Python functional tests and the docstring example; the C++ tests say the values come "
            "from running Meta's internal koski sigrid_hash"
        ),
        "compiled": (
            f"groups with source 'compiled': TorchArrow's own computeMultiperAndShift and "
            f"computeSigridHash ({SIGRID_HEADER}, cut out of the header at generation time) compiled "
            f"with folly/hash/Hash.h (github.com/facebook/folly at {FOLLY_COMMIT}) by {compiler} "
            f"({' '.join(CXX[1:])}), called as the Velox UDF calls them (precision 63); the program "
            "reproduces every unit-test value above (asserted by the generator)"
        ),
        "why_not_pip": (
            "TorchArrow is archived: `pip download torcharrow` finds no distribution on the package "
            "index (for Python 3.9, 3.10 or 3.11), and no other pip package found implements sigrid_hash"
        ),
        "algorithm": (
            "twang_mix64(x), then folly hash_128_to_64(salt, that) (folly hash_combine), then a floor "
            "modulo by max_value computed by multiply-and-shift (max_value 1 gives 0); max_value <= 0 "
            "is an error in TorchArrow; output int64 in [0, max_value)"
        ),
    }
    sets = {"int64": {"count": len(ids), "sha256": inp.digest(ids)}}
    return {"meta": meta, "input_sets": sets, "groups": groups}


# ---------------------------------------------------------------------------------------------
# the parent: venvs, steps, merge, write


def make_venv(root: Path, key: str) -> Path:
    """The venv ``key`` under root with its pinned requirements (reused when .pins matches)."""
    path = root / key
    pins = "\n".join(VENVS[key]) + "\n"
    marker = path / ".pins"
    if marker.exists() and marker.read_text() == pins:
        return path
    if path.exists():
        shutil.rmtree(path)
    subprocess.run([PYTHON, "-m", "venv", str(path)], check=True)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + VENVS[key], check=True)
    marker.write_text(pins)
    return path


def call_step(root: Path, venv: str, step: str) -> dict[str, Any]:
    python = make_venv(root, venv) / "bin" / "python"
    out = root / f"{step}.json"
    print(f"  step {step} in venv {venv}", file=sys.stderr, flush=True)
    subprocess.run([str(python), str(Path(__file__).resolve()), "--step", step, str(out)], check=True)
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


def check_pins(result: dict[str, Any], venv: str) -> None:
    pinned = dict(p.split("==") for p in VENVS[venv])
    for package, version in result["libraries"].items():
        if package in pinned and pinned[package] != version:
            raise SystemExit(f"venv {venv}: {package} is {version}, pinned {pinned[package]}")


def build(name: str, root: Path, sigrid_sources: tuple[Path, Path] | None) -> dict[str, Any] | None:
    if name == "sigrid":
        return sigrid_document(sigrid_sources) if sigrid_sources else None
    inp = load_inputs()
    results = [(venv, step, call_step(root, venv, step)) for venv, step in OUTPUTS[name]]
    meta: dict[str, Any] = {
        "name": name,
        "generator": "tests/reference/make_vectors.py",
        "libraries": {},
        "steps": [],
    }
    groups: list[dict[str, Any]] = []
    for venv, step, result in results:
        check_pins(result, venv)
        for set_name, sha in result["digests"].items():
            if inp.digest(inp.input_set(set_name)) != sha:
                raise SystemExit(f"step {step}: input set {set_name} differs under {result['python']}")
        meta["libraries"].update(result["libraries"])
        meta["steps"].append(
            {"step": step, "venv": VENVS[venv], "python": result["python"], "platform": result["platform"]}
        )
        meta.update(result.get("meta", {}))
        groups += result.get("groups", [])
    cross_checks(name, results, meta)
    used = sorted({g["input_set"] for g in groups if "input_set" in g})
    sets = {s: {"count": len(inp.input_set(s)), "sha256": inp.digest(inp.input_set(s))} for s in used}
    return {"meta": meta, "input_sets": sets, "groups": groups}


def cross_checks(name: str, results: list[tuple[str, str, dict[str, Any]]], meta: dict[str, Any]) -> None:
    """The second-library steps: a third Fingerprint64 binding that must agree, and the
    clickhouse-cityhash (CityHash v1.0.2) values that differ from v1.1."""
    by_step = {step: r for _, step, r in results}
    if name == "farmhash":
        first = by_step["farmhash"]["groups"][0]["expected"]
        third = by_step["farmhash_cityhash_pkg"]["check"]["Fingerprint64"]
        assert first == third, "the cityhash package's farmhash.Fingerprint64 disagrees"
        meta["sources"].append(
            "PyPI cityhash's farmhash.Fingerprint64 (in a venv without pyfarmhash): agrees on every input"
        )
    if name == "cityhash":
        inp = load_inputs()
        data = inp.input_set("bytes")
        v11 = by_step["cityhash"]["check"]["CityHash64"]
        v102 = by_step["clickhouse_cityhash"]["check"]["CityHash64"]
        diff = [i for i in range(len(data)) if v11[i] != v102[i]]
        lengths = sorted({len(data[i]) for i in diff})
        same = sorted({len(data[i]) for i in range(len(data)) if i not in set(diff)})
        examples = [
            {
                "input_set": "bytes",
                "index": i,
                "length": len(data[i]),
                "cityhash_v1_1": v11[i],
                "clickhouse_cityhash_v1_0_2": v102[i],
            }
            for i in (diff[:1] + [j for j in diff if len(data[j]) in (17, 33, 100)][:3])
        ]
        meta["clickhouse_cityhash"] = {
            "note": (
                "PyPI clickhouse-cityhash implements CityHash v1.0.2 (ClickHouse's frozen copy), not v1.1: "
                f"its CityHash64 differs on {len(diff)} of {len(data)} inputs; these vectors are v1.1 only"
            ),
            "library": by_step["clickhouse_cityhash"]["libraries"],
            "lengths_that_differ": summarize(lengths),
            "lengths_that_agree": summarize(same),
            "examples": examples,
        }


def summarize(lengths: list[int]) -> str:
    """[0, 1, 2, 5, 6] -> "0-2, 5-6"."""
    parts: list[str] = []
    for n in lengths:
        if parts and parts[-1].split("-")[-1] == str(n - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{n}"
        else:
            parts.append(str(n))
    return ", ".join(parts)


def dumps(value: Any, indent: int = 0) -> str:
    """JSON with one line per group field: lists of scalars stay on one line."""
    pad = " " * indent
    if isinstance(value, dict) and value:
        items = [f"{pad} {json.dumps(k)}: {dumps(v, indent + 1).lstrip()}" for k, v in value.items()]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return pad + "[\n" + ",\n".join(dumps(v, indent + 1) for v in value) + "\n" + pad + "]"
    return pad + json.dumps(value, ensure_ascii=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated outputs (default: all): " + ", ".join(OUTPUTS))
    parser.add_argument(
        "--venv-dir", type=Path, help="keep the venvs here and reuse them (default: a temporary folder)"
    )
    parser.add_argument(
        "--sigrid-sources",
        nargs=2,
        type=Path,
        metavar=("TORCHARROW_GIT", "FOLLY_GIT"),
        help="git clones of pytorch/torcharrow and facebook/folly (needed to rebuild sigrid.json; needs g++)",
    )
    parser.add_argument("--step", nargs=2, metavar=("STEP", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        run_step(args.step[0], Path(args.step[1]))
        return 0
    names = args.only.split(",") if args.only else list(OUTPUTS)
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        parser.error(f"unknown output(s) {', '.join(unknown)}; known: {', '.join(OUTPUTS)}")
    with tempfile.TemporaryDirectory(prefix="offload-ref-") as tmp:
        root = args.venv_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for name in names:
            print(f"{name}.json", file=sys.stderr, flush=True)
            doc = build(name, root, args.sigrid_sources)
            if doc is None:
                print("  kept as it is: rebuilding it needs --sigrid-sources", file=sys.stderr)
                continue
            (HERE / f"{name}.json").write_text(dumps(doc) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
