"""The runtime: backend discovery, ``backend="auto"``, verification and fallback without loss.

``Runtime(backends=[...])`` holds an ordered chain of backends. A call runs on the first backend in
the chain that is available and able to run it (or on the one named with ``backend=``); when a
backend fails part-way, the records it did not complete are recomputed on the next backend of the
chain and finally on the CPU, so the caller always receives the whole result, in order.
``fallback=False`` raises the failure instead. ``verify`` checks results against the golden model
(``"sample"``) or against the CPU kernels with the golden model as referee (``"full"``).
"""

from __future__ import annotations

import importlib
import os
import pickle
import random
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from offload import columnar as _columnar
from offload.backend import (
    Availability,
    Backend,
    BackendError,
    BackendUnavailable,
    Batch,
    BitExactError,
    Result,
    concat_results,
    empty_result,
)
from offload.batch import FixedKeys, Numbers, Sequences, VarRecords, is_arrow
from offload.columnar import Output
from offload.costmodel import CostModel, machine_model, op_key, size_step
from offload.ops import (
    HashBucketMethod,
    HashName,
    Murmur3Tail,
    OpCall,
    OperatorName,
    golden_result,
    make_call,
    operator,
)

__all__ = [
    "Runtime",
    "BACKEND_FACTORIES",
    "AUTO_ORDER",
    "VERIFY_MODES",
    "VerifyMode",
    "BackendChoice",
    "PLACEMENTS",
    "Placement",
    "default_runtime",
    "Output",
]

# name -> "module:Class"; a factory takes the options the Runtime was given for that name.
BACKEND_FACTORIES: dict[str, str] = {
    "cpu": "offload.host.cpu:CpuBackend",
    "sim": "offload.host.sim_backend:SimBackend",
    "fpga": "offload.host.fpga:FpgaBackend",
    "smartnic": "offload.host.smartnic:SmartNicBackend",
}
AUTO_ORDER = ("fpga", "smartnic", "cpu")
VERIFY_MODES = ("off", "sample", "full")
#: ``verify=``: no check, a sample of each batch against the golden model, or every record.
VerifyMode = Literal["off", "sample", "full"]
#: ``backend=`` of a call: ``"auto"`` (the chain's order) or one backend by name.
BackendChoice = Literal["auto", "cpu", "sim", "fpga", "smartnic"]
AVAILABILITY_TTL_S = 5.0
PLACEMENTS = ("fastest", "balanced", "offload", "ordered")
#: ``placement=``: where each call runs (docs/architecture.md, "Placement").
Placement = Literal["fastest", "balanced", "offload", "ordered"]
#: Decisions kept for :meth:`Runtime.stats` (the most recent ones).
DECISIONS_KEPT = 256
#: ``"balanced"``: a part smaller than this is not worth a backend of its own.
MIN_PART = 4096
#: ``"balanced"``: a split is taken when predicted to finish in this fraction of the fastest
#: backend's time or less (the parts' threads and the estimates' noise take the rest).
SPLIT_GAIN = 0.85


@dataclass
class _Slot:
    name: str
    backend: Backend | None = None
    given: bool = False  # the caller passed this instance (pickled as it is)
    error: str | None = None
    checked_at: float = -1e18
    availability: Availability | None = None


@dataclass
class _Stats:
    calls: int = 0
    records: int = 0
    by_backend: dict[str, dict[str, float]] = field(default_factory=dict)
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    verified_records: int = 0
    last_call: dict[str, Any] = field(default_factory=dict)


