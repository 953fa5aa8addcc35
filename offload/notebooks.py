"""Run the notebooks in place and check the committed copies (``make notebooks``).

``python -m offload.notebooks notebooks/*.ipynb`` executes each notebook with nbclient, keeps its
outputs (so a person browsing the repository sees the figures) and stamps its metadata with the
SHA-256 of its code cells' sources. ``python -m offload.notebooks --check notebooks/*.ipynb`` (and
``tests/test_notebooks.py``) reports, without running anything:

* a notebook whose code changed since its outputs were produced (the stamp differs), or that was
  never executed by this command;
* a code cell that was not run or that raised;
* a plotting cell (one that calls a drawing function of ``plt``, an ``ax…`` or a ``fig…``) without
  an ``image/png`` output: the class of ``matplotlib.use("Agg")`` followed by ``plt.show()``, which
  draws nothing in Jupyter or in CI;
* a figure whose texts overlap (titles, axis and tick labels, annotations, legends): the kernel
  :func:`execute` starts checks every figure it draws (:func:`text_overlaps`) and the stamp keeps
  what it found;
* a reach into offload's internals: a private attribute or name (``x._name``), ``sys.path``
  edits, the internal modules (:data:`INTERNAL_MODULES`) or the test suite, test-only flags.

The checks read the notebook JSON only (no Jupyter needed); executing needs the ``notebooks``
extra (nbclient, ipykernel).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import time
import tokenize
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "STAMP_KEY",
    "INTERNAL_MODULES",
    "code_sources",
    "code_hash",
    "plotting_cells",
    "internal_uses",
    "text_overlaps",
    "problems",
    "execute",
    "main",
]

#: Metadata key of the stamp: ``nb["metadata"]["offload"]["code_sha256"]``.
STAMP_KEY = "offload"
#: Modules a notebook must not import: the runtime's plumbing (use the functions and ``Runtime``
#: methods of ``offload``), the service's test harness and the test suite.
INTERNAL_MODULES = (
    "offload.batch",
    "offload.ops",
    "offload.runtime",
    "offload.backend",
    "offload.host.smartnic.testing",
    "tests",
)

# A call of a drawing function on plt, an axes (ax, axs, ax[0], ax1 ...) or a figure.
_DRAWING = re.compile(
    r"\b(?:plt|ax\w*|fig\w*)\s*(?:\[[^\]\n]*\])?\s*\.\s*"
    r"(?:plot|scatter|step|loglog|semilogx|semilogy|bar|barh|hist|imshow|pcolormesh|contourf?|"
    r"fill_between|errorbar|stem|pie|boxplot|violinplot|axhline|axvline|stairs|"
    r"subplots|subplot|figure)\s*\("
)
_TEST_FLAGS = re.compile(r"--debug-[\w-]+")


def _load(nb: dict[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(nb, (str, Path)):
        with open(nb, encoding="utf-8") as f:
            return json.load(f)
    return nb


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def code_sources(nb: dict[str, Any] | str | Path) -> list[str]:
    """The source of every code cell, in order."""
    return [_source(c) for c in _load(nb)["cells"] if c.get("cell_type") == "code"]


def code_hash(nb: dict[str, Any] | str | Path) -> str:
    """SHA-256 (hex) of the code cells' sources: what the committed outputs were produced from."""
    h = hashlib.sha256()
    for src in code_sources(nb):
        data = src.encode("utf-8")
        h.update(len(data).to_bytes(8, "little") + data)  # length-prefixed: cell edges count
    return h.hexdigest()


def plotting_cells(nb: dict[str, Any] | str | Path) -> list[int]:
    """Indexes (among all cells) of the code cells that call a drawing function."""
    return [
        i
        for i, c in enumerate(_load(nb)["cells"])
        if c.get("cell_type") == "code" and _DRAWING.search(_code_text(_source(c)))
    ]


def _has_image(cell: dict[str, Any]) -> bool:
    return any(
        "image/png" in o.get("data", {})
        for o in cell.get("outputs", [])
        if o.get("output_type") in ("display_data", "execute_result")
    )


def _strip_comments(src: str) -> str:
    """The source without comments and IPython magics/shell lines (which are not Python)."""
    lines = ["" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines()]
    text = "\n".join(lines) + "\n"
    try:
        toks = [t for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type != tokenize.COMMENT]
        return tokenize.untokenize(toks)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return text


def _code_text(src: str) -> str:
    """The code's tokens without comments and string literals, space-separated."""
    skip = {
        tokenize.COMMENT,
        tokenize.STRING,
        tokenize.NL,
        tokenize.NEWLINE,
        getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING),
    }  # Python 3.12+ f-strings
    return " ".join(t.string for t in _tokens(src) if t.type not in skip)


