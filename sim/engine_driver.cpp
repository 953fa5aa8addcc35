// Compiled drive loop for the Verilator model of the offload engine (rtl/offload_axi.v).
//
// sim/verilator.py compiles this file into the model's shared library, next to pyverilator-mm's
// wrapper (construct/eval/...).
// Python calls these extern "C" functions with the model pointer (sim.lib.fn(sim.model, ...)),
// so a whole batch runs in C++: one Python call per batch, not one per cycle.
//
// Cycle protocol: inputs are driven while aclk is low, the model is evaluated, the handshakes
// (valid && ready) are sampled, then aclk rises. This is how an AXI master/slave sees the bus.
//
// Fast path (offload_stream without tracing): every output of rtl/offload_axi.v is a register
// (the wrapper registers the inbound channels, the engine's outputs are flip-flops), so the
// values sampled after the low-clock eval are the ones left by the previous rising edge. The
// low-clock eval then only serves Verilator's edge detection, which compares aclk with the value
// it saw at the previous eval; fast_cycle() resets that remembered value instead and evaluates
// once per clock. When the generated model has no such member (another Verilator version) the
// template below falls back to the two evals.
#include <cstdint>
#include <cstddef>
#include "verilated.h"
#include "Voffload_axi.h"
#include "Voffload_axi___024root.h"
#if VM_TRACE
#ifdef DUMP_FST
#include <verilated_fst_c.h>
typedef VerilatedFstC OffloadTrace;
#else
#include <verilated_vcd_c.h>
typedef VerilatedVcdC OffloadTrace;
#endif
#else
typedef void OffloadTrace;
#endif

typedef Voffload_axi Top;

namespace {

struct State {
    uint64_t time = 0;
    OffloadTrace* trace = nullptr;
    uint32_t lfsr = 0xACE1u;
};
State g;

inline uint32_t rnd() {  // xorshift32: deterministic idle/backpressure patterns from a seed
    uint32_t x = g.lfsr;
    x ^= x << 13; x ^= x >> 17; x ^= x << 5;
    g.lfsr = x ? x : 0xACE1u;
    return g.lfsr;
}

inline void half(Top* t, int clk) {
    t->aclk = clk;
    t->eval();
#if VM_TRACE
    if (g.trace) g.trace->dump(g.time);
#endif
    g.time += 5;
}

inline void cycle(Top* t) { half(t, 0); half(t, 1); }

// Forget the clock level Verilator saw last, if the model has that member (see the top).
template <typename R>
auto forget_clock(R* r, int) -> decltype(r->__Vtrigprevexpr___TOP__aclk__0 = 0, bool()) {
    r->__Vtrigprevexpr___TOP__aclk__0 = 0;
    return true;
}
template <typename R>
bool forget_clock(R*, long) { return false; }

// One clock cycle with the inputs already set and the outputs already sampled.
inline void fast_cycle(Top* t) {
#if VM_TRACE
    if (g.trace) { half(t, 0); half(t, 1); return; }
#endif
    if (t->aclk && forget_clock(t->rootp, 0)) {
        t->eval();  // rising edge: aclk stays 1, Verilator now remembers 0
        g.time += 10;
    } else {
        half(t, 0);
        half(t, 1);
    }
}

}  // namespace

