"""The engine's operator decode, derived from the operator registry (:data:`offload.ops.REGISTRY`).

Which op codes the engine runs, which of its cores each one goes through, the input formats each
takes and the parameter values it refuses with ``BAD_PARAM`` are read from the registry entries
when an engine is built (:class:`OpDecode`), as Amaranth's ``lib/crc.py`` derives its hardware
tables from the model: the entry's :class:`~offload.ops.WireForm` gives the op codes and the
selector value each stands for, its ``inputs`` the formats (:data:`FORMATS_OF`), its ``hw_core``
the cores (:data:`CORE_PATHS`), and its parameter checks (``Param.check``, or
``WireForm.engine_error`` where the engine refuses only that, as the reference engine does) the
register ranges, found by evaluating the checks.

An operator without a wire form runs on the host only and is ignored here. An operator with op
codes but no hardware core, or a core the engine has no path for, fails when the engine is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from operator import or_
from typing import Any

from amaranth.hdl import Const, Mux, Value

from offload.engine_map import OP_CODES
from offload.ops import REGISTRY, Operator, Param

__all__ = ["OpDecode", "RangeCheck", "CORE_PATHS", "FORMATS_OF", "op_in", "any_of"]

#: The lane core that computes each hash ``hash_bucket`` and ``fid`` take by name.
HASH_CORES: dict[str, str] = {
    "xxh64": "xxh64",
    "murmur3_32": "murmur3",
    "farmhash64": "cityfarm",
    "cityhash64": "cityfarm",
}


def _hashed(post: str | None) -> Any:
    """The path of a hash operator: its ``hash``'s core, then ``post`` (None: the ``method``)."""

    def path(values: Mapping[str, Any]) -> tuple[str, ...] | None:
        core = HASH_CORES.get(values["hash"])
        return None if core is None else (core, post or values["method"])

    return path


#: The engine's cores that compute an operator, by the registry's ``hw_core``: a function of
#: the selector's values (:meth:`~offload.ops.WireForm.params_of`, plus ``hash``: the hash the
#: op code computes) giving the lane's cores in order, hash first, the last one giving the
#: result (None: the engine has no path for those values).
CORE_PATHS: dict[str, Any] = {
    "offload.hw.xxhash:XXH32Core": lambda v: ("xxh32",),
    "offload.hw.xxhash:XXH64Core": lambda v: ("xxh64",),
    "offload.hw.postproc:ModPipe": _hashed(None),
    "offload.hw.postproc:FidCore": _hashed("fid"),
    "offload.hw.bucketize:Bucketize": lambda v: ("bucketize",),
    "offload.hw.varint:DeltaVarintEncoder": lambda v: ("varint",),
    "offload.hw.murmur3:Murmur3Core": lambda v: ("murmur3",),
    "offload.hw.cityhash:CityFarmCore": lambda v: ("cityfarm",),
    # the integer's decimal text and its FarmHash, then the lane's mod core
    "offload.hw.decimal:DecimalFarmLane": lambda v: ("decfarm", "mod"),
    # the hash, then the lane's mod core (the floor modulo's unsigned remainder), then the sign fix
    "offload.hw.sigrid:SigridCore": lambda v: ("sigrid", "mod", "sigfix"),
}

#: The input formats the engine takes for each input kind: ``FORMAT`` -> the key types it
#: carries (their byte size, ``None``: any ``DTYPE``).
FORMATS_OF: dict[str, dict[str, int | None]] = {
    "records": {"FIXED8": None, "FIXED4": None, "VAR": None},
    "numbers": {"FIXED8": 8, "FIXED4": 4},
    "sequences": {"SEQ": None},
}


def any_of(terms: Sequence[Value]) -> Value:
    """The terms or'ed, left to right (``Const(0)`` for none)."""
    return reduce(or_, terms) if terms else Const(0)


def op_in(op: Value, codes: Iterable[int]) -> Value:
    """``op`` is one of ``codes``: per run of consecutive codes an ``==`` (one or two codes) or a
    range compare (three or more; from 0, only its upper bound), the runs or'ed."""
    runs: list[list[int]] = []
    for c in sorted(set(codes)):
        if runs and c == runs[-1][-1] + 1:
            runs[-1].append(c)
        else:
            runs.append([c])
    terms: list[Value] = []
    for run in runs:
        if len(run) <= 2:
            terms.extend(op == c for c in run)
        elif run[0] == 0:
            terms.append(op <= run[-1])
        else:
            terms.append((op >= run[0]) & (op <= run[-1]))
    return any_of(terms)