def _tokens(src: str) -> list[tokenize.TokenInfo]:
    try:
        return list(tokenize.generate_tokens(io.StringIO(_strip_comments(src)).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return []


def _dotted_names(toks: list[tokenize.TokenInfo]) -> Iterator[str]:
    """Every maximal dotted name (``a.b.c``) of the token stream."""
    i = 0
    while i < len(toks):
        if toks[i].type == tokenize.NAME:
            parts = [toks[i].string]
            while i + 2 < len(toks) and toks[i + 1].string == "." and toks[i + 2].type == tokenize.NAME:
                parts.append(toks[i + 2].string)
                i += 2
            yield ".".join(parts)
        i += 1


def _from_imports(src: str) -> Iterator[tuple[str, list[str]]]:
    """``(module, names)`` of each ``from module import names`` statement."""
    for m in re.finditer(
        r"^[ \t]*from\s+([\w.]+)\s+import\s+(?:\(([^)]*)\)|([^\n]+))", _strip_comments(src), re.MULTILINE
    ):
        names = m.group(2) if m.group(2) is not None else m.group(3)
        yield m.group(1), [n.split()[0] for n in names.split(",") if n.strip()]


def internal_uses(src: str) -> list[str]:
    """What a code cell's source uses that is not offload's public API (empty: nothing)."""
    found: list[str] = []
    toks = _tokens(src)
    for a, b in zip(toks, toks[1:]):
        if (
            a.string == "."
            and b.type == tokenize.NAME
            and b.string.startswith("_")
            and not (b.string.startswith("__") and b.string.endswith("__"))
        ):
            found.append(f"private attribute .{b.string}")
    names = set(_dotted_names(toks))
    for mod, imported in _from_imports(src):
        names.add(mod)
        names.update(f"{mod}.{n}" for n in imported)
        found += [f"private name {mod}.{n}" for n in imported if n.startswith("_") and not n.startswith("__")]
    for name in sorted(names):
        if name == "sys.path" or name.startswith("sys.path."):
            found.append("sys.path edit (import from the installed package instead)")
        for mod in INTERNAL_MODULES:
            if name == mod or name.startswith(mod + "."):
                found.append(f"internal module {mod}")
    found += [f"test-only flag {m}" for m in _TEST_FLAGS.findall(_strip_comments(src))]
    return list(dict.fromkeys(found))


def text_overlaps(fig: Any, renderer: Any = None) -> list[str]:
    """Pairs of a matplotlib figure's visible texts whose boxes overlap (by more than a pixel each
    way): every axes' title, axis labels, tick labels in view and texts/annotations, each legend
    as one box, the figure's own texts. Empty: nothing overlaps."""
    if renderer is None:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
    boxes = []
    for name, artist in _figure_texts(fig):
        bb = artist.get_window_extent(renderer)
        if bb.width > 0 and bb.height > 0:
            boxes.append((name, bb))
    found = []
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1 :]:
            w = min(ba.x1, bb.x1) - max(ba.x0, bb.x0)
            h = min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
            if w > 1 and h > 1:
                found.append(f"{a} overlaps {b}")
    return found


def _figure_texts(fig: Any) -> Iterator[tuple[str, Any]]:
    def visible(t: Any) -> bool:
        return t.get_visible() and bool(t.get_text().strip())

    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for what, t in (("title", ax.title), ("x label", ax.xaxis.label), ("y label", ax.yaxis.label)):
            if visible(t):
                yield f"{what} {t.get_text()!r}", t
        for axis, lim in (("x", ax.get_xlim()), ("y", ax.get_ylim())):
            locs = ax.get_xticks() if axis == "x" else ax.get_yticks()
            labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
            lo, hi = min(lim), max(lim)
            for loc, t in zip(locs, labels):
                if lo <= loc <= hi and visible(t):
                    yield f"{axis} tick label {t.get_text()!r}", t
        for t in ax.texts:
            if visible(t):
                yield f"text {t.get_text()!r}", t
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            yield "a legend", legend
    for t in fig.texts:
        if visible(t):
            yield f"figure text {t.get_text()!r}", t
    for legend in fig.legends:
        yield "a figure legend", legend


_FIGURE_LOG_ENV = "OFFLOAD_NB_FIGURE_LOG"


def _watch_figures() -> None:
    """In a kernel started by :func:`execute` (IPython startup file): after every figure drawn,
    append the cell's source and the figure's :func:`text_overlaps` to $OFFLOAD_NB_FIGURE_LOG."""
    import matplotlib.figure
    from IPython import get_ipython

    log_path, current = os.environ[_FIGURE_LOG_ENV], {"cell": ""}
    get_ipython().events.register("pre_run_cell", lambda info: current.update(cell=info.raw_cell))
    draw = matplotlib.figure.Figure.draw

    def checked_draw(fig: Any, renderer: Any) -> Any:
        out = draw(fig, renderer)
        try:
            overlaps = text_overlaps(fig, renderer)
        except Exception as e:  # a checker bug must show, not break the notebook's figure
            overlaps = [f"the overlap check failed: {type(e).__name__}: {e}"]
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"cell": current["cell"], "overlaps": overlaps}) + "\n")
        return out

    # patching the library's method is the point: every figure any cell draws gets checked
    matplotlib.figure.Figure.draw = checked_draw  # type: ignore[method-assign, assignment]


