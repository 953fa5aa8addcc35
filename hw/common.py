"""Shared building blocks of the offload cores: a non-stalling pipeline builder and pipelined
constant/variable multipliers.

Every core in ``offload.hw`` is a *flow-through* pipeline: one stage is one register level, data
advances every cycle, and a ``valid`` bit travels with the data. No core stalls on its output;
the engine guarantees room for everything in flight (credit on its output FIFO), which keeps the
cores free of ready chains and lets each stage be a plain register (good for Fmax).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Signal, Value

__all__ = ["Pipe", "mul_partials", "mul_sum", "mux_index", "check_choice", "check_pow2"]


def check_pow2(name: str, value, lo: int, hi: int) -> int:
    """Validate a power-of-two parameter; the message names the parameter and the bad value."""
    if (not isinstance(value, int) or isinstance(value, bool) or value < lo or value > hi
            or value & (value - 1)):
        raise ValueError(f"{name} must be a power of two between {lo} and {hi}, not {value!r}")
    return value


def check_choice(name: str, value, choices) -> object:
    if value not in choices or isinstance(value, bool) != any(isinstance(c, bool) for c in choices):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")
    return value


def mux_index(index: Value, items: list[Value]) -> Value:
    """``items[index]`` as a mux tree (items beyond the list read as the last one)."""
    out = items[-1]
    for i in reversed(range(len(items) - 1)):
        out = Mux(index == i, items[i], out)
    return out


def mul_partials(a: Value, b, width: int) -> dict[str, Value]:
    """Partial products of ``a * b`` modulo ``2**width`` (``b`` an int constant or a Value).

    The low ``width`` bits of a product need only three half-width products: lo*lo (full
    width), lo*hi and hi*lo (their low half). For width 64 these are 32x32 multipliers (ECP5:
    a few MULT18X18D each, 7-series: DSP48 cascades), registered before they are summed, so a
    64x64 multiply is two pipeline stages instead of one long combinational path.
    """
    h = width // 2
    mask = (1 << h) - 1
    a = Value.cast(a)
    if isinstance(b, int):
        b_lo, b_hi = b & mask, (b >> h) & mask
    else:
        b = Value.cast(b)
        b_lo, b_hi = b[:h], b[h:width]
    return {
        "p0": (a[:h] * b_lo)[:width],
        "p1": (a[:h] * b_hi)[:h],
        "p2": (a[h:width] * b_lo)[:h],
    }


def mul_sum(p: dict[str, Value], width: int, add=0) -> Value:
    """Second stage of :func:`mul_partials`: the low ``width`` bits of the product (+ ``add``)."""
    h = width // 2
    hi = (p["p1"] + p["p2"])[:h]
    return (p["p0"] + Cat(Const(0, h), hi) + add)[:width]


class Pipe:
    """Builder of a flow-through pipeline inside a module ``m``.

    ``fields`` are the named values entering the pipeline; :meth:`stage` registers every live
    field (after applying ``updates`` and dropping ``drop``), so the caller writes the pipeline
    as a list of stages in program order. ``depth`` counts the register levels built so far.
    """

    def __init__(self, m, name: str, **fields):
        self.m = m
        self.name = name
        self.f: dict[str, Value] = {k: Value.cast(v) for k, v in fields.items()}
        self.depth = 0

    def __getitem__(self, key: str) -> Value:
        return self.f[key]

    def __contains__(self, key: str) -> bool:
        return key in self.f

    def stage(self, drop=(), **updates) -> None:
        for k in drop:
            self.f.pop(k, None)
        for k, v in updates.items():
            self.f[k] = Value.cast(v)
        new = {}
        for k, v in self.f.items():
            s = Signal(v.shape(), name=f"{self.name}_s{self.depth + 1}_{k}")
            self.m.d.sync += s.eq(v)
            new[k] = s
        self.f = new
        self.depth += 1

    def mul_step(self, key: str, x: Value, const, width: int, active: Value, add=0, drop=()):
        """Two stages: ``f[key] = active ? (x * const + add) mod 2**width : f[key]``.

        ``x`` is computed by the caller from the current (registered) fields.
        """
        parts = mul_partials(x, const, width)
        self.stage(drop=drop, **{f"{key}_p0": parts["p0"], f"{key}_p1": parts["p1"], f"{key}_p2": parts["p2"],
                      f"{key}_act": active})
        p = {n: self.f[f"{key}_{n}"] for n in ("p0", "p1", "p2")}
        res = mul_sum(p, width, add)
        self.stage(drop=[f"{key}_p0", f"{key}_p1", f"{key}_p2", f"{key}_act"],
                   **{key: Mux(self.f[f"{key}_act"], res, self.f[key])})
