"""The engine's register file: an AXI4-Lite slave over the registers of the engine map
(:class:`RegisterFile`, a submodule of :class:`~offload.hw.engine.OffloadEngine`)."""

from __future__ import annotations

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from offload.engine_map import (
    CTRL_SOFT_RESET,
    CTRL_START,
    ENGINE_ID,
    ENGINE_VERSION,
    ERR_BITS,
    PARAM_REGISTERS,
    REGISTERS,
    TABLE_REGISTERS,
)

__all__ = ["RegisterFile", "AXI_LITE", "WRITABLE"]

#: The registers a host writes and the engine stores: the batch parameters, the boundary
#: table's address and an entry's low half (a write of ``TABLE_DATA_HI`` stores the entry
#: instead, see ``table_we``).
WRITABLE = PARAM_REGISTERS + TABLE_REGISTERS[:2]

#: The AXI4-Lite slave ports (8-bit byte address, 32-bit data), in the engine's port order.
AXI_LITE = {
    "s_axi_awaddr": In(8),
    "s_axi_awvalid": In(1),
    "s_axi_awready": Out(1),
    "s_axi_wdata": In(32),
    "s_axi_wstrb": In(4),
    "s_axi_wvalid": In(1),
    "s_axi_wready": Out(1),
    "s_axi_bresp": Out(2),
    "s_axi_bvalid": Out(1),
    "s_axi_bready": In(1),
    "s_axi_araddr": In(8),
    "s_axi_arvalid": In(1),
    "s_axi_arready": Out(1),
    "s_axi_rdata": Out(32),
    "s_axi_rresp": Out(2),
    "s_axi_rvalid": Out(1),
    "s_axi_rready": In(1),
}


def _index(name: str) -> int:
    """The word index of register ``name`` (its byte address / 4)."""
    return REGISTERS[name] >> 2


def _bit(mask: int) -> int:
    """The position of a one-bit mask's bit."""
    return mask.bit_length() - 1


