"""Read the reference vectors: ``load("cityhash")`` -> the groups of ``tests/reference/cityhash.json``.

Each JSON file (``farmhash``, ``cityhash``, ``murmur3``, ``tensorflow``, ``spark``, ``sigrid``;
see README.md) holds groups of cases computed by the real library named in its ``meta``. A
:class:`Group` is one function with fixed parameters applied to a list of inputs:

- ``name``: unique in the file, e.g. ``"CityHash64WithSeed/seed=42"``;
- ``function``: the library call that produced ``expected``, as text, e.g.
  ``"cityhash.CityHash64WithSeed(data, seed)"`` or ``"pyspark.sql.functions.hash(c0, c1, c2)"``;
- ``params``: the fixed parameters by the name offload's API uses (``seed``, ``num_buckets``,
  ``num_bins``, ``mask_value``, ``salt``, ``max_value``); ``{}`` when there are none. A Keras string
  ``mask_value`` is ``bytes``; an integer one is ``int``;
- ``input_type``: what each input is. ``"bytes"``: a ``bytes`` object (the hash input; strings are
  their UTF-8 bytes; TF and Keras string tensors were built from these bytes); ``"int32"`` /
  ``"int64"``: a Python ``int``, given to the library as a tensor of that dtype; Spark groups:
  the column types joined by commas (``"int32"``, ``"int64"``, ``"string"`` for IntegerType,
  LongType, StringType, e.g. ``"int32,int64,string"``), and each input is a ``tuple`` with one item
  per column: ``int``, ``str``, or ``None`` for a null;
- ``cases``: ``[(input, expected), ...]`` where ``expected`` is a Python ``int`` in the function's
  own convention: unsigned for FarmHash/CityHash (uint64) and Murmur3 (uint32), signed int32 for
  Spark ``hash``, signed int64 for Spark ``xxhash64``, TensorFlow, Keras and SigridHash.

Example::

    from tests.reference.load import load

    for group in load("murmur3"):
        for data, expected in group.cases:
            assert murmur3_32(data, seed=group.params["seed"]) == expected

Inputs are stored by the name of an input set of ``inputs.py`` (recomputed here) or, for a few
hand-picked cases, explicitly (bytes as ``{"hex": "..."}``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from tests.reference import inputs

HERE = Path(__file__).resolve().parent
NAMES = ("farmhash", "cityhash", "murmur3", "tensorflow", "spark", "sigrid")

Param = int | bytes | str | None


class Group(NamedTuple):
    """One function with fixed parameters over a list of inputs (see the module docstring)."""

    name: str
    function: str
    params: dict[str, Param]
    input_type: str
    cases: list[tuple[Any, int]]


def path(name: str) -> Path:
    """The JSON file of the reference set ``name`` (one of :data:`NAMES`)."""
    if name not in NAMES:
        raise KeyError(f"unknown reference set {name!r}; known: {', '.join(NAMES)}")
    return HERE / f"{name}.json"


def document(name: str) -> dict[str, Any]:
    """The parsed JSON of ``name`` as stored: ``meta``, ``input_sets``, ``groups``."""
    with path(name).open(encoding="utf-8") as f:
        doc: dict[str, Any] = json.load(f)
    return doc


def meta(name: str) -> dict[str, Any]:
    """The ``meta`` record of ``name``: libraries and versions, Python version, notes."""
    return dict(document(name)["meta"])


def decode(value: Any) -> Any:
    """An explicitly stored JSON value as a Python input: ``{"hex": ...}`` is bytes, a list is a
    tuple (a Spark row), anything else (int, str, None) is itself."""
    if isinstance(value, dict):
        return bytes.fromhex(value["hex"])
    if isinstance(value, list):
        return tuple(decode(v) for v in value)
    return value


def load(name: str) -> list[Group]:
    """Every group of the reference set ``name``, cases paired with their inputs."""
    doc = document(name)
    sets: dict[str, list[Any]] = {}
    groups: list[Group] = []
    for g in doc["groups"]:
        if "input_set" in g:
            key = g["input_set"]
            if key not in sets:
                sets[key] = inputs.input_set(key)
            values = sets[key]
        else:
            values = [decode(v) for v in g["inputs"]]
        expected: list[int] = g["expected"]
        if len(values) != len(expected):
            what = f"{name}.json, group {g['name']!r}"
            raise ValueError(f"{what}: {len(values)} inputs, {len(expected)} results")
        params = {k: decode(v) for k, v in g["params"].items()}
        groups.append(Group(g["name"], g["function"], params, g["input_type"], list(zip(values, expected))))
    return groups
