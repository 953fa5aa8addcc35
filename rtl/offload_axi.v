// offload_axi: AXI4-Stream + AXI4-Lite wrapper of the generated offload_engine (rtl/offload_engine.v).
// Hand-written. The engine already implements the AXI handshakes (in Amaranth, hw/engine.py), so
// this module renames the clock, turns the active-low AXI reset into the engine's synchronous
// active-high reset, keeps the low 8 address bits (the register map is 0x00-0x5F; higher address
// bits alias), and registers the inbound AXI channels (s_axis skid buffer, AW/W/AR input
// registers; see below). Register map and stream format: docs/wire_format.md.
//
// The engine module is offload_engine (rtl/offload_engine.v, what is synthesised). A simulator
// may define OFFLOAD_ENGINE_MODULE as offload_engine_sim (rtl/offload_engine_sim.v: the same
// engine with behavioural multipliers, cycle-identical at these ports, faster to simulate);
// sim/verilator.py does so for the sim backend's model.
`default_nettype none
`ifndef OFFLOAD_ENGINE_MODULE
`define OFFLOAD_ENGINE_MODULE offload_engine
`endif

module offload_axi #(
    parameter integer C_S_AXI_ADDR_WIDTH = 12   // Vivado assigns at least a 4 KiB window
) (
    input  wire        aclk,
    input  wire        aresetn,
    // AXI4-Stream slave: batch input
    input  wire [63:0] s_axis_tdata,
    input  wire [7:0]  s_axis_tkeep,
    input  wire        s_axis_tlast,
    input  wire        s_axis_tvalid,
    output wire        s_axis_tready,
    // AXI4-Stream master: results + trailer
    output wire [63:0] m_axis_tdata,
    output wire [7:0]  m_axis_tkeep,
    output wire        m_axis_tlast,
    output wire        m_axis_tvalid,
    input  wire        m_axis_tready,
    // AXI4-Lite slave: registers
    input  wire [C_S_AXI_ADDR_WIDTH-1:0] s_axi_awaddr,
    input  wire        s_axi_awvalid,
    output wire        s_axi_awready,
    input  wire [31:0] s_axi_wdata,
    input  wire [3:0]  s_axi_wstrb,
    input  wire        s_axi_wvalid,
    output wire        s_axi_wready,
    output wire [1:0]  s_axi_bresp,
    output wire        s_axi_bvalid,
    input  wire        s_axi_bready,
    input  wire [C_S_AXI_ADDR_WIDTH-1:0] s_axi_araddr,
    input  wire        s_axi_arvalid,
    output wire        s_axi_arready,
    output wire [31:0] s_axi_rdata,
    output wire [1:0]  s_axi_rresp,
    output wire        s_axi_rvalid,
    input  wire        s_axi_rready
);

    // Register the inverted reset once: aresetn is asynchronous to nothing here (it comes from
    // the PS reset block, synchronous to aclk), the register only eases timing of its fan-out.
    reg rst = 1'b1;
    always @(posedge aclk) rst <= ~aresetn;

    // Input register stages. Every AXI input that the engine's datapath or register file would
    // otherwise use combinationally (s_axis payload/valid, the AW/W/AR channels) goes through a
    // register first, and every ready driven back to the bus is a register output. This is the
    // usual register slice for timing, and it also makes the engine a purely registered block as
    // seen from the ports, so a cycle-based simulator (Verilator) evaluates its logic once per
    // clock edge instead of on every input change. The protocol seen from outside is unchanged
    // (valid/ready handshakes, one beat per cycle on s_axis); latency grows by one cycle.

    // ---- AXI4-Lite AW / W / AR: one-entry input registers (AXI-Lite has one transaction in
    // flight per channel, so a registered ready that drops while the entry is held costs nothing).
    reg       aw_full = 1'b0, w_full = 1'b0, ar_full = 1'b0;
    reg [7:0] aw_addr, ar_addr;
    reg [31:0] w_data;
    reg [3:0]  w_strb;
    wire      e_awready, e_wready, e_arready;
    assign s_axi_awready = ~aw_full;
    assign s_axi_wready  = ~w_full;
    assign s_axi_arready = ~ar_full;
    always @(posedge aclk) begin
        if (rst) begin
            aw_full <= 1'b0;
            w_full <= 1'b0;
            ar_full <= 1'b0;
        end else begin
            if (aw_full) begin
                if (e_awready) aw_full <= 1'b0;
            end else if (s_axi_awvalid) begin
                aw_full <= 1'b1;
                aw_addr <= s_axi_awaddr[7:0];
            end
            if (w_full) begin
                if (e_wready) w_full <= 1'b0;
            end else if (s_axi_wvalid) begin
                w_full <= 1'b1;
                w_data <= s_axi_wdata;
                w_strb <= s_axi_wstrb;
            end
            if (ar_full) begin
                if (e_arready) ar_full <= 1'b0;
            end else if (s_axi_arvalid) begin
                ar_full <= 1'b1;
                ar_addr <= s_axi_araddr[7:0];
            end
        end
    end

    // ---- s_axis: two-entry skid buffer (full throughput, registered tready).
    reg        sk_valid = 1'b0;            // skid entry (filled when the engine stalls)
    reg [72:0] sk_data;
    reg        e_tvalid = 1'b0;            // entry presented to the engine
    reg [72:0] e_data;
    wire       e_tready;
    assign s_axis_tready = ~sk_valid;
    wire [72:0] s_in = {s_axis_tlast, s_axis_tkeep, s_axis_tdata};
    // CTRL.SOFT_RESET (a CTRL write with bit 1, as the engine decodes it) also empties the
    // buffer: beats already taken from the bus belong to the aborted batch.
    wire soft_reset = aw_full & w_full & e_awready & (aw_addr[7:2] == 6'h02) & w_data[1];
    always @(posedge aclk) begin
        if (rst | soft_reset) begin
            sk_valid <= 1'b0;
            e_tvalid <= 1'b0;
        end else if (~e_tvalid | e_tready) begin
            // The engine's entry is free (or being taken): refill it from the skid, else from
            // the bus (s_axis_tready is 1 whenever the skid is empty).
            if (sk_valid) begin
                e_data <= sk_data;
                sk_valid <= 1'b0;
                e_tvalid <= 1'b1;
            end else begin
                e_data <= s_in;
                e_tvalid <= s_axis_tvalid;
            end
        end else if (s_axis_tvalid & ~sk_valid) begin
            sk_data <= s_in;                   // engine stalled: park the beat
            sk_valid <= 1'b1;
        end
    end

    `OFFLOAD_ENGINE_MODULE engine (
        .clk(aclk),
        .rst(rst),
        .s_axis_tdata(e_data[63:0]),
        .s_axis_tkeep(e_data[71:64]),
        .s_axis_tlast(e_data[72]),
        .s_axis_tvalid(e_tvalid),
        .s_axis_tready(e_tready),
        .m_axis_tdata(m_axis_tdata),
        .m_axis_tkeep(m_axis_tkeep),
        .m_axis_tlast(m_axis_tlast),
        .m_axis_tvalid(m_axis_tvalid),
        .m_axis_tready(m_axis_tready),
        .s_axi_awaddr(aw_addr),
        .s_axi_awvalid(aw_full),
        .s_axi_awready(e_awready),
        .s_axi_wdata(w_data),
        .s_axi_wstrb(w_strb),
        .s_axi_wvalid(w_full),
        .s_axi_wready(e_wready),
        .s_axi_bresp(s_axi_bresp),
        .s_axi_bvalid(s_axi_bvalid),
        .s_axi_bready(s_axi_bready),
        .s_axi_araddr(ar_addr),
        .s_axi_arvalid(ar_full),
        .s_axi_arready(e_arready),
        .s_axi_rdata(s_axi_rdata),
        .s_axi_rresp(s_axi_rresp),
        .s_axi_rvalid(s_axi_rvalid),
        .s_axi_rready(s_axi_rready)
    );

endmodule

`default_nettype wire
