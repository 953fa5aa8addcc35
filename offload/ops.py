"""The operator registry: one :class:`Operator` entry per operator, read by every layer.

An entry holds what the layers need to know of an operator: its typed, validated parameters
(:class:`Param`), the batch form it takes, its result type, its golden function (one record at a
time, :mod:`offload.golden`), how it travels to the engine (:class:`WireForm`: op codes from
:mod:`offload.engine_map`, the registers its parameters occupy), its CPU kernel, its hardware core
and example calls. The public functions, the runtime, the CPU backend, the wire format and the
reference engine, the device backends, the benches and the tests list operators by iterating
:data:`REGISTRY`; ``docs/adding_an_operator.md`` walks through adding one.

An :class:`OpCall` is an operator with checked parameters. Backends receive an OpCall and a
normalised batch (:mod:`offload.batch`); the runtime uses :func:`golden_result` to verify any
record of any backend against the golden model.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from offload import golden, golden_sigrid
from offload.engine_map import OP_CODES

__all__ = [
    "Param",
    "WireForm",
    "Operator",
    "OpCall",
    "REGISTRY",
    "register",
    "unregister",
    "operator",
    "operators",
    "by_code",
    "make_call",
    "result_dtype",
    "golden_result",
    "check_boundaries",
    "check_int",
    "representable",
    "OPERATORS",
    "HASH_OPS",
    "InputKind",
    "OperatorName",
    "HashBucketMethod",
    "HashName",
    "HASH_SEEDS",
    "Murmur3Tail",
]

#: The batch form an operator takes (``offload.batch``): byte records (``FixedKeys`` or
#: ``VarRecords``), numbers (``Numbers``), int64 sequences (``Sequences``) or encoded sequences
#: (``VarRecords`` of LEB128 bytes).
InputKind = Literal["records", "numbers", "sequences", "encoded"]
#: The built-in operators' names (a registry may hold more; ``OpCall.op`` is any registered name).
OperatorName = Literal[
    "xxh32",
    "xxh64",
    "hash_bucket",
    "fid",
    "bucketize",
    "delta_varint_encode",
    "delta_varint_decode",
    "farmhash64",
    "cityhash64",
    "murmur3_32",
    "sigrid_hash",
    "decimal_hash_bucket",
]
#: ``hash_bucket``'s ``method``.
HashBucketMethod = Literal["mod", "fastrange"]
#: The hashes ``hash_bucket`` and ``fid`` take by name (``hash=``).
HashName = Literal["xxh64", "farmhash64", "cityhash64", "murmur3_32"]
#: ``murmur3_32``'s ``tail``: MurmurHash3's own, or Spark SQL's (``hash()`` of a string column).
Murmur3Tail = Literal["standard", "spark"]

_REQUIRED: Any = object()


# ---------------------------------------------------------------------------------------------
# parameter checks (exact messages: errors are API)
# ---------------------------------------------------------------------------------------------


def check_int(name: str, value: Any, lo: int, hi: int, what: str) -> int:
    """``value`` as an int in ``[lo, hi]``; a bool, float or other type is a ``TypeError``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    v = int(value)
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in {what}, got {v}")
    return v


def seed_check(bits: int) -> Callable[[Any, Mapping[str, Any]], int]:
    def check(value: Any, _: Mapping[str, Any]) -> int:
        return check_int("seed", value, 0, (1 << bits) - 1, f"[0, 2**{bits})")

    return check


def choice_check(name: str, choices: tuple[str, ...], what: str) -> Callable[[Any, Mapping[str, Any]], str]:
    def check(value: Any, _: Mapping[str, Any]) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
        if value not in choices:
            raise ValueError(f"unknown {what} {value!r}: expected " + " or ".join(repr(c) for c in choices))
        return value

    return check


def bool_check(name: str) -> Callable[[Any, Mapping[str, Any]], bool]:
    def check(value: Any, _: Mapping[str, Any]) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        return bool(value)

    return check


