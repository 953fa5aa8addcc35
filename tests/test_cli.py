"""The command line: help, errors, backends, and a small demo run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def offload(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "offload.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_help_lists_every_command():
    r = offload("--help")
    assert r.returncode == 0
    for cmd in ("demo", "bench", "backends", "serve", "synth", "export-rtl"):
        assert f"  {cmd}" in r.stdout


def test_unknown_command_is_an_error():
    r = offload("frobnicate")
    assert r.returncode == 2
    assert r.stderr.strip() == "offload: unknown command 'frobnicate' (try 'offload --help')"


def test_backends_json_has_a_reason_for_each(monkeypatch):
    r = offload("backends", "--json")
    assert r.returncode == 0, r.stderr
    rows = {d["backend"]: d for d in json.loads(r.stdout)}
    assert set(rows) == {"cpu", "sim", "fpga", "smartnic"}
    assert rows["cpu"]["available"] is True
    assert all(d["reason"] for d in rows.values())


@pytest.mark.timeout(600)
def test_demo_small_on_cpu_and_a_local_smartnic_service():
    r = offload("demo", "--events", "3000", "--backends", "cpu,smartnic", "--sample", "50")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("cpu ", "smartnic "))]
    assert len(lines) == 20, r.stdout
    assert all("bit-exact" in ln for ln in lines), r.stdout
    assert "20 bit-exact, 0 failed or mismatched" in r.stdout


def test_demo_rejects_bad_arguments():
    r = offload("demo", "--events", "0")
    assert r.returncode == 2 and "--events must be at least 1" in r.stderr
