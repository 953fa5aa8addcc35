"""``offload bench``: --check, --only, --json, missing baselines and groups, machine facts.

Groups are replaced by tiny fakes here (never the full benchmark); one test runs the real CPU
group at its --quick sizes without python-xxhash.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import offload
from offload import bench, bench_hashes, cli, ops
from offload.batch import FixedKeys
from offload.ops import OpCall, Operator, Param

Row = dict[str, Any]


def _passing(quick: bool) -> list[Row]:
    return [bench.row("fast", 10.0, "M/s", target=5)]


def _failing(quick: bool) -> list[Row]:
    return [bench.row("slow", 1.0, "M/s", target=5)]


def _unchecked(quick: bool) -> list[Row]:
    return [bench.row("no baseline", 10.0, "M/s", target=2, target_kind="ratio", note=bench.NO_XXHASH)]


def _crashing(quick: bool) -> list[Row]:
    raise RuntimeError("the device caught fire")


def _needs_pynq(quick: bool) -> list[Row]:
    raise ModuleNotFoundError("No module named 'pynq'", name="pynq")


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    fake: dict[str, Any] = {
        "ok": _passing,
        "slow": _failing,
        "nobase": _unchecked,
        "crash": _crashing,
        "pynq": _needs_pynq,
    }
    monkeypatch.setattr(bench, "GROUPS", fake)
    monkeypatch.setattr(bench, "COPY_BYTES", 8 << 20)  # the machine's copy bandwidth, measured small
    return fake


def bench_cli(*args: str) -> int:
    return cli.main(["bench", *args])


# -- --only ------------------------------------------------------------------------------------


def test_the_groups_are_named_and_each_resolves_to_a_function():
    assert list(bench.GROUPS) == ["cpu", "devices", "placement", "smartnic", "features", "ray"]
    for target in bench.GROUPS.values():
        module, fn = str(target).split(":")
        assert callable(getattr(importlib.import_module(module), fn))


def test_select_keeps_the_group_order_and_takes_all_by_default():
    assert bench.select(None) == ["cpu", "devices", "placement", "smartnic", "features", "ray"]
    assert bench.select("smartnic,cpu") == ["cpu", "smartnic"]
    assert bench.select(" devices , devices") == ["devices"]


@pytest.mark.parametrize("only", ["gpu", "cpu,gpu", "", "cpu,"])
def test_an_unknown_only_name_is_an_error_listing_the_valid_ones(only, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = [n.strip() for n in only.split(",") if n.strip() not in bench.GROUPS][0]
    msg = (
        f"unknown benchmark group {bad!r}: expected a comma-separated list of "
        "cpu, devices, placement, smartnic, features, ray"
    )
    with pytest.raises(ValueError, match=f"^{msg}$"):
        bench.select(only)
    with pytest.raises(SystemExit) as e:
        bench_cli("--only", only)
    assert e.value.code == 2
    err = capsys.readouterr()
    assert err.err.splitlines()[-1] == f"offload bench: error: {msg}"
    assert err.out == "" and list(tmp_path.iterdir()) == []


# -- --check -------------------------------------------------------------------------------------


def test_check_exits_1_when_a_row_misses_its_target(groups, capsys):
    assert bench_cli("--only", "ok,slow", "--check") == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and out.rstrip().endswith("check: 1 passed, 1 failed, 0 not checked")


def test_without_check_a_failing_row_still_exits_0(groups, capsys):
    assert bench_cli("--only", "ok,slow") == 0
    assert "check: 1 passed, 1 failed, 0 not checked" in capsys.readouterr().out


def test_check_exits_0_when_every_row_passes(groups, capsys):
    assert bench_cli("--only", "ok", "--check") == 0


def test_a_missing_baseline_is_not_checked_neither_pass_nor_fail(groups, capsys):
    assert bench_cli("--only", "ok,nobase", "--check") == 0
    out = capsys.readouterr().out
    assert "not checked" in out and bench.NO_XXHASH in out
    assert "check: 1 passed, 0 failed, 1 not checked" in out


def test_a_crashing_group_is_a_failed_row_not_a_traceback(groups, capsys):
    assert bench_cli("--only", "ok,crash", "--check") == 1
    out = capsys.readouterr().out
    assert "crash: failed" in out and "RuntimeError: the device caught fire" in out


def test_a_group_whose_extra_is_missing_is_not_run_and_names_the_extra(groups, capsys):
    res = bench.run_benchmarks(only="pynq")
    assert res["rows"] == [
        bench.row(
            "pynq: not run",
            None,
            "",
            note="offload bench --only pynq needs the 'fpga' extra: pip install 'offload[fpga]' "
            "(missing module 'pynq')",
        )
    ]
    assert bench.check(res) == (0, "check: 0 passed, 0 failed, 1 not checked")


def test_a_ratio_target_without_baseline_is_not_checked():
    r = bench.row("x", 10.0, "M/s", target=2, target_kind="ratio")
    assert r["ratio"] is None and r["passed"] is None
    assert bench.row("x", 10.0, "M/s", baseline=1.0, target=2, target_kind="ratio")["passed"]


# -- --json --------------------------------------------------------------------------------------


def test_no_file_is_written_without_json(groups, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert bench_cli("--only", "ok") == 0
    assert list(tmp_path.iterdir()) == []
    assert "wrote" not in capsys.readouterr().out


def test_json_path_gets_the_rows_and_the_machine(groups, tmp_path, capsys):
    path = tmp_path / "out.json"
    assert bench_cli("--only", "ok,slow", "--json", str(path)) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"wrote {path}")
    res = json.loads(path.read_text())
    assert [r["name"] for r in res["rows"]] == ["fast", "slow"]
    assert [r["passed"] for r in res["rows"]] == [True, False]
    assert res["groups"] == ["ok", "slow"]
    m = res["machine"]
    assert isinstance(m["cpus"], int) and m["cpus"] >= 1
    assert isinstance(m["cpus_usable"], int) and 1 <= m["cpus_usable"] <= m["cpus"]
    if sys.platform == "linux":
        assert isinstance(m["cpu_model"], str) and m["cpu_model"]
        assert isinstance(m["physical_cores"], int) and m["physical_cores"] >= 1
        assert isinstance(m["avx512"], list) and all(f.startswith("avx512") for f in m["avx512"])
    # the memory (copy) bandwidth measured in the same run: the faster of two copies
    rates = [m["copy_bandwidth_copyto_gbs"], m["copy_bandwidth_ufunc_gbs"]]
    assert all(r > 0 for r in rates) and m["copy_bandwidth_best_gbs"] == max(rates)
    assert m["copy_bandwidth_how"] == "numpy copies of 8 MiB: bytes read + written per s"
    assert isinstance(m["llvm_cpu"], str) and m["llvm_cpu"]


def test_the_avx512_flags_come_from_cpuinfo(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\nphysical id\t: 0\ncore id\t: 0\n"
        "flags\t\t: fpu avx2 avx512f avx512dq sse2 avx512vl\n\n"
        "processor\t: 1\nmodel name\t: Some CPU\nphysical id\t: 0\ncore id\t: 1\n"
        "flags\t\t: fpu avx2 avx512f avx512dq sse2 avx512vl\n"
    )
    real = bench.Path
    monkeypatch.setattr(bench, "Path", lambda p: real(info) if p == "/proc/cpuinfo" else real(p))
    assert bench._cpuinfo() == {
        "cpu_model": "Some CPU",
        "physical_cores": 2,
        "avx512": ["avx512dq", "avx512f", "avx512vl"],
    }


def test_json_into_a_missing_directory_is_an_error_before_running(groups, tmp_path, capsys):
    path = tmp_path / "nowhere" / "out.json"
    with pytest.raises(SystemExit) as e:
        bench_cli("--only", "crash", "--json", str(path))
    assert e.value.code == 2
    err = capsys.readouterr()
    assert err.err.splitlines()[-1] == (
        f"offload bench: error: --json {path}: directory {path.parent} does not exist"
    )
    assert "crash" not in err.out


def test_json_onto_a_directory_is_an_error_before_running(groups, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench_cli("--only", "crash", "--json", str(tmp_path))
    assert e.value.code == 2
    err = capsys.readouterr()
    assert err.err.splitlines()[-1] == f"offload bench: error: --json {tmp_path}: is a directory"
    assert "crash" not in err.out


def test_the_make_target_names_its_json_file():
    make = (Path(__file__).parent.parent / "Makefile").read_text()
    assert "offload bench --json bench.json" in make


# -- python-xxhash missing (a core-only install) ---------------------------------------------


def test_the_cpu_group_without_xxhash_reports_missing_baselines(monkeypatch):
    monkeypatch.setitem(sys.modules, "xxhash", None)  # import xxhash -> ImportError
    rows = bench.run_benchmarks(quick=True, only="cpu")["rows"]
    missing = [r for r in rows if bench.NO_XXHASH in r["note"]]
    assert [r["name"].split(",")[0] for r in missing] == [
        "xxh64 200",
        "hash_bucket 200",
        "xxh64 20",
        "xxh64 20",
        "xxh64 of a Python list of 20",
    ]
    assert all(r["baseline"] is None and r["value"] > 0 for r in missing)
    # The ratio targets (xxh64 keys >= 25x, strings >= 8x, list[str] >= 1.5x) are not checked;
    # the value target of hash_bucket does not need the baseline and still is.
    assert [(r["target_kind"], r["passed"]) for r in missing if r["target"] is not None] == [
        ("ratio", None),
        ("value", missing[1]["passed"]),
        ("ratio", None),
        ("ratio", None),
    ]
    assert missing[1]["passed"] is not None
    # each hash kernel against C compiled for this machine, then XXH64 streamed from memory
    kernels = [r for r in rows if " kernel into out=, " in r["name"]]
    assert [r["name"].split("(")[0] for r in kernels] == [
        *(op for op, _, _ in bench_hashes.KERNEL_CALLS),
        "xxh64",
        "xxh64 kernel into out=, 200,000 uint64 keys: memory traffic, 1 thread",
    ]
    assert all(r["value"] > 0 for r in kernels)
    traffic = kernels[-1]
    # and as a caller gets it: the backend's run_into, the out= of offload.xxh64
    into = rows[rows.index(traffic) + 1]
    assert into["name"].startswith("xxh64 CpuBackend(threads=1).run_into (out=), 200,000 uint64 keys")
    assert isinstance(bench_hashes.xxhash_library(), str) or into["value"] > 0 < into["baseline"]
    assert traffic["unit"] == "GB/s read+written" and traffic["ratio"] > 0 and traffic["target"] == 0.8
    if not isinstance(bench_hashes.xxhash_library(), str):
        assert kernels[0]["baseline_unit"] == "M keys/s (xxHash's C XXH64, C loop, gcc -O3 -march=native)"
        assert kernels[0]["target"] == 1.2 and kernels[0]["ratio"] > 0


# -- one row per registry operator, the bench never edited -----------------------------------


def _lengths_xor(backend: Any, call: OpCall, batch: Any) -> np.ndarray:
    if isinstance(batch, FixedKeys):
        return np.full(batch.n, batch.width, np.uint64) ^ np.uint64(call.mask)
    return np.array([len(batch.record(i)) for i in range(batch.n)], np.uint64) ^ np.uint64(call.mask)


def _integers_only(value: Any, _: Any) -> np.dtype:
    dt = np.dtype(value)
    if dt.kind != "i":
        raise TypeError(f"t_bench_odd takes integers, got {dt}")
    return dt


@pytest.fixture
def throwaway_operators():
    """A records operator and a numbers operator that takes integers only, registered here."""
    mask = Param("mask", lambda v, _: ops.check_int("mask", v, 0, 2**64 - 1, "[0, 2**64)"), 0)
    ops.register(
        Operator(
            "t_bench_xor",
            "length of each record xor a mask",
            "records",
            (mask,),
            "uint64",
            lambda c, r: len(r) ^ c.mask,
            _lengths_xor,
            examples=({"mask": 5},),
        )
    )
    ops.register(
        Operator(
            "t_bench_odd",
            "1 for an odd value",
            "numbers",
            (Param("dtype", _integers_only, shown=False),),
            "int32",
            lambda c, r: int(r) & 1,
            lambda be, c, b: (b.values & 1).astype(np.int32),
        )
    )
    yield
    ops.unregister("t_bench_xor")
    ops.unregister("t_bench_odd")


def test_an_operator_registered_in_a_test_gets_a_cpu_row(throwaway_operators):
    rows = bench.run_benchmarks(quick=True, only="cpu")["rows"]
    ours = {r["name"]: r for r in rows if r["name"].startswith("t_bench_")}
    assert sorted(ours) == [
        "t_bench_odd 200,000 int64 values, 1 thread",  # its examples refuse float64: int64
        "t_bench_xor 200,000 uint64 keys, 1 thread",  # its first example, on 8-byte keys
    ]
    xor = ours["t_bench_xor 200,000 uint64 keys, 1 thread"]
    assert xor["value"] > 0 and xor["unit"] == "M keys/s" and xor["note"] == "t_bench_xor(mask=5)"
    # no baseline or target of its own: measured, neither passed nor failed
    assert (xor["baseline"], xor["target"], xor["passed"]) == (None, None, None)
    assert ours["t_bench_odd 200,000 int64 values, 1 thread"]["value"] > 0


# -- the reference C baselines of the framework hashes -----------------------------------------


KEYS = np.arange(1, 1001, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)


def _strings() -> Any:
    import pyarrow as pa

    return pa.array([bytes(range(i % 40)) for i in range(500)], pa.binary())


@pytest.mark.parametrize("op", list(bench_hashes.REFERENCES))
def test_the_c_loop_over_the_reference_computes_what_offload_computes(op):
    pytest.importorskip(bench_hashes.REFERENCES[op].module, reason="the dev extra installs the references")
    if isinstance(bench_hashes.c_library(), str):
        pytest.skip(reason=bench_hashes.c_library())
    for kind, values, py in (("keys", KEYS, [k.tobytes() for k in KEYS]), ("strings", _strings(), None)):
        ours = getattr(offload, op)(values, backend="cpu")
        items = py if py is not None else values.to_pylist()
        base = bench_hashes.reference_baseline(
            op, ours, items, 1, **{"keys" if kind == "keys" else "strings": values}, items=kind
        )
        assert base.agrees is True and base.rate is not None and base.rate > 0
        assert base.unit.startswith(f"M {kind}/s (reference C ")
        assert "ns/call raw" in base.note and "minus hash(b)" in base.note


def test_a_baseline_that_computes_something_else_fails_its_row():
    if isinstance(bench_hashes.c_library(), str):
        pytest.skip(reason=bench_hashes.c_library())
    pytest.importorskip("farmhash", reason="the dev extra installs cityhash (module farmhash)")
    wrong = np.zeros(len(KEYS), np.uint64)
    base = bench_hashes.reference_baseline("farmhash64", wrong, [b"12345678"], 1, keys=KEYS)
    assert base.agrees is False
    r = bench.compared_row("x", 1e3, "M keys/s", base, 1.0, "ratio", "")
    assert r["ratio"] is not None and r["ratio"] >= 1 and r["passed"] is False
    assert "the baseline's results differ from offload's" in r["note"]


def test_without_the_package_the_baseline_is_missing_and_not_checked(monkeypatch):
    monkeypatch.setitem(sys.modules, "mmh3", None)
    base = bench_hashes.reference_baseline("murmur3_32", np.zeros(3, np.uint32), [b"a"], 1, keys=KEYS[:3])
    assert base == bench.Baseline(
        None, "", "baseline missing: pip install mmh3==5.3.1 (the reference C code)"
    )
    r = bench.compared_row("murmur3_32 x", 5.0, "M keys/s", base, 1.0, "ratio", "")
    assert (r["baseline"], r["ratio"], r["passed"]) == (None, None, None)


def test_a_package_build_without_the_symbol_has_no_baseline(monkeypatch):
    pytest.importorskip("cityhash", reason="the dev extra installs cityhash")
    if isinstance(bench_hashes.c_library(), str):
        pytest.skip(reason=bench_hashes.c_library())
    ref = bench_hashes.REFERENCES["cityhash64"]
    monkeypatch.setitem(
        bench_hashes.REFERENCES, "cityhash64", dataclasses.replace(ref, symbol="_Z7NoSuchFnv")
    )
    base = bench_hashes.reference_baseline("cityhash64", np.zeros(3, np.uint64), [b"a"], 1, keys=KEYS[:3])
    assert (base.rate, base.agrees) == (None, None)
    assert base.note.startswith("baseline missing: cityhash (cityhash 0.4.10) exports no _Z7NoSuchFnv; ")


def test_without_a_compiler_the_baselines_say_so(monkeypatch):
    monkeypatch.setattr(bench_hashes, "c_library", lambda: "no C compiler (test)")
    assert (
        bench_hashes.snprintf_loop(np.arange(10, dtype=np.int64)) == "baseline missing: no C compiler (test)"
    )
    pytest.importorskip("cityhash", reason="the dev extra installs cityhash")
    base = bench_hashes.reference_baseline("cityhash64", np.zeros(1, np.uint64), [b"12345678"] * 2000, 3)
    # the estimate from the binding's per-call time, or nothing when the difference is not positive
    assert "no C compiler (test)" in base.note and "ns/call raw" in base.note
    if base.rate is None:
        assert base.note.startswith("baseline not measurable: ")
    else:
        assert base.unit == "M keys/s (estimate: cityhash.CityHash64 per call minus hash(b))"


def test_the_snprintf_loop_writes_the_decimal_text_of_every_value():
    if isinstance(bench_hashes.c_library(), str):
        pytest.skip(reason=bench_hashes.c_library())
    loop = bench_hashes.snprintf_loop(np.array([0, -1, 42, -(2**63), 2**63 - 1], np.int64))
    assert not isinstance(loop, str)
    assert loop[1] == loop[0]() == 1 + 2 + 2 + 20 + 19


def test_paired_best_interleaves_the_runs_in_alternating_order():
    calls: list[str] = []
    times = bench.paired_best([lambda: calls.append("a"), lambda: calls.append("b")], 3, warmup=1)
    # the warm-up, then rounds in alternating order: neither always follows the other
    assert (
        calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b"]
        and len(times) == 2
        and all(t >= 0 for t in times)
    )


# -- the devices group: the fpga path against the sim backend ---------------------------------


@pytest.mark.verilator
@pytest.mark.timeout(600)
def test_the_devices_group_rates_the_fpga_path_against_the_sim_backend():
    """Two rows, warm, at --quick's 16,384 keys: fpga keys/s against the sim backend's measured
    in the same run (the sim backend as configured, and on the simulated device's own model)."""
    pytest.importorskip("pynq", reason="pynq is not installed (pip install 'offload[fpga]')")
    from offload.host.bench_devices import rows
    from tests.conftest import require

    rt = offload.Runtime(backends=["sim", "fpga"], fpga="sim")
    require(rt, "sim")
    require(rt, "fpga")
    rt.close()
    got = {r["name"]: r for r in rows(quick=True)}
    sim = got["sim xxh64 16,384 uint64 keys"]
    for name in (
        "fpga (simulated PYNQ) vs sim backend, 16,384 keys warm",
        "fpga (simulated PYNQ) vs sim backend on the same model, 16,384 keys warm",
    ):
        r = got[name]
        assert (r["unit"], r["baseline_unit"]) == ("M keys/s", "M keys/s (sim backend)")
        assert (r["target"], r["target_kind"]) == (0.5, "ratio")
        assert r["value"] > 0 and r["baseline"] > 0
        assert r["ratio"] == pytest.approx(r["value"] / r["baseline"])
        assert r["passed"] is (r["ratio"] >= 0.5)
    # the first ratio's baseline is the sim row's own measurement
    assert got["fpga (simulated PYNQ) vs sim backend, 16,384 keys warm"]["baseline"] == sim["value"]


# -- the hash kernels against C compiled for this machine -------------------------------------


def _native_or_skip(op: str) -> None:
    lib = bench_hashes.xxhash_library()
    if isinstance(lib, str):
        pytest.skip(reason=lib)
    if op in bench_hashes.REFERENCES:
        pytest.importorskip(bench_hashes.REFERENCES[op].module, reason="the dev extra installs them")


@pytest.mark.parametrize(("op", "params", "target"), bench_hashes.KERNEL_CALLS, ids=lambda v: str(v))
def test_each_kernel_and_its_c_compute_the_same(op, params, target):
    _native_or_skip(op)
    call = ops.make_call(op, **params)
    r, times = bench_hashes.kernel_row(call, KEYS, 1, target, "test")
    assert r["name"] == f"{call.describe()} kernel into out=, 1,000 uint64 keys (test), 1 thread"
    assert r["baseline"] > 0 and r["ratio"] == r["value"] / r["baseline"] and r["target"] == target
    assert r["target_kind"] == "ratio" and "differ" not in r["note"]  # like for like
    assert sorted(times) == ["c", "copy", "ours"] and all(t > 0 for t in times.values())


def test_a_kernel_row_whose_c_computes_something_else_fails(monkeypatch):
    _native_or_skip("xxh64")
    real = bench_hashes._kernel_pair

    def wrong_c(call, keys):
        ours, c, what, dtype = real(call, keys)

        def c_off_by_one_bit(out):
            c(out)
            out[0] ^= np.uint64(1)

        return ours, c_off_by_one_bit, what, dtype

    monkeypatch.setattr(bench_hashes, "_kernel_pair", wrong_c)
    r, _ = bench_hashes.kernel_row(ops.make_call("xxh64"), KEYS, 1, 1.2, "test")
    assert r["passed"] is False and "the baseline's results differ from offload's" in r["note"]


def test_without_xxhash_h_the_native_baselines_say_how_to_get_it(monkeypatch):
    if bench_hashes._compiler() is None:
        pytest.skip(reason="no C compiler")
    source = bench_hashes._NATIVE_SOURCE.replace("<xxhash.h>", "<offload-no-such-dir/xxhash.h>")
    monkeypatch.setattr(bench_hashes, "_NATIVE_SOURCE", source)
    why = "no xxhash.h for xxHash's C baseline (Debian/Ubuntu: apt-get install libxxhash-dev)"
    assert bench_hashes.xxhash_library.__wrapped__() == why
    monkeypatch.setattr(bench_hashes, "xxhash_library", bench_hashes.xxhash_library.__wrapped__)
    r, times = bench_hashes.kernel_row(ops.make_call("xxh64"), KEYS, 1, 1.2, "test")
    assert (r["value"] > 0, r["baseline"], r["ratio"], r["passed"]) == (True, None, None, None)
    assert r["note"].endswith(f"baseline missing: {why}") and sorted(times) == ["copy", "ours"]


def test_the_copy_bandwidth_is_the_faster_of_two_copies():
    rates = bench.copy_bandwidth(1 << 20, 2)
    assert sorted(rates) == ["best", "copyto", "ufunc"]
    assert rates["best"] == max(rates["copyto"], rates["ufunc"]) > 0
