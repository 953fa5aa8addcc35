"""The cost model: how long a backend takes to run an operator on a batch, learnt from its calls.

Each ``(backend, operator key)`` pair keeps its last :data:`PER_SIZE` timed runs
``(records, bytes, seconds)`` of each batch size (quarter octave), so the sizes a pipeline runs
most never push the others out. A prediction for a batch of ``n`` records fits

    seconds = fixed + per_record * n (+ per_byte * bytes, for variable-length batches)

to the observations near ``n`` (the lower quartile of each batch size's runs, weighted by its
distance in octaves, so the model follows a backend whose cost per record changes with size: the CPU going
parallel, a batch leaving the caches), minimising the relative error, with every coefficient
non-negative and a weak pull towards the backend's prior (:data:`PRIORS`) so that a backend seen
at one size only still splits its time into a fixed and a per-record part. A backend never seen
uses its prior.

The operator key (:func:`op_key`) is the operator, the hash it runs for ``hash_bucket``/``fid``
and the batch kind: ``xxh64/fixed``, ``hash_bucket:farmhash64/var``.

Observations come from the runtime's own calls (:meth:`offload.runtime.Runtime.run`) and from
:func:`offload.calibrate.calibrate` (``offload calibrate``); one model per process
(:func:`machine_model`) holds them and is persisted per machine in
``$OFFLOAD_CACHE_DIR/costs/<machine>.json`` (``OFFLOAD_COSTS``: another file, or ``none`` for no
file).
"""

from __future__ import annotations

import atexit
import bisect
import json
import math
import os
import platform
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BYTE_KINDS",
    "CostModel",
    "Fit",
    "PER_SIZE",
    "PRIORS",
    "costs_path",
    "machine_model",
    "op_key",
    "size_step",
]

#: Observations kept per (backend, operator key) and batch size (quarter octave): the most recent.
PER_SIZE = 8
#: Refits after the 1st, 2nd, 4th ... observation up to this one, then by time (:data:`REFIT_S`).
_EARLY_REFITS = 64

#: Batch kinds whose cost has a per-byte part (their records' lengths vary).
BYTE_KINDS = frozenset({"var", "encoded", "sequences"})

#: A backend's cost before any observation: (seconds per call, per record, per byte). Rough
#: figures of this project's backends on a laptop-class host (docs/architecture.md, "Placement");
#: any observation outweighs them.
PRIORS: dict[str, tuple[float, float, float]] = {
    "cpu": (5e-6, 2e-9, 0.5e-9),
    "sim": (1e-3, 2e-7, 3e-8),
    "fpga": (1.5e-3, 5e-7, 6e-8),
    "smartnic": (3e-4, 2e-8, 2e-9),
}
DEFAULT_PRIOR = (1e-3, 1e-7, 1e-8)

#: After the first observations, a (backend, key)'s predictions are refitted at most this often.
REFIT_S = 1.0
#: Width, in octaves of batch size, of the neighbourhood a prediction is fitted to.
_OCTAVES = 1.0
#: Weight of the prior against one observation at the predicted size.
_PRIOR_WEIGHT = 1e-3
#: Distinct sizes (quarter octaves) whose predictions are cached per (backend, key).
_SIZE_STEPS = 4.0

Observation = tuple[float, float, float]  # records, bytes, seconds


@dataclass(frozen=True, slots=True)
class Fit:
    """A local fit: ``seconds = fixed + per_record * records + per_byte * bytes``."""

    fixed: float
    per_record: float
    per_byte: float
    observations: int

    def seconds(self, records: float, nbytes: float) -> float:
        return self.fixed + self.per_record * records + self.per_byte * nbytes


def op_key(op: str, kind: str, hash_name: str | None = None) -> str:
    """``xxh64/fixed``, ``hash_bucket:farmhash64/var``: what a cost is learnt for."""
    return f"{op}:{hash_name}/{kind}" if hash_name else f"{op}/{kind}"