class Runtime:
    """An ordered chain of backends with verification and fallback.

    ``backends``: names (``"fpga"``, ``"smartnic"``, ``"sim"``, ``"cpu"``) or Backend instances, in
    order of preference; default ``("fpga", "smartnic", "cpu")``. The CPU backend is the last
    resort of every chain (added if absent) unless ``fallback=False``.
    ``fpga``: passed to the fpga backend (``"sim"`` selects the simulated PYNQ device; default from
    ``OFFLOAD_FPGA``). ``smartnic``: ``"host:port"`` of an ``offload serve`` (default from
    ``OFFLOAD_SMARTNIC``). ``sample_size``: records checked per batch by ``verify="sample"``.

    ``placement``: where each call runs (docs/architecture.md, "Placement"). ``"fastest"``: the
    backend the cost model predicts to finish first; ``"balanced"``: a large batch split across
    the backends in proportion to their predicted rates so that they finish together (the parts
    stitched in order); ``"offload"``: devices first, the CPU last (frees the host CPU);
    ``"ordered"``: the chain's order. Default: ``"ordered"`` when ``backends`` is given (a list
    is an order of preference), else ``"fastest"``. ``cost_model``: the model placement reads and
    every call teaches (default: this machine's, :func:`offload.costmodel.machine_model`).
    """

    def __init__(
        self,
        backends: Sequence[str | Backend] | None = None,
        *,
        verify: VerifyMode = "off",
        fallback: bool = True,
        fpga: str | None = None,
        smartnic: str | None = None,
        sample_size: int = 32,
        options: dict[str, dict[str, Any]] | None = None,
        rng_seed: int | None = None,
        placement: Placement | None = None,
        cost_model: CostModel | None = None,
    ) -> None:
        if placement is not None and placement not in PLACEMENTS:
            raise ValueError(
                f"unknown placement {placement!r}: expected 'fastest', 'balanced', 'offload' or 'ordered'"
            )
        if cost_model is not None and not isinstance(cost_model, CostModel):
            raise TypeError(f"cost_model must be a CostModel or None, got {type(cost_model).__name__}")
        if rng_seed is not None and (isinstance(rng_seed, bool) or not isinstance(rng_seed, int)):
            raise TypeError(f"rng_seed must be an int or None, got {type(rng_seed).__name__}")
        if verify not in VERIFY_MODES:
            raise ValueError(f"unknown verify mode {verify!r}: expected 'off', 'sample' or 'full'")
        if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
            raise ValueError(f"sample_size must be a positive int, got {sample_size!r}")
        self.verify = verify
        self.fallback = bool(fallback)
        self.sample_size = sample_size
        self._options: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (options or {}).items()}
        if fpga is not None:
            self._options.setdefault("fpga", {})["device"] = fpga
        if smartnic is not None:
            self._options.setdefault("smartnic", {})["address"] = smartnic
        self._slots: dict[str, _Slot] = {}
        order: list[str] = []
        for b in AUTO_ORDER if backends is None else backends:
            if isinstance(b, Backend):
                name = b.name
                self._slots[name] = _Slot(name, backend=b, given=True)
            elif isinstance(b, str):
                if b not in BACKEND_FACTORIES:
                    raise ValueError(f"unknown backend {b!r}: expected one of {', '.join(BACKEND_FACTORIES)}")
                name = b
                self._slots.setdefault(name, _Slot(name))
            else:
                raise TypeError(f"a backend is a name or a Backend, got {type(b).__name__}")
            if name in order:
                raise ValueError(f"backend {name!r} is listed twice")
            order.append(name)
        if not order:
            raise ValueError("a Runtime needs at least one backend")
        self.order: tuple[str, ...] = tuple(order)
        self._listed = frozenset(order if backends is not None else ())  # named by the caller
        self._stats = _Stats()
        self._names_cache: dict[str | None, list[str]] = {}
        self._lock = threading.RLock()
        self._rng_seed = rng_seed
        self._rng = random.Random(rng_seed)
        self._warned: set[str] = set()
        self._placement_given = placement
        self.placement: str = placement or ("ordered" if backends is not None else "fastest")
        self._own_costs = cost_model
        self.costs: CostModel = cost_model if cost_model is not None else machine_model()
        self._ranked_cache: dict[
            tuple[Any, ...], tuple[list[str], dict[str, float], list[tuple[str, float]] | None]
        ] = {}
        self._plans: dict[tuple[Any, ...], list[tuple[str, float]]] = {}
        self._warm: set[tuple[str, str]] = set()
        self._decisions: deque[tuple[Any, ...]] = deque(maxlen=DECISIONS_KEPT)
        self._parts_pool: ThreadPoolExecutor | None = None
        for slot in self._slots.values():
            if slot.backend is not None:
                self._tell_breaks(slot.name, slot.backend)

    def _tell_breaks(self, name: str, be: Backend) -> None:
        """Tell the cost model where this backend's cost per record jumps (its
        :meth:`~offload.backend.Backend.cost_breaks`, per batch kind)."""
        for kind in (*_KINDS.values(), "encoded"):
            self.costs.set_breaks(self._cost_name(name), kind, be.cost_breaks(kind))

    # -- pickling: the configuration travels, backends are rebuilt lazily in the new process ----

    def __getstate__(self) -> dict[str, Any]:
        given: dict[str, Backend] = {}
        for name, slot in self._slots.items():
            if slot.given and slot.backend is not None:
                try:
                    pickle.dumps(slot.backend)
                except Exception as e:
                    raise TypeError(
                        f"cannot pickle this Runtime: backend {name!r} was given as a "
                        f"{type(slot.backend).__name__} instance, which cannot be pickled "
                        f"({type(e).__name__}: {e}); give its name and options instead"
                    ) from None
                given[name] = slot.backend
        return {
            "order": self.order,
            "listed": self._listed,
            "given": given,
            "verify": self.verify,
            "fallback": self.fallback,
            "sample_size": self.sample_size,
            "options": self._options,
            "rng_seed": self._rng_seed,
            "placement": self._placement_given,
            "cost_model": self._own_costs,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        given = state["given"]
        type(self).__init__(
            self,
            [given.get(n, n) for n in state["order"]],
            verify=state["verify"],
            fallback=state["fallback"],
            sample_size=state["sample_size"],
            options=state["options"],
            rng_seed=state["rng_seed"],
            placement=state.get("placement"),
            cost_model=state.get("cost_model"),
        )
        self._listed = state["listed"]

    def explicit(self, name: str) -> bool:
        """Whether the caller asked for this backend: by name or instance in ``backends=``, or by
        its options (``fpga=``, ``smartnic=``, ``options={name: ...}``); skipping it is then
        worth a record (the default chain's backends are tried silently)."""
        slot = self._slots.get(name)
        return (slot is not None and slot.given) or name in self._listed or name in self._options

    # -- backends ---------------------------------------------------------------------------

    def _slot(self, name: str) -> _Slot:
        if name not in self._slots:
            if name not in BACKEND_FACTORIES:
                raise ValueError(f"unknown backend {name!r}: expected one of {', '.join(BACKEND_FACTORIES)}")
            self._slots[name] = _Slot(name)
        return self._slots[name]

    def backend(self, name: str) -> Backend:
        """The backend instance for ``name`` (constructed on first use)."""
        slot = self._slot(name)
        if slot.backend is None:
            if slot.error is not None:
                raise BackendUnavailable(f"backend {name!r} is unavailable: {slot.error}")
            module, cls = BACKEND_FACTORIES[name].split(":")
            try:
                factory = getattr(importlib.import_module(module), cls)
                slot.backend = factory(**self._options.get(name, {}))
                self._tell_breaks(name, slot.backend)
            except BackendUnavailable as e:
                slot.error = str(e)
                raise BackendUnavailable(f"backend {name!r} is unavailable: {e}") from None
            except ImportError as e:
                slot.error = f"cannot import {module}: {e}"
                raise BackendUnavailable(f"backend {name!r} is unavailable: {slot.error}") from None
        return slot.backend

    def availability(self, name: str, *, refresh: bool = False) -> Availability:
        """Whether ``name`` can run now, and why not (cached for a few seconds)."""
        slot = self._slot(name)
        now = time.monotonic()
        if not refresh and slot.availability is not None and now - slot.checked_at < AVAILABILITY_TTL_S:
            return slot.availability
        try:
            av = self.backend(name).availability()
        except BackendUnavailable as e:
            av = Availability(False, str(e).split(": ", 1)[-1])
        except Exception as e:  # a backend's probe must never take the runtime down
            av = Availability(False, f"availability check failed: {type(e).__name__}: {e}")
        slot.availability, slot.checked_at = av, now
        return av

    def _lost(self, name: str, why: str) -> None:
        """A backend lost its device: unavailable at once (not only at its next availability
        check, a few seconds on), so the calls in between go straight to the next backend."""
        slot = self._slot(name)
        slot.availability, slot.checked_at = Availability(False, why), time.monotonic()

    def backends(self, refresh: bool = True) -> list[tuple[str, bool, str]]:
        """``(name, available, reason)`` for every known backend, chain order first."""
        names = list(self.order) + [n for n in BACKEND_FACTORIES if n not in self.order]
        out = []
        for n in names:
            av = self.availability(n, refresh=refresh)
            out.append((n, av.ok, av.reason))
        return out

    def _names(self, backend: str | None) -> list[str]:
        """Backend names to try, in order, for ``backend=`` (memoised: the order never changes)."""
        key = backend
        names = self._names_cache.get(key)
        if names is None:
            order = list(self.order)
            if backend not in (None, "auto"):
                if backend not in BACKEND_FACTORIES and backend not in self._slots:  # or an instance's
                    raise ValueError(
                        f"unknown backend {backend!r}: expected 'auto' or one of "
                        f"{', '.join(BACKEND_FACTORIES)}"
                    )
                order = [backend] + (order[order.index(backend) + 1 :] if backend in order else [])
            if self.fallback and "cpu" not in order:
                order.append("cpu")
            if not self.fallback:
                order = order[:1] if backend not in (None, "auto") else order
            names = self._names_cache[key] = order
        return names

    def _usable(self, name: str, call: OpCall, batch: Batch) -> tuple[Backend | None, str]:
        """The backend if it is available and able to run this call, else ``(None, reason)``."""
        slot = self._slots.get(name)
        av = slot.availability if slot is not None else None
        if av is None or time.monotonic() - slot.checked_at >= AVAILABILITY_TTL_S:  # type: ignore[union-attr]
            av = self.availability(name)
        if not av.ok:
            return None, f"is unavailable: {av.reason}"
        be = self.backend(name)
        why = be.supports(call, batch)
        if why is not None:
            return None, f"cannot run {call.op}: {why}"
        return be, ""

    def _candidates(self, call: OpCall, batch: Batch, names: list[str], named: bool) -> Iterator[Backend]:
        """Backends able to run the call, in the order of ``names``, checked lazily: a later
        backend is probed only when an earlier one failed. A named backend must be able to run it."""
        skipped: list[str] = []
        configured: list[tuple[str, str]] = []  # asked for by the caller, yet unusable
        found = False
        for i, name in enumerate(names):
            be, why = self._usable(name, call, batch)
            if be is None:
                if named and i == 0:
                    raise BackendUnavailable(f"backend {name!r} {why}")
                skipped.append(f"{name} {why}")
                if self.explicit(name):
                    configured.append((name, why))
                continue
            found = True
            self._record_skipped(call, batch, configured, be.name)
            configured = []
            yield be
            if not self.fallback:
                return
        if not found:
            raise BackendUnavailable(f"no backend can run {call.op}: " + "; ".join(skipped))

    # -- placement --------------------------------------------------------------------------

    def _key(self, call: OpCall, batch: Batch) -> str:
        """The cost model's key of this call (:func:`offload.costmodel.op_key`)."""
        kind = _KINDS.get(type(batch), "sequences")
        if call.op == "delta_varint_decode":
            kind = "encoded"
        return op_key(call.op, kind, call.params.get("hash"))

    def _ranked(
        self, call: OpCall, batch: Batch, key: str
    ) -> tuple[list[str], dict[str, float], list[tuple[str, float]] | None]:
        """The chain sorted by predicted time for this batch (``"fastest"``, ``"balanced"``), or
        devices first (``"offload"``), with the predictions and, for ``"balanced"``, the split
        planned over the chain's backends (None when the batch is too small to split or one
        backend alone is predicted to finish first: it then runs as under ``"fastest"``, a
        backend that is down falling back to the next); memoised per size step until the cost
        model changes."""
        n, nbytes = batch.n, batch.nbytes
        ck = (key, size_step(n, nbytes, key.rsplit("/", 1)[-1]), self.costs.generation)
        hit = self._ranked_cache.get(ck)
        if hit is None:
            # The chain's backends are the candidates; the CPU added as the last resort is not.
            names = list(self.order)
            pred = {name: self.costs.predict(self._cost_name(name), key, n, nbytes) for name in names}
            if self.placement == "offload":
                ranked = sorted(names, key=lambda b: b == "cpu")
            else:
                ranked = sorted(names, key=pred.__getitem__)
            plan = None  # no split: the ranked chain runs the batch, as "fastest" would
            if self.placement == "balanced" and n >= 2 * MIN_PART and len(ranked) > 1:
                plan = self._plan(key, n, nbytes, tuple(ranked))
                if len(plan) < 2:
                    plan = None
            if self.fallback and "cpu" not in ranked:
                ranked.append("cpu")
            if len(self._ranked_cache) > 4096:
                self._ranked_cache.clear()
            hit = self._ranked_cache[ck] = (ranked, pred, plan)
        return hit

    def _split(
        self, call: OpCall, batch: Batch, key: str, ranked: list[str], plan: list[tuple[str, float]]
    ) -> list[tuple[str, int, int]]:
        """``"balanced"``: record ranges per backend that the cost model predicts to finish
        together (``plan``, made over the chain's backends: :meth:`_ranked`). A plan naming an
        unusable backend is made again over the usable ones (the fastest alone when splitting
        them does not gain, :data:`SPLIT_GAIN`). The CPU added as the last resort never takes a
        part."""
        n, nbytes = batch.n, batch.nbytes
        if any(self._usable(name, call, batch)[0] is None for name, _ in plan):
            chain = [name for name in ranked if name in self.order]
            usable = tuple(name for name in chain if self._usable(name, call, batch)[0] is not None)
            if len(usable) < 2:
                return [(ranked[0], 0, n)]
            plan = self._plan(key, n, nbytes, usable)
        parts, start = [], 0
        for i, (name, share) in enumerate(plan):
            stop = n if i == len(plan) - 1 else min(n, start + round(share * n))
            if stop > start:
                parts.append((name, start, stop))
            start = stop
        return parts

    def _plan(self, key: str, n: int, nbytes: int, usable: tuple[str, ...]) -> list[tuple[str, float]]:
        """Each backend's fraction of the batch (memoised per size step until the model
        changes: a split is decided in microseconds, not refitted per call)."""
        ck = (key, size_step(n, nbytes, key.rsplit("/", 1)[-1]), usable, self.costs.generation)
        hit = self._plans.get(ck)
        if hit is not None:
            return hit
        width = nbytes / n
        shares = {name: float(n) / len(usable) for name in usable}
        coef: dict[str, tuple[float, float]] = {}
        for _ in range(2):  # a second round reads each backend's cost at its own part's size
            coef = {}
            for name in shares:
                f = self.costs.fit(self._cost_name(name), key, shares[name], shares[name] * width)
                coef[name] = (f.fixed, max(f.per_record + f.per_byte * width, 1e-15))
            shares = _finish_together(n, coef)
        single = min(self.costs.predict(self._cost_name(name), key, n, nbytes) for name in usable)
        finish = max(coef[b][0] + coef[b][1] * k for b, k in shares.items())
        if len(shares) < 2 or finish > SPLIT_GAIN * single:
            plan = [(usable[0], 1.0)]
        else:
            plan = [(b, shares[b] / n) for b in usable if b in shares]
        if len(self._plans) > 4096:
            self._plans.clear()
        self._plans[ck] = plan
        return plan

    # -- running ----------------------------------------------------------------------------

    def run(
        self,
        call: OpCall,
        batch: Batch,
        *,
        backend: BackendChoice | None = None,
        verify: VerifyMode | None = None,
        out: np.ndarray | None = None,
    ) -> Result:
        """Run a validated call on a normalised batch; the whole result, in record order.
        ``out``: a 1-D array of the result's dtype and ``batch.n`` elements the result is
        written into (and returned); for one-value-per-record operators only."""
        verify = self.verify if verify is None else verify
        if verify not in VERIFY_MODES:
            raise ValueError(f"unknown verify mode {verify!r}: expected 'off', 'sample' or 'full'")
        n = batch.n
        if n == 0:
            return empty_result(call.op) if out is None else out
        named = backend not in (None, "auto")
        key = self._key(call, batch)
        pred: dict[str, float] = {}
        if named or self.placement == "ordered":
            names = self._names(backend)
        else:
            names, pred, plan = self._ranked(call, batch, key)
            if plan is not None:
                parts = self._split(call, batch, key, names, plan)
                if len(parts) > 1:
                    return self._run_parts(call, batch, key, parts, names, verify, out, pred)
        t0 = time.perf_counter()
        res, segments = self._run_chain(call, batch, key, names, named, verify, out)
        self._called(call, n, key, segments, pred, time.perf_counter() - t0)
        return res

    def _called(
        self,
        call: OpCall,
        n: int,
        key: str,
        segments: list[tuple[str, int, int]],
        pred: dict[str, float],
        s: float,
    ) -> None:
        with self._lock:
            self._stats.calls += 1
            self._stats.records += n
            self._stats.last_call = {"op": call.op, "records": n, "segments": segments}
            self._decisions.append((call.op, key, n, self.placement, segments, pred, s))

    def _run_parts(
        self,
        call: OpCall,
        batch: Batch,
        key: str,
        parts: list[tuple[str, int, int]],
        ranked: list[str],
        verify: str,
        out: np.ndarray | None,
        pred: dict[str, float],
    ) -> Result:
        """``"balanced"``: each part on its backend at the same time (the CPU's, or else the
        first, on this thread), each with the CPU as its fallback; the parts stitched in order
        (a one-value-per-record result: each part written in place into one output)."""
        t0 = time.perf_counter()
        dtype = operator(call.op).result_dtype
        if out is None and dtype is not None:
            out = np.empty(batch.n, dtype)
        pool = self._parts_pool
        if pool is None:
            pool = self._parts_pool = ThreadPoolExecutor(
                len(BACKEND_FACTORIES), thread_name_prefix="offload-part"
            )
        here = next((i for i, p in enumerate(parts) if p[0] == "cpu"), 0)

        def one(i: int) -> tuple[Result, list[tuple[str, int, int]]]:
            name, lo, hi = parts[i]
            chain = [name] if name == "cpu" or not self.fallback else [name, "cpu"]
            dst = None if out is None else out[lo:hi]
            return self._run_chain(call, batch.slice(lo, hi), key, chain, False, verify, dst)

        futures = {i: pool.submit(one, i) for i in range(len(parts)) if i != here}
        done = {here: one(here)}
        for i, f in futures.items():
            done[i] = f.result()
        segments = [
            (b, parts[i][1] + lo, parts[i][1] + hi) for i in range(len(parts)) for b, lo, hi in done[i][1]
        ]
        width = batch.nbytes / batch.n
        finish = max(
            self.costs.predict(self._cost_name(b), key, hi - lo, (hi - lo) * width) for b, lo, hi in parts
        )
        pred_split = {**pred, "balanced": finish}
        self._called(call, batch.n, key, segments, pred_split, time.perf_counter() - t0)
        if out is not None:
            return out
        return concat_results(call.op, [done[i][0] for i in range(len(parts))])

    def _run_chain(
        self,
        call: OpCall,
        batch: Batch,
        key: str,
        names: list[str],
        named: bool,
        verify: str,
        out: np.ndarray | None,
    ) -> tuple[Result, list[tuple[str, int, int]]]:
        """The batch on the first usable backend of ``names``; what a failing backend did not
        complete on the next ones. The result and its ``(backend, start, stop)`` segments."""
        n = batch.n
        chain = _Lookahead(self._candidates(call, batch, names, named))
        parts: list[Result] = []
        segments: list[tuple[str, int, int]] = []
        start = 0
        failures: list[str] = []
        for be in chain:
            sub = batch if start == 0 else batch.slice(start, n)
            dst = None if out is None else out[start:]
            t0 = time.perf_counter()
            try:
                res = _run_checked(be, call, sub, dst)
            except BackendError as e:
                done = _vouched(call.op, e, sub.n)
                if done and e.partial is not None:
                    part = _head(call.op, e.partial, done)
                    if verify != "off":  # verify what came back against its own records only
                        self._check(call, sub.slice(0, done), part, be.name, verify, base=start)
                    if dst is not None:
                        dst[:done] = part
                    parts.append(part)
                    segments.append((be.name, start, start + done))
                    self._account(be.name, done, time.perf_counter() - t0, sub)
                nxt = chain.peek_name() if self.fallback and start + done < n else None
                self._record_fallback(call, be.name, nxt, e.cause, str(e), start + done, n - start - done)
                if e.cause == "device_lost":
                    self._lost(be.name, str(e))
                failures.append(f"{be.name}: {e}")
                start += done
                if not self.fallback:
                    raise
                if start == n:  # every record came back before the fault was flagged
                    break
                if nxt is None:
                    raise
                continue
            except (BitExactError, KeyboardInterrupt, ValueError, TypeError):
                # Bad input (a malformed varint stream...) is the caller's error on every backend:
                # it is raised as documented, never retried elsewhere.
                raise
            except Exception as e:  # a crashing backend is a failing backend: nothing it did counts
                nxt = chain.peek_name() if self.fallback else None
                self._record_fallback(
                    call, be.name, nxt, "exception", f"{type(e).__name__}: {e}", start, n - start
                )
                failures.append(f"{be.name}: {type(e).__name__}: {e}")
                if not self.fallback or nxt is None:
                    raise BackendError(
                        f"backend {be.name!r} failed on {call.describe()}: {type(e).__name__}: {e}",
                        cause="exception",
                    ) from e
                continue
            seconds = time.perf_counter() - t0
            self._learn(be, key, sub, seconds)
            if verify != "off":
                self._check(call, sub, res, be.name, verify, base=start)
            self._account(be.name, sub.n, seconds, sub)
            if start == 0:  # the common case: one backend ran the whole batch
                return res, [(be.name, 0, n)]
            parts.append(res)
            segments.append((be.name, start, n))
            start = n
            break
        if start != n:  # pragma: no cover - the loop raises before this
            raise BackendError("; ".join(failures), cause="exhausted")
        return (out if out is not None else concat_results(call.op, parts)), segments

    def _cost_name(self, name: str) -> str:
        """The cost model's name of a backend: its name, or for an instance the caller gave (its
        configuration is the caller's own) ``name@<instance>``, learnt apart and never saved."""
        slot = self._slots.get(name)
        if slot is not None and slot.given:
            return f"{name}@{id(slot.backend):x}"
        return name

    def _learn(self, be: Backend, key: str, batch: Batch, seconds: float) -> None:
        """One more observation for the cost model; a backend's first run of an operator key
        (compilation, device start-up) teaches nothing about the next ones."""
        wk = (be.name, key)
        if wk not in self._warm:
            self._warm.add(wk)
            return
        name = self._cost_name(be.name)
        self.costs.observe(name, key, batch.n, batch.nbytes, seconds, persist="@" not in name)

    def _account(self, name: str, records: int, seconds: float, batch: Batch) -> None:
        """Per-backend counters (the call itself is counted once, by :meth:`_called`)."""
        with self._lock:
            s = self._stats.by_backend.get(name)
            if s is None:
                s = self._stats.by_backend[name] = {"records": 0, "batches": 0, "seconds": 0.0, "bytes": 0}
            s["records"] += records
            s["batches"] += 1
            s["seconds"] += seconds
            s["bytes"] += batch.nbytes

    def _record_skipped(self, call: OpCall, batch: Batch, skipped: list[tuple[str, str]], to: str) -> None:
        """A backend the caller configured could not run the call: a fallback record per call
        (cause ``"unavailable"``, or ``"unsupported"`` when it is up but lacks the operator or
        the call's size), and one warning per unavailable backend per Runtime."""
        for name, why in skipped:
            message = f"backend {name!r} {why}"
            cause = "unavailable" if why.startswith("is unavailable") else "unsupported"
            self._record_fallback(call, name, to, cause, message, 0, batch.n)
            if cause == "unavailable" and name not in self._warned:
                self._warned.add(name)
                warnings.warn(f"offload: {message}; running on {to}", RuntimeWarning, stacklevel=2)

    def _record_fallback(
        self, call: OpCall, frm: str, to: str | None, cause: str, message: str, at: int, redone: int
    ) -> None:
        with self._lock:
            self._stats.fallbacks.append(
                {
                    "op": call.op,
                    "from": frm,
                    "to": to,
                    "cause": cause,
                    "message": message,
                    "at_record": at,
                    "records_redone": redone,
                    "time": time.time(),
                }
            )

    # -- verification -----------------------------------------------------------------------

    def _check(self, call: OpCall, batch: Batch, res: Result, name: str, verify: str, base: int = 0) -> None:
        if verify == "off" or batch.n == 0:
            return
        n = _result_len(call.op, res)
        if verify == "full" and name != "cpu":
            ref = self.backend("cpu").run(call, batch)
            bad = _first_difference(call.op, ref, res, n)
            idx = [] if bad is None else [bad]
        elif verify == "full":
            idx = list(range(n))
        else:
            k = min(self.sample_size, n)
            idx = sorted(self._rng.sample(range(n), k))
        for i in idx:
            expected = golden_result(call, batch.record(i))
            got = result_element(call.op, res, i)
            if not _equal(expected, got):
                self._mismatch(call, batch, name, i, base, expected, got)
        with self._lock:
            self._stats.verified_records += n if verify == "full" else len(idx)

    def _mismatch(
        self, call: OpCall, batch: Batch, name: str, i: int, base: int, expected: Any, got: Any
    ) -> None:
        record = batch.record(i)
        with self._lock:
            self._stats.mismatches.append(
                {
                    "op": call.op,
                    "backend": name,
                    "index": base + i,
                    "record": record,
                    "expected": expected,
                    "got": got,
                }
            )
        raise BitExactError(
            f"{name} result differs from the golden model for {call.describe()} at index "
            f"{base + i}: record {record!r}, expected {_fmt(expected)}, got {_fmt(got)}",
            backend=name,
            op=call.op,
            index=base + i,
            record=record,
            expected=expected,
            got=got,
        )

    # -- stats and lifetime -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Which backend ran what, fallbacks and their causes, mismatches, throughput."""
        with self._lock:
            s = self._stats
            by = {}
            for k, v in s.by_backend.items():
                d = dict(v)
                d["records_per_s"] = v["records"] / v["seconds"] if v["seconds"] else 0.0
                by[k] = d
            return {
                "calls": s.calls,
                "records": s.records,
                "by_backend": by,
                "fallbacks": list(s.fallbacks),
                "mismatches": list(s.mismatches),
                "verified_records": s.verified_records,
                "last_call": dict(s.last_call),
                "placement": self.placement,
                "decisions": [_decision(*d) for d in self._decisions],
                "cost_model": self.costs.summary(),
            }

    def last_call(self) -> dict[str, Any]:
        """The last call's operator, record count and ``segments`` (``(backend, start, stop)``):
        what :meth:`stats` holds under ``"last_call"``, without copying the rest."""
        with self._lock:
            return dict(self._stats.last_call)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = _Stats()
            self._decisions.clear()

    def close(self) -> None:
        if self._parts_pool is not None:
            self._parts_pool.shutdown(wait=True)
            self._parts_pool = None
        for slot in self._slots.values():
            if slot.backend is not None:
                try:
                    slot.backend.close()
                finally:
                    slot.backend = None
                    slot.availability = None

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operators ----------------------------------------------------------------------------

    def call(
        self,
        op: OperatorName | str,
        values: Any,
        /,
        *,
        backend: BackendChoice | None = None,
        verify: VerifyMode | None = None,
        nulls: Any = "error",
        output: Output = "numpy",
        out: np.ndarray | None = None,
        **params: Any,
    ) -> Any:
        """Run any registered operator: ``rt.call("xxh64", keys, seed=7)``. ``values`` is the
        operator's batch or column (``delta_varint_decode``: the ``(offsets, data)`` pair or a
        pyarrow binary column); the result is shaped like a numpy input for one-value-per-record
        operators, else the operator's pair. ``nulls``: ``"error"`` (refuse them), ``"null"``
        (null results) or a replacement value; ``output``: ``"numpy"`` or ``"arrow"``
        (docs/operators.md, "Nulls and Arrow output"); ``out``: an array the result is written
        into and returned (numpy's convention; one-value-per-record operators, numpy output)."""
        entry = operator(op)
        if output != "numpy":
            _columnar.check_output(output)
        if out is not None:
            _check_out(entry, out, output, nulls)
        prep = _columnar.prepare(entry, values, nulls, output)
        if entry.inputs == "numbers":
            params["dtype"] = prep.batch.values.dtype  # type: ignore[union-attr]
        call = make_call(op, **params)
        if out is not None:
            return self._call_into(entry, prep, call, out, backend, verify)
        res = self.run(call, prep.batch, backend=backend, verify=verify)
        return _columnar.finish(entry, prep, res, output)

    def _call_into(
        self,
        entry: Any,
        prep: _columnar.Prepared,
        call: OpCall,
        out: np.ndarray,
        backend: BackendChoice | None,
        verify: VerifyMode | None,
    ) -> np.ndarray:
        """``out=``: the backends write into the caller's array when it is C-contiguous and
        shares no memory with the input (numpy's rule: overlapping input is read first, through
        a temporary) and every row is its own record; otherwise the result is copied there."""
        if out.shape != prep.shape:
            raise ValueError(f"out has shape {out.shape}, the result of {entry.name} has shape {prep.shape}")
        batch = prep.batch
        if prep.take is None and prep.fill is None and out.flags.c_contiguous and not _overlaps(batch, out):
            self.run(call, batch, backend=backend, verify=verify, out=out.reshape(-1))
            return out
        res = self.run(call, batch, backend=backend, verify=verify)
        out[...] = _columnar.finish(entry, prep, res, "numpy")
        return out

    # One typed method per built-in operator (tests check they match the registry's parameters).

    def xxh32(
        self,
        values: Any,
        seed: int = 0,
        *,
        backend: BackendChoice | None = None,
        verify: VerifyMode | None = None,
        nulls: Any = "error",
        output: Output = "numpy",
        out: np.ndarray | None = None,
    ) -> Any:
        return self.call(
            "xxh32", values, seed=seed, backend=backend, verify=verify, nulls=nulls, output=output, out=out
        )

    def xxh64(
        self,
        values: Any,
        seed: int = 0,
        *,
        backend: BackendChoice | None = None,
        verify: VerifyMode | None = None,
        nulls: Any = "error",
        output: Output = "numpy",
        out: np.ndarray | None = None,
    ) -> Any:
        return self.call(
            "xxh64", values, seed=seed, backend=backend, verify=verify, nulls=nulls, output=output, out=out
        )

    def hash_bucket(
        self,
        values: Any,
        num_buckets: int,
        seed: int | None = None,
        method: HashBucketMethod = "mod",
        hash: HashName = "xxh64",
        *,
        backend: BackendChoice | None = None,
        verify: VerifyMode | None = None,
        nulls: Any = "error",
        output: Output = "numpy",
        out: np.ndarray | None = None,
    ) -> Any:
        return self.call(
            "hash_bucket",
            values,
            num_buckets=num_buckets,
            seed=seed,
            method=method,
            hash=hash,
            backend=backend,
            verify=verify,
            nulls=nulls,
            output=output,
            out=out,
        )

    def fid(
        self,
        values: Any,
        slot: int,
        version: int = 2,
        seed: int | None = None,
        hash: HashName = "xxh64",
        *,
        backend: BackendChoice | None = None,
        verify: VerifyMode | None = None,
        nulls: Any = "error",
        output: Output = "numpy",
        out: np.ndarray | None = None,
    ) -> Any:
        return self.call(
            "fid",
            values,
            slot=slot,
            version=version,
            seed=seed,
            hash=hash,
            backend=backend,
            verify=verify,
            nulls=nulls,
            output=output,
            out=out,
        )

    def farmhash64(
        self,
        values: Any,
        *,
        backend: BackendChoice | None = None,
        verify: VerifyMode | None = None,
        nulls: Any = "error",
        output: Output = "numpy",
        out: np.ndarray | None = None,
    ) -> Any:
        return self.call(
            "farmhash64", values, backend=backend, verify=verify, nulls=nulls, output=output, out=out
        )

    def cityhash64(
        self,
        values: Any,
        seed: int | None = None,
        *,
        backend: BackendChoice | None = None,
        verify: VerifyMode | None = None,
        nulls: Any = "error",
        output: Output = "numpy",
        out: np.ndarray | None = None,
    ) -> Any:
        return self.call(
            "cityhash64",
            values,
            seed=seed,
            backend=backend,
            verify=verify,
            nulls=nulls,
            output=output,
            out=out,
        )

    def murmur3_32(
        self,
        values: Any,
        seed: int = 0,
        tail: Murmur3Tail = "standard",
        *,
        backend: BackendChoice | None = None,
        verify: VerifyMode | None = None,
        nulls: Any = "error",
        output: Output = "numpy",
        out: np.ndarray | None = None,
    ) -> Any:
        return self.call(
            "murmur3_32",
            values,
            seed=seed,
            tail=tail,
            backend=backend,
            verify=verify,
            nulls=nulls,
            output=output,
            out=out,
        )

    def sigrid_hash(
        self,
        values: Any,
        salt: int,
        max_value: int,
        *,
        backend: BackendChoice | None = None,
        verify: VerifyMode | None = None,
        nulls: Any = "error",
        output: Output = "numpy",
        out: np.ndarray | None = None,
    ) -> Any:
        params = {"salt": salt, "max_value": max_value}
        return self.call(
            "sigrid_hash",
            values,
            backend=backend,
            verify=verify,
            nulls=nulls,
            output=output,
            out=out,
            **params,
        )

    def decimal_hash_bucket(
        self,
        values: Any,
        num_buckets: int,
        *,
        backend: BackendChoice | None = None,
        verify: VerifyMode | None = None,
        nulls: Any = "error",
        output: Output = "numpy",
        out: np.ndarray | None = None,
    ) -> Any:
        return self.call(
            "decimal_hash_bucket",
            values,
            backend=backend,
            verify=verify,
            nulls=nulls,
            output=output,
            out=out,
            num_buckets=num_buckets,
        )

    def bucketize(
        self,
        x: Any,
        boundaries: Any,
        right: bool = True,
        *,
        backend: BackendChoice | None = None,
        verify: VerifyMode | None = None,
        nulls: Any = "error",
        output: Output = "numpy",
        out: np.ndarray | None = None,
    ) -> Any:
        return self.call(
            "bucketize",
            x,
            boundaries=boundaries,
            right=right,
            backend=backend,
            verify=verify,
            nulls=nulls,
            output=output,
            out=out,
        )

    def delta_varint_encode(
        self,
        sequences: Any,
        *,
        backend: BackendChoice | None = None,
        verify: VerifyMode | None = None,
        nulls: Any = "error",
        output: Output = "numpy",
    ) -> Any:
        return self.call(
            "delta_varint_encode", sequences, backend=backend, verify=verify, nulls=nulls, output=output
        )

    def delta_varint_decode(
        self,
        offsets: Any,
        data: Any = None,
        *,
        backend: BackendChoice | None = None,
        verify: VerifyMode | None = None,
        nulls: Any = "error",
        output: Output = "numpy",
    ) -> Any:
        """``(offsets, data)``, or a pyarrow binary column alone (the encoder's arrow output)."""
        values = offsets if data is None and is_arrow(offsets) else (offsets, data)
        return self.call(
            "delta_varint_decode", values, backend=backend, verify=verify, nulls=nulls, output=output
        )


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


_KINDS: dict[type, str] = {FixedKeys: "fixed", VarRecords: "var", Numbers: "numbers", Sequences: "sequences"}


def _finish_together(n: int, coef: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Records per backend so that ``fixed + per_record * share`` is the same for all, the
    shares summing to ``n``; a backend whose share falls under :data:`MIN_PART` is dropped."""
    active = dict(coef)
    while active:
        t = (n + sum(a / b for a, b in active.values())) / sum(1.0 / b for _, b in active.values())
        shares = {k: (t - a) / b for k, (a, b) in active.items()}
        small = [k for k, v in shares.items() if v < MIN_PART]
        if not small or len(active) == 1:
            return shares if len(active) > 1 else {next(iter(active)): float(n)}
        del active[min(small, key=shares.__getitem__)]
    return {}


def _check_out(entry: Any, out: Any, output: str, nulls: Any) -> None:
    """The exact errors of a bad ``out=`` (before anything runs)."""
    if not isinstance(out, np.ndarray) or isinstance(out, np.ma.MaskedArray):
        raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
    if entry.result_dtype is None:
        raise ValueError(f"out= is for operators with one result per record: {entry.name} returns a pair")
    if output != "numpy":
        raise ValueError('out= writes numpy results: it cannot be used with output="arrow"')
    if isinstance(nulls, str) and nulls == "null":
        raise ValueError('out= cannot hold nulls: use nulls="error" or a replacement value')
    want = np.dtype(entry.result_dtype)
    if out.dtype != want:
        raise TypeError(f"out has dtype {out.dtype}, {entry.name} returns {want}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")


def _overlaps(batch: Batch, out: np.ndarray) -> bool:
    if isinstance(batch, FixedKeys):
        return bool(np.may_share_memory(batch.keys, out))
    if isinstance(batch, Numbers):
        return bool(np.may_share_memory(batch.values, out))
    if isinstance(batch, VarRecords):
        return any(
            np.may_share_memory(c.data, out) or np.may_share_memory(c.offsets, out) for c in batch.chunks
        )
    return True


def _decision(
    op: str,
    key: str,
    n: int,
    placement: str,
    segments: list[tuple[str, int, int]],
    pred: dict[str, float],
    s: float,
) -> dict[str, Any]:
    """One placement decision as :meth:`Runtime.stats` shows it. ``predicted_s``: each
    candidate's predicted run (what the cost model learns: the backend's own time);
    ``measured_s``: the call's time in the runtime (its runs, any fallback, verification and, for
    a split, the parts' threads), so at a few thousand records it exceeds the prediction."""
    chosen = sorted({b for b, _, _ in segments})
    whole = segments[0][0] if len(segments) == 1 else None
    return {
        "op": op,
        "key": key,
        "records": n,
        "placement": placement,
        "segments": list(segments),
        "predicted_s": dict(pred),
        "predicted_chosen_s": pred.get("balanced" if len(chosen) > 1 else whole or "", None),
        "measured_s": s,
    }


class _Lookahead:
    """An iterator of backends that can tell the next one's name (for fallback records)."""

    def __init__(self, it: Iterator[Backend]) -> None:
        self._it = it
        self._next: Backend | None = None
        self._has_next = False

    def __iter__(self) -> _Lookahead:
        return self

    def __next__(self) -> Backend:
        if self._has_next:
            self._has_next = False
            assert self._next is not None
            return self._next
        return next(self._it)

    def peek_name(self) -> str | None:
        if not self._has_next:
            try:
                self._next = next(self._it)
            except (StopIteration, BackendUnavailable):
                return None
            self._has_next = True
        return self._next.name if self._next is not None else None


def _run_checked(be: Backend, call: OpCall, batch: Batch, out: np.ndarray | None = None) -> Result:
    """``be.run`` (``be.run_into`` with ``out``), with a result of the wrong length turned into
    that backend's failure (a backend that loses records without saying so must not hand the
    caller a short array)."""
    if out is not None:
        be.run_into(call, batch, out)
        return out
    res = be.run(call, batch)
    got = _result_len(call.op, res)
    if got != batch.n:
        raise BackendError(
            f"{be.name}: returned {got} results for {batch.n} records of {call.describe()}",
            cause="result_length",
        )
    return res


def _vouched(op: str, e: BackendError, n: int) -> int:
    """How many leading records a failed backend's ``partial`` really holds (at most ``n``)."""
    if e.partial is None:
        return 0
    return max(0, min(int(e.completed), n, _result_len(op, e.partial)))


def _result_len(op: str, res: Result) -> int:
    if isinstance(res, tuple):
        return int(res[0].shape[0]) - 1
    return int(res.shape[0])


def _head(op: str, res: Result, k: int) -> Result:
    if isinstance(res, tuple):
        o, d = res
        return o[: k + 1], d
    return res[:k]


def result_element(op: str, res: Result, i: int) -> Any:
    """Record ``i``'s result as the golden model returns it (int, bytes or list of ints)."""
    if isinstance(res, tuple):
        o, d = res
        seg = d[int(o[i]) : int(o[i + 1])]
        return seg.tobytes() if operator(op).result == "encoded" else seg.tolist()
    return res[i].item()


def _equal(a: Any, b: Any) -> bool:
    return bool(a == b)


def _fmt(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v} (0x{v & ((1 << 64) - 1):x})"
    return repr(v)


def _first_difference(op: str, a: Result, b: Result, n: int) -> int | None:
    if isinstance(a, tuple) and isinstance(b, tuple):
        (oa, da), (ob, db) = a, b
        oa0, ob0 = oa - oa[0], ob - ob[0]
        if np.array_equal(oa0, ob0) and np.array_equal(
            da[int(oa[0]) : int(oa[-1])], db[int(ob[0]) : int(ob[-1])]
        ):
            return None
        for i in range(n):  # segments compared one by one only on the slow path
            if result_element(op, a, i) != result_element(op, b, i):
                return i
        return None
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.shape != b_arr.shape:
        return int(min(a_arr.shape[0], b_arr.shape[0]))
    diff = np.flatnonzero(a_arr != b_arr)
    return int(diff[0]) if diff.size else None


_DEFAULT: Runtime | None = None
_DEFAULT_LOCK = threading.Lock()


def _env_verify() -> VerifyMode:
    mode = os.environ.get("OFFLOAD_VERIFY", "off")
    if mode not in VERIFY_MODES:
        raise ValueError(f"OFFLOAD_VERIFY={mode!r}: expected 'off', 'sample' or 'full'")
    return mode  # type: ignore[return-value]


def _env_placement() -> Placement | None:
    mode = os.environ.get("OFFLOAD_PLACEMENT")
    if mode is None:
        return None
    if mode not in PLACEMENTS:
        raise ValueError(
            f"OFFLOAD_PLACEMENT={mode!r}: expected 'fastest', 'balanced', 'offload' or 'ordered'"
        )
    return mode  # type: ignore[return-value]


def default_runtime() -> Runtime:
    """The process-wide Runtime behind ``offload.xxh64(...)`` and friends (auto chain;
    ``OFFLOAD_VERIFY`` and ``OFFLOAD_PLACEMENT`` set its verification and placement)."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = Runtime(verify=_env_verify(), placement=_env_placement())
    return _DEFAULT
