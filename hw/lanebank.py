"""The engine's lanes: every operator core, its enables, parameters and input registers, and
the operator's results (:class:`LaneBank`, a submodule of :class:`~offload.hw.engine.OffloadEngine`).
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Cat, EnableInserter, Module, Mux, ResetInserter, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from offload.engine_map import DTYPE_CODES, FORMATS, OP_CODES

from .bucketize import Bucketize
from .fifo import SEQ_DATA, SEQ_HEADER
from .lanes import XXH32Lane, XXH64Lane
from .opdecode import OpDecode, op_in
from .postproc import FastRange, FidCore, ModPipe, ModReciprocal
from .varint import DeltaVarintEncoder
from .xxhash import XXH32Core, XXH64Core

__all__ = ["LaneBank", "mod_core", "LANE_CORES"]

#: The cores of a lane, in the order they are added (their names in the RTL), and the varint
#: encoder's (lane 0 only); :class:`~offload.hw.opdecode.OpDecode` says which op codes use each.
LANE_CORES = ("xxh64", "xxh32", "mod", "fastrange", "fid", "bucketize")


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

    Inputs: the batch registers of :class:`~offload.hw.control.Control` (``op``, ``fmt``,
    ``dtype``, ``seed``, ``nbuckets``, ``slot``, ``nbound``, ``fixed``, ``core_clr``), the
    register file's boundary table write (``TABLE_ADDR``, ``TABLE_DATA_LO``, ``wdata``,
    ``table_we``) and, at :meth:`elaborate_inputs`, the parser's unit. Outputs: the cores
    (:attr:`h64`, :attr:`h32`, :attr:`mods`, :attr:`frs`, :attr:`fids`, :attr:`bzs`, one per
    lane; :attr:`dv`), :attr:`core_rst`, :attr:`dv_room` (the varint input has room),
    :attr:`dv_busy` (a value in the varint path), :attr:`uses` (which cores the batch's
    operator uses).

    Latency: one input register in front of every core and one between a hash and its
    post-processing, besides the cores' own (``OffloadEngine.latency``). Reset: ``core_clr``
    (START, SOFT_RESET) clears the input registers' valid bits and, a cycle later (from the
    register :attr:`core_rst`), the cores' valid bits; data registers are not reset.
    """

    def __init__(self, engine, decode: OpDecode):
        N = self.lanes = engine.lanes
        mul = self.multipliers = engine.multipliers
        self.decode = decode
        super().__init__(
            {
                "op": In(max(OP_CODES.values()).bit_length()),
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
        self.x64, self.x32 = XXH64Core(levels, mul), XXH32Core(levels, mul)
        x64 = self.x64
        self.h64 = [x64] + [XXH64Lane(x64.latency, levels, mul) for _ in range(1, N)]
        self.h32 = [self.x32] + [XXH32Lane(self.x32.latency, levels, mul) for _ in range(1, N)]
        self.mods = [mod_core(engine.modulo, engine.mod_bits_per_stage, mul) for _ in range(N)]
        # ModReciprocal needs num_buckets stable ``setup`` cycles before its first value. Its
        # copy (nb_mod below) changes the cycle after START's, two cycles after START; the
        # first word the parser takes (in START's next cycle) reaches the mod core through its
        # input register, XXH64Core and the register between them: x64.latency + 1 cycles
        # after nb_mod changed. (The cores' reset, a cycle after START, restarts the
        # reciprocal too, earlier than that.)
        if isinstance(self.mods[0], ModReciprocal) and self.mods[0].setup > x64.latency + 1:
            raise AssertionError(
                f"ModReciprocal.setup ({self.mods[0].setup}) exceeds the hash "
                f"pipeline in front of it ({x64.latency + 1} cycles)"
            )
        self.frs = [FastRange(mul) for _ in range(N)]
        self.fids = [FidCore() for _ in range(N)]
        self.bzs = [Bucketize(engine.table_depth, mul) for _ in range(N)]
        self.dv = DeltaVarintEncoder()
        #: Each lane core's instances, lane by lane, by its :data:`LANE_CORES` name.
        cores: tuple[list[Any], ...] = (self.h64, self.h32, self.mods, self.frs, self.fids, self.bzs)
        self.cores = dict(zip(LANE_CORES, cores))

    def elaborate(self, platform) -> Module:
        m = Module()
        dec = self.decode
        m.d.sync += self.core_rst.eq(self.core_clr)
        self.is_bz = op_in(self.op, dec.users("bucketize"))
        self.uses = {name: op_in(self.op, dec.users(name)) for name in LANE_CORES[:-1]}
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
        # engine's longest path (routing to every core). The varint encoder keeps core_clr
        # itself (as does its input skid buffer); the cores' inputs come through
        # registers that core_clr clears, and their outputs are ignored while core_rst is set,
        # so nothing from before the reset gets through in that cycle. In the behavioural
        # (simulation) flavour a core also only advances while the current OP uses it, so a
        # cycle-based simulator does not recompute idle pipelines every cycle; the others hold
        # their cleared state and their outputs are not selected, so the ports see the same
        # thing in both flavours. The LUT flavour (synthesised) has no such enable: it would be
        # one clock-enable net to every datapath flip-flop (~40k loads). Lanes 1..N-1 only run
        # for the fixed formats. Boundary table writes always reach every lane's bucketize.
        core_rst = self.core_rst
        for j in range(self.lanes):
            sfx = "" if j == 0 else f"_l{j}"
            for name in LANE_CORES:
                core = self.cores[name][j]
                use = (self.is_bz | table_we) if name == "bucketize" else self.uses[name]
                if self.multipliers == "behavioural":
                    core_en = Signal(name=f"{name}{sfx}_en")
                    m.d.comb += core_en.eq(
                        core_rst | (use if j == 0 or name == "bucketize" else use & self.fixed)
                    )
                    core = EnableInserter(core_en)(core)
                m.submodules[name + sfx] = ResetInserter(core_rst)(core)
        dv_en = Signal(name="varint_en")
        m.d.comb += dv_en.eq(self.core_clr | op_in(self.op, self.decode.users("varint")))
        m.submodules.varint = ResetInserter(self.core_clr)(EnableInserter(dv_en)(self.dv))

    def _parameters(self, m: Module) -> None:
        # Each post core gets a copy of num_buckets of its own, loaded only while the batch's
        # operator uses that core (a static enable, as the cores' inputs have). Both cores
        # register the port; fed by one signal, synthesis merged the two copies, and the merged
        # register, placed by ModPipe, fed FastRange's multipliers across the device (11.72 ns,
        # nextpnr seed 2). The copies are a cycle behind START; the first value reaches either
        # core behind the whole hash pipeline.
        op = self.op
        nb_mod = Signal(64, name="mod_num_buckets", reset_less=True)
        nb_fr = Signal(64, name="fastrange_num_buckets", reset_less=True)
        with m.If(self.uses["mod"]):
            m.d.sync += nb_mod.eq(self.nbuckets)
        with m.If(self.uses["fastrange"]):
            m.d.sync += nb_fr.eq(self.nbuckets)
        for j in range(self.lanes):
            bz = self.bzs[j]
            m.d.comb += [
                self.h64[j].seed.eq(self.seed),
                self.h32[j].seed.eq(self.seed[:32]),
                self.mods[j].num_buckets.eq(nb_mod),
                self.frs[j].num_buckets.eq(nb_fr),
                self.fids[j].slot.eq(self.slot),
                self.fids[j].version.eq(self.decode.selected(op, "fid")),
                bz.dtype.eq(self.dtype),
                bz.right.eq(self.decode.selected(op, "bucketize")),
                bz.num_boundaries.eq(self.nbound),
                bz.table_addr.eq(self.table_addr),
                bz.table_we.eq(self.table_we),
                bz.table_data.eq(Cat(self.table_data_lo, self.wdata)),
            ]
            if j:
                m.d.comb += [
                    self.h64[j].key8.eq(self.fmt == FORMATS["FIXED8"]),
                    self.h32[j].key8.eq(self.fmt == FORMATS["FIXED8"]),
                ]

    def _inputs(self, m: Module) -> None:
        """Add every core's input register to ``m``, fed from the parser's unit.

        Every core's input goes through a register of its own, placed by the tools next to the
        core: the cores are large and spread over the device, and a path from the parser's
        registers across it into a core's first adder stage was the engine's longest (routing
        ~80 % of it). The data register loads only while the batch's operator uses the core (a
        static enable), which also keeps the copies distinct (not merged by synthesis)."""
        N, uses = self.lanes, self.uses
        use_x64, use_x32, use_bz = uses["xxh64"], uses["xxh32"], self.is_bz
        for core, use, name in ((self.x64, use_x64, "xxh64"), (self.x32, use_x32, "xxh32")):
            beat = Signal.like(core.i.payload, name=f"{name}_beat")
            m.d.comb += [
                beat.data.eq(self.w),
                beat.first.eq(self.beat_first),
                beat.last.eq(~self.framed | self.last_word),
                beat.empty.eq(self.empty_rec),
                beat.length.eq(self.beat_len),
            ]
            self._feed(m, name, core.i, self.core_valid, beat, use)
        for j in range(1, N):
            lv = self.core_valid & self.lane_on[j]
            self._feed(m, f"xxh64_l{j}", self.h64[j].i, lv, self.words.word_select(j, 64), use_x64)
            self._feed(m, f"xxh32_l{j}", self.h32[j].i, lv, self.words.word_select(j, 64), use_x32)
            self._feed(m, f"bucketize_l{j}", self.bzs[j].i, lv, self.words.word_select(j, 64), use_bz)
        self._feed(m, "bucketize", self.bzs[0].i, self.core_valid, self.w, use_bz)
        self._varint_input(m)
        # Hash -> post-processing: a register per post core, for the same reason.
        use_mod, use_fr, use_fid = uses["mod"], uses["fastrange"], uses["fid"]
        for j in range(N):
            sfx = "" if j == 0 else f"_l{j}"
            hv, hp = self.h64[j].o.valid, self.h64[j].o.payload
            self._feed(m, "mod" + sfx, self.mods[j].i, hv, hp, use_mod, after_core=True)
            self._feed(m, "fastrange" + sfx, self.frs[j].i, hv, hp, use_fr, after_core=True)
            self._feed(m, "fid" + sfx, self.fids[j].i, hv, hp, use_fid, after_core=True)

    def _feed(
        self, m: Module, name: str, port, valid: Value, payload: Value, use: Value, after_core: bool = False
    ) -> None:
        """A core's input register: ``valid`` while ``use``, ``payload`` loaded while ``use``.
        Cleared by core_clr; behind a core (after_core) also while core_rst still lets the
        core's output from before the reset out. (The parser may hand over a batch's first word
        while core_rst is set: the core's reset does not reach this register.)"""
        v = Signal(name=f"{name}_in_valid")
        d = Signal.like(port.payload, name=f"{name}_in_data", reset_less=True)
        m.d.sync += v.eq(valid & use & ~self.core_clr & (~self.core_rst if after_core else 1))
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
        dv_in = Signal.like(dv.i.payload, name="dvq_in")
        m.d.comb += [
            dv_in.data.eq(self.w),
            dv_in.first.eq(self.beat_first),
            dv_in.last.eq(self.last_word),
            dv_in.empty.eq(self.empty_rec),
            self.dv_room.eq(~dvs_v),
        ]
        dv_fire = self.uacc & self.needs_dv
        with m.If(core_clr):
            m.d.sync += [dvq_v.eq(0), dvs_v.eq(0)]
        with m.Elif(dv.i.ready | ~dvq_v):
            m.d.sync += [dvq.eq(Mux(dvs_v, dvs, dv_in)), dvq_v.eq(dvs_v | dv_fire), dvs_v.eq(0)]
        with m.Elif(dv_fire):
            m.d.sync += [dvs.eq(dv_in), dvs_v.eq(1)]
        m.d.comb += [dv.i.valid.eq(dvq_v), dv.i.payload.eq(dvq), self.dv_busy.eq(dvq_v | dvs_v | dv.busy)]

    def results(self) -> list:
        """``(op codes, [core per lane])`` for every operator whose results are a lane core's
        output, in the order of their first op code (the varint encoder's are not)."""
        results = self.decode.results()
        return [(tuple(codes), self.cores[name]) for name, codes in results if name != "varint"]

    def _select(self, m: Module) -> None:
        """The operator mux: the batch operator's results, its cores' outputs
        (``delta_varint_encode``: the encoder's words, kind ``SEQ_DATA`` or ``SEQ_HEADER``)."""
        N, dv = self.lanes, self.dv
        res_valid = [Signal(name="res_valid" if j == 0 else f"res_valid_l{j}") for j in range(N)]
        res_data = [Signal(64, name="res_data" if j == 0 else f"res_data_l{j}") for j in range(N)]
        res_kind = Signal(2, name="res_kind")
        with m.Switch(self.op):
            for case, cores in self.results():
                with m.Case(*case):
                    for j in range(N):
                        m.d.comb += [res_valid[j].eq(cores[j].o.valid), res_data[j].eq(cores[j].o.payload)]
            with m.Case(*self.decode.users("varint")):
                m.d.comb += [
                    res_valid[0].eq(dv.o.valid),
                    res_data[0].eq(dv.o.payload.data),
                    res_kind.eq(Mux(dv.o.payload.header, SEQ_HEADER, SEQ_DATA)),
                ]
        m.d.comb += [
            self.res_valid.eq(Cat(*res_valid)),
            self.res_data.eq(Cat(*res_data)),
            self.res_kind.eq(res_kind),
        ]
