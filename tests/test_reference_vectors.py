"""Self-checks of the committed reference vectors (tests/reference/*.json), without the libraries.

The vectors were computed by the real libraries (tests/reference/make_vectors.py); these tests only
check that the data is whole and still paired with the right inputs: every file loads, names its
libraries with the pinned versions, its input sets regenerate to the stored sha256, and every
result is in its function's range. The operators of offload are checked against the vectors
elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reference import inputs, load, make_vectors
from tests.reference.load import NAMES, Group

PINNED = dict(p.split("==") for pins in make_vectors.VENVS.values() for p in pins)

# the range of `expected` of each group, by file and function
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


def expected_range(name: str, group: Group) -> tuple[int, int]:
    params = group.params
    if name in ("farmhash", "cityhash"):
        return UINT64
    if name == "murmur3":
        return UINT32
    if name == "spark":
        return INT32 if group.name.startswith("hash/") else INT64
    # sigrid_hash, TF hash buckets, Keras bins: [0, bound)
    bound = params.get("max_value", params.get("num_buckets", params.get("num_bins")))
    assert isinstance(bound, int), group.name
    return (0, bound - 1)


@pytest.mark.parametrize("name", NAMES)
def test_every_file_names_its_libraries_with_the_pinned_versions(name: str) -> None:
    meta = load.meta(name)
    assert meta["name"] == name
    assert meta["libraries"], f"{name}.json names no library"
    if name == "sigrid":  # TorchArrow's and folly's sources at a commit, no package
        assert sorted(meta["libraries"]) == ["folly", "torcharrow"]
        assert all(v.startswith("git ") and len(v) == 44 for v in meta["libraries"].values())
        return
    assert {p: PINNED.get(p) for p in meta["libraries"]} == meta["libraries"]
    for step in meta.get("steps", []):
        assert step["venv"] in make_vectors.VENVS.values()
        assert step["python"].startswith("CPython 3.11.")


@pytest.mark.parametrize("name", NAMES)
def test_input_sets_regenerate_to_the_stored_digests(name: str) -> None:
    doc = load.document(name)
    for set_name, stored in doc["input_sets"].items():
        values = inputs.input_set(set_name)
        assert (len(values), inputs.digest(values)) == (stored["count"], stored["sha256"]), set_name
    used = {g["input_set"] for g in doc["groups"] if "input_set" in g}
    assert used == set(doc["input_sets"])


@pytest.mark.parametrize("name", NAMES)
def test_every_result_is_an_int_in_its_functions_range(name: str) -> None:
    groups = load.load(name)
    assert groups and len({g.name for g in groups}) == len(groups)
    for g in groups:
        low, high = expected_range(name, g)
        assert g.cases, g.name
        assert all(type(e) is int and low <= e <= high for _, e in g.cases), g.name


def test_hash_libraries_cover_every_length_and_seed() -> None:
    byte_set = inputs.byte_inputs()
    assert [len(b) for b in byte_set[: len(inputs.LENGTHS)]] == inputs.LENGTHS
    assert set(range(301)) <= {len(b) for b in byte_set}
    city = {g.name: g for g in load.load("cityhash")}
    assert [g.params["seed"] for g in city.values() if "seed" in g.params] == inputs.cityhash_seeds()
    assert len(city["CityHash64"].cases) == len(byte_set)
    murmur = load.load("murmur3")
    assert [g.params["seed"] for g in murmur] == inputs.murmur3_seeds()
    assert all(len(g.cases) == len(byte_set) for g in murmur + load.load("farmhash"))


def test_cityhash_file_says_which_version_and_that_clickhouse_differs() -> None:
    meta = load.meta("cityhash")
    assert meta["cityhash_version"].startswith("CityHash v1.1")
    examples = meta["clickhouse_cityhash"]["examples"]
    assert examples and all(e["cityhash_v1_1"] != e["clickhouse_cityhash_v1_0_2"] for e in examples)


def test_keras_mask_groups_hash_the_mask_value_itself_to_zero() -> None:
    masked = [g for g in load.load("tensorflow") if g.params.get("mask_value") is not None]
    assert {g.input_type for g in masked} == {"bytes", "int32", "int64"}
    for g in masked:
        assert {e for v, e in g.cases if v == g.params["mask_value"]} == {0}, g.name


def test_spark_groups_have_nulls_and_one_tuple_item_per_column() -> None:
    for g in load.load("spark"):
        width = len(g.input_type.split(","))
        assert all(isinstance(row, tuple) and len(row) == width for row, _ in g.cases), g.name
        assert any(None in row for row, _ in g.cases), g.name
        assert (tuple([None] * width), 42) in g.cases or g.name.startswith("xxhash64/")


def test_sigrid_holds_torcharrows_unit_tests_and_every_salt_and_max_value() -> None:
    groups = load.load("sigrid")
    unit = [g for g in groups if g.name.startswith("sigrid_hash/unit_test_")]
    assert all(g.params == {"salt": 0, "max_value": 100} for g in unit)
    cases = dict(c for g in unit for c in g.cases)
    assert [cases[x] for x in range(1, 17)] == [60, 54, 54, 9, 4, 91, 11, 67, 79, 2, 25, 92, 98, 83, 66, 2]
    swept = {(g.params["salt"], g.params["max_value"]) for g in groups if g not in unit}
    assert swept == {(s, m) for s in inputs.sigrid_salts() for m in inputs.sigrid_max_values()}


def test_the_byte_pattern_has_every_byte_value_and_short_inputs_are_prefixes() -> None:
    assert len(set(inputs.stream(1200))) == 256
    assert inputs.lengths_bytes(4096)[:300] == inputs.lengths_bytes(300)
    assert inputs.lengths_bytes(0) == b""


def test_digest_tells_value_types_apart() -> None:
    digests = {inputs.digest(v) for v in ([b"1"], ["1"], [1], [(1,)], [None], [], [b"", b""])}
    assert len(digests) == 7


def test_unknown_names_are_refused() -> None:
    with pytest.raises(KeyError, match="unknown reference set 'md5'; known: farmhash, cityhash"):
        load.load("md5")
    with pytest.raises(KeyError, match="unknown input set 'nope'; known: bytes, "):
        inputs.input_set("nope")


def test_a_file_with_more_inputs_than_results_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = load.document("sigrid")
    doc["groups"][0]["expected"].pop()
    (tmp_path / "sigrid.json").write_text(json.dumps(doc), encoding="utf-8")
    monkeypatch.setattr(load, "HERE", tmp_path)
    message = r"sigrid.json, group 'sigrid_hash/unit_test_0': 16 inputs, 15 results"
    with pytest.raises(ValueError, match=message):
        load.load("sigrid")
