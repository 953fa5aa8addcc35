"""The XXH64 fixed-key kernels' software-pipelined loop, its eight-lane vector type, and the
multiplier ceiling of the bench.

The loop runs blocks of ``_PIPE`` keys (32 in four vectors, 3 on the scalar unit) three stages
apart, from two blocks on; the lengths below sit around those boundaries.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from offload import bench_hashes
from offload.host.cpu import hash_params
from offload.host.cpu.kernels_hash import _PIPE, _broadcast, _load8, _rotl, _store8, xxh64_fixed_ser
from offload.ops import OpCall, golden_result
from tests.test_cpu import KERNEL_CALLS

MASK64 = (1 << 64) - 1
CALLS = [c for c in KERNEL_CALLS if c.op in ("xxh64", "hash_bucket", "fid")]  # XXH64's modes
# fewer than two blocks (scalar only), exactly two, the loop's first lengths, a ragged tail
LENGTHS = [0, 1, 2 * _PIPE - 1, 2 * _PIPE, 2 * _PIPE + 1, 3 * _PIPE - 1, 3 * _PIPE, 3 * _PIPE + 1]
LENGTHS += [4 * _PIPE + 34, 1000]


def _golden(call: OpCall, keys: np.ndarray) -> list[int]:
    return [golden_result(call, k.tobytes()) & MASK64 for k in keys]


def _forms(keys: np.ndarray) -> dict[str, np.ndarray]:
    ro = keys.copy()
    ro.flags.writeable = False
    strided = np.zeros(2 * len(keys), keys.dtype)
    strided[::2] = keys
    unaligned = np.zeros(keys.nbytes + 1, np.uint8)[1:].view(keys.dtype)
    unaligned[:] = keys
    return {"read-only": ro, "strided": strided[::2], "unaligned": unaligned}


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.describe())
def test_the_pipelined_loop_equals_the_golden_model_around_its_blocks(call: OpCall) -> None:
    rng = np.random.default_rng(7)
    for dt in (np.uint64, np.uint32):
        for n in LENGTHS:
            keys = rng.integers(0, np.iinfo(dt).max, n, dt, endpoint=True)
            expected = _golden(call, keys)
            forms = _forms(keys) if dt == np.uint64 else {"read-only": _forms(keys)["read-only"]}
            for form, k in forms.items():
                out = np.full(n, 7, np.uint64)
                xxh64_fixed_ser(k, np.uint64(call.seed or 0), *hash_params(call), out)
                assert [int(v) for v in out] == expected, (np.dtype(dt).name, n, form)


@pytest.mark.parametrize("call", CALLS[:1] + CALLS[-1:], ids=lambda c: c.describe())
def test_the_pipelined_loop_writes_a_strided_output_and_nothing_between(call: OpCall) -> None:
    keys = np.random.default_rng(8).integers(0, 2**64 - 1, 3 * _PIPE + 5, np.uint64, endpoint=True)
    keys.flags.writeable = False
    buf = np.full(2 * len(keys), 7, np.uint64)
    xxh64_fixed_ser(keys, np.uint64(call.seed or 0), *hash_params(call), buf[::2])
    assert [int(v) for v in buf[::2]] == _golden(call, keys)
    assert set(buf[1::2].tolist()) == {7}


@njit
def _lanewise(a, b, out):
    """Each operator of u64x8 on a[0:8] and b[0:8], and on a vector and a scalar, into out."""
    x, y, s = _load8(a, 0), _load8(b, 0), b[0]
    for k, v in enumerate((x + y, x - y, x * y, x ^ y, x & y, x | y, x >> s, x << s, _rotl(x, s))):
        _store8(out, 8 * k, v)
    _store8(out, 72, x * s + _broadcast(s))
    z = x
    z ^= z >> np.uint64(33)
    _store8(out, 80, z)


def test_u64x8_operators_equal_uint64_arithmetic_lane_by_lane() -> None:
    rng = np.random.default_rng(9)
    a = rng.integers(0, 2**64 - 1, 8, np.uint64, endpoint=True)
    b = np.full(8, 37, np.uint64)
    out = np.zeros(88, np.uint64)
    _lanewise(a, b, out)
    got = out.reshape(11, 8).tolist()
    ai, s = [int(v) for v in a], 37
    rotl = [((v << s) | (v >> (64 - s))) & MASK64 for v in ai]
    expected = [
        [(v + s) & MASK64 for v in ai],
        [(v - s) & MASK64 for v in ai],
        [(v * s) & MASK64 for v in ai],
        [v ^ s for v in ai],
        [v & s for v in ai],
        [v | s for v in ai],
        [v >> s for v in ai],
        [(v << s) & MASK64 for v in ai],
        rotl,
        [(v * s + s) & MASK64 for v in ai],
        [v ^ (v >> 33) for v in ai],
    ]
    assert got == expected


def test_u64x8_loads_zero_extend_4_byte_keys() -> None:
    @njit
    def widen(a, out):
        _store8(out, 0, _load8(a, 0))

    a = np.array([0, 1, 2**31, 2**32 - 1, 5, 6, 7, 8], np.uint32)
    out = np.zeros(8, np.uint64)
    widen(a, out)
    assert out.tolist() == a.tolist()


def test_the_xxh64_ceiling_is_the_busier_of_its_pipes_plus_the_scalar_unit() -> None:
    # 7 multiplies and rotates at 1 a cycle, 14 zmm ops at 2 a cycle: 7 cycles per 8 keys;
    # 1 imul a cycle: a key every 5 cycles on the scalar unit
    table = {"vpmullq zmm + vprolq zmm": 1.0, "vpxorq zmm": 2.0, "imul r64": 1.0}
    assert bench_hashes.xxh64_k8_ceiling(table) == pytest.approx(8 / 7 + 1 / 5)
    # with logic at 1 zmm op a cycle the 14 ops bound it instead: 14 cycles
    assert bench_hashes.xxh64_k8_ceiling({**table, "vpxorq zmm": 1.0}) == pytest.approx(8 / 14 + 1 / 5)


def test_the_multiplier_ceiling_row_measures_this_core_or_says_why_not() -> None:
    m = bench_hashes.multiplier_ceiling()
    r = bench_hashes.multiplier_ceiling_row(1000.0)
    if isinstance(m, str):
        assert r["value"] is None and r["note"] == f"skipped: {m}"
        return
    assert 0.5 < m["clock_ghz"] < 10
    assert set(m["per_cycle"]) >= {"vpmullq zmm", "vprolq zmm", "imul r64", "vpmullq zmm + vprolq zmm"}
    assert all(v > 0 for v in m["per_cycle"].values())
    assert r["value"] == pytest.approx(bench_hashes.xxh64_k8_ceiling(m["per_cycle"]) * m["clock_ghz"] * 1e3)
    assert r["ratio"] == pytest.approx(r["value"] / 1000.0)


def test_the_multiplier_ceiling_row_is_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_hashes, "multiplier_ceiling", lambda: "the CPU lacks avx512ifma")
    r = bench_hashes.multiplier_ceiling_row(1000.0)
    assert (r["value"], r["note"]) == (None, "skipped: the CPU lacks avx512ifma")