@dataclass(frozen=True)
class RangeCheck:
    """Op code ``code`` refuses a parameter carried in ``registers`` (low word first) outside
    ``[lo, hi]``; ``top`` is the largest value the registers hold."""

    code: int
    registers: tuple[str, ...]
    lo: int
    hi: int
    top: int

    def refused(self, value: Value) -> Value | None:
        """The hardware test (None: every value is accepted)."""
        terms = []
        if self.lo == 1:
            terms.append(value == 0)
        elif self.lo > 1:
            terms.append(value < self.lo)
        if self.hi < self.top:
            terms.append(value >= self.hi + 1)
        return any_of(terms) if terms else None


@dataclass(frozen=True)
class _Code:
    code: int
    op: Operator
    values: Mapping[str, Any]  # the selector's values by parameter, and ``hash``
    path: tuple[str, ...]


class OpDecode:
    """The registry's operators as the engine decodes them (see the module docstring).

    Built from ``registry`` (default :data:`~offload.ops.REGISTRY`) when an engine is built, so
    an operator registered later is seen by the next engine; ``codes``: only these op codes
    (the engine's build; default every one). ``ValueError`` for an operator with op codes the
    engine cannot run.
    """

    def __init__(self, registry: Mapping[str, Operator] | None = None, codes: Iterable[int] | None = None):
        ops = REGISTRY if registry is None else registry
        built = None if codes is None else set(codes)
        self._codes = sorted(
            (
                c
                for op in ops.values()
                if op.wire is not None
                for c in _codes(op)
                if built is None or c.code in built
            ),
            key=lambda c: c.code,
        )
        self.codes = tuple(c.code for c in self._codes)
        self.ops_mask = sum(1 << c for c in self.codes)
        self.checks = tuple(
            ch
            for op in ops.values()
            if op.wire is not None
            for ch in _range_checks(op)
            if ch.code in self.codes
        )

    def of_kind(self, kind: str) -> list[int]:
        """The op codes of the operators taking input ``kind``."""
        return [c.code for c in self._codes if c.op.inputs == kind]

    def kinds(self) -> list[str]:
        """The input kinds of the operators built, in :data:`FORMATS_OF`'s order."""
        return [k for k in FORMATS_OF if self.of_kind(k)]

    def users(self, core: str) -> list[int]:
        """The op codes whose path goes through the lane core ``core``."""
        return [c.code for c in self._codes if core in c.path]

    def results(self) -> list[tuple[str, list[int]]]:
        """``(core, op codes)`` for every core whose output is an operator's result, in the
        order of their first op code."""
        out: dict[str, list[int]] = {}
        for c in self._codes:
            out.setdefault(c.path[-1], []).append(c.code)
        return list(out.items())

    def fronts(self, core: str) -> dict[str, list[int]]:
        """For a core behind another on some path: the core in front of it -> the op codes
        taking that way."""
        out: dict[str, list[int]] = {}
        for c in self._codes:
            if core in c.path[1:]:
                out.setdefault(c.path[c.path.index(core) - 1], []).append(c.code)
        return out

    def paths(self) -> list[tuple[str, ...]]:
        """Every distinct path of the op codes built."""
        return sorted({c.path for c in self._codes})

    def where(self, test: Any) -> list[int]:
        """The op codes whose selector values (a mapping, with ``hash``) pass ``test``."""
        return [c.code for c in self._codes if test(c.values)]

    def cores(self) -> list[str]:
        """Every core some op code goes through, sorted (the bits of ``Control.uses``)."""
        return sorted({core for c in self._codes for core in c.path})

    def built(self, core: str) -> bool:
        """Some op code goes through the lane core ``core`` (else the engine leaves it out)."""
        return bool(self.users(core))

    def selected(self, op: Value, core: str, name: str) -> Value:
        """The value of selector parameter ``name`` for the batch's op code among ``core``'s
        users (a core parameter: ``fid``'s version, ``bucketize``'s right): a bool as an
        :func:`op_in`, else muxes."""
        pairs = [(c.code, c.values[name]) for c in self._codes if core in c.path]
        if all(isinstance(v, bool) for _, v in pairs):
            return op_in(op, [code for code, v in pairs if v])
        out: Value | int = pairs[-1][1]
        for code, v in reversed(pairs[:-1]):
            out = Mux(op == code, v, out)
        return Value.cast(out)


