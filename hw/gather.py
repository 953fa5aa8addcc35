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

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

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
    """The engine's FarmHash/CityHash record core: a :class:`RecordGather` in front of a
    :class:`~offload.hw.cityhash.CityFarmCore`, so records paused anywhere by the input still
    reach the core contiguous.

    Ports: as :class:`~offload.hw.cityhash.CityFarmCore` (``i``, ``o``, ``hash``, ``seeded``,
    ``seed``, ``overflow``). ``max_bytes``: the longest record (the engine's ``RECORD_MAX``; a
    longer one must not get here); ``hashes``: the core's (``CityFarmCore``'s build parameter).
    Latency: :attr:`latency` cycles at most from a record's last word to its hash
    (:attr:`fixed_latency` exactly for one-word records arriving at most one per cycle: nothing
    waits in the gather); one word per cycle.
    """

    def __init__(
        self,
        max_bytes: int = 1024,
        adder_levels: int | str = "csa",
        multipliers: str = "lut",
        hashes: tuple[str, ...] = ("city", "farm"),
    ):
        from .cityhash import CityFarmCore

        self.core = CityFarmCore(max_bytes, adder_levels, multipliers, hashes)
        self.gather = RecordGather(self.core.span)
        for sub in (self.core, self.gather):
            sub._MustUse__silence = True  # elaborated as submodules, or never if this is not
        self.max_bytes = max_bytes
        self.fixed_latency = 2 + self.core.latency
        self.latency = self.gather.delay_max + self.core.latency
        # the core's ports, as the core declares them (a wrapper that cannot drift from it)
        super().__init__(wiring.Signature(dict(self.core.signature.members.items())))

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.gather = g = self.gather
        m.submodules.core = c = self.core
        m.d.comb += [
            g.i.valid.eq(self.i.valid),
            g.i.payload.eq(self.i.payload),
            c.i.valid.eq(g.o.valid),
            c.i.payload.eq(g.o.payload),
            c.hash.eq(self.hash),
            c.seeded.eq(self.seeded),
            c.seed.eq(self.seed),
            self.o.valid.eq(c.o.valid),
            self.o.payload.eq(c.o.payload),
            self.overflow.eq(c.overflow),
        ]
        return m