# ---------------------------------------------------------------------------------------------
# entries
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One parameter: its name, default (none: required), check and engine registers.

    ``check(value, earlier)`` returns the validated value or raises ``TypeError``/``ValueError``
    with an exact message; ``earlier`` holds the parameters validated before it: those without
    ``needs`` in declaration order, then those with ``needs`` (whose range depends on them).
    ``registers`` names the engine registers that carry the value, 32 bits each, low word first
    (empty: the parameter selects the op code or is not sent); ``signed``: in two's complement.
    ``checks_default``: a missing parameter's value is ``check(default, earlier)`` (a default
    that depends on another parameter, e.g. the seed of the chosen hash).
    """

    name: str
    check: Callable[[Any, Mapping[str, Any]], Any]
    default: Any = _REQUIRED
    registers: tuple[str, ...] = ()
    shown: bool = True  # part of OpCall.describe()
    needs: tuple[str, ...] = ()  # parameters validated before this one (its range depends on them)
    checks_default: bool = False  # the default goes through ``check`` too (it depends on ``needs``)
    signed: bool = False  # the registers carry it in two's complement

    def from_registers(self, raw: int) -> int:
        """The value ``raw`` (the registers, low word first, as one unsigned int) stands for."""
        bits = 32 * len(self.registers)
        return raw - (1 << bits) if self.signed and raw >> (bits - 1) else raw

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@dataclass(frozen=True)
class WireForm:
    """How an operator travels to the engine: ``codes`` maps the value of the ``selector``
    (``None`` when one code serves every call) to a key of :data:`offload.engine_map.OP_CODES`.

    ``selector`` names one parameter, or a tuple of them (then ``codes`` is keyed by tuples of
    their values, e.g. ``hash_bucket``'s ``("method", "hash", "seed?")``). A name ending in ``?``
    stands for whether that parameter is given (not ``None``; its value then travels in its
    registers): ``cityhash64`` with ``seed=None`` is CityHash64, with a seed CityHash64WithSeed.
    A call whose selector values have no entry in ``codes`` (e.g. ``hash_bucket`` with a hash no
    engine core is built for) runs on the host. ``engine_error(params)`` names parameter values
    the engine refuses with ``BAD_PARAM`` although the host's validation would accept them.
    ``only``: parameter values the engine's cores are built for, beside the selector.
    """

    codes: Mapping[Any, str]
    selector: str | tuple[str, ...] | None = None
    engine_error: Callable[[Mapping[str, Any]], str | None] | None = None
    only: Mapping[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """The selector's names (``seed?`` included as written)."""
        if self.selector is None:
            return ()
        return (self.selector,) if isinstance(self.selector, str) else self.selector

    def selected(self, params: Mapping[str, Any]) -> Any:
        """The selector's value for ``params`` (a key of ``codes`` if the engine has the call)."""
        values = tuple(params[n[:-1]] is not None if n.endswith("?") else params[n] for n in self.names)
        if not values:
            return None
        return values[0] if isinstance(self.selector, str) else values

    def params_of(self, value: Any) -> dict[str, Any]:
        """The parameters a selector value fixes (``name?`` False: the parameter is None; True:
        its registers carry it, so it is not fixed here)."""
        values = (value,) if isinstance(self.selector, str) else tuple(value or ())
        out: dict[str, Any] = {}
        for n, v in zip(self.names, values):
            if not n.endswith("?"):
                out[n] = v
            elif not v:
                out[n[:-1]] = None
        return out

    def unbuilt(self, params: Mapping[str, Any]) -> str | None:
        """The parameter values no engine core is built for, as ``name=value`` (None: built)."""
        for name, value in self.only.items():
            if params.get(name, value) != value:
                return f"{name}={params[name]!r}"
        value = self.selected(params)
        if value in self.codes:
            return None
        names = [n[:-1] if n.endswith("?") else n for n in self.names]
        if isinstance(self.selector, str):
            return f"{names[0]}={params[names[0]]!r}"
        # name the values no op code has; if each has one, the combination
        lone = [i for i, v in enumerate(value) if all(k[i] != v for k in self.codes)]
        plain = [i for i in lone if not self.names[i].endswith("?")]
        return ", ".join(f"{names[i]}={params[names[i]]!r}" for i in plain or lone or range(len(names)))

    def key(self, params: Mapping[str, Any]) -> str:
        return self.codes[self.selected(params)]


@dataclass(frozen=True)
class Operator:
    """One operator of the registry (see the module docstring).

    ``result``: the numpy dtype name of a one-value-per-record result, or ``"encoded"``
    (``(offsets int64[n+1], data uint8[])``) or ``"sequences"`` (``(value_offsets, values)``).
    ``golden(call, record)``: the golden model's result for one record. ``cpu``: the CPU kernel,
    ``(backend, call, batch) -> result``, or a ``"module:qualname"`` string resolved on first use.
    ``hw_core``/``hw_lane``: ``"module:Class"`` of the Amaranth core and of its one-word lane form.
    ``examples``: parameter sets every layer is tested with.
    """

    name: str
    summary: str
    inputs: InputKind
    params: tuple[Param, ...]
    result: str
    golden: Callable[[OpCall, Any], Any]
    cpu: Callable[..., Any] | str
    wire: WireForm | None = None
    hw_core: str | None = None
    hw_lane: str | None = None
    examples: tuple[Mapping[str, Any], ...] = ({},)
    memoise: bool = True  # validated calls are cached by value (not for array parameters)

    @property
    def result_dtype(self) -> np.dtype | None:
        return None if self.result in ("encoded", "sequences") else np.dtype(self.result)

    def cpu_kernel(self) -> Callable[..., Any]:
        if isinstance(self.cpu, str):
            module, _, qualname = self.cpu.partition(":")
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            return obj
        return self.cpu

    def op_codes(self) -> dict[int, Any]:
        """Engine op code -> the selector value it stands for (empty: runs on the host only)."""
        if self.wire is None:
            return {}
        return {OP_CODES[key]: value for value, key in self.wire.codes.items()}


#: Every operator, by name, in registration order.
REGISTRY: dict[str, Operator] = {}
_BY_CODE: dict[int, tuple[Operator, Any]] = {}


def register(op: Operator) -> Operator:
    """Add an operator (a test or an extension may add its own). Its name and op codes must be
    new; every piece is checked here, so a missing one fails at import, not at the first call."""
    if op.name in REGISTRY:
        raise ValueError(f"operator {op.name!r} is already registered")
    _check_pieces(op)
    codes = _new_codes(op)
    REGISTRY[op.name] = op
    for code, value in codes.items():
        _BY_CODE[code] = (op, value)
    _CALLS.clear()
    return op


def _check_pieces(op: Operator) -> None:
    """The entry's input kind, result type, callables and parameters (exact messages)."""
    if op.inputs not in ("records", "numbers", "sequences", "encoded"):
        raise ValueError(f"{op.name}: unknown input kind {op.inputs!r}")
    if op.result not in ("encoded", "sequences"):
        np.dtype(op.result)
    if not callable(op.golden) or not (callable(op.cpu) or isinstance(op.cpu, str)):
        raise TypeError(f"{op.name}: golden and cpu must be callables (cpu may be 'module:name')")
    names = [p.name for p in op.params]
    if len(set(names)) != len(names):
        raise ValueError(f"{op.name}: parameter names repeat: {names}")
    plain = {p.name for p in op.params if not p.needs}
    for p in op.params:  # one level: a parameter depends only on parameters without needs
        if not set(p.needs) <= plain:
            raise ValueError(
                f"{op.name}: parameter {p.name!r} needs {sorted(set(p.needs) - plain)}, "
                "which are not parameters without needs"
            )


def _new_codes(op: Operator) -> dict[int, Any]:
    """The entry's op codes, each in the engine map and not yet taken by another operator."""
    if op.wire is None:
        return {}
    if not all(k in OP_CODES for k in op.wire.codes.values()):
        raise ValueError(
            f"{op.name}: op codes {sorted(op.wire.codes.values())} are not all in offload.engine_map.OP_CODES"
        )
    codes = op.op_codes()
    taken = [c for c in codes if c in _BY_CODE]
    if taken:
        raise ValueError(f"{op.name}: op code {taken[0]} already belongs to {_BY_CODE[taken[0]][0].name}")
    return codes


def unregister(name: str) -> None:
    """Remove an operator added with :func:`register` (tests clean up after themselves)."""
    op = REGISTRY.pop(name)
    for code in op.op_codes():
        _BY_CODE.pop(code, None)
    _CALLS.clear()


def operator(name: str) -> Operator:
    """The registry entry of ``name`` (``ValueError`` naming the known operators)."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown operator {name!r}: expected one of {', '.join(REGISTRY)}") from None


def operators(inputs: InputKind | None = None) -> Iterator[Operator]:
    """The registered operators, optionally only those taking one input kind."""
    return (op for op in list(REGISTRY.values()) if inputs is None or op.inputs == inputs)


def by_code(code: int) -> tuple[Operator, Any] | None:
    """The operator an engine op code runs and its selector value, or None."""
    return _BY_CODE.get(code)


# ---------------------------------------------------------------------------------------------
# calls
# ---------------------------------------------------------------------------------------------


class OpCall:
    """One operator with its parameters: ``call.op`` and each parameter as an attribute
    (``call.seed``). Built by :func:`make_call`, which validates; constructing one directly fills
    defaults but checks nothing (device-side decoding that mirrors the engine does that)."""

    __slots__ = ("op", "params", "_key")

    def __init__(self, op: str, **params: Any) -> None:
        entry = operator(op)
        full = {p.name: params.pop(p.name, p.default) for p in entry.params}
        if params:
            raise TypeError(f"{op}() got an unexpected parameter {next(iter(params))!r}")
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "params", full)
        object.__setattr__(
            self,
            "_key",
            (
                op,
                tuple(
                    (k, v.dtype.str, v.tobytes()) if isinstance(v, np.ndarray) else (k, v)
                    for k, v in full.items()
                ),
            ),
        )

    def __getattr__(self, name: str) -> Any:
        try:
            return self.params[name]
        except KeyError:
            raise AttributeError(f"{self.op} has no parameter {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("OpCall is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OpCall) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_call, (self.op, self.params))

    def __repr__(self) -> str:
        return f"OpCall({self.describe()})"

    @property
    def operator(self) -> Operator:
        return operator(self.op)

    def describe(self) -> str:
        shown = []
        for p in operator(self.op).params:
            if not p.shown:
                continue
            v = self.params[p.name]
            if isinstance(v, np.ndarray):
                shown.append(f"{v.shape[0]} {p.name}")
            else:
                shown.append(f"{p.name}={v!r}")
        return f"{self.op}({', '.join(shown)})"


def _rebuild_call(op: str, params: dict[str, Any]) -> OpCall:
    return OpCall(op, **params)


_CALLS: dict[tuple[Any, ...], OpCall] = {}


def make_call(op: str, **params: Any) -> OpCall:
    """Validate one operator's parameters (``ValueError``/``TypeError`` with exact messages).

    Validated calls are memoised (keyed by value *and* type, so ``True`` never passes for ``1``):
    the per-call cost of the public API stays a dictionary lookup.
    """
    entry = operator(op)
    if not entry.memoise:
        return _validate(entry, params)
    try:
        key = (op, *((k, type(v), v) for k, v in sorted(params.items())))
        hit = _CALLS.get(key)
    except TypeError:  # an unhashable parameter: validate it the slow way (and fail there)
        return _validate(entry, params)
    if hit is not None:
        return hit
    call = _validate(entry, params)
    if len(_CALLS) < 4096:
        _CALLS[key] = call
    return call


def _validate(entry: Operator, params: Mapping[str, Any]) -> OpCall:
    unknown = [k for k in params if k not in {p.name for p in entry.params}]
    if unknown:
        raise TypeError(f"{entry.name}() got an unexpected parameter {unknown[0]!r}")
    done: dict[str, Any] = {}
    for p in sorted(entry.params, key=lambda q: bool(q.needs)):  # stable: declaration order
        if p.name in params:
            done[p.name] = p.check(params[p.name], done)
        elif p.required:
            raise TypeError(f"{entry.name}() missing required parameter {p.name!r}")
        else:
            done[p.name] = p.check(p.default, done) if p.checks_default else p.default
    return OpCall(entry.name, **{p.name: done[p.name] for p in entry.params})


def result_dtype(op: str) -> type:
    dt = operator(op).result_dtype
    if dt is None:
        raise ValueError(f"{op} returns {operator(op).result}, not one value per record")
    return dt.type


def golden_result(call: OpCall, record: Any) -> Any:
    """The golden model's result for one record (bytes, a number, or a sequence)."""
    return operator(call.op).golden(call, record)


# ---------------------------------------------------------------------------------------------
# bucketize's boundaries
# ---------------------------------------------------------------------------------------------


def check_boundaries(boundaries: Any, dtype: np.dtype) -> np.ndarray:
    """Boundaries as an array of ``dtype``: 1-D, strictly increasing, no NaN, exactly representable."""
    if isinstance(boundaries, np.ma.MaskedArray) and np.ma.getmaskarray(boundaries).any():
        first = int(np.argwhere(np.ma.getmaskarray(boundaries))[0][0])
        raise ValueError(f"boundaries must not be masked (boundaries[{first}])")
    if isinstance(boundaries, np.ndarray):
        b = np.ma.getdata(boundaries)
    else:
        try:
            b = np.asarray(boundaries)
        except (ValueError, TypeError) as e:
            raise TypeError(f"boundaries must be a 1-D array of numbers: {e}") from None
    if b.ndim != 1:
        raise ValueError(f"boundaries must be 1-D, got shape {b.shape}")
    if b.size == 0:
        return np.zeros(0, dtype)
    if b.dtype.kind not in "iuf":
        raise TypeError(f"boundaries must be numbers, got dtype {b.dtype}")
    if b.dtype.kind == "f":
        nan = np.flatnonzero(np.isnan(b))
        if nan.size:
            raise ValueError(f"boundaries must not contain NaN (boundaries[{int(nan[0])}])")
    target = np.dtype(dtype)
    for i, v in enumerate(b.tolist()):  # exact representability, value by value (no silent wrap)
        if not representable(v, target):
            raise ValueError(f"boundaries[{i}] = {v!r} is not exactly representable in {target}")
    out = b.astype(target)
    if out.size > 1:
        bad = np.flatnonzero(~(out[1:] > out[:-1]))
        if bad.size:
            i = int(bad[0]) + 1
            raise ValueError(
                f"boundaries must be strictly increasing: boundaries[{i}] = "
                f"{out[i].item()!r} <= boundaries[{i - 1}] = {out[i - 1].item()!r}"
            )
    return np.ascontiguousarray(out)


def representable(v: Any, target: np.dtype) -> bool:
    """Whether the number ``v`` is exactly a value of the numeric dtype ``target``."""
    if target.kind == "i":
        info = np.iinfo(target)
        if isinstance(v, float) and (math.isinf(v) or v != math.floor(v)):
            return False
        return bool(info.min <= v <= info.max)
    if isinstance(v, int):
        return int(np.array(v, dtype=target).item()) == v
    return math.isinf(v) or float(np.array(v, dtype=target)) == v


# ---------------------------------------------------------------------------------------------
# the built-in operators
# ---------------------------------------------------------------------------------------------

_SEED64 = ("SEED_LO", "SEED_HI")
_CPU = "offload.host.cpu:CpuBackend"


def _num_buckets(value: Any, _: Mapping[str, Any]) -> int:
    return check_int("num_buckets", value, 1, 1 << 63, "[1, 2**63]")


def _version(value: Any, _: Mapping[str, Any]) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"version must be an int, got {type(value).__name__}")
    if int(value) not in golden.FID_LAYOUT:
        raise ValueError(f"unknown fid version {value!r}: expected 1 or 2")
    return int(value)