def problems(nb: dict[str, Any] | str | Path, name: str = "notebook") -> list[str]:
    """Everything wrong with a committed, executed notebook (empty: it is current and clean)."""
    nb = _load(nb)
    out: list[str] = []
    meta = nb.get("metadata", {}).get(STAMP_KEY, {})
    stamp = meta.get("code_sha256")
    if stamp is None or "text_overlaps" not in meta:
        out.append(f"{name}: not executed by `make notebooks` (no {STAMP_KEY}.code_sha256 stamp)")
    elif stamp != code_hash(nb):
        out.append(f"{name}: its code changed since its outputs were produced: run `make notebooks`")
    for i, pairs in sorted(meta.get("text_overlaps", {}).items(), key=lambda kv: int(kv[0])):
        out += [f"{name}: cell {i}: a figure's {pair}" for pair in pairs]
    plotting = set(plotting_cells(nb))
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("execution_count") is None:
            out.append(f"{name}: cell {i} has not been executed (no outputs)")
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            out.append(f"{name}: cell {i} raised {errors[0].get('ename')}: {errors[0].get('evalue')}")
        if i in plotting and not _has_image(cell):
            out.append(
                f"{name}: cell {i} plots but produced no image (matplotlib.use('Agg')? no plt.show()?)"
            )
        out += [f"{name}: cell {i} uses {u}" for u in internal_uses(_source(cell))]
    return out


def execute(path: str | Path, *, timeout: int = 900, kernel: str = "python3") -> float:
    """Execute a notebook in place (its directory as the working directory), keep its outputs and
    stamp its code hash; returns the seconds it took. A cell that raises stops it: the error
    propagates and the file is left unchanged."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="offload-nb-") as tmp:
        # The kernel runs _watch_figures from an IPython startup file of its own profile directory.
        startup = Path(tmp, "ipython", "profile_default", "startup")
        startup.mkdir(parents=True)
        (startup / "00-offload-figures.py").write_text(
            "from offload.notebooks import _watch_figures\n_watch_figures()\ndel _watch_figures\n"
        )
        log = Path(tmp, "figures.jsonl")
        log.touch()
        env = {**os.environ, "IPYTHONDIR": str(Path(tmp, "ipython")), _FIGURE_LOG_ENV: str(log)}
        # record_timing=False: no per-cell timestamps, so a re-run only changes what the cells print.
        NotebookClient(
            nb,
            timeout=timeout,
            kernel_name=kernel,
            record_timing=False,
            resources={"metadata": {"path": str(path.parent.resolve())}},
        ).execute(env=env)
        drawn = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    cell_of: dict[str, int] = {}  # a code cell's source -> its index
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell_of.setdefault(cell.source, i)
    overlaps: dict[str, list[str]] = {}
    for rec in drawn:
        key = str(cell_of.get(rec["cell"], "?"))
        overlaps.setdefault(key, [])
        overlaps[key] += [p for p in rec["overlaps"] if p not in overlaps[key]]
    nb.metadata[STAMP_KEY] = {
        "code_sha256": code_hash(nb),
        "figures_drawn": len(drawn),
        "text_overlaps": {k: v for k, v in overlaps.items() if v},
    }
    nbformat.write(nb, path)
    return time.monotonic() - t0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m offload.notebooks", description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="+", help="notebooks (.ipynb)")
    p.add_argument(
        "--check",
        action="store_true",
        help="only check the committed notebooks (current, executed, images, public API)",
    )
    p.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    args = p.parse_args(argv)
    found: list[str] = []
    for path in args.paths:
        if not args.check:
            print(f"{path}: executing ...", flush=True)
            print(f"{path}: done in {execute(path, timeout=args.timeout):.0f} s", flush=True)
        found += problems(path, name=str(path))
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
