"""rtl/offload_engine.v and rtl/offload_engine_sim.v are fresh exports of hw/ (drift check) and
the wrapper matches their ports."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from offload.hw import export

RTL = Path(__file__).resolve().parent.parent / "rtl"


@pytest.mark.parametrize("flavour", list(export.FLAVOURS))
def test_exported_verilog_matches_sources(flavour):
    """The committed Verilog of each flavour was generated from the current hw/ sources: its
    recorded RTLIL digest equals a fresh one (Yosys itself takes minutes; `python -m
    offload.hw.export --check` does the byte-for-byte comparison)."""
    path = export.default_path(flavour)
    assert path.parent == RTL
    first = path.read_text().splitlines()[0]
    assert first == export.HEADER.rstrip("\n")
    assert export.file_digest(path) == export.rtlil_digest(flavour), (
        f"rtl/{path.name} is out of date: run python -m offload.hw.export"
    )


def test_quick_check_covers_both_files(tmp_path, capsys, monkeypatch):
    """--quick-check (default: every flavour) compares each file's digest line with the digest
    of its own flavour and names every stale file; --out needs one flavour. (A stand-in digest
    keeps this fast: the real ones are checked above.)"""
    asked = []
    monkeypatch.setattr(export, "rtlil_digest", lambda flavour="lut": asked.append(flavour) or flavour)
    paths = {f: tmp_path / export.FLAVOURS[f][0] for f in export.FLAVOURS}
    monkeypatch.setattr(export, "default_path", lambda flavour="lut": paths[flavour])
    for f, path in paths.items():
        path.write_text(export.HEADER + export.DIGEST_PREFIX + f + "\n")
    assert export.main(["--quick-check"]) == 0 and asked == list(export.FLAVOURS)
    paths["behavioural"].write_text(export.HEADER + export.DIGEST_PREFIX + "lut\n")
    assert export.main(["--quick-check"]) == 1
    err = capsys.readouterr().err
    assert f"{paths['behavioural']} is out of date" in err and str(paths["lut"]) not in err
    assert export.main(["--quick-check", "--flavour", "lut"]) == 0
    with pytest.raises(SystemExit):
        export.main(["--quick-check", "--out", str(tmp_path / "x.v")])


def test_rtlil_is_deterministic():
    """The same digest from two processes with different string-hash seeds (a set or dict order
    that leaked into the netlist would differ between them; one process cannot see it)."""
    import subprocess
    import sys

    code = (
        "from offload.hw import export; print(export.rtlil_digest(table_depth=4, fifo_depth=256, seq_max=8))"
    )
    digests = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    ]
    assert len(digests[0]) == 64 and digests[0] == digests[1]


def _ports(text: str, module: str) -> set[str]:
    body = text.split(f"module {module}", 1)[1].split("endmodule", 1)[0]
    return set(re.findall(r"^\s*(?:input|output)\s+(?:wire\s+)?(?:\[[^\]]+\]\s*)?(\w+)", body, re.M))


def test_wrapper_connects_every_engine_port():
    eng = _ports((RTL / "offload_engine.v").read_text(), "offload_engine(")
    wrapper = (RTL / "offload_axi.v").read_text()
    connected = set(re.findall(r"\.(\w+)\(", wrapper))
    assert eng == connected
    axi = _ports(wrapper, "offload_axi #")
    assert {"aclk", "aresetn"} <= axi and (eng - {"clk", "rst"}) <= axi
    # The simulation flavour has the same ports, so the wrapper takes either module.
    sim = _ports((RTL / "offload_engine_sim.v").read_text(), "offload_engine_sim(")
    assert sim == eng
    assert "`define OFFLOAD_ENGINE_MODULE offload_engine\n" in wrapper
    assert "`OFFLOAD_ENGINE_MODULE engine (" in wrapper
