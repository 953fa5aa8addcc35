"""``offload bench``: --check, --only, --json, missing baselines and groups, machine facts.

Groups are replaced by tiny fakes here (never the full benchmark); one test runs the real CPU
group at its --quick sizes without python-xxhash.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from offload import bench, cli

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
    return fake


def bench_cli(*args: str) -> int:
    return cli.main(["bench", *args])


# -- --only ------------------------------------------------------------------------------------


def test_the_groups_are_cpu_devices_smartnic_and_each_resolves_to_a_function():
    assert list(bench.GROUPS) == ["cpu", "devices", "smartnic"]
    for target in bench.GROUPS.values():
        module, fn = str(target).split(":")
        assert callable(getattr(importlib.import_module(module), fn))


def test_select_keeps_the_group_order_and_takes_all_by_default():
    assert bench.select(None) == ["cpu", "devices", "smartnic"]
    assert bench.select("smartnic,cpu") == ["cpu", "smartnic"]
    assert bench.select(" devices , devices") == ["devices"]


@pytest.mark.parametrize("only", ["gpu", "cpu,gpu", "", "cpu,"])
def test_an_unknown_only_name_is_an_error_listing_the_valid_ones(only, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = [n.strip() for n in only.split(",") if n.strip() not in bench.GROUPS][0]
    msg = f"unknown benchmark group {bad!r}: expected a comma-separated list of cpu, devices, smartnic"
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
    missing = [r for r in rows if r["note"] == bench.NO_XXHASH]
    assert [r["name"].split(",")[0] for r in missing] == [
        "xxh64 200",
        "xxh64 20",
        "xxh64 20",
        "xxh64 of a Python list of 20",
        "hash_bucket mod uint64 keys",
    ]
    assert all(r["baseline"] is None and r["value"] > 0 for r in missing)
    # The ratio targets (xxh64 keys >= 25x, strings >= 8x, list[str] >= 1.5x) are not checked;
    # the value target of hash_bucket does not need the baseline and still is.
    assert [(r["target_kind"], r["passed"]) for r in missing if r["target"] is not None] == [
        ("ratio", None),
        ("ratio", None),
        ("ratio", None),
        ("value", missing[-1]["passed"]),
    ]
    assert missing[-1]["passed"] is not None