def _slot(value: Any, earlier: Mapping[str, Any]) -> int:
    version = earlier["version"]
    bits = golden.FID_LAYOUT[version][0]
    return check_int("slot", value, 0, (1 << bits) - 1, f"[0, {1 << bits}) for fid version {version}")


def _dtype(value: Any, _: Mapping[str, Any]) -> np.dtype:
    return np.dtype(value)


#: Each hash ``hash_bucket`` and ``fid`` take by name: its seed's width in bits (0: no seed) and
#: whether a missing seed means the unseeded function (None) rather than seed 0.
HASH_SEEDS: dict[str, tuple[int, bool]] = {
    "xxh64": (64, False),
    "farmhash64": (0, True),
    "cityhash64": (64, True),
    "murmur3_32": (32, False),
}
if tuple(HASH_SEEDS) != get_args(HashName) or set(HASH_SEEDS) != set(golden.HASHES):
    raise ImportError("offload.ops.HashName, HASH_SEEDS and offload.golden.HASHES must list the same hashes")

_hash_name = choice_check("hash", tuple(HASH_SEEDS), "hash")


def _optional_seed(hash_name: str, value: Any) -> int | None:
    """A seed for ``hash_name`` (None: the hash's default), refused where the hash has none."""
    bits, unseeded = HASH_SEEDS[hash_name]
    if value is None:
        return None if unseeded else 0
    if bits == 0:
        raise ValueError(f"seed does not apply to hash={hash_name!r} (it takes no seed), got {value!r}")
    return check_int("seed", value, 0, (1 << bits) - 1, f"[0, 2**{bits}) for hash={hash_name!r}")


