"""The Backend interface every execution implements (cpu, sim, fpga, smartnic), and its errors.

A backend receives a validated :class:`~offload.ops.OpCall` and a normalised batch
(:mod:`offload.batch`) and returns the whole result:

* ``xxh32``/``xxh64``/``hash_bucket``/``fid``/``bucketize``: a 1-D array of
  :func:`offload.ops.result_dtype` with ``batch.n`` elements (the runtime restores the shape);
* ``delta_varint_encode``: ``(offsets int64[n+1], data uint8[])``;
* ``delta_varint_decode``: ``(value_offsets int64[n+1], values int64[])``.

A backend that fails part-way raises :class:`BackendError` with ``completed`` set to the number of
leading records whose results it can vouch for and ``partial`` holding them; the runtime recomputes
the rest on the next backend. Nothing else is expected to survive a failure.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from offload.batch import FixedKeys, Numbers, Sequences, VarRecords
from offload.ops import OpCall

__all__ = [
    "Backend",
    "Capabilities",
    "Availability",
    "BackendError",
    "BackendUnavailable",
    "BitExactError",
    "Batch",
    "Result",
    "concat_results",
    "empty_result",
]

Batch = FixedKeys | VarRecords | Numbers | Sequences
Result = np.ndarray | tuple[np.ndarray, np.ndarray]


class BackendUnavailable(RuntimeError):
    """A named backend cannot run here; the message says why."""


class BackendError(RuntimeError):
    """A backend failed while running a batch.

    ``completed``: leading records whose results are in ``partial`` (0 when none can be trusted).
    ``cause``: a short machine-readable cause (``"timeout"``, ``"device_lost"``, ``"trailer"``...).
    """

    def __init__(
        self, message: str, *, cause: str = "error", completed: int = 0, partial: Result | None = None
    ) -> None:
        super().__init__(message)
        self.cause = cause
        self.completed = completed
        self.partial = partial


class BitExactError(AssertionError):
    """A backend's result differs from the golden model."""

    def __init__(
        self, message: str, *, backend: str, op: str, index: int, record: Any, expected: Any, got: Any
    ) -> None:
        super().__init__(message)
        self.backend = backend
        self.op = op
        self.index = index
        self.record = record
        self.expected = expected
        self.got = got


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str


@dataclass(frozen=True)
class Capabilities:
    """What a backend can run. ``None`` means no limit."""

    ops: frozenset[str]
    max_boundaries: int | None = None
    max_record_bytes: int | None = None
    batch_kinds: frozenset[str] = field(
        default_factory=lambda: frozenset({"fixed", "var", "numbers", "sequences", "encoded"})
    )


def batch_kind(batch: Batch, op: str) -> str:
    from offload.ops import operator

    if operator(op).inputs == "encoded":
        return "encoded"
    if isinstance(batch, FixedKeys):
        return "fixed"
    if isinstance(batch, VarRecords):
        return "var"
    if isinstance(batch, Numbers):
        return "numbers"
    return "sequences"


class Backend(abc.ABC):
    """One execution of the operator set."""

    name: ClassVar[str]

    @abc.abstractmethod
    def availability(self) -> Availability:
        """Whether the backend can run now, and if not, why (never raises)."""

    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    def supports(self, call: OpCall, batch: Batch) -> str | None:
        """``None`` when this backend can run ``call`` on ``batch``, else the reason it cannot."""
        caps = self.capabilities()
        if call.op not in caps.ops:
            return f"{self.name} does not implement {call.op}"
        kind = batch_kind(batch, call.op)
        if kind not in caps.batch_kinds:
            return f"{self.name} does not take {kind} batches for {call.op}"
        if (
            caps.max_boundaries is not None
            and call.params.get("boundaries") is not None
            and len(call.boundaries) > caps.max_boundaries
        ):
            return (
                f"{self.name} holds at most {caps.max_boundaries} boundaries, "
                f"the call has {len(call.boundaries)}"
            )
        return None

    @abc.abstractmethod
    def run(self, call: OpCall, batch: Batch) -> Result:
        """Run the whole batch; raise :class:`BackendError` on failure (see module docs)."""

    def run_into(self, call: OpCall, batch: Batch, out: np.ndarray) -> None:
        """Run the whole batch into ``out`` (1-D, the result's dtype, ``batch.n`` elements; for
        one-value-per-record operators). This default copies :meth:`run`'s result; a backend
        that can write there directly (the CPU) overrides it. Failures as :meth:`run`."""
        res = self.run(call, batch)
        if not isinstance(res, np.ndarray) or res.shape != (batch.n,):
            got = res[0].shape[0] - 1 if isinstance(res, tuple) else getattr(res, "shape", None)
            raise BackendError(
                f"{self.name}: returned {got} results for {batch.n} records of {call.describe()}",
                cause="result_length",
            )
        out[...] = res

    def cost_breaks(self, kind: str) -> tuple[int, ...]:
        """Batch sizes (records) of ``kind`` batches (``"fixed"``, ``"var"``, ``"numbers"``...)
        at which this backend changes how it runs them, so that its cost per record jumps (the
        CPU going parallel): the cost model fits each side apart. None by default."""
        return ()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release devices, processes and connections. Idempotent."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_PAIR_DTYPES = {"encoded": np.uint8, "sequences": np.int64}


def empty_result(op: str) -> Result:
    from offload.ops import operator

    entry = operator(op)
    if entry.result_dtype is None:
        return np.zeros(1, np.int64), np.zeros(0, _PAIR_DTYPES[entry.result])
    return np.zeros(0, entry.result_dtype)


def concat_results(op: str, parts: list[Result]) -> Result:
    """Join the results of consecutive record ranges (as produced by fallback)."""
    from offload.ops import operator

    parts = [p for p in parts if p is not None]
    entry = operator(op)
    if entry.result_dtype is None:
        if len(parts) == 1:
            return parts[0]
        offs = [np.zeros(1, np.int64)]
        datas = []
        base = 0
        for o, d in parts:
            offs.append(o[1:] - o[0] + base)
            datas.append(d[int(o[0]) : int(o[-1])])
            base += int(o[-1]) - int(o[0])
        dt = _PAIR_DTYPES[entry.result]
        return np.concatenate(offs), (np.concatenate(datas) if datas else np.zeros(0, dt))
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts)
