"""The offload engine: AXI-Stream in/out + AXI-Lite registers around every operator core.

Implements ``docs/wire_format.md`` (version 1.0 plus the ``SEQ_MAX`` register, see there).

Ports (flat AXI names, so the Verilog wrapper ``rtl/offload_axi.v`` only renames the clock and
inverts the reset): ``s_axis_tdata[63:0] tkeep[7:0] tlast tvalid tready``, ``m_axis_*`` the same
in the other direction, ``s_axi_aw*/w*/b*/ar*/r*`` an AXI4-Lite slave (8-bit byte address;
32-bit data; ``wstrb`` is ignored: registers are written whole). Clock ``clk``, synchronous
active-high ``rst``.

Data path: a framing parser feeds one word per cycle to the operator selected by ``OP`` (every
core is a flow-through pipeline, see the cores' docstrings); results go into a
:class:`~offload.hw.fifo.CommitFIFO` that drives ``m_axis``. Flow control is by credit: the input
is accepted only while the FIFO has room for everything that can still be in the pipelines
(``SLACK`` words), so cores never stall and results are never lost under backpressure. With
``m_axis_tready`` held high one input beat is accepted every cycle for every operator
(``delta_varint_encode``: up to the encoder's flush cycles per sequence).

Errors never deadlock: in the idle state ``s_axis_tready`` is 1 and words are discarded
(``EXTRA_DATA``); after an error the engine drains its pipelines (a bounded number of cycles,
independent of the input stream), sends the trailer and goes idle.

Reset: ``rst`` clears every register (parameters to 0). ``CTRL.SOFT_RESET`` aborts a batch,
clears flags, empties the FIFO and the pipelines (the boundary table is kept). ``START`` while a
batch runs is ignored.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, EnableInserter, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .bucketize import Bucketize
from .common import check_choice, check_pow2
from .fifo import RESULT, SEQ_DATA, SEQ_HEADER, TRAILER, CommitFIFO
from .postproc import FastRange, FidCore, ModPipe
from .varint import DeltaVarintEncoder
from .xxhash import XXH32Core, XXH64Core

__all__ = ["OffloadEngine", "REG", "ERR", "ENGINE_ID", "ENGINE_VERSION", "TRAILER_MAGIC"]

ENGINE_ID = 0x0FF10AD0
ENGINE_VERSION = 0x00010001      # wire format 1.1 (1.0 + SEQ_MAX)
TRAILER_MAGIC = 0x0FF1

#: Register byte addresses (docs/wire_format.md).
REG = dict(ID=0x00, VERSION=0x04, CTRL=0x08, STATUS=0x0C, ERR=0x10, OP=0x14, FORMAT=0x18,
           DTYPE=0x1C, COUNT=0x20, DONE_COUNT=0x24, SEED_LO=0x28, SEED_HI=0x2C,
           NUM_BUCKETS_LO=0x30, NUM_BUCKETS_HI=0x34, SLOT=0x38, NUM_BOUNDARIES=0x3C,
           TABLE_ADDR=0x40, TABLE_DATA_LO=0x44, TABLE_DATA_HI=0x48, CAPS=0x4C, CYCLES_LO=0x50,
           CYCLES_HI=0x54, OPS=0x58, SEQ_MAX=0x5C)
#: Error flag bits.
ERR = dict(EARLY_TLAST=0, MISSING_TLAST=1, EXTRA_DATA=2, BAD_HEADER=3, BAD_PARAM=4, BAD_TKEEP=5)

FIXED8, FIXED4, VAR, SEQ = 0, 1, 2, 3
OPS_BUILT = tuple(range(1, 10))


class OffloadEngine(wiring.Component):
    """The engine top. Parameters:

    * ``table_depth``: bucketize boundary table entries, a power of two in [1, 4096];
    * ``fifo_depth``: output FIFO words, a power of two in [256, 65536];
    * ``seq_max``: largest ``delta_varint_encode`` sequence (values) accepted; a longer one is
      ``BAD_HEADER``. Its whole encoding must fit in the FIFO: ``2 + ceil(10*seq_max/8) <=
      fifo_depth - SLACK``;
    * ``mod_bits_per_stage``: quotient bits per stage of the ``mod`` pipeline (1, 2 or 4);
    * ``lanes``: 64-bit words per beat; only 1 is built.
    """

    SLACK = 128

    def __init__(self, *, table_depth: int = 256, fifo_depth: int = 2048, seq_max: int = 1024,
                 mod_bits_per_stage: int = 1, lanes: int = 1):
        self._MustUse__silence = True      # no UnusedElaboratable warning if rejected
        self.table_depth = check_pow2("table_depth", table_depth, 1, 4096)
        self.fifo_depth = check_pow2("fifo_depth", fifo_depth, 256, 65536)
        limit = (fifo_depth - self.SLACK - 2) * 8 // 10
        if (not isinstance(seq_max, int) or isinstance(seq_max, bool) or seq_max < 1
                or seq_max > limit):
            raise ValueError(f"seq_max must be between 1 and {limit} for fifo_depth {fifo_depth}, "
                             f"not {seq_max!r}")
        self.seq_max = seq_max
        self.mod_bits_per_stage = check_choice("mod_bits_per_stage", mod_bits_per_stage, (1, 2, 4))
        if lanes != 1 or isinstance(lanes, bool):
            raise ValueError(f"lanes must be 1 (only the 64-bit bus is built), not {lanes!r}")
        self.lanes = lanes
        self._MustUse__silence = False
        self.caps = table_depth | (lanes << 16) | ((8 * lanes) << 24)
        self.ops_mask = sum(1 << k for k in OPS_BUILT)
        super().__init__({
            "s_axis_tdata": In(64), "s_axis_tkeep": In(8), "s_axis_tlast": In(1),
            "s_axis_tvalid": In(1), "s_axis_tready": Out(1),
            "m_axis_tdata": Out(64), "m_axis_tkeep": Out(8), "m_axis_tlast": Out(1),
            "m_axis_tvalid": Out(1), "m_axis_tready": In(1),
            "s_axi_awaddr": In(8), "s_axi_awvalid": In(1), "s_axi_awready": Out(1),
            "s_axi_wdata": In(32), "s_axi_wstrb": In(4), "s_axi_wvalid": In(1),
            "s_axi_wready": Out(1),
            "s_axi_bresp": Out(2), "s_axi_bvalid": Out(1), "s_axi_bready": In(1),
            "s_axi_araddr": In(8), "s_axi_arvalid": In(1), "s_axi_arready": Out(1),
            "s_axi_rdata": Out(32), "s_axi_rresp": Out(2), "s_axi_rvalid": Out(1),
            "s_axi_rready": In(1),
        })

    def elaborate(self, platform):
        m = Module()

        # ---------------------------------------------------------------- host registers
        r = {n: Signal(32, name=f"reg_{n.lower()}") for n in (
            "OP", "FORMAT", "DTYPE", "COUNT", "SEED_LO", "SEED_HI", "NUM_BUCKETS_LO",
            "NUM_BUCKETS_HI", "SLOT", "NUM_BOUNDARIES", "TABLE_ADDR", "TABLE_DATA_LO")}
        err = Signal(6)
        done_flag = Signal()
        busy_out = Signal()             # set at START, cleared when the trailer leaves m_axis
        done_count = Signal(32)
        cycles = Signal(64)

        # ---------------------------------------------------------------- AXI-Lite slave
        bvalid, rvalid = Signal(), Signal()
        rdata = Signal(32)
        wr_en = Signal()
        wr_idx = self.s_axi_awaddr[2:8]
        m.d.comb += [
            wr_en.eq(self.s_axi_awvalid & self.s_axi_wvalid & ~bvalid),
            self.s_axi_awready.eq(wr_en), self.s_axi_wready.eq(wr_en),
            self.s_axi_bvalid.eq(bvalid), self.s_axi_bresp.eq(0),
            self.s_axi_arready.eq(~rvalid),
            self.s_axi_rvalid.eq(rvalid), self.s_axi_rdata.eq(rdata), self.s_axi_rresp.eq(0),
        ]
        with m.If(wr_en):
            m.d.sync += bvalid.eq(1)
        with m.Elif(self.s_axi_bready):
            m.d.sync += bvalid.eq(0)
        wdata = self.s_axi_wdata
        start = Signal()
        soft_reset = Signal()
        table_we = Signal()
        with m.If(wr_en):
            with m.Switch(wr_idx):
                for name, sig in r.items():
                    with m.Case(REG[name] >> 2):
                        m.d.sync += sig.eq(wdata)
                with m.Case(REG["CTRL"] >> 2):
                    m.d.comb += [start.eq(wdata[0] & ~wdata[1]), soft_reset.eq(wdata[1])]
                with m.Case(REG["TABLE_DATA_HI"] >> 2):
                    m.d.comb += table_we.eq(r["TABLE_ADDR"] < self.table_depth)
                    m.d.sync += r["TABLE_ADDR"].eq(r["TABLE_ADDR"] + 1)

        # ---------------------------------------------------------------- batch state
        IDLE, RUN, DRAIN, ROLLBACK, TRAIL = range(5)
        state = Signal(3)
        op, fmt, dtype = Signal(4), Signal(2), Signal(2)
        count = Signal(32)
        seed = Signal(64)
        nbuckets = Signal(64)
        slot = Signal(16)
        nbound = Signal(13)

        status = Cat(busy_out | (state != IDLE), done_flag, err != 0)
        read_map = {
            "ID": Const(ENGINE_ID, 32), "VERSION": Const(ENGINE_VERSION, 32), "STATUS": status,
            "ERR": err, "DONE_COUNT": done_count, "CAPS": Const(self.caps, 32),
            "CYCLES_LO": cycles[:32], "CYCLES_HI": cycles[32:], "OPS": Const(self.ops_mask, 32),
            "SEQ_MAX": Const(self.seq_max, 32),
            **{n: s for n, s in r.items() if n != "TABLE_DATA_LO"},
        }
        with m.If(self.s_axi_arvalid & ~rvalid):
            m.d.sync += rvalid.eq(1)
            with m.Switch(self.s_axi_araddr[2:8]):
                for name, val in read_map.items():
                    with m.Case(REG[name] >> 2):
                        m.d.sync += rdata.eq(val)
                with m.Default():
                    m.d.sync += rdata.eq(0)
        with m.Elif(self.s_axi_rready):
            m.d.sync += rvalid.eq(0)

        # ---------------------------------------------------------------- cores
        core_clr = Signal()
        x64, x32 = XXH64Core(), XXH32Core()
        mod, fr, fid = ModPipe(self.mod_bits_per_stage), FastRange(), FidCore()
        bz = Bucketize(self.table_depth)
        dv = DeltaVarintEncoder()
        fifo = CommitFIFO(self.fifo_depth)
        # A core only advances while the current OP uses it (and on core_clr, which resets it at
        # START): the others hold their reset state, so their outputs stay invalid exactly as
        # before, but a cycle-based simulator does not recompute idle pipelines every cycle (and
        # on silicon they do not toggle). Boundary table writes always reach bucketize.
        uses = {
            "xxh64": (op >= 2) & (op <= 6), "xxh32": op == 1, "mod": op == 3,
            "fastrange": op == 4, "fid": (op == 5) | (op == 6),
            "bucketize": (op == 7) | (op == 8) | table_we, "varint": op == 9,
        }
        for name, core in (("xxh64", x64), ("xxh32", x32), ("mod", mod), ("fastrange", fr),
                           ("fid", fid), ("bucketize", bz), ("varint", dv)):
            core_en = Signal(name=f"{name}_en")
            m.d.comb += core_en.eq(core_clr | uses[name])
            m.submodules[name] = ResetInserter(core_clr)(EnableInserter(core_en)(core))
        m.submodules.fifo = ResetInserter(soft_reset)(fifo)
        assert max(x64.latency + mod.latency, x32.latency, bz.latency) + 8 < self.SLACK
        m.d.comb += [
            x64.seed.eq(seed), x32.seed.eq(seed[:32]),
            mod.num_buckets.eq(nbuckets), fr.num_buckets.eq(nbuckets),
            fid.slot.eq(slot), fid.version.eq(Mux(op == 5, 1, 2)),
            bz.dtype.eq(dtype), bz.right.eq(op == 7), bz.num_boundaries.eq(nbound),
            bz.table_addr.eq(r["TABLE_ADDR"]), bz.table_we.eq(table_we),
            bz.table_data.eq(Cat(r["TABLE_DATA_LO"], wdata)),
        ]

        # ---------------------------------------------------------------- parser
        w = self.s_axis_tdata
        tlast = self.s_axis_tlast
        in_rec = Signal()
        first_word = Signal()
        remaining = Signal(32)
        rec_len = Signal(32)
        recs_in = Signal(32)
        credit = fifo.level < (self.fifo_depth - self.SLACK)
        is_delta = op == 9
        framed = fmt[1]                                  # VAR or SEQ
        hdr = framed & ~in_rec
        hdr_len = w[:32]
        bad_hdr = hdr & ((w[32:] != 0) | ((fmt == SEQ) & (hdr_len > self.seq_max)))
        empty_rec = hdr & ~bad_hdr & (hdr_len == 0)
        send = ~hdr | empty_rec                          # this beat goes into a core
        needs_dv = is_delta & send
        tready = Signal()
        acc = Signal()
        m.d.comb += [
            tready.eq(Mux(state == IDLE, 1,
                          (state == RUN) & credit & (dv.i.ready | ~needs_dv))),
            self.s_axis_tready.eq(tready),
            acc.eq(self.s_axis_tvalid & tready),
        ]
        last_word = Mux(hdr, empty_rec, remaining == 1)
        complete = (state == RUN) & acc & send & (~framed | last_word)
        beat_first = Mux(framed, Mux(hdr, 1, first_word), 1)
        beat_len = Mux(framed, Mux(hdr, 0, rec_len), Mux(fmt == FIXED8, 8, 4))
        core_valid = (state == RUN) & acc & send
        for core in (x64, x32):
            m.d.comb += [
                core.i.valid.eq(core_valid & Mux(core is x32, op == 1, (op >= 2) & (op <= 6))),
                core.i.payload.data.eq(w), core.i.payload.first.eq(beat_first),
                core.i.payload.last.eq(~framed | last_word), core.i.payload.empty.eq(empty_rec),
                core.i.payload.length.eq(beat_len),
            ]
        m.d.comb += [
            bz.i.valid.eq(core_valid & ((op == 7) | (op == 8))), bz.i.payload.eq(w),
            # valid must not depend on ready: use the credit/state terms only
            dv.i.valid.eq((state == RUN) & self.s_axis_tvalid & credit & needs_dv),
            dv.i.payload.data.eq(w), dv.i.payload.first.eq(beat_first),
            dv.i.payload.last.eq(last_word), dv.i.payload.empty.eq(empty_rec),
            mod.i.valid.eq(x64.o.valid & (op == 3)), mod.i.payload.eq(x64.o.payload),
            fr.i.valid.eq(x64.o.valid & (op == 4)), fr.i.payload.eq(x64.o.payload),
            fid.i.valid.eq(x64.o.valid & ((op == 5) | (op == 6))), fid.i.payload.eq(x64.o.payload),
        ]

        # ---------------------------------------------------------------- results -> FIFO
        res_valid = Signal()
        res_data = Signal(64)
        res_kind = Signal(2)
        with m.Switch(op):
            with m.Case(1):
                m.d.comb += [res_valid.eq(x32.o.valid), res_data.eq(x32.o.payload)]
            with m.Case(2):
                m.d.comb += [res_valid.eq(x64.o.valid), res_data.eq(x64.o.payload)]
            with m.Case(3):
                m.d.comb += [res_valid.eq(mod.o.valid), res_data.eq(mod.o.payload)]
            with m.Case(4):
                m.d.comb += [res_valid.eq(fr.o.valid), res_data.eq(fr.o.payload)]
            with m.Case(5, 6):
                m.d.comb += [res_valid.eq(fid.o.valid), res_data.eq(fid.o.payload)]
            with m.Case(7, 8):
                m.d.comb += [res_valid.eq(bz.o.valid), res_data.eq(bz.o.payload)]
            with m.Case(9):
                m.d.comb += [res_valid.eq(dv.o.valid), res_data.eq(dv.o.payload.data),
                             res_kind.eq(Mux(dv.o.payload.header, SEQ_HEADER, SEQ_DATA))]
        result_done = res_valid & (res_kind != SEQ_DATA)
        trailer = Cat(done_count, err, Const(0, 16 - len(err)), Const(TRAILER_MAGIC, 16))
        write_trailer = (state == TRAIL) & (fifo.level < self.fifo_depth)
        m.d.comb += [
            fifo.w_valid.eq(Mux(state == TRAIL, write_trailer, res_valid)),
            fifo.w_kind.eq(Mux(state == TRAIL, TRAILER, res_kind)),
            fifo.w_data.eq(Mux(state == TRAIL, trailer, res_data)),
            fifo.rollback.eq((state == ROLLBACK) | core_clr),
            self.m_axis_tdata.eq(fifo.o.payload.data), self.m_axis_tlast.eq(fifo.o.payload.last),
            self.m_axis_tkeep.eq(0xFF), self.m_axis_tvalid.eq(fifo.o.valid),
            fifo.o.ready.eq(self.m_axis_tready),
        ]
        with m.If(result_done):
            m.d.sync += done_count.eq(done_count + 1)
        with m.If(self.m_axis_tvalid & self.m_axis_tready & self.m_axis_tlast):
            m.d.sync += [done_flag.eq(1), busy_out.eq(0)]

        # ---------------------------------------------------------------- control FSM
        bad_param = Signal()
        rop, rfmt, rdt = r["OP"], r["FORMAT"], r["DTYPE"]
        hash_op = (rop >= 1) & (rop <= 6)
        bz_op = (rop == 7) | (rop == 8)
        m.d.comb += bad_param.eq(
            ~(hash_op & (rfmt <= VAR)
              | bz_op & (((rfmt == FIXED8) & ((rdt == 1) | (rdt == 3)))
                         | ((rfmt == FIXED4) & ((rdt == 0) | (rdt == 2))))
              | (rop == 9) & (rfmt == SEQ))
            | ((rop == 3) & (Cat(r["NUM_BUCKETS_LO"], r["NUM_BUCKETS_HI"]) == 0))
            | ((rop == 5) & (r["SLOT"] >= 1024))
            | ((rop == 6) & (r["SLOT"] >= 32768))
            | (bz_op & (r["NUM_BOUNDARIES"] > self.table_depth)))
        m.d.comb += core_clr.eq(soft_reset | (start & (state == IDLE)))
        with m.If(state != IDLE):
            m.d.sync += cycles.eq(cycles + 1)

        with m.If(soft_reset):
            m.d.sync += [state.eq(IDLE), err.eq(0), done_flag.eq(0), busy_out.eq(0),
                         in_rec.eq(0)]
        with m.Else():
            with m.Switch(state):
                with m.Case(IDLE):
                    with m.If(start):
                        m.d.sync += [
                            op.eq(rop), fmt.eq(rfmt), dtype.eq(rdt), count.eq(r["COUNT"]),
                            seed.eq(Cat(r["SEED_LO"], r["SEED_HI"])),
                            nbuckets.eq(Cat(r["NUM_BUCKETS_LO"], r["NUM_BUCKETS_HI"])),
                            slot.eq(r["SLOT"]), nbound.eq(r["NUM_BOUNDARIES"]),
                            err.eq(Mux(bad_param, 1 << ERR["BAD_PARAM"], 0)),
                            done_flag.eq(0), busy_out.eq(1), done_count.eq(0), cycles.eq(0),
                            recs_in.eq(0), in_rec.eq(0),
                            state.eq(Mux(bad_param | (r["COUNT"] == 0), TRAIL, RUN)),
                        ]
                    with m.Elif(acc):
                        m.d.sync += err[ERR["EXTRA_DATA"]].eq(1)
                with m.Case(RUN):
                    with m.If(acc):
                        with m.If(self.s_axis_tkeep != 0xFF):
                            m.d.sync += err[ERR["BAD_TKEEP"]].eq(1)
                        with m.If(hdr & ~bad_hdr & ~empty_rec):
                            m.d.sync += [
                                in_rec.eq(1), first_word.eq(1), rec_len.eq(hdr_len),
                                remaining.eq(Mux(fmt == SEQ, hdr_len, (hdr_len + 7) >> 3)),
                            ]
                        with m.If(framed & ~hdr):
                            m.d.sync += [first_word.eq(0), remaining.eq(remaining - 1)]
                            with m.If(remaining == 1):
                                m.d.sync += in_rec.eq(0)
                        with m.If(complete):
                            m.d.sync += recs_in.eq(recs_in + 1)
                        with m.If(bad_hdr):
                            m.d.sync += [err[ERR["BAD_HEADER"]].eq(1), state.eq(DRAIN)]
                        with m.Elif(complete & (recs_in + 1 == count)):
                            with m.If(~tlast):
                                m.d.sync += err[ERR["MISSING_TLAST"]].eq(1)
                            m.d.sync += state.eq(DRAIN)
                        with m.Elif(tlast):
                            m.d.sync += [err[ERR["EARLY_TLAST"]].eq(1), state.eq(DRAIN)]
                with m.Case(DRAIN):
                    # Every complete record has its result in the FIFO and nothing is in flight.
                    with m.If((done_count == recs_in) & ~dv.busy & ~res_valid):
                        m.d.sync += state.eq(ROLLBACK)
                with m.Case(ROLLBACK):
                    m.d.sync += state.eq(TRAIL)
                with m.Case(TRAIL):
                    with m.If(write_trailer):
                        m.d.sync += [state.eq(IDLE), in_rec.eq(0)]
        return m