def _hash_seed(value: Any, earlier: Mapping[str, Any]) -> int | None:
    return _optional_seed(earlier["hash"], value)


def _method(value: Any, earlier: Mapping[str, Any]) -> str:
    method = _method_name(value, earlier)
    if method == "fastrange" and HASH_SEEDS[earlier["hash"]][0] == 32:
        raise ValueError(
            f"method='fastrange' needs a 64-bit hash, hash={earlier['hash']!r} gives 32 bits: "
            "use method='mod'"
        )
    return method


_method_name = choice_check("method", ("mod", "fastrange"), "hash_bucket method")


def _city_seed(value: Any, _: Mapping[str, Any]) -> int | None:
    return _optional_seed("cityhash64", value)


def _int_dtype(op: str, what: str) -> Callable[[Any, Mapping[str, Any]], np.dtype]:
    def check(value: Any, _: Mapping[str, Any]) -> np.dtype:
        dt = np.dtype(value)
        if dt not in (np.dtype(np.int64), np.dtype(np.int32)):
            raise TypeError(f"{op} takes int64 (or int32) {what}, got {dt}")
        return dt

    return check


_sigrid_dtype = _int_dtype("sigrid_hash", "ids")


def _int64(name: str, lo: int) -> Callable[[Any, Mapping[str, Any]], int]:
    def check(value: Any, _: Mapping[str, Any]) -> int:
        return check_int(name, value, lo, (1 << 63) - 1, f"[{lo if lo >= 0 else '-2**63'}, 2**63)")

    return check