def _kind_of(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def size_step(records: float, nbytes: float, kind: str) -> tuple[int, int]:
    step = round(_SIZE_STEPS * math.log2(records + 1.0))
    width = round(2.0 * math.log2(nbytes / records + 1.0)) if kind in BYTE_KINDS and records else 0
    return step, width


class CostModel:
    """Timed runs per (backend, operator key) and the predictions fitted to them (thread-safe)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._obs: dict[tuple[str, str], _Runs] = {}
        self._persist: set[tuple[str, str]] = set()
        self._fits: dict[tuple[str, str, tuple[int, int], int], Fit] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._refit_at: dict[tuple[str, str], float] = {}
        self._breaks: dict[tuple[str, str], tuple[int, ...]] = {}
        self._lock = threading.Lock()
        self.generation = 0  # bumped whenever predictions may change (the runtime's decision cache)
        self.dirty = False
        if path is not None and path.is_file():
            self.load(path)

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            return {
                "path": self.path,
                "obs": {k: v.all() for k, v in self._obs.items()},
                "persist": set(self._persist),
            }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(None)  # type: ignore[misc]
        self.path = state["path"]
        for k, v in state["obs"].items():
            self._obs[k] = _Runs(v)
        self._persist = set(state["persist"])

    # -- observing ------------------------------------------------------------------------------

    def observe(
        self, backend: str, key: str, records: int, nbytes: int, seconds: float, *, persist: bool = True
    ) -> None:
        """One timed run. ``persist=False``: kept in this process only (a caller's own backend
        instance, whose name may mean something else elsewhere)."""
        if records <= 0 or not seconds > 0.0 or not math.isfinite(seconds):
            return
        with self._lock:
            obs = self._obs.get((backend, key))
            if obs is None:
                obs = self._obs[(backend, key)] = _Runs()
            if persist:
                self._persist.add((backend, key))
                self.dirty = True
            obs.add((float(records), float(nbytes), float(seconds)))
            count = self._counts[(backend, key)] = self._counts.get((backend, key), 0) + 1
            if self._stale(backend, key, count):
                self._forget(backend, key)

    def _stale(self, backend: str, key: str, count: int) -> bool:
        """Refit after the 1st, 2nd, 4th... 64th observation, then at most every
        :data:`REFIT_S` seconds (a refit costs a few hundred microseconds: not per call)."""
        if count <= _EARLY_REFITS and count & (count - 1) == 0:
            return True
        return time.monotonic() - self._refit_at.get((backend, key), 0.0) >= REFIT_S

    def _forget(self, backend: str, key: str) -> None:
        for k in [k for k in self._fits if k[0] == backend and k[1] == key]:
            del self._fits[k]
        self._refit_at[(backend, key)] = time.monotonic()
        self.generation += 1

    def set_breaks(self, backend: str, kind: str, breaks: tuple[int, ...]) -> None:
        """The batch sizes at which ``backend`` changes how it runs ``kind`` batches
        (:meth:`offload.backend.Backend.cost_breaks`): a prediction is fitted to the
        observations on its own side of them (to all when that side has none)."""
        breaks = tuple(sorted(int(b) for b in breaks))
        with self._lock:
            if self._breaks.get((backend, kind), ()) == breaks:
                return
            self._breaks[(backend, kind)] = breaks
            for k in [k for k in self._fits if k[0] == backend and _kind_of(k[1]) == kind]:
                del self._fits[k]
            self.generation += 1

    def breaks(self, backend: str, kind: str) -> tuple[int, ...]:
        """What :meth:`set_breaks` was told for ``backend`` and ``kind`` (none by default)."""
        return self._breaks.get((backend, kind), ())

    def refit(self) -> None:
        """Fit every prediction anew from the observations so far (the model does so by itself
        after its first calls and then at most every :data:`REFIT_S` seconds)."""
        with self._lock:
            self._fits.clear()
            self._refit_at.clear()
            self.generation += 1

    def clear(self) -> None:
        with self._lock:
            self._obs.clear()
            self._persist.clear()
            self._fits.clear()
            self.generation += 1
            self.dirty = True

    # -- predicting -----------------------------------------------------------------------------

    def observations(self, backend: str, key: str) -> list[Observation]:
        with self._lock:
            runs = self._obs.get((backend, key))
            return runs.all() if runs else []

    def fit(self, backend: str, key: str, records: float, nbytes: float = 0.0) -> Fit:
        """The cost of ``backend`` for ``key`` around a batch of this size (cached per quarter
        octave)."""
        kind = _kind_of(key)
        breaks = self._breaks.get((backend, kind), ())
        # a quarter octave may straddle a break: each side is cached apart
        ck = (backend, key, size_step(records, nbytes, kind), bisect.bisect_right(breaks, records))
        fit = self._fits.get(ck)
        if fit is None:
            with self._lock:
                runs = self._obs.get((backend, key))
                obs = runs.all() if runs else []
            prior = PRIORS.get(backend.split("@", 1)[0], DEFAULT_PRIOR)  # "cpu@..." : a caller's own
            fit = _local_fit(_same_side(obs, breaks, records), prior, records, nbytes, kind in BYTE_KINDS)
            with self._lock:
                self._fits[ck] = fit
        return fit

    def predict(self, backend: str, key: str, records: float, nbytes: float = 0.0) -> float:
        """Predicted seconds for ``backend`` to run a batch of ``records`` (``nbytes`` bytes)."""
        return self.fit(backend, key, records, nbytes).seconds(records, nbytes)

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{backend: {key: {observations, seconds_at: {1000: s, 1000000: s}}}}`` of every
        pair observed (``offload backends``, ``Runtime.stats()``)."""
        with self._lock:
            pairs = sorted(self._obs)
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for backend, key in pairs:
            obs = self.observations(backend, key)
            width = _mean_width(obs) if _kind_of(key) in BYTE_KINDS else 0.0
            at = {n: self.predict(backend, key, n, n * width) for n in (1_000, 1_000_000)}
            out.setdefault(backend, {})[key] = {"observations": len(obs), "seconds_at": at}
        return out

    # -- persistence ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            pairs = {
                f"{b}|{k}": [list(o) for o in runs.all()]
                for (b, k), runs in self._obs.items()
                if (b, k) in self._persist
            }
        return {"format": 1, "machine": machine_id(), "saved": time.time(), "observations": pairs}

    def save(self, path: Path | None = None) -> Path | None:
        """Write the persisted observations (atomically: concurrent processes never see half a
        file; the last writer wins)."""
        path = path or self.path
        if path is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(self.to_json()))
        os.replace(tmp, path)
        self.dirty = False
        return path

    def load(self, path: Path) -> None:
        """Add the observations of a saved model (an unreadable file is ignored: it is a cache)."""
        try:
            data = json.loads(path.read_text())
            pairs = data["observations"]
            rows = {tuple(k.split("|", 1)): [tuple(map(float, o))[:3] for o in v] for k, v in pairs.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return
        with self._lock:
            for (backend, key), obs in rows.items():
                runs = self._obs.setdefault((backend, key), _Runs())
                for o in obs:
                    if len(o) == 3 and o[0] > 0 and o[2] > 0:
                        runs.add(o)
                self._persist.add((backend, key))
            self._fits.clear()
            self.generation += 1


class _Runs:
    """One (backend, key)'s observations: the last :data:`PER_SIZE` of each quarter octave of
    batch size, in the order they were made."""

    __slots__ = ("by_step", "seq")

    def __init__(self, obs: list[Observation] | None = None) -> None:
        self.by_step: dict[int, deque[tuple[int, Observation]]] = {}
        self.seq = 0
        for o in obs or ():
            self.add(o)

    def add(self, o: Observation) -> None:
        step = round(_SIZE_STEPS * math.log2(o[0] + 1.0))
        runs = self.by_step.get(step)
        if runs is None:
            runs = self.by_step[step] = deque(maxlen=PER_SIZE)
        self.seq += 1
        runs.append((self.seq, o))

    def all(self) -> list[Observation]:
        return [o for _, o in sorted(r for runs in self.by_step.values() for r in runs)]

    def __len__(self) -> int:
        return sum(len(runs) for runs in self.by_step.values())


def _same_side(obs: list[Observation], breaks: tuple[int, ...], records: float) -> list[Observation]:
    """The observations on the same side of every break as ``records`` (all of them when none
    is): a backend's cost per record jumps at a break, and a fit across it is wrong on both
    sides (the CPU's first parallel batches once predicted 0.4-0.6 off)."""
    if not breaks:
        return obs
    side = bisect.bisect_right(breaks, records)
    same = [o for o in obs if bisect.bisect_right(breaks, o[0]) == side]
    return same or obs


def _mean_width(obs: list[Observation]) -> float:
    records = sum(o[0] for o in obs)
    return sum(o[1] for o in obs) / records if records else 0.0


def _local_fit(
    obs: list[Observation], prior: tuple[float, float, float], records: float, nbytes: float, bytes_too: bool
) -> Fit:
    """Weighted least squares of the relative error, non-negative coefficients, pulled weakly
    towards the prior."""
    cols = 3 if bytes_too else 2
    p = np.array(prior[:cols])
    if not obs:
        return Fit(prior[0], prior[1], prior[2] if bytes_too else 0.0, 0)
    a = _typical(np.array(obs))
    x = np.column_stack([np.ones(len(a)), a[:, 0], a[:, 1]])[:, :cols]
    y = a[:, 2]
    dist = np.log2(a[:, 0] / max(records, 1.0)) / _OCTAVES
    w = np.sqrt(np.exp(-0.5 * dist * dist) + 1e-6)
    rows = x * (w / y)[:, None]
    rhs = w.copy()
    # The pull towards the prior is measured on the data's own scale (seconds, seconds per
    # record, per byte), so a backend orders of magnitude off its prior is not held back by it.
    scale = np.array([np.median(y), np.median(y / x[:, 1]), np.median(y / np.maximum(x[:, -1], 1.0))])[:cols]
    prior_rows = np.diag(math.sqrt(_PRIOR_WEIGHT) / scale)
    rows = np.vstack([rows, prior_rows])
    rhs = np.concatenate([rhs, math.sqrt(_PRIOR_WEIGHT) * p / scale])
    coef = _nonnegative_lstsq(rows, rhs)
    return Fit(float(coef[0]), float(coef[1]), float(coef[2]) if bytes_too else 0.0, len(obs))


def _typical(a: np.ndarray) -> np.ndarray:
    """One row per batch size (quarter octave) and width: its runs' lower quartile. A run is
    only ever slowed down by other work on the host, never sped up: the fast runs are the
    backend's cost, the slow ones noise (this is also why the benchmarks report best times)."""
    steps = np.round(_SIZE_STEPS * np.log2(a[:, 0] + 1.0)) * 64 + np.round(
        2.0 * np.log2(a[:, 1] / a[:, 0] + 1.0)
    )
    if np.unique(steps).shape[0] == a.shape[0]:
        return a
    rows = []
    for k in np.unique(steps):
        g = a[steps == k]
        rows.append([np.median(g[:, 0]), np.median(g[:, 1]), np.quantile(g[:, 2], 0.25, method="lower")])
    return np.array(rows)


def _nonnegative_lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0: a negative one is pinned at 0 and the rest
    refitted (two or three columns: at most three rounds)."""
    free = list(range(a.shape[1]))
    coef = np.zeros(a.shape[1])
    while free:
        sol = np.linalg.lstsq(a[:, free], b, rcond=None)[0]
        if (sol >= 0).all():
            coef[free] = sol
            break
        free.pop(int(np.argmin(sol)))
    return coef


# -- the machine's model ------------------------------------------------------------------------


def machine_id() -> str:
    """This machine's name in the cache (host name, letters, digits, dots and dashes only)."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", platform.node() or "machine")


def costs_path() -> Path | None:
    """Where this machine's model is kept: ``OFFLOAD_COSTS`` (a file, or ``none``), else
    ``$OFFLOAD_CACHE_DIR/costs/<machine>.json``."""
    env = os.environ.get("OFFLOAD_COSTS")
    if env is not None:
        return None if env.strip().lower() in ("", "none", "off") else Path(env)
    base = os.environ.get("OFFLOAD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "offload"
    )
    return Path(base) / "costs" / f"{machine_id()}.json"


_MACHINE: CostModel | None = None
_MACHINE_LOCK = threading.Lock()


def machine_model() -> CostModel:
    """The process's model, loaded from this machine's file on first use and saved at exit when
    the process added observations."""
    global _MACHINE
    with _MACHINE_LOCK:
        if _MACHINE is None:
            _MACHINE = CostModel(costs_path())
            atexit.register(_save_at_exit)
        return _MACHINE


def _save_at_exit() -> None:
    model = _MACHINE
    if model is not None and model.dirty:
        try:
            model.save()
        except OSError:  # a read-only cache must not fail the process's exit
            pass
