"""Deadlines that scale with the work: how long one device call may take before it is declared hung.

A device call (one DMA chunk of the ``fpga`` backend, one REQUEST of the ``smartnic`` backend)
that never completes is found by its deadline. A fixed deadline cannot serve both ends: long
enough for the largest chunk on the slowest device, it makes every hang of an ordinary batch cost
tens of seconds. :class:`DeadlineEstimator` gives each call the time it is expected to take,
times a margin, plus a fixed latency, and never less than a floor::

    deadline = max(floor_s, latency_s + margin * max(records * s_per_record, bytes * s_per_byte))

``s_per_record`` and ``s_per_byte`` are measured: each completed call reports its records, bytes
and seconds (:meth:`DeadlineEstimator.observe`). A call's whole time is charged to each measure in
turn (so the larger of the two products is an upper bound for a call shaped like the ones seen),
and a call smaller than ``min_records``/``min_bytes`` is charged as if it were that large (its
time is mostly latency, which says nothing about the rate). An estimate moves up at once to a
slower observation and down only by ``decay`` of the difference per observation: a device that
slows down gets longer deadlines at once, a burst of fast calls shortens them slowly. Before the
first observation the conservative prior applies: ``prior_fixed_s + max(records *
prior_record_s, bytes * prior_byte_s)``, never less than the floor.

One estimator per backend instance; thread-safe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["DeadlineEstimator"]


@dataclass(frozen=True)
class _Costs:
    record_s: float
    byte_s: float


class DeadlineEstimator:
    """Per-call deadlines from measured rates (see the module docs for the rule)."""

    def __init__(
        self,
        *,
        prior_fixed_s: float,
        prior_byte_s: float,
        prior_record_s: float = 0.0,
        margin: float = 4.0,
        latency_s: float = 0.05,
        floor_s: float = 1.0,
        min_records: int = 1024,
        min_bytes: int = 64 << 10,
        decay: float = 0.25,
    ) -> None:
        for name, v in (
            ("prior_fixed_s", prior_fixed_s),
            ("prior_byte_s", prior_byte_s),
            ("prior_record_s", prior_record_s),
            ("latency_s", latency_s),
        ):
            if not v >= 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if not margin >= 1 or not floor_s > 0 or not 0 < decay <= 1:
            raise ValueError(
                f"margin must be >= 1, floor_s > 0 and decay in (0, 1], got {margin}, {floor_s}, {decay}"
            )
        if min_records < 1 or min_bytes < 1:
            raise ValueError("min_records and min_bytes must be >= 1")
        self.prior_fixed_s = float(prior_fixed_s)
        self.prior = _Costs(float(prior_record_s), float(prior_byte_s))
        self.margin = float(margin)
        self.latency_s = float(latency_s)
        self.floor_s = float(floor_s)
        self.min_records = int(min_records)
        self.min_bytes = int(min_bytes)
        self.decay = float(decay)
        self.costs: _Costs | None = None  # None until the first observation
        self.observations = 0
        self._lock = threading.Lock()

    def observe(self, records: int, nbytes: int, seconds: float) -> None:
        """A call of ``records`` records and ``nbytes`` bytes completed in ``seconds``."""
        if records < 0 or nbytes < 0 or not seconds >= 0:
            raise ValueError(
                f"an observation needs records, bytes >= 0 and seconds >= 0, got "
                f"{records}, {nbytes}, {seconds}"
            )
        seen = _Costs(seconds / max(records, self.min_records), seconds / max(nbytes, self.min_bytes))
        with self._lock:
            old = self.costs
            self.costs = (
                seen
                if old is None
                else _Costs(self._move(old.record_s, seen.record_s), self._move(old.byte_s, seen.byte_s))
            )
            self.observations += 1

    def _move(self, est: float, seen: float) -> float:
        return seen if seen >= est else est + self.decay * (seen - est)

    def expected(self, records: int, nbytes: int) -> float | None:
        """The time a call of this size is expected to take (None before any observation)."""
        costs = self.costs
        if costs is None:
            return None
        return max(records * costs.record_s, nbytes * costs.byte_s)

    def deadline(self, records: int, nbytes: int) -> float:
        """Seconds a call of ``records`` records and ``nbytes`` bytes may take."""
        work = self.expected(records, nbytes)
        if work is None:
            p = self.prior
            return max(self.floor_s, self.prior_fixed_s + max(records * p.record_s, nbytes * p.byte_s))
        return max(self.floor_s, self.latency_s + self.margin * work)

    def explain(self, records: int, nbytes: int) -> str:
        """How :meth:`deadline` came about, for error messages."""
        work = self.expected(records, nbytes)
        if work is None:
            return f"the prior deadline for {records} records, {nbytes} bytes (nothing measured yet)"
        return (
            f"the deadline for {records} records, {nbytes} bytes: {self.margin:g} x their "
            f"expected {work:.3g} s + {self.latency_s:g} s, at least {self.floor_s:g} s"
        )