class RegisterFile(wiring.Component):
    """AXI4-Lite slave, parameter registers and the command strobes.

    Ports: the :data:`AXI_LITE` slave (``wstrb`` is ignored: registers are written whole;
    responses are always OKAY); Out ``reg_<name>`` (32 bits) for every :data:`WRITABLE`
    register (:attr:`params` maps the names to them); Out ``wdata`` (32, the last write's data:
    the high half of a table entry); Out ``start``, ``soft_reset``, ``table_we`` (one-cycle
    strobes from flip-flops: ``CTRL.START`` without ``SOFT_RESET``, ``CTRL.SOFT_RESET``, a
    ``TABLE_DATA_HI`` write while ``TABLE_ADDR < table_depth``); In ``status`` (3, busy, done,
    error), ``err`` (the ``ERR`` flags), ``done_count`` (32) and ``cycles`` (64), read back as
    they are with the constant ``ID``, ``VERSION``, ``CAPS``, ``OPS``/``OPS_HI`` (the op code
    mask ``ops_mask``, bits 31..0 and 63..32), ``SEQ_MAX`` and
    ``RECORD_MAX`` given to the constructor.

    Latency: a write handshake in cycle t (``awvalid & wvalid``, taken at once) raises its strobe
    in t+1, stores the register in t+1 (readable from t+2) and answers with ``bvalid`` from
    t+2; a write of ``TABLE_DATA_HI`` also advances ``TABLE_ADDR``. A read handshake in cycle t
    answers with ``rvalid``/``rdata`` from t+1. One write is in flight at a time.

    Reset (``rst``): every register to 0, strobes low; ``wdata`` and the taken write's address
    are not reset (read only after a write).
    """

    def __init__(self, *, table_depth: int, caps: int, ops_mask: int, seq_max: int, record_max: int):
        self.table_depth = table_depth
        self.constants = {
            "ID": ENGINE_ID,
            "VERSION": ENGINE_VERSION,
            "CAPS": caps,
            "OPS": ops_mask & 0xFFFFFFFF,
            "OPS_HI": ops_mask >> 32,
            "SEQ_MAX": seq_max,
            "RECORD_MAX": record_max,
        }
        super().__init__(
            {
                **AXI_LITE,
                **{f"reg_{n.lower()}": Out(32) for n in WRITABLE},
                "wdata": Out(32),
                "start": Out(1),
                "soft_reset": Out(1),
                "table_we": Out(1),
                "status": In(3),
                "err": In(len(ERR_BITS)),
                "done_count": In(32),
                "cycles": In(64),
            }
        )
        #: The stored registers by name.
        self.params = {n: getattr(self, f"reg_{n.lower()}") for n in WRITABLE}

    def elaborate(self, platform) -> Module:
        m = Module()
        bvalid, rvalid = Signal(name="bvalid"), Signal(name="rvalid")
        rdata = Signal(32, name="rdata")
        wdata = Signal(32, name="wdata_q", reset_less=True)
        m.d.comb += self.wdata.eq(wdata)
        self._write(m, bvalid, rvalid, rdata, wdata)
        self._read(m, rvalid, rdata)
        return m

    def _write(self, m: Module, bvalid: Signal, rvalid: Signal, rdata: Signal, wdata: Signal) -> None:
        wr_en = Signal(name="wr_en")
        # A write is taken into registers and applied in the next cycle, then answered: its
        # effects (START, SOFT_RESET, a table write, the parameters) start at registers, not
        # at a decode of the bus (which fanned out to hundreds of flip-flops).
        wr_q = Signal(name="wr_q")
        wr_idx = Signal(6, name="wr_idx", reset_less=True)
        m.d.sync += wr_q.eq(wr_en)
        with m.If(wr_en):
            m.d.sync += [wr_idx.eq(self.s_axi_awaddr[2:8]), wdata.eq(self.s_axi_wdata)]
        m.d.comb += [
            wr_en.eq(self.s_axi_awvalid & self.s_axi_wvalid & ~bvalid & ~wr_q),
            self.s_axi_awready.eq(wr_en),
            self.s_axi_wready.eq(wr_en),
            self.s_axi_bvalid.eq(bvalid),
            self.s_axi_bresp.eq(0),
            self.s_axi_arready.eq(~rvalid),
            self.s_axi_rvalid.eq(rvalid),
            self.s_axi_rdata.eq(rdata),
            self.s_axi_rresp.eq(0),
        ]
        with m.If(wr_q):
            m.d.sync += bvalid.eq(1)
        with m.Elif(self.s_axi_bready):
            m.d.sync += bvalid.eq(0)
        self._strobes(m, wr_en)
        self._store(m, wr_q, wr_idx, wdata)

    def _strobes(self, m: Module, wr_en: Signal) -> None:
        """START, SOFT_RESET and a table write are flip-flops, decoded from the bus when the
        write is taken (they reach the whole engine; a decode in front of them was the longest
        routed path)."""
        r = self.params
        bus_idx, bus_data = self.s_axi_awaddr[2:8], self.s_axi_wdata
        m.d.sync += [
            self.start.eq(
                wr_en
                & (bus_idx == _index("CTRL"))
                & bus_data[_bit(CTRL_START)]
                & ~bus_data[_bit(CTRL_SOFT_RESET)]
            ),
            self.soft_reset.eq(wr_en & (bus_idx == _index("CTRL")) & bus_data[_bit(CTRL_SOFT_RESET)]),
            # TABLE_ADDR is not being written now: writes are at least 3 cycles apart
            self.table_we.eq(
                wr_en & (bus_idx == _index("TABLE_DATA_HI")) & (r["TABLE_ADDR"] < self.table_depth)
            ),
        ]

    def _store(self, m: Module, wr_q: Signal, wr_idx: Signal, wdata: Signal) -> None:
        """The taken write's register stores the data; a table write advances TABLE_ADDR."""
        r = self.params
        with m.If(wr_q):
            with m.Switch(wr_idx):
                for name, sig in r.items():
                    with m.Case(_index(name)):
                        m.d.sync += sig.eq(wdata)
                with m.Case(_index("TABLE_DATA_HI")):
                    m.d.sync += r["TABLE_ADDR"].eq(r["TABLE_ADDR"] + 1)

    def _read(self, m: Module, rvalid: Signal, rdata: Signal) -> None:
        c = self.constants
        read_map = {
            "ID": Const(c["ID"], 32),
            "VERSION": Const(c["VERSION"], 32),
            "STATUS": self.status,
            "ERR": self.err,
            "DONE_COUNT": self.done_count,
            "CAPS": Const(c["CAPS"], 32),
            "CYCLES_LO": self.cycles[:32],
            "CYCLES_HI": self.cycles[32:],
            "OPS": Const(c["OPS"], 32),
            "OPS_HI": Const(c["OPS_HI"], 32),
            "SEQ_MAX": Const(c["SEQ_MAX"], 32),
            "RECORD_MAX": Const(c["RECORD_MAX"], 32),
            **{n: s for n, s in self.params.items() if n != "TABLE_DATA_LO"},
        }
        with m.If(self.s_axi_arvalid & ~rvalid):
            m.d.sync += rvalid.eq(1)
            with m.Switch(self.s_axi_araddr[2:8]):
                for name, val in read_map.items():
                    with m.Case(_index(name)):
                        m.d.sync += rdata.eq(val)
                with m.Default():
                    m.d.sync += rdata.eq(0)
        with m.Elif(self.s_axi_rready):
            m.d.sync += rvalid.eq(0)
