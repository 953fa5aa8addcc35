"""The engine's lanes: every operator core, its enables, parameters and input registers, and
the operator's results (:class:`LaneBank`, a submodule of :class:`~offload.hw.engine.OffloadEngine`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from amaranth.hdl import Cat, Const, EnableInserter, Module, Mux, ResetInserter, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from offload.engine_map import DTYPE_CODES, FORMATS, OP_CODES

from .bucketize import Bucketize
from .cityhash import HASH_CITY, HASH_FARM, CityFarmLane
from .decimal import DecimalFarmLane
from .fifo import SEQ_DATA, SEQ_HEADER
from .gather import CityFarmRecords
from .lanes import XXH32Lane, XXH64Lane, delay
from .murmur3 import Murmur3Core, Murmur3Lane
from .opdecode import OpDecode, any_of, op_in
from .postproc import FastRange, FidCore, ModPipe, ModReciprocal
from .sigrid import SigridFix, SigridMix
from .varint import DeltaVarintEncoder
from .xxhash import XXH32Core, XXH64Core

__all__ = ["LaneBank", "mod_core", "mod_pad", "core_latencies", "LANE_CORES", "RECORD_CORES", "POST_CORES"]

#: The cores of a lane, in the order they are added (their names in the RTL); the engine builds
#: those some op code goes through (:class:`~offload.hw.opdecode.OpDecode` says which use each).
#: The varint encoder (lane 0 only) is not a lane core.
LANE_CORES = (
    "xxh64",
    "xxh32",
    "murmur3",
    "cityfarm",
    "decfarm",
    "sigrid",
    "mod",
    "fastrange",
    "fid",
    "sigfix",
    "bucketize",
)
#: The record cores: lane 0's takes framed records (``VAR``) as well as fixed keys; lanes 1..N-1
#: have the one-word form, padded to the same latency.
RECORD_CORES = ("xxh64", "xxh32", "murmur3", "cityfarm")
#: The cores behind another core of the lane (a path's later cores), fed from the core in
#: front of them for the batch's op code.
POST_CORES = ("mod", "fastrange", "fid", "sigfix")


def core_latencies(
    names: Iterable[str],
    adder_levels: int | str,
    modulo: str,
    mod_bits_per_stage: int,
    table_depth: int,
    record_max: int,
    hashes: tuple[str, ...] = ("city", "farm"),
) -> dict[str, int]:
    """The latency of each lane core in ``names`` (lane 0's, at most; the other lanes are
    padded to it), by its :data:`LANE_CORES` name, read from cores instantiated only for that."""
    make = {
        "xxh64": lambda: XXH64Core(adder_levels),
        "xxh32": lambda: XXH32Core(adder_levels),
        "murmur3": lambda: Murmur3Core(adder_levels),
        "cityfarm": lambda: CityFarmRecords(record_max, adder_levels, "lut", hashes),
        "decfarm": lambda: DecimalFarmLane(None, adder_levels),
        "sigrid": lambda: SigridMix(adder_levels),
        "mod": lambda: mod_core(modulo, mod_bits_per_stage, "lut"),
        "fastrange": FastRange,
        "fid": FidCore,
        "sigfix": SigridFix,
        "bucketize": lambda: Bucketize(table_depth),
    }
    out = {}
    for name in names:
        core = make[name]()
        core._MustUse__silence = True  # no UnusedElaboratable warning
        out[name] = core.latency
    return out


def city_farm_hashes(decode: OpDecode) -> tuple[str, ...]:
    """The hashes the FarmHash/CityHash cores are built for: those the op codes name
    (``CityFarmRecords``' ``hashes``, a single-hash record core each; ``CityFarmLane``'s)."""
    names = {"cityhash64": "city", "farmhash64": "farm"}
    used = {names[h] for h in names if decode.where(lambda v, h=h: v["hash"] == h)}
    return tuple(h for h in ("city", "farm") if h in used)


def mod_pad(mod: Any, front_latency: int) -> int:
    """Cycles of delay between a core of latency ``front_latency`` and the ``mod`` core behind
    it: ``ModReciprocal`` needs ``setup`` cycles with the batch's ``num_buckets`` before its
    first value, and its copy of ``num_buckets`` changes with START, when the parser may
    already take the first word, which reaches the mod core ``front_latency + 1`` cycles later
    (its input register); ``ModPipe`` needs none."""
    return max(0, getattr(mod, "setup", 0) - (front_latency + 1))


def mod_core(modulo: str, bits_per_stage: int, multipliers: str):
    """The core of ``hash_bucket``'s ``mod`` method (see ``OffloadEngine``'s ``modulo``)."""
    if modulo == "restoring":
        return ModPipe(bits_per_stage, multipliers)
    return ModReciprocal(multipliers)


class LaneBank(wiring.Component):
    """The operator cores of every lane, as submodules, and what feeds them.

    Lane 0 has the record cores (``XXH64Core``, ``XXH32Core``, which also serve ``VAR``) and
    the varint encoder; lanes 1..N-1 the one-word cores of :mod:`offload.hw.lanes`, padded to
    the same latency. Every lane has ``mod`` (the ``modulo`` core), ``fastrange``, ``fid``
    behind its XXH64 and a ``bucketize``.

    Inputs: the batch registers of :class:`~offload.hw.control.Control` (``op``, ``op_uses``
    (its ``uses``), ``fmt``, ``dtype``, ``seed``, ``nbuckets``, ``slot``, ``nbound``, ``fixed``,
    ``core_clr``), the
    register file's boundary table write (``TABLE_ADDR``, ``TABLE_DATA_LO``, ``wdata``,
    ``table_we``) and, at :meth:`elaborate_inputs`, the parser's unit. Outputs: the cores
    (:attr:`h64`, :attr:`h32`, :attr:`mods`, :attr:`frs`, :attr:`fids`, :attr:`bzs`, one per
    lane; :attr:`dv`), :attr:`core_rst`, :attr:`dv_room` (the varint input has room),
    :attr:`dv_busy` (a value in the varint path), :attr:`uses` (which cores the batch's
    operator uses).

    Latency: one input register in front of every core and one between a hash and its
    post-processing, besides the cores' own (``OffloadEngine.latency``). Reset: ``core_clr``
    (START, SOFT_RESET) clears the varint input buffer and, a cycle later (from a register beside
    each core, and the encoder's :attr:`core_rst`), the cores' and the encoder's valid bits (which
    drops a unit in a core's input register); data registers are not reset.
    """

    def __init__(self, engine, decode: OpDecode):
        N = self.lanes = engine.lanes
        mul = self.multipliers = engine.multipliers
        self.decode = decode
        super().__init__(
            {
                "op": In(max(OP_CODES.values()).bit_length()),
                "op_uses": In(len(decode.cores())),
                "fmt": In(max(FORMATS.values()).bit_length()),
                "dtype": In(max(DTYPE_CODES.values()).bit_length()),
                "seed": In(64),
                "nbuckets": In(64),
                "slot": In(16),
                "nbound": In(13),
                "core_clr": In(1),
                "table_addr": In(32),
                "table_data_lo": In(32),
                "wdata": In(32),
                "table_we": In(1),
                "core_valid": In(1),
                "lane_on": In(N),
                "beat_first": In(1),
                "dv_first": In(1),
                "last_word": In(1),
                "empty_rec": In(1),
                "beat_len": In(32),
                "uacc": In(1),
                "needs_dv": In(1),
                "w": In(64),
                "words": In(64 * N),
                "res_valid": Out(N),
                "res_data": Out(64 * N),
                "res_kind": Out(2),
                "core_rst": Out(1),
                "dv_room": Out(1),
                "dv_busy": Out(1),
            }
        )
        self.framed = self.fmt[1]
        self.fixed = ~self.framed
        levels = engine.adder_levels
        x64 = XXH64Core(levels, mul)
        self.h64 = [x64] + [XXH64Lane(x64.latency, levels, mul) for _ in range(1, N)]
        x32 = XXH32Core(levels, mul)
        self.h32 = [x32] + [XXH32Lane(x32.latency, levels, mul) for _ in range(1, N)]
        m3 = Murmur3Core(levels, mul)
        self.m3 = [m3] + [Murmur3Lane(m3.latency, levels, mul) for _ in range(1, N)]
        self.cf: list[Any] = []
        if decode.built("cityfarm"):  # (a large core: not even instantiated unless built)
            hashes = city_farm_hashes(decode)  # only the hash(es) the build's op codes name
            cf = CityFarmRecords(engine.record_max, levels, mul, hashes)
            self.cf = [cf] + [CityFarmLane(cf.fixed_latency, levels, mul, hashes) for _ in range(1, N)]
        self.df = [DecimalFarmLane(None, levels, mul) for _ in range(N)] if decode.built("decfarm") else []
        self.sg = [SigridMix(levels, mul) for _ in range(N)]
        self.sgfix = [SigridFix() for _ in range(N)]
        self.mods = [mod_core(engine.modulo, engine.mod_bits_per_stage, mul) for _ in range(N)]
        # ModReciprocal needs num_buckets stable ``setup`` cycles before its first value. Its
        # copy (nb_mod below) changes the cycle after START's, two cycles after START; the
        # first word the parser takes (in START's next cycle) reaches the mod core through its
        # input register, XXH64Core and the register between them: x64.latency + 1 cycles
        # after nb_mod changed. (The cores' reset, a cycle after START, restarts the
        # reciprocal too, earlier than that.)
        # (A hash shorter than that reaches it through a delay: :func:`mod_pad`.)
        self.frs = [FastRange(mul) for _ in range(N)]
        self.fids = [FidCore() for _ in range(N)]
        self.bzs = [Bucketize(engine.table_depth, mul) for _ in range(N)]
        self.dv = DeltaVarintEncoder()
        #: Each built lane core's instances, lane by lane, by its :data:`LANE_CORES` name.
        cores: tuple[list[Any], ...] = (
            self.h64,
            self.h32,
            self.m3,
            self.cf,
            self.df,
            self.sg,
            self.mods,
            self.frs,
            self.fids,
            self.sgfix,
            self.bzs,
        )
        self.cores = {n: c for n, c in zip(LANE_CORES, cores) if decode.built(n)}
        for name, insts in zip(LANE_CORES, cores):
            if name not in self.cores:
                for core in insts:
                    core._MustUse__silence = True  # not built: no op code uses it

    def elaborate(self, platform) -> Module:
        m = Module()
        dec = self.decode
        m.d.sync += self.core_rst.eq(self.core_clr)
        # which cores the batch uses: the control's registers (decoded at START), not op's decode
        bits = dict(zip(dec.cores(), self.op_uses))
        self.uses = {name: bits[name] for name in self.cores}
        self.is_bz = self.uses.get("bucketize", Const(0))
        self._submodules(m, self.table_we)
        self._parameters(m)
        self._inputs(m)
        self._select(m)
        return m

    def _submodules(self, m: Module, table_we: Value) -> None:
        # core_clr (START, SOFT_RESET) resets every core; in the pipelines that clears the valid
        # bits only (``Pipe`` registers and the cores' data registers are reset-less), so the
        # reset reaches a few hundred flip-flops, not the whole datapath. It reaches them a
        # cycle later, from a register (core_rst): as a decode of the AXI-Lite write it was the
        # engine's longest path (routing to every core). No unit from before the reset reaches
        # a core after it: in START's cycle the parser takes none (IDLE), and one it took in
        # SOFT_RESET's cycle is in the core's input register while core_rst clears the core,
        # so the core drops it; a core's outputs are ignored while core_rst is set (the next
        # core's input register and the collector's result register), and the parser's first
        # unit of the new batch reaches a core's input register after core_rst. In the behavioural
        # (simulation) flavour a core also only advances while the current OP uses it, so a
        # cycle-based simulator does not recompute idle pipelines every cycle; the others hold
        # their cleared state and their outputs are not selected, so the ports see the same
        # thing in both flavours. The LUT flavour (synthesised) has no such enable: it would be
        # one clock-enable net to every datapath flip-flop (~40k loads). Lanes 1..N-1 only run
        # for the fixed formats. Boundary table writes always reach every lane's bucketize.
        for j in range(self.lanes):
            sfx = "" if j == 0 else f"_l{j}"
            for name, insts in self.cores.items():
                core = insts[j]
                # Each core's copy of core_rst, kept apart in synthesis so it places beside
                # the core: from the one register the reset reached Murmur3Core's loop register
                # across the device (10.30 ns, 8.88 of it routing, nextpnr seed 1).
                core_rst = Signal(name=f"core_rst_{name}{sfx}", attrs={"keep": 1})
                m.d.sync += core_rst.eq(self.core_clr)
                use = (self.is_bz | table_we) if name == "bucketize" else self.uses[name]
                if self.multipliers == "behavioural":
                    core_en = Signal(name=f"{name}{sfx}_en")
                    m.d.comb += core_en.eq(
                        core_rst | (use if j == 0 or name == "bucketize" else use & self.fixed)
                    )
                    core = EnableInserter(core_en)(core)
                m.submodules[name + sfx] = ResetInserter(core_rst)(core)
        if self.decode.built("varint"):
            # The encoder is cleared by core_rst, as the cores are, and enabled by a registered
            # decode of op (a cycle behind op, two behind START): its first value leaves the
            # input buffer two cycles after START at the earliest, and what it outputs while
            # core_rst is set is ignored. Cleared by core_clr, a decode of the register file's
            # strobes, its clear and enable were the engine's longest path (11.52 ns, 10.28 of
            # it routing, nextpnr seed 1).
            dv_use = Signal(name="varint_use")
            m.d.sync += dv_use.eq(op_in(self.op, self.decode.users("varint")))
            dv_en = Signal(name="varint_en")
            m.d.comb += dv_en.eq(self.core_rst | dv_use)
            m.submodules.varint = ResetInserter(self.core_rst)(EnableInserter(dv_en)(self.dv))
        else:
            self.dv._MustUse__silence = True
            m.d.comb += self.dv_room.eq(1)

    def _parameters(self, m: Module) -> None:
        # Each post core gets a copy of num_buckets of its own, loaded only while the batch's
        # operator uses that core (a static enable, as the cores' inputs have). Both cores
        # register the port; fed by one signal, synthesis merged the two copies, and the merged
        # register, placed by ModPipe, fed FastRange's multipliers across the device (11.72 ns,
        # nextpnr seed 2). The copies are a cycle behind START; the first value reaches either
        # core behind the whole hash pipeline.
        dec, op, cores = self.decode, self.op, self.cores
        key8 = self.fmt == FORMATS["FIXED8"]
        spark = op_in(op, dec.where(lambda v: v.get("tail") == "spark"))
        copies = {
            n: Signal(64, name=f"{n}_num_buckets", reset_less=True) for n in ("mod", "fastrange", "sigfix")
        }
        for name, nb in copies.items():
            if name in cores:
                with m.If(self.uses[name]):
                    m.d.sync += nb.eq(self.nbuckets)
        # (core, port) -> value, for every lane's instance of each built core
        ports: dict[tuple[str, str], Value] = {
            ("xxh64", "seed"): self.seed,
            ("xxh32", "seed"): self.seed[:32],
            ("murmur3", "seed"): self.seed[:32],
            ("sigrid", "salt"): self.seed,
            ("mod", "num_buckets"): copies["mod"],
            ("fastrange", "num_buckets"): copies["fastrange"],
            ("sigfix", "max_value"): copies["sigfix"],
            ("fid", "slot"): self.slot,
            ("bucketize", "dtype"): self.dtype,
            ("bucketize", "num_boundaries"): self.nbound,
            ("bucketize", "table_addr"): self.table_addr,
            ("bucketize", "table_we"): self.table_we,
            ("bucketize", "table_data"): Cat(self.table_data_lo, self.wdata),
        }
        if "fid" in cores:
            ports["fid", "version"] = dec.selected(op, "fid", "version")
        if "bucketize" in cores:
            ports["bucketize", "right"] = dec.selected(op, "bucketize", "right")
        for (name, port), value in ports.items():
            for core in cores.get(name, ()):
                m.d.comb += getattr(core, port).eq(value)
        if "murmur3" in cores:
            m.d.comb += cores["murmur3"][0].spark_tail.eq(spark)
        if "cityfarm" in cores:
            farm = op_in(op, dec.where(lambda v: v["hash"] == "farmhash64"))
            # CityHash64WithSeed: a city op code whose seed is not fixed to None
            seeded = op_in(
                op, dec.where(lambda v: v["hash"] == "cityhash64" and v.get("seed", 0) is not None)
            )
            for core in cores["cityfarm"]:
                m.d.comb += [
                    core.hash.eq(Mux(farm, HASH_FARM, HASH_CITY)),
                    core.seeded.eq(seeded),
                    core.seed.eq(self.seed),
                ]
        for name in RECORD_CORES:
            for core in cores.get(name, [])[1:]:
                m.d.comb += core.key8.eq(key8)
        for core in cores.get("decfarm", []):  # int64 (FIXED8) or int32 (FIXED4) values
            m.d.comb += core.key8.eq(key8)

    def _inputs(self, m: Module) -> None:
        """Add every core's input register to ``m``, fed from the parser's unit.

        Every core's input goes through a register of its own, placed by the tools next to the
        core: the cores are large and spread over the device, and a path from the parser's
        registers across it into a core's first adder stage was the engine's longest (routing
        ~80 % of it). The data register loads only while the batch's operator uses the core (a
        static enable), which also keeps the copies distinct (not merged by synthesis)."""
        N, uses, cores = self.lanes, self.uses, self.cores
        for name in RECORD_CORES:
            if name not in cores:
                continue
            core = cores[name][0]
            beat = Signal.like(core.i.payload, name=f"{name}_beat")
            m.d.comb += [
                beat.data.eq(self.w),
                beat.first.eq(self.beat_first),
                beat.last.eq(~self.framed | self.last_word),
                beat.empty.eq(self.empty_rec),
                beat.length.eq(self.beat_len),
            ]
            self._feed(m, name, core.i, self.core_valid, beat, uses[name])
        # one-word cores: lane j takes the beat's word j (lane 0 the parser's word)
        for j in range(N):
            sfx = "" if j == 0 else f"_l{j}"
            valid = self.core_valid if j == 0 else self.core_valid & self.lane_on[j]
            word = self.w if j == 0 else self.words.word_select(j, 64)
            for name in RECORD_CORES if j else ():
                if name in cores:
                    self._feed(m, name + sfx, cores[name][j].i, valid, word, uses[name])
            if "decfarm" in cores:
                self._feed(m, "decfarm" + sfx, cores["decfarm"][j].i, valid, word, uses["decfarm"])
            if "sigrid" in cores:  # int32 ids (FIXED4) are sign-extended
                sext = Mux(self.fixed & self.fmt[0], word[:32].as_signed(), word)
                self._feed(m, "sigrid" + sfx, cores["sigrid"][j].i, valid, sext, uses["sigrid"])
            if "bucketize" in cores:
                self._feed(m, "bucketize" + sfx, cores["bucketize"][j].i, valid, word, self.is_bz)
        if self.decode.built("varint"):
            self._varint_input(m)
        for j in range(N):
            self._post_inputs(m, j)

    def _post_inputs(self, m: Module, j: int) -> None:
        """Lane ``j``'s post cores, each fed through a register (as the cores' inputs) from the
        core in front of it on the batch's path (a static choice per batch), and the sign of
        sigrid's value delayed to meet its remainder at the fix-up."""
        sfx = "" if j == 0 else f"_l{j}"
        dec, cores = self.decode, self.cores
        for post in POST_CORES:
            if post not in cores:
                continue
            picks = []
            for front, codes in dec.fronts(post).items():
                o = cores[front][j].o
                pad = mod_pad(cores[post][j], cores[front][0].latency) if post == "mod" else 0
                name = f"{front}_{post}_pad{sfx}"
                if pad:
                    # cleared with the cores (core_rst): a value from before START or SOFT_RESET
                    # is in the pad for more than the cycle core_rst keeps the post core's
                    # input register clear
                    pm = Module()
                    v, d = delay(pm, name, o.valid, o.payload, pad)
                    m.submodules[name] = ResetInserter(self.core_rst)(pm)
                else:
                    v, d = o.valid, o.payload
                picks.append((op_in(self.op, codes), v, d))
            valid = any_of([sel & v for sel, v, _ in picks])
            payload: Value = Value.cast(picks[-1][2])
            for sel, _, d in reversed(picks[:-1]):
                payload = Mux(sel, d, payload)
            self._feed(m, post + sfx, cores[post][j].i, valid, payload, self.uses[post], after_core=True)
        if "sigfix" in cores:
            # sigrid's output -> the mod core's input register -> the mod core -> the fix-up's
            # input register: the sign takes as long
            lag = mod_pad(cores["mod"][j], cores["sigrid"][0].latency) + 1 + cores["mod"][j].latency + 1
            _, neg = delay(m, f"sigrid_neg{sfx}", Const(1), cores["sigrid"][j].neg, lag)
            m.d.comb += cores["sigfix"][j].neg.eq(neg)

    def _feed(
        self, m: Module, name: str, port, valid: Value, payload: Value, use: Value, after_core: bool = False
    ) -> None:
        """A core's input register: ``valid`` while ``use``, ``payload`` loaded while ``use``.
        Behind a core (after_core) not while core_rst still lets the core's output from before
        the reset out. In front of a core it is not cleared: the parser hands over a batch's
        first word while core_rst is set, and a stale unit in it is dropped by the core's own
        reset (see :meth:`_submodules`)."""
        v = Signal(name=f"{name}_in_valid")
        d = Signal.like(port.payload, name=f"{name}_in_data", reset_less=True)
        m.d.sync += v.eq(valid & use & (~self.core_rst if after_core else 1))
        with m.If(use):
            m.d.sync += d.eq(payload)
        m.d.comb += [port.valid.eq(v), port.payload.eq(d)]

    def _varint_input(self, m: Module) -> None:
        """The varint encoder has a ready handshake, so its input register is a two-entry skid
        buffer: the parser sees a registered ready (dvq_skid_valid clear), and the encoder's
        first stage (a 64-bit subtraction) starts at a register next to it rather than at the
        parser's (it was the engine's longest path without one). A value taken by the parser
        reaches the encoder a cycle later, a value per cycle as before."""
        dv, core_clr = self.dv, self.core_clr
        dvq = Signal.like(dv.i.payload, name="dvq_data", reset_less=True)
        dvs = Signal.like(dv.i.payload, name="dvq_skid", reset_less=True)
        dvq_v, dvs_v = Signal(name="dvq_valid"), Signal(name="dvq_skid_valid")
        # The parser's copy of dvs_v (its room check), kept apart: the skid's valid, placed by
        # the encoder, was 1.75 ns from the parser and on to its record registers' enable
        # (10.08 ns, 8.85 of it routing, nextpnr seed 2).
        dvs_v_parser = Signal(name="dvq_skid_valid_parser", attrs={"keep": 1})
        dv_in = Signal.like(dv.i.payload, name="dvq_in")
        m.d.comb += [
            dv_in.data.eq(self.w),
            dv_in.first.eq(self.dv_first),
            dv_in.last.eq(self.last_word),
            dv_in.empty.eq(self.empty_rec),
            self.dv_room.eq(~dvs_v_parser),
        ]
        dv_fire = self.uacc & self.needs_dv
        with m.If(core_clr):
            m.d.sync += [dvq_v.eq(0), dvs_v.eq(0), dvs_v_parser.eq(0)]
        with m.Elif(dv.i.ready | ~dvq_v):
            m.d.sync += [
                dvq.eq(Mux(dvs_v, dvs, dv_in)),
                dvq_v.eq(dvs_v | dv_fire),
                dvs_v.eq(0),
                dvs_v_parser.eq(0),
            ]
        with m.Elif(dv_fire):
            m.d.sync += [dvs_v.eq(1), dvs_v_parser.eq(1)]
        # The skid's data follows the parser's value while the skid is empty, so it holds the
        # value of the cycle that fills it: its enable is one register, not the accept decision
        # (which was the engine's critical path into it, 10.52 ns, nextpnr seed 2).
        with m.If(~dvs_v):
            m.d.sync += dvs.eq(dv_in)
        m.d.comb += [dv.i.valid.eq(dvq_v), dv.i.payload.eq(dvq), self.dv_busy.eq(dvq_v | dvs_v | dv.busy)]

    def results(self) -> list:
        """``(op codes, [core per lane])`` for every operator whose results are a lane core's
        output, in the order of their first op code (the varint encoder's are not)."""
        results = self.decode.results()
        return [(tuple(codes), self.cores[name]) for name, codes in results if name != "varint"]

    def _select(self, m: Module) -> None:
        """The operator mux: the batch operator's results, its cores' outputs
        (``delta_varint_encode``: the encoder's words, kind ``SEQ_DATA`` or ``SEQ_HEADER``).

        Each source is selected by a register of its own (``res_sel_<k>``, op's decode a cycle
        behind op, kept apart in synthesis): the first result of a batch leaves a core three
        cycles after START at the earliest, and the collector ignores what comes out while
        core_rst is set. Decoded from op in the mux itself, the decode was routed from op to
        every lane's result (3.7 + 4.3 ns of routing, nextpnr seed 2)."""
        N, dv = self.lanes, self.dv
        # (op codes, [(valid, result) per lane]) per source
        sources = [(codes, [(c.o.valid, c.o.payload) for c in cores]) for codes, cores in self.results()]
        if self.decode.built("varint"):
            sources.append((tuple(self.decode.users("varint")), [(dv.o.valid, dv.o.payload.data)]))
        sels = []
        for k, (codes, _) in enumerate(sources):
            sel = Signal(name=f"res_sel_{k}", attrs={"keep": 1})
            m.d.sync += sel.eq(op_in(self.op, codes))
            sels.append(sel)
        res_valid = [Signal(name="res_valid" if j == 0 else f"res_valid_l{j}") for j in range(N)]
        res_data = [Signal(64, name="res_data" if j == 0 else f"res_data_l{j}") for j in range(N)]
        res_kind = Signal(2, name="res_kind")
        for j in range(N):
            picks = [(sel, outs[j]) for sel, (_, outs) in zip(sels, sources) if j < len(outs)]
            m.d.comb += [
                res_valid[j].eq(any_of([sel & v for sel, (v, _) in picks])),
                res_data[j].eq(any_of([Mux(sel, d, 0) for sel, (_, d) in picks])),  # one-hot
            ]
        if self.decode.built("varint"):
            m.d.comb += res_kind.eq(Mux(sels[-1], Mux(dv.o.payload.header, SEQ_HEADER, SEQ_DATA), 0))
        m.d.comb += [
            self.res_valid.eq(Cat(*res_valid)),
            self.res_data.eq(Cat(*res_data)),
            self.res_kind.eq(res_kind),
        ]
