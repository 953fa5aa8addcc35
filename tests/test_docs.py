"""The documentation states what the code does, and refers to nothing outside the repository.

``docs/operators.md`` is the operator contract. Every line of its ``python check`` blocks is an
equation (``call == expected``) or an error (``call  # raises Error: message``). Each equation is
evaluated twice: once with the golden models (``offload.golden``, record by record, reading the
batch with this module's own plain-Python reading of the contract) and once with the public API on
the CPU backend, whose result dtype must also be the one in the page's operator table. Each error
is raised by the public API with exactly that message.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import offload
from offload import golden, golden_sigrid
from offload.ops import OPERATORS, result_dtype

ROOT = Path(__file__).resolve().parents[1]
OPERATORS_MD = ROOT / "docs" / "operators.md"

_FENCE = re.compile(r"^```python check\n(.*?)^```$", re.S | re.M)
_RAISES = re.compile(r"^(?P<call>.*?)\s+# raises (?P<exc>\w+): (?P<msg>.*)$")


@dataclass(frozen=True)
class Example:
    line: int
    text: str
    op: str
    exc: str | None = None
    message: str | None = None


def _called_op(expr: ast.expr) -> str | None:
    return expr.func.id if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) else None


def _example(line: int, text: str) -> Example:
    m = _RAISES.match(text)
    src = m["call"] if m else text
    tree = ast.parse(src, mode="eval").body
    if m:
        op = _called_op(tree)
        assert op in OPERATORS, f"docs/operators.md:{line}: not an operator call: {src}"
        return Example(line, src, op, m["exc"], m["msg"])
    assert isinstance(tree, ast.Compare) and len(tree.ops) == 1 and isinstance(tree.ops[0], ast.Eq), (
        f"docs/operators.md:{line}: an example is `call == expected` or `call  # raises E: msg`"
    )
    op = _called_op(tree.left)
    assert op in OPERATORS, f"docs/operators.md:{line}: the left side is not an operator call"
    return Example(line, text, op)


@cache
def examples() -> tuple[Example, ...]:
    text = OPERATORS_MD.read_text(encoding="utf-8")
    found = []
    for block in _FENCE.finditer(text):
        first = text.count("\n", 0, block.start(1)) + 1
        for k, raw in enumerate(block[1].splitlines()):
            if raw.strip() and not raw.lstrip().startswith("#"):
                found.append(_example(first + k, raw.strip()))
    return tuple(found)


def _ids(exs: tuple[Example, ...]) -> list[str]:
    return [f"L{e.line}:{e.text[:60]}" for e in exs]


VALUES = tuple(e for e in examples() if e.exc is None)
ERRORS = tuple(e for e in examples() if e.exc is not None)


# ---------------------------------------------------------------------------------------------
# The golden reading: a batch as records, each through offload.golden
# ---------------------------------------------------------------------------------------------


def _as_bytes(v: Any) -> bytes:
    return v.encode("utf-8") if isinstance(v, str) else bytes(v)


def _int_bytes(keys: list[Any], width: int, signed: bool) -> list[bytes | None]:
    return [None if v is None else int(v).to_bytes(width, "little", signed=signed) for v in keys]


def _records(values: Any) -> tuple[list[bytes | None], tuple[int, ...] | None]:
    """A hash operator's batch as byte records, None for a null (and the result shape for numpy
    keys). A masked element's ``tolist()`` is None; a dictionary column's is its value."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        width, signed = values.dtype.itemsize, values.dtype.kind == "i"
        keys = values.reshape(-1).tolist()  # the values, whatever the byte order
        return _int_bytes(keys, width, signed), values.shape
    if isinstance(values, np.ndarray):
        return [None if v is None else _as_bytes(v) for v in values.reshape(-1).tolist()], None
    if isinstance(values, tuple):
        offsets, data = values
        blob = bytes(data)
        return [blob[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)], None
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        t = values.type.value_type if pa.types.is_dictionary(values.type) else values.type
        if pa.types.is_integer(t):
            return _int_bytes(values.to_pylist(), t.bit_width // 8, pa.types.is_signed_integer(t)), None
        return [None if v is None else _as_bytes(v) for v in values.to_pylist()], None
    return [None if v is None else _as_bytes(v) for v in values], None


def _replacement(values: Any, nulls: Any) -> Any:
    """``nulls=``'s replacement as a record of the column (None for the policies)."""
    if isinstance(nulls, str) and nulls in ("error", "null"):
        return None
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        t = values.type.value_type if pa.types.is_dictionary(values.type) else values.type
        return _records(pa.array([nulls], t))[0][0]
    if isinstance(values, np.ndarray) and values.dtype != object:
        return _records(np.array([nulls], values.dtype))[0][0]
    return _as_bytes(nulls) if isinstance(nulls, (str, bytes)) else nulls


def _apply(fn: Callable[[Any], Any], items: list[Any], fill: Any) -> list[Any]:
    """``fn`` of each item; a null (None) is ``fn(fill)``, or stays None without a replacement."""
    return [None if v is None and fill is None else fn(fill if v is None else v) for v in items]


def _shaped(flat: list[Any], shape: tuple[int, ...] | None) -> list[Any]:
    return flat if shape is None else np.array(flat, dtype=object).reshape(shape).tolist()


def _param(v: Any) -> Any:
    return int(v) if isinstance(v, np.integer) else v  # a numpy integer parameter is its value


def _golden_hash(fn: Callable[..., int]) -> Callable[..., list[Any]]:
    def op(
        values: Any, *args: Any, nulls: Any = "error", output: str = "numpy", out: Any = None, **kwargs: Any
    ) -> list[Any]:
        recs, shape = _records(values)  # out=: where the result goes, not what it is
        a, k = [_param(v) for v in args], {n: _param(v) for n, v in kwargs.items()}
        out = _apply(lambda r: fn(r, *a, **k), recs, _replacement(values, nulls))
        return _shaped(out, shape if output == "numpy" else None)

    return op


def _golden_sigrid(values: Any, salt: int, max_value: int) -> list[int]:
    return [golden_sigrid.sigrid_hash(int(v), salt, max_value) for v in np.asarray(values).tolist()]


def _golden_decimal(values: Any, num_buckets: int) -> list[int]:
    return [golden.farmhash64(str(int(v)).encode()) % num_buckets for v in np.asarray(values).tolist()]


def _golden_bucketize(
    x: Any, boundaries: Any, right: bool = True, nulls: Any = "error", output: str = "numpy"
) -> list[Any]:
    bnd = np.asarray(boundaries).tolist()
    fill = None if isinstance(nulls, str) else nulls

    def one(v: Any) -> int:
        return golden.bucketize(v, bnd, right)

    if isinstance(x, (pa.Array, pa.ChunkedArray)):
        return _apply(one, x.to_pylist(), fill)
    return _shaped(_apply(one, x.reshape(-1).tolist(), fill), x.shape if output == "numpy" else None)


def _sequences(sequences: Any) -> list[list[int]]:
    if isinstance(sequences, tuple):
        vo, vals = (np.asarray(a).tolist() for a in sequences)
        return [vals[vo[i] : vo[i + 1]] for i in range(len(vo) - 1)]
    if isinstance(sequences, (pa.Array, pa.ChunkedArray)):
        return sequences.to_pylist()
    return [None if s is None else [int(v) for v in s] for s in sequences]


def _golden_encode(sequences: Any, nulls: Any = "error", output: str = "numpy") -> Any:
    fill = None if isinstance(nulls, str) else [int(v) for v in nulls]
    parts = _apply(golden.delta_varint_encode_seq, _sequences(sequences), fill)
    if output == "arrow":
        return parts
    return np.cumsum([0] + [len(p) for p in parts]).tolist(), b"".join(parts)


def _golden_decode(offsets: Any, data: Any = None, nulls: Any = "error", output: str = "numpy") -> Any:
    if isinstance(offsets, (pa.Array, pa.ChunkedArray)):  # a binary column
        records = offsets.to_pylist()
    else:
        o, blob = np.asarray(offsets).tolist(), bytes(data)
        records = [blob[o[i] : o[i + 1]] for i in range(len(o) - 1)]
    fill = None if isinstance(nulls, str) else bytes(nulls)
    seqs = _apply(lambda r: golden.delta_varint_decode_seq(r, 0, 0), records, fill)
    if output == "arrow":
        return seqs
    return np.cumsum([0] + [len(s) for s in seqs]).tolist(), [v for s in seqs for v in s]


GOLDEN: dict[str, Callable[..., Any]] = {
    "xxh32": _golden_hash(golden.xxh32),
    "xxh64": _golden_hash(golden.xxh64),
    "hash_bucket": _golden_hash(golden.hash_bucket),
    "fid": _golden_hash(golden.fid),
    "bucketize": _golden_bucketize,
    "delta_varint_encode": _golden_encode,
    "delta_varint_decode": _golden_decode,
    "farmhash64": _golden_hash(golden.farmhash64),
    "cityhash64": _golden_hash(golden.cityhash64),
    "murmur3_32": _golden_hash(golden.murmur3_32),
    "sigrid_hash": _golden_sigrid,
    "decimal_hash_bucket": _golden_decimal,
}


# ---------------------------------------------------------------------------------------------
# The public API's reading, on the CPU backend; its dtypes are the page's
# ---------------------------------------------------------------------------------------------


@cache
def documented_dtypes() -> dict[str, list[np.dtype]]:
    """Operator -> result dtype(s), from the operator table at the top of the page."""
    table = {}
    for row in OPERATORS_MD.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| `(\w+)\(.*\| (?P<result>[^|]*) \|$", row)
        if m and m[1] in OPERATORS:
            table[m[1]] = [np.dtype(t) for t in re.findall(r"`(\w+)`", m["result"])]
    return table


def _api(op: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        res = getattr(offload, op)(*args, backend="cpu", **kwargs)
        if isinstance(res, pa.Array):  # output="arrow": the documented dtype as an arrow type
            assert res.type == _arrow_type(op), f"{op}: arrow result type"
            return res.to_pylist()
        arrays = list(res) if isinstance(res, tuple) else [res]
        assert [a.dtype for a in arrays] == documented_dtypes()[op], f"{op}: result dtype"
        if op == "delta_varint_encode":
            return res[0].tolist(), res[1].tobytes()
        return tuple(a.tolist() for a in res) if isinstance(res, tuple) else res.tolist()

    return call


def _arrow_type(op: str) -> pa.DataType:
    if op == "delta_varint_encode":
        return pa.large_binary()
    if op == "delta_varint_decode":
        return pa.large_list(pa.int64())
    return pa.from_numpy_dtype(documented_dtypes()[op][0])


API: dict[str, Callable[..., Any]] = {op: _api(op) for op in OPERATORS}


def _namespace(ops: dict[str, Callable[..., Any]]) -> dict[str, Any]:
    return {"np": np, "pa": pa, **ops}


def sides(ex: Example, ops: dict[str, Callable[..., Any]]) -> tuple[Any, Any]:
    """Both sides of an equation, evaluated with the given operators."""
    tree = ast.parse(ex.text, mode="eval").body
    assert isinstance(tree, ast.Compare)
    ns = _namespace(ops)
    return eval(ast.unparse(tree.left), ns), eval(ast.unparse(tree.comparators[0]), ns)


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ex", VALUES, ids=_ids(VALUES))
def test_example_holds_for_the_golden_model(ex: Example) -> None:
    got, expected = sides(ex, GOLDEN)
    assert got == expected, f"docs/operators.md:{ex.line}: {ex.text}"


@pytest.mark.parametrize("ex", VALUES, ids=_ids(VALUES))
def test_example_holds_for_the_public_api(ex: Example) -> None:
    got, expected = sides(ex, API)
    assert got == expected, f"docs/operators.md:{ex.line}: {ex.text}"


@pytest.mark.parametrize("ex", ERRORS, ids=_ids(ERRORS))
def test_error_example_is_raised_by_the_public_api(ex: Example) -> None:
    assert ex.message is not None and ex.exc is not None
    exc = {"TypeError": TypeError, "ValueError": ValueError}[ex.exc]
    pattern = re.escape(ex.message[:-3]) if ex.message.endswith("...") else re.escape(ex.message) + "$"
    with pytest.raises(exc, match="^" + pattern):
        eval(ex.text, _namespace(API))


def test_a_wrong_example_fails() -> None:
    """The checks are not vacuous: a value off by one fails on both readings."""
    ex = next(e for e in VALUES if e.text.startswith('xxh64([b"abc"]) == [0x44BC2CF5AD770999]'))
    wrong = Example(ex.line, ex.text.replace("0x44BC2CF5AD770999", "0x44BC2CF5AD77099A"), ex.op)
    for ops in (GOLDEN, API):
        got, expected = sides(wrong, ops)
        assert got != expected


def test_every_operator_has_a_section_a_table_row_and_examples() -> None:
    text = OPERATORS_MD.read_text(encoding="utf-8")
    sections = re.findall(r"^### `(\w+)\(", text, re.M)
    assert sorted(sections) == sorted(OPERATORS)
    assert sorted(documented_dtypes()) == sorted(OPERATORS)
    assert {e.op for e in VALUES} == set(OPERATORS)
    assert {e.op for e in ERRORS} == set(OPERATORS)


@pytest.mark.parametrize("op", [o for o in OPERATORS if not o.startswith("delta_varint")])
def test_documented_dtype_is_the_operator_result_dtype(op: str) -> None:
    assert documented_dtypes()[op] == [np.dtype(result_dtype(op))]


def test_the_repository_refers_to_nothing_outside_itself() -> None:
    """Tracked files (code, docs, notebooks, tests) name no file or document outside the
    repository (the operator contract is docs/operators.md)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip(reason="not a git checkout with git installed: the check reads tracked files")
    # The bracketed characters keep this file's own patterns from matching themselves.
    pattern = r"[.][.]/shared|shared[ ]folder|SPEC[.]md|/work[/]shared|(the|project's)[ ]brief\b"
    out = subprocess.run(
        ["git", "grep", "-nIE", pattern], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode in (0, 1), out.stderr
    assert out.stdout == "", "references outside the repository:\n" + out.stdout


def _is_commit(word: str) -> bool:
    out = subprocess.run(
        ["git", "cat-file", "-t", word], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return out.stdout.strip() == "commit"


def test_the_docs_are_a_reference_not_a_work_log() -> None:
    """No commit hashes and no session narration in the documentation pages."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip(reason="not a git checkout with git installed: commit names need the history")
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        words = set(re.findall(r"\b(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b", text))
        found += [f"{page.name}: commit {w}" for w in sorted(words) if _is_commit(w)]
        found += [f"{page.name}: {m}" for m in re.findall(r"[^.\n]*\bsessions?\b[^.\n]*", text, re.I)]
    assert found == []
