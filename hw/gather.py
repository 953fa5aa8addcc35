"""Record gathering: a record's words, released back to back once the whole record is in.

:class:`~offload.hw.cityhash.CityFarmCore` needs each record's words within a bounded number of
cycles of its first (CityHash seeds its loop from the record's last 64 bytes, so the core
delays the stream by a fixed ring and reads it again). The engine's input may pause anywhere
(``s_axis_tvalid`` low, idle cycles of the DMA), which would spread a record over more cycles
than the ring holds. :class:`RecordGather` in front of the core removes the pauses inside a
record: it stores words as they come and releases a record only when its last word is in, one
word per cycle, so every record reaches the core contiguous.
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .cityhash import HASH_FARM, CityFarmCore, check_hashes
from .lanes import delay
from .xxhash import HashBeat

__all__ = ["RecordGather", "CityFarmRecords"]


class RecordGather(wiring.Component):
    """Releases each record's words back to back, once its last word is in.

    ``max_words``: the longest record, in words, it is built for (the engine refuses longer
    ones before they get here, by their header). Ports: ``i`` In(stream of
    :data:`~offload.hw.xxhash.HashBeat`, always ready), ``o`` Out(stream of the same beats, in
    the same order, always ready: the consumer takes every beat). A record's words leave on
    consecutive cycles.

    Latency: a record's last word leaves between 2 and :attr:`delay_max` cycles after it came
    in (behind the records still leaving); throughput one word per cycle. Words in it at once:
    at most one partial record and the complete ones ahead of it, fewer than the memory's
    :attr:`depth`. Reset (synchronous ``rst``): empty; the memory's contents are not reset.
    """

    def __init__(self, max_words: int):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        if not isinstance(max_words, int) or isinstance(max_words, bool) or max_words < 1:
            raise ValueError(f"max_words must be a positive int, not {max_words!r}")
        self._MustUse__silence = False
        self.max_words = max_words
        # a partial record (< max_words) and the complete ones still leaving (<= max_words + 1:
        # the backlog never exceeds one longest record plus the one word leaving)
        self.depth = 1 << (2 * max_words + 2).bit_length()
        #: cycles from a record's last word in to its last word out, at most: the backlog
        #: ahead of it, the counter's update and the memory read
        self.delay_max = max_words + 3
        super().__init__(
            {
                "i": In(stream.Signature(HashBeat, always_ready=True)),
                "o": Out(stream.Signature(HashBeat, always_ready=True)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        width = data.Layout.cast(HashBeat).size
        m.submodules.mem = mem = Memory(shape=width, depth=self.depth, init=[])
        wr, rd = mem.write_port(), mem.read_port(domain="sync")
        wp = Signal(range(self.depth), name="gather_wp")
        rp = Signal(range(self.depth), name="gather_rp")
        count = Signal(range(self.depth + 1), name="gather_partial")  # the partial record's words
        ready = Signal(range(self.depth + 1), name="gather_ready")  # complete records' words
        pop = Signal(name="gather_pop")
        push, last = self.i.valid, self.i.payload.last
        m.d.comb += [
            wr.addr.eq(wp),
            wr.data.eq(self.i.payload),
            wr.en.eq(push),
            pop.eq(ready != 0),
            rd.addr.eq(rp),
            rd.en.eq(pop),
        ]
        done = push & last  # the record is complete: its words become ready
        m.d.sync += [
            wp.eq(wp + push),
            rp.eq(rp + pop),
            ready.eq(ready + Mux(done, count + 1, 0) - pop),
            self.o.valid.eq(pop),
        ]
        with m.If(push):
            m.d.sync += count.eq(0)
            with m.If(~last):
                m.d.sync += count.eq(count + 1)
        m.d.comb += self.o.payload.eq(rd.data)
        return m


class CityFarmRecords(wiring.Component):
    """The engine's FarmHash/CityHash record core: a :class:`RecordGather` in front of one
    :class:`~offload.hw.cityhash.CityFarmCore` per hash, so records paused anywhere by the
    input still reach a core contiguous.

    Ports: as :class:`~offload.hw.cityhash.CityFarmCore` (``i``, ``o``, ``hash``, ``seeded``,
    ``seed``, ``overflow``). ``max_bytes``: the longest record (the engine's ``RECORD_MAX``; a
    longer one must not get here); ``hashes``: the hashes built, one single-hash core each
    (with both, ``hash`` sends a batch's records to one of them; the other is idle).
    Latency: :attr:`latency` cycles at most from a record's last word to its hash
    (:attr:`fixed_latency` exactly for one-word records arriving at most one per cycle: nothing
    waits in the gather); one word per cycle. With both hashes the FarmHash core's results wait
    in a delay for the CityHash core's longer latency, so both come out at one latency (the
    engine pads its other lanes to :attr:`fixed_latency`). ``hash`` goes through a register
    read as a record leaves the gather, so it must not change while records are in here (the
    engine sets it at a batch's START, with no record in the engine); with one hash it is
    ignored. Reset (synchronous ``rst``): the gather empty, the cores' and the delay's valid
    flags clear.

    Why one core per hash rather than ``CityFarmCore(hashes=("city", "farm"))``, which shares
    its multipliers between the hashes in less area: each single-hash core routes at 100 MHz
    or more on ECP5 and the shared one does not (its paths pick between the hashes' operands;
    docs/verification.md). The build with both hashes is the ``"full"`` engine, too large for
    a PYNQ-Z2 anyway, so its part has room and timing is what it needs.
    """

    def __init__(
        self,
        max_bytes: int = 1024,
        adder_levels: int | str = "csa",
        multipliers: str = "lut",
        hashes: tuple[str, ...] = ("city", "farm"),
    ):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        self.hashes = check_hashes(hashes)
        #: the single-hash core of each hash in :attr:`hashes`
        self.cores = {h: CityFarmCore(max_bytes, adder_levels, multipliers, (h,)) for h in self.hashes}
        self._MustUse__silence = False
        first = self.cores[self.hashes[0]]
        self.gather = RecordGather(first.span)
        subs: list[Any] = [*self.cores.values(), self.gather]
        for sub in subs:
            sub._MustUse__silence = True  # elaborated as submodules, or never if this is not
        self.max_bytes = max_bytes
        #: the cores' latency after the FarmHash core's delay: the CityHash core's, if built
        self.core_latency = max(c.latency for c in self.cores.values())
        self.fixed_latency = 2 + self.core_latency
        self.latency = self.gather.delay_max + self.core_latency
        # the cores' ports, as a core declares them (a wrapper that cannot drift from it)
        super().__init__(wiring.Signature(dict(first.signature.members.items())))

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.gather = g = self.gather
        m.d.comb += [g.i.valid.eq(self.i.valid), g.i.payload.eq(self.i.payload)]
        # The batch's hash, registered, so the cores' valid gates read a register rather than
        # the op code's decode; it changes at START, cycles before the first record leaves the
        # gather.
        farm = Signal(name="farm_sel", reset_less=True)
        m.d.sync += farm.eq(self.hash == HASH_FARM)
        picked = {"city": ~farm, "farm": farm} if len(self.hashes) == 2 else {self.hashes[0]: 1}
        outs = []
        for h, core in self.cores.items():
            m.submodules[h] = core
            m.d.comb += [
                core.i.valid.eq(g.o.valid & picked[h]),
                core.i.payload.eq(g.o.payload),
                core.hash.eq(self.hash),
                core.seeded.eq(self.seeded),
                core.seed.eq(self.seed),
            ]
            outs.append(delay(m, f"{h}_pad", core.o.valid, core.o.payload, self.core_latency - core.latency))
        # one record a cycle leaves the gather for one core, so at most one result a cycle
        valid, payload = outs[0]
        for v, d in outs[1:]:
            valid, payload = valid | v, Mux(v, d, payload)
        m.d.comb += [
            self.o.valid.eq(valid),
            self.o.payload.eq(payload),
            self.overflow.eq(Cat(c.overflow for c in self.cores.values()).any()),
        ]
        return m
