"""Per-lane hash cores of the wide engine (``OffloadEngine(lanes=N)``, N > 1).

Lane 0 of the wide engine keeps the record cores (:class:`~offload.hw.xxhash.XXH64Core`,
:class:`~offload.hw.xxhash.XXH32Core`), which handle every format. Lanes 1..N-1 only ever see
one-word records (``FIXED8``/``FIXED4`` keys), so they use the cheaper cores of this module: the
XXH64/XXH32 finalisation of one 4- or 8-byte key (no stripe loop, no tail buffer, no byte steps),
bit-exact with :func:`offload.golden.xxh64` / :func:`offload.golden.xxh32` of the key's bytes.

The engine needs every lane's result in the same cycle as lane 0's (results of one beat are
written to the output FIFO together, in lane order), so a lane core is built with the latency of
the record core it stands beside (``latency`` parameter) and pads its own short pipeline with a
delay line: registers for the ``valid`` bit (reset clears them) and, for longer delays, a small
ring-buffer memory for the data (no reset needed: ``valid`` qualifies it).

Ports (both cores): ``i`` In(stream of 64-bit words, always ready; a FIXED4 key is the low
half), ``o`` Out(stream of hashes, always ready: the consumer takes every result), ``seed``,
``key8`` In(1) (1: the key is the whole word, 0: the low 4 bytes; held stable during a batch, as
the seed; allow 2 cycles after a change). Latency exactly ``latency`` cycles; throughput one key
per cycle. ``adder_levels`` and ``multipliers`` as the record cores (``"behavioural"``: the
simulation flavour, same depth; see :mod:`offload.hw.xxhash`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from offload.golden import XXH32_PRIMES, XXH64_PRIMES

from .common import Pipe, set_multiplier_params
from .xxhash import xxh32_avalanche, xxh64_avalanche, xxh64_avalanche_x

__all__ = ["XXH64Lane", "XXH32Lane", "delay"]

#: Delays up to this many cycles are plain registers; longer ones use a ring-buffer memory.
REG_DELAY_MAX = 4


def lane_latency(latency: int | None, depth: int, optional: bool = True) -> int:
    """A lane core's latency: ``latency`` (None, where ``optional``: its natural ``depth``), at
    least ``depth`` (exact ``ValueError`` otherwise)."""
    if latency is None and optional:
        latency = depth
    if not isinstance(latency, int) or isinstance(latency, bool) or latency < depth:
        raise ValueError(f"latency must be at least {depth}, not {latency!r}")
    return latency


def delay(m: Module, name: str, valid: Value, data: Value, cycles: int) -> tuple[Value, Value]:
    """``(valid, data)`` delayed by ``cycles`` clock cycles (``valid`` through resettable registers,
    ``data`` through registers or, above :data:`REG_DELAY_MAX`, a memory)."""
    if cycles < 0:
        raise ValueError(f"delay must be >= 0, not {cycles}")
    valid, data = Value.cast(valid), Value.cast(data)
    vs = valid
    for k in range(cycles):
        v = Signal(name=f"{name}_v{k + 1}")
        m.d.sync += v.eq(vs)
        vs = v
    if cycles <= REG_DELAY_MAX:
        ds = data
        for k in range(cycles):
            d = Signal(len(data), name=f"{name}_d{k + 1}", reset_less=True)  # data: no reset net
            m.d.sync += d.eq(ds)
            ds = d
        return vs, ds
    # The memory's read data goes into a register of the delay's own (``{name}_q``), so the
    # memory's output register can sit beside it and this one beside the consumer; the read
    # address is a counter of its own, not ``wp`` minus a constant (a carry chain in front of
    # the memory). Read from the memory straight into its consumer, with the address
    # computed, this was the engine's critical path (SigridHash's sign delay, 10.37 ns, 7.99
    # of it routing, nextpnr seed 1).
    depth = 1 << (cycles - 1).bit_length()
    mem = Memory(shape=len(data), depth=depth, init=[])
    m.submodules[f"{name}_mem"] = mem
    wp = Signal(range(depth), name=f"{name}_wp")
    # Written at cycle t at address wp(t); the read issued at t + cycles - 2 (address
    # wp - cycles + 2, counted by rp from reset as wp is) lands in the memory's register at
    # t + cycles - 1 and in q at t + cycles. The slot is rewritten only at t + depth >= t + cycles.
    rp = Signal(range(depth), name=f"{name}_rp", init=(2 - cycles) % depth)
    q = Signal(len(data), name=f"{name}_q", reset_less=True)
    m.d.sync += [wp.eq(wp + 1), rp.eq(rp + 1)]
    w = mem.write_port()
    r = mem.read_port(domain="sync")
    m.d.comb += [w.addr.eq(wp), w.data.eq(data), w.en.eq(1), r.addr.eq(rp), r.en.eq(1)]
    m.d.sync += q.eq(r.data)
    return vs, q


class _LaneCore(wiring.Component):
    """Common part of the lane cores: latency validation and the padding delay."""

    WIDTH = 64

    def __init__(self, latency: int, adder_levels: int | str = "csa", multipliers: str = "lut"):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        set_multiplier_params(self, adder_levels, multipliers)
        self.depth = self._natural_depth(adder_levels)
        self.latency = lane_latency(latency, self.depth, optional=False)
        self._MustUse__silence = False
        super().__init__(
            {
                "i": In(stream.Signature(64, always_ready=True)),
                "o": Out(stream.Signature(self.WIDTH, always_ready=True)),
                "seed": In(self.WIDTH),
                "key8": In(1),
            }
        )

    @classmethod
    def _natural_depth(cls, levels: int | str) -> int:
        """Register levels of the unpadded pipeline (built once into a scratch module, so the
        figure follows any change of the multiplier pipelines in :mod:`offload.hw.common`; the
        behavioural flavour has the same depth by construction, which :meth:`elaborate`
        asserts)."""
        cache = cls.__dict__.get("_depth_cache")
        if cache is None:
            cache = cls._depth_cache = {}
        if levels not in cache:
            scratch = Module()
            scratch._MustUse__silence = True
            cache[levels] = cls._pipeline(
                scratch, Signal(), Signal(64), Signal(cls.WIDTH), Signal(), levels
            ).depth
        return cache[levels]

    @staticmethod
    def _pipeline(m, valid, w, seed_p5, key8, levels, behavioural=False) -> Pipe:
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        P5 = (XXH64_PRIMES if self.WIDTH == 64 else XXH32_PRIMES)[4]
        seed_p5 = Signal(self.WIDTH, reset_less=True)
        key8 = Signal(reset_less=True)
        m.d.sync += [seed_p5.eq((self.seed + P5)[: self.WIDTH]), key8.eq(self.key8)]
        p = self._pipeline(
            m, self.i.valid, self.i.payload, seed_p5, key8, self.adder_levels, self.behavioural
        )
        assert p.depth == self.depth
        valid, data = delay(m, "pad", p["valid"], p["h"], self.latency - p.depth)
        m.d.comb += [self.o.valid.eq(valid), self.o.payload.eq(data)]
        return m


class XXH64Lane(_LaneCore):
    """XXH64 of one 4- or 8-byte key per cycle, padded to ``latency`` cycles (see the module
    docstring); ``latency`` must be at least :attr:`depth` (the unpadded pipeline)."""

    WIDTH = 64

    @staticmethod
    def _pipeline(m, valid, w, seed_p5, key8, levels, behavioural=False) -> Pipe:
        P1, P2, P3, P4, _P5 = XXH64_PRIMES
        p = Pipe(
            m,
            "x64l",
            levels=levels,
            behavioural=behavioural,
            valid=valid,
            k8=key8,
            h=(seed_p5 + Mux(key8, 8, 4))[:64],
            k=Mux(key8, w, Cat(w[:32], Const(0, 32))),
        )
        # 8 bytes: k = round(0, w) = rotl(w * P2, 31) * P1;  4 bytes: k = w32 * P1.
        # An unconditional step (the second ``k`` step, the avalanche) starts from its operand
        # registered by the step before it (``then``), not from an xor in front of its
        # carry-save LUTs (see ``Pipe.mul_step``).
        p.mul_step("k", p["k"], P2, 64, p["k8"], then=lambda f: Mux(f["k8"], f["k"].rotate_left(31), f["k"]))
        p.mul_step("k", p.take("k_x"), P1, 64, Const(1))
        # 8 bytes: h = rotl(h ^ k, 27) * P1 + P4;  4 bytes: h = rotl(h ^ k, 23) * P2 + P3.
        p.mul_step("h", (p["h"] ^ p["k"]).rotate_left(27), P1, 64, p["k8"], add=P4)
        h, k = p["h"], p["k"]
        p.mul_step("h", (h ^ k).rotate_left(23), P2, 64, ~p["k8"], add=P3, drop=["k"], then=xxh64_avalanche_x)
        xxh64_avalanche(p, drop=["k8"], x0=p.take("h_x"))
        return p


class XXH32Lane(_LaneCore):
    """XXH32 of one 4- or 8-byte key per cycle, padded to ``latency`` cycles; ``seed`` In(32),
    32-bit results."""

    WIDTH = 32

    @staticmethod
    def _pipeline(m, valid, w, seed_p5, key8, levels, behavioural=False) -> Pipe:
        P1, P2, P3, P4, _P5 = XXH32_PRIMES
        p = Pipe(
            m,
            "x32l",
            levels=levels,
            behavioural=behavioural,
            valid=valid,
            k8=key8,
            h=(seed_p5 + Mux(key8, 8, 4))[:32],
            l0=w[:32],
            l1=w[32:],
        )
        p.mul_step("l0", p["l0"], P3, 32, Const(1))
        p.mul_step("l1", p["l1"], P3, 32, p["k8"])
        # Per 4-byte lane: h = rotl(h + lane * P3, 17) * P4 (the second lane only for 8 bytes).
        p.mul_step("h", (p["h"] + p["l0"])[:32].rotate_left(17), P4, 32, Const(1), drop=["l0"])
        p.mul_step("h", (p["h"] + p["l1"])[:32].rotate_left(17), P4, 32, p["k8"], drop=["l1"])
        xxh32_avalanche(p, drop=["k8"])
        return p