def _codes(op: Operator) -> list[_Code]:
    """An operator's op codes and the engine's cores for each (``ValueError`` if it has none)."""
    assert op.wire is not None
    keys = sorted(op.wire.codes.values())
    if op.hw_core is None:
        raise ValueError(f"operator {op.name!r} has engine op codes {keys} but no hardware core (hw_core)")
    paths = CORE_PATHS.get(op.hw_core)
    if paths is None:
        raise ValueError(f"operator {op.name!r}: the engine has no path for the core {op.hw_core}")
    if op.inputs not in FORMATS_OF:
        raise ValueError(f"operator {op.name!r}: the engine takes no input format for {op.inputs!r}")
    out = []
    for value, key in op.wire.codes.items():
        values = {"hash": op.name, **op.wire.params_of(value)}
        path = paths(values)
        if path is None:
            raise ValueError(f"operator {op.name!r}: the engine has no path for {op.wire.selector}={value!r}")
        out.append(_Code(OP_CODES[key], op, values, path))
    return out


def _range_checks(op: Operator) -> list[RangeCheck]:
    """The register ranges each op code of ``op`` accepts, found by evaluating its checks."""
    assert op.wire is not None
    out = []
    for value, key in op.wire.codes.items():
        base = _base_params(op, value)
        fixed = op.wire.params_of(value)  # a parameter fixed to None has no registers to check
        for p in op.params:
            if p.registers and not (p.name in fixed and fixed[p.name] is None):
                lo, hi, top = _interval(op, p, base)
                if lo > 0 or hi < top:
                    out.append(RangeCheck(OP_CODES[key], p.registers, lo, hi, top))
    return out


def _base_params(op: Operator, selected: Any) -> dict[str, Any]:
    """Parameter values to probe one parameter with: the defaults, else the first example's
    value, and the selector's value."""
    base: dict[str, Any] = {}
    for p in op.params:
        if not p.required:
            base[p.name] = p.default
        else:
            given = [ex[p.name] for ex in op.examples if p.name in ex]
            if given:
                base[p.name] = given[0]
    assert op.wire is not None
    base.update(op.wire.params_of(selected))
    return base


def _accepts(op: Operator, p: Param, base: Mapping[str, Any], v: int) -> bool:
    """The engine runs ``op`` with register value ``v`` for ``p``: only ``engine_error`` decides
    where the entry has one (as ``offload.wire.call_from_regs(engine=True)``), else ``p.check``."""
    assert op.wire is not None
    v = p.from_registers(v)
    if op.wire.engine_error is not None:
        return op.wire.engine_error({**base, p.name: v}) is None
    try:
        p.check(v, {k: x for k, x in base.items() if k != p.name})
    except (ValueError, TypeError):
        return False
    return True


def _interval(op: Operator, p: Param, base: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(lo, hi, top)``: ``p``'s registers accept exactly ``[lo, hi]`` of ``[0, top]`` (checked
    at the bounds and at every power of two; ``ValueError`` if the accepted values are not one
    range, which the engine's test could not express)."""
    top = (1 << (32 * len(p.registers))) - 1
    powers = [1 << k for k in range(32 * len(p.registers))]
    acc = {v: _accepts(op, p, base, v) for v in sorted({0, top, *powers, *(x - 1 for x in powers)})}
    inside = [v for v, ok in acc.items() if ok]
    if not inside:
        raise ValueError(f"operator {op.name!r}: no value of {p.name} is accepted")
    lo = _edge(lambda v: _accepts(op, p, base, v), -1, inside[0])
    hi = top - _edge(lambda v: _accepts(op, p, base, top - v), -1, top - inside[-1])
    for v in {*acc, lo - 1, lo, hi, hi + 1}:
        if 0 <= v <= top and _accepts(op, p, base, v) != (lo <= v <= hi):
            raise ValueError(f"operator {op.name!r}: the accepted values of {p.name} are not one range")
    return lo, hi, top


def _edge(ok: Any, refused: int, accepted: int) -> int:
    """The smallest accepted value in ``(refused, accepted]`` (``refused`` is, ``accepted`` is
    not refused; between them one edge)."""
    while accepted - refused > 1:
        mid = (refused + accepted) // 2
        if ok(mid):
            accepted = mid
        else:
            refused = mid
    return accepted
