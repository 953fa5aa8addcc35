"""Fault injection for the simulated devices (the sim backend and the simulated PYNQ device).

A :class:`Fault` describes one misbehaviour of the device, applied to the transfer that contains
record ``at_record`` of a batch (counted from the start of the backend's batch):

* ``"stall"``       — the engine stops moving data (output never ready): the host's timeout fires;
* ``"drop_tlast"``  — the host's last input word goes out without TLAST (engine: MISSING_TLAST);
* ``"short_result"``— the output transfer loses its last words (wrong result length);
* ``"flip_bit"``    — one result bit is flipped in the returned data (only verify can see it);
* ``"disappear"``   — the device vanishes before the transfer (device lost, e.g. unplugged).

``times`` bounds how often it fires (default once), so a test can also show recovery.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["Fault", "FAULT_KINDS", "firing", "damage"]

FAULT_KINDS = ("stall", "drop_tlast", "short_result", "flip_bit", "disappear")


@dataclass
class Fault:
    kind: str
    at_record: int = 0
    bit: int = 0
    times: int = 1

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}: expected one of {', '.join(FAULT_KINDS)}")
        if self.at_record < 0 or not 0 <= self.bit < 64 or self.times < 0:
            raise ValueError("at_record and times must be >= 0 and bit in [0, 64)")

    def fires(self, start: int, stop: int) -> bool:
        """Whether this fault hits the transfer of records [start, stop); consumes one firing."""
        if self.times and start <= self.at_record < max(stop, start + 1):
            self.times -= 1
            return True
        return False


def firing(faults: Iterable[Fault], kind: str, start: int, stop: int) -> Fault | None:
    """The first fault of ``kind`` that hits the transfer of records [start, stop) (one firing
    of it is consumed), or None."""
    for f in faults:
        if f.kind == kind and f.fires(start, stop):
            return f
    return None


def damage(out: np.ndarray, start: int, short_result: Fault | None, flip_bit: Fault | None) -> np.ndarray:
    """A transfer's output words as these faults leave them (the transfer's first record is
    ``start``): ``short_result`` loses the last 3 words, ``flip_bit`` flips a bit of its record's
    result word (never of the trailer)."""
    if short_result is not None:
        out = out[: max(0, out.shape[0] - 3)]
    if flip_bit is not None and out.shape[0] > 1:
        out = out.copy()
        out[min(max(flip_bit.at_record - start, 0), out.shape[0] - 2)] ^= np.uint64(1 << flip_bit.bit)
    return out