def _boundaries(value: Any, earlier: Mapping[str, Any]) -> np.ndarray:
    return check_boundaries(value, earlier["dtype"])


def _mod_zero(params: Mapping[str, Any]) -> str | None:
    """What the engine refuses of ``hash_bucket`` (it takes any 64-bit ``num_buckets`` but 0
    for ``mod``): a zero divisor, a seed wider than the hash's."""
    if params["method"] == "mod" and params["num_buckets"] == 0:
        return "NUM_BUCKETS is 0 for hash_bucket mod"
    try:
        _optional_seed(params["hash"], params.get("seed"))
    except ValueError as e:
        return str(e)
    return None


register(
    Operator(
        "xxh32",
        "XXH32 of each record",
        "records",
        (Param("seed", seed_check(32), 0, ("SEED_LO",)),),
        "uint32",
        lambda c, r: golden.xxh32(r, c.seed),
        f"{_CPU}.run_xxh32",
        WireForm({None: "xxh32"}),
        "offload.hw.xxhash:XXH32Core",
        "offload.hw.lanes:XXH32Lane",
        ({}, {"seed": 0xFFFFFFFF}),
    )
)
register(
    Operator(
        "xxh64",
        "XXH64 of each record",
        "records",
        (Param("seed", seed_check(64), 0, _SEED64),),
        "uint64",
        lambda c, r: golden.xxh64(r, c.seed),
        f"{_CPU}.run_xxh64",
        WireForm({None: "xxh64"}),
        "offload.hw.xxhash:XXH64Core",
        "offload.hw.lanes:XXH64Lane",
        ({}, {"seed": (1 << 64) - 1}),
    )
)
register(
    Operator(
        "hash_bucket",
        "xxh64(v, seed) % num_buckets, or (h * num_buckets) >> 64",
        "records",
        (
            Param("num_buckets", _num_buckets, registers=("NUM_BUCKETS_LO", "NUM_BUCKETS_HI")),
            Param("seed", _hash_seed, None, _SEED64, needs=("hash",), checks_default=True),
            Param("method", _method, "mod", needs=("hash",)),
            Param("hash", _hash_name, "xxh64"),
        ),
        "int64",
        lambda c, r: golden.hash_bucket(r, c.num_buckets, c.seed, c.method, c.hash),
        f"{_CPU}.run_hashed",
        WireForm(
            {
                ("mod", "xxh64", True): "hash_bucket/mod",
                ("fastrange", "xxh64", True): "hash_bucket/fastrange",
                ("mod", "murmur3_32", True): "hash_bucket/mod/murmur3_32",
                ("mod", "farmhash64", False): "hash_bucket/mod/farmhash64",
                ("fastrange", "farmhash64", False): "hash_bucket/fastrange/farmhash64",
                ("mod", "cityhash64", False): "hash_bucket/mod/cityhash64",
                ("mod", "cityhash64", True): "hash_bucket/mod/cityhash64/seeded",
                ("fastrange", "cityhash64", False): "hash_bucket/fastrange/cityhash64",
                ("fastrange", "cityhash64", True): "hash_bucket/fastrange/cityhash64/seeded",
            },
            ("method", "hash", "seed?"),
            _mod_zero,
        ),
        "offload.hw.postproc:ModPipe",
        None,
        (
            {"num_buckets": 1_000_003},
            {"num_buckets": 1 << 63, "method": "fastrange", "seed": 9},
            {"num_buckets": 1},
            {"num_buckets": 1000, "hash": "farmhash64"},
            {"num_buckets": 1 << 40, "hash": "cityhash64", "seed": 3, "method": "fastrange"},
            {"num_buckets": 977, "hash": "murmur3_32", "seed": 42},
        ),
    )
)
register(
    Operator(
        "fid",
        "Monolith feature id: slot above an XXH64 signature",
        "records",
        (
            Param("slot", _slot, registers=("SLOT",), needs=("version",)),
            Param("version", _version, 2),
            Param("seed", _hash_seed, None, _SEED64, needs=("hash",), checks_default=True),
            Param("hash", _hash_name, "xxh64"),
        ),
        "uint64",
        lambda c, r: golden.fid(r, c.slot, c.version, c.seed, c.hash),
        f"{_CPU}.run_hashed",
        WireForm(
            {
                (1, "xxh64", True): "fid/1",
                (2, "xxh64", True): "fid/2",
                (1, "murmur3_32", True): "fid/1/murmur3_32",
                (2, "murmur3_32", True): "fid/2/murmur3_32",
                (1, "farmhash64", False): "fid/1/farmhash64",
                (2, "farmhash64", False): "fid/2/farmhash64",
                (1, "cityhash64", False): "fid/1/cityhash64",
                (1, "cityhash64", True): "fid/1/cityhash64/seeded",
                (2, "cityhash64", False): "fid/2/cityhash64",
                (2, "cityhash64", True): "fid/2/cityhash64/seeded",
            },
            ("version", "hash", "seed?"),
        ),
        "offload.hw.postproc:FidCore",
        None,
        (
            {"slot": 42},
            {"slot": 1023, "version": 1, "seed": 5},
            {"slot": 7, "hash": "cityhash64"},
            {"slot": 9, "version": 1, "hash": "murmur3_32"},
        ),
    )
)
register(
    Operator(
        "bucketize",
        "index of each value among strictly increasing boundaries",
        "numbers",
        (
            Param("dtype", _dtype, shown=False),
            Param("boundaries", _boundaries),
            Param("right", bool_check("right"), True),
        ),
        "int32",
        lambda c, r: golden.bucketize(r, c.boundaries.tolist(), c.right),
        f"{_CPU}.run_bucketize",
        WireForm({True: "bucketize/right", False: "bucketize/left"}, "right"),
        "offload.hw.bucketize:Bucketize",
        None,
        ({"boundaries": [-1.5, 0.0, 2.0]}, {"boundaries": [0.0, 1.0], "right": False}),
        memoise=False,
    )
)
register(
    Operator(
        "delta_varint_encode",
        "delta + zigzag + LEB128 of int64 sequences",
        "sequences",
        (),
        "encoded",
        lambda c, r: golden.delta_varint_encode_seq(r),
        f"{_CPU}.run_encode",
        WireForm({None: "delta_varint_encode"}),
        "offload.hw.varint:DeltaVarintEncoder",
    )
)
register(
    Operator(
        "delta_varint_decode",
        "inverse of delta_varint_encode",
        "encoded",
        (),
        "sequences",
        lambda c, r: golden.delta_varint_decode_seq(r),
        f"{_CPU}.run_decode",
    )
)