extern "C" {

// Status codes shared with offload/sim/verilator.py.
enum { OK = 0, TIMEOUT = 1, OVERFLOW = 2, STALL = 3, AXIL_TIMEOUT = 4 };

void offload_set_trace(Top* t, OffloadTrace* tfp) { (void)t; g.trace = tfp; }
void offload_seed(uint32_t seed) { g.lfsr = seed ? seed : 0xACE1u; }
uint64_t offload_time() { return g.time; }

void offload_reset(Top* t, int cycles) {
    t->aresetn = 0;
    t->s_axis_tvalid = 0;
    t->m_axis_tready = 0;
    t->s_axi_awvalid = 0;
    t->s_axi_wvalid = 0;
    t->s_axi_bready = 0;
    t->s_axi_arvalid = 0;
    t->s_axi_rready = 0;
    for (int i = 0; i < cycles; i++) cycle(t);
    t->aresetn = 1;
    cycle(t);
}

// AXI4-Lite write; returns OK or AXIL_TIMEOUT (no response within max_cycles).
int offload_axil_write(Top* t, uint32_t addr, uint32_t data, int max_cycles) {
    bool aw_done = false, w_done = false;
    t->s_axi_awaddr = addr;
    t->s_axi_wdata = data;
    t->s_axi_wstrb = 0xF;
    t->s_axi_bready = 1;
    for (int c = 0; c < max_cycles; c++) {
        t->s_axi_awvalid = !aw_done;
        t->s_axi_wvalid = !w_done;
        half(t, 0);
        bool aw = t->s_axi_awvalid && t->s_axi_awready;
        bool w = t->s_axi_wvalid && t->s_axi_wready;
        bool b = aw_done && w_done && t->s_axi_bvalid;
        half(t, 1);
        aw_done |= aw;
        w_done |= w;
        if (b) {
            t->s_axi_awvalid = 0; t->s_axi_wvalid = 0; t->s_axi_bready = 0;
            return OK;
        }
    }
    t->s_axi_awvalid = 0; t->s_axi_wvalid = 0; t->s_axi_bready = 0;
    return AXIL_TIMEOUT;
}

// AXI4-Lite read into *data; returns OK or AXIL_TIMEOUT.
int offload_axil_read(Top* t, uint32_t addr, uint32_t* data, int max_cycles) {
    bool ar_done = false;
    t->s_axi_araddr = addr;
    t->s_axi_rready = 1;
    for (int c = 0; c < max_cycles; c++) {
        t->s_axi_arvalid = !ar_done;
        half(t, 0);
        bool ar = t->s_axi_arvalid && t->s_axi_arready;
        bool r = ar_done && t->s_axi_rvalid;
        uint32_t rd = t->s_axi_rdata;
        half(t, 1);
        ar_done |= ar;
        if (r) {
            *data = rd;
            t->s_axi_arvalid = 0; t->s_axi_rready = 0;
            return OK;
        }
    }
    t->s_axi_arvalid = 0; t->s_axi_rready = 0;
    return AXIL_TIMEOUT;
}

// Stream n_in words in (tlast on the last unless drop_tlast) and collect output words until a
// beat with tlast. idle_pct / backpressure_pct (0..99) insert random valid and ready gaps.
// Stops with STALL when no beat moves in either direction for stall_cycles cycles, TIMEOUT after
// max_cycles, OVERFLOW when the output exceeds out_cap words (the rest is drained and dropped).
// *n_out: output words, *cycles: clock cycles used, *n_accepted: input words accepted.
int offload_stream(Top* t, const uint64_t* in, uint64_t n_in, uint64_t* out, uint64_t out_cap,
                   uint64_t* n_out, uint64_t* n_accepted, uint64_t* cycles, int idle_pct,
                   int backpressure_pct, int drop_tlast, uint64_t max_cycles, uint64_t stall_cycles) {
    uint64_t i = 0, o = 0, c = 0, quiet = 0;
    int status = TIMEOUT;
    bool overflow = false;
    t->s_axis_tkeep = 0xFF;
    while (c < max_cycles) {
        bool offer = i < n_in && !(idle_pct && (int)(rnd() % 100) < idle_pct);
        t->s_axis_tvalid = offer;
        t->s_axis_tdata = offer ? in[i] : 0;
        t->s_axis_tlast = offer && (i + 1 == n_in) && !drop_tlast;
        t->m_axis_tready = !(backpressure_pct && (int)(rnd() % 100) < backpressure_pct);
        // Registered outputs: these are the values the low-clock eval would show.
        bool in_fire = t->s_axis_tvalid && t->s_axis_tready;
        bool out_fire = t->m_axis_tvalid && t->m_axis_tready;
        uint64_t od = t->m_axis_tdata;
        bool olast = t->m_axis_tlast;
        fast_cycle(t);
        c++;
        if (in_fire) i++;
        if (out_fire) {
            if (o < out_cap) out[o] = od; else overflow = true;
            o++;
            if (olast) { status = overflow ? OVERFLOW : OK; break; }
        }
        quiet = (in_fire || out_fire) ? 0 : quiet + 1;
        if (quiet >= stall_cycles) { status = STALL; break; }
    }
    t->s_axis_tvalid = 0;
    t->s_axis_tlast = 0;
    t->m_axis_tready = 0;
    *n_out = o < out_cap ? o : out_cap;
    *n_accepted = i;
    *cycles = c;
    return status;
}

// Run idle cycles (lets the engine drain, e.g. after a fault).
void offload_idle(Top* t, uint64_t cycles, int ready) {
    t->s_axis_tvalid = 0;
    t->m_axis_tready = ready;
    for (uint64_t c = 0; c < cycles; c++) fast_cycle(t);
    t->m_axis_tready = 0;
}

}  // extern "C"