register(
    Operator(
        "farmhash64",
        "FarmHash Fingerprint64 of each record (TensorFlow's tf.fingerprint, Keras Hashing)",
        "records",
        (),
        "uint64",
        lambda c, r: golden.farmhash64(r),
        f"{_CPU}.run_hash64",
        WireForm({None: "farmhash64"}),
        "offload.hw.cityhash:CityFarmCore",
        "offload.hw.cityhash:CityFarmLane",
    )
)
register(
    Operator(
        "cityhash64",
        "CityHash64 v1.1 of each record; CityHash64WithSeed when a seed is given",
        "records",
        (Param("seed", _city_seed, None, _SEED64),),
        "uint64",
        lambda c, r: golden.cityhash64(r, c.seed),
        f"{_CPU}.run_hash64",
        WireForm({False: "cityhash64", True: "cityhash64/seeded"}, "seed?"),
        "offload.hw.cityhash:CityFarmCore",
        "offload.hw.cityhash:CityFarmLane",
        examples=({}, {"seed": 0}, {"seed": (1 << 64) - 1}),
    )
)
register(
    Operator(
        "murmur3_32",
        "MurmurHash3_x86_32 of each record; tail='spark' is Spark SQL's string tail",
        "records",
        (
            Param("seed", seed_check(32), 0, ("SEED_LO",)),
            Param("tail", choice_check("tail", ("standard", "spark"), "murmur3_32 tail"), "standard"),
        ),
        "uint32",
        lambda c, r: golden.murmur3_32(r, c.seed, c.tail),
        f"{_CPU}.run_murmur3_32",
        WireForm({"standard": "murmur3_32", "spark": "murmur3_32/spark"}, "tail"),
        "offload.hw.murmur3:Murmur3Core",
        "offload.hw.murmur3:Murmur3Lane",
        examples=({}, {"seed": 42, "tail": "spark"}, {"seed": (1 << 32) - 1}),
    )
)
register(
    Operator(
        "sigrid_hash",
        "TorchArrow's sigrid_hash of int64 ids: twang_mix64, hash_128_to_64 with a salt, modulo",
        "numbers",
        (
            Param("dtype", _sigrid_dtype, shown=False),
            Param("salt", _int64("salt", -(1 << 63)), registers=_SEED64, signed=True),
            Param("max_value", _int64("max_value", 1), registers=("NUM_BUCKETS_LO", "NUM_BUCKETS_HI")),
        ),
        "int64",
        lambda c, r: golden_sigrid.sigrid_hash(int(r), c.salt, c.max_value),
        f"{_CPU}.run_sigrid_hash",
        WireForm({None: "sigrid_hash"}),
        "offload.hw.sigrid:SigridCore",
        examples=({"salt": 0, "max_value": 100}, {"salt": -(1 << 63), "max_value": (1 << 63) - 1}),
    )
)

register(
    Operator(
        "decimal_hash_bucket",
        "FarmHash Fingerprint64 of each integer's decimal text % num_buckets (Keras Hashing of integers)",
        "numbers",
        (
            Param("dtype", _int_dtype("decimal_hash_bucket", "values"), shown=False),
            Param("num_buckets", _num_buckets, registers=("NUM_BUCKETS_LO", "NUM_BUCKETS_HI")),
        ),
        "int64",
        lambda c, r: golden.farmhash64(str(int(r)).encode()) % c.num_buckets,
        f"{_CPU}.run_decimal_hash_bucket",
        WireForm({None: "decimal_hash_bucket"}),
        "offload.hw.decimal:DecimalFarmLane",
        examples=({"num_buckets": 1000}, {"num_buckets": 1 << 63}),
    )
)

#: The built-in operators' names (the registry may hold more: iterate :data:`REGISTRY`).
OPERATORS = tuple(REGISTRY)
if OPERATORS != get_args(OperatorName):  # the typed name list and the registry must agree
    raise ImportError(f"offload.ops.OperatorName lists {get_args(OperatorName)}, the registry {OPERATORS}")
#: The built-in operators that hash byte records.
HASH_OPS = tuple(op.name for op in operators("records"))
