# package_ip.tcl: package offload_axi as a Vivado IP and build a PYNQ-Z2 block design
# (Zynq PS + AXI DMA + offload engine), then synthesise/implement and write the bitstream.
#
# UNTESTED HERE: this repository's CI has no Vivado. Written for Vivado 2022.x+; run as
#   vivado -mode batch -source rtl/package_ip.tcl -tclargs <build-dir>
# Outputs <build-dir>/offload.bit and offload.hwh (the PYNQ overlay pair).

set here  [file dirname [file normalize [info script]]]
set build [expr {[llength $argv] > 0 ? [lindex $argv 0] : "build/vivado"}]
set part  xc7z020clg400-1

# ---- 1. package the wrapper + generated engine as an IP ---------------------------------
create_project -force offload_ip $build/ip -part $part
add_files [list $here/offload_axi.v $here/offload_engine.v]
set_property top offload_axi [current_fileset]
ipx::package_project -root_dir $build/ip/offload -vendor offload.dev -library user \
    -taxonomy /UserIP -import_files -set_current true
set core [ipx::current_core]
set_property name offload_axi $core
set_property display_name "offload engine (AXI)" $core
# The interfaces are inferred from the s_axis_/m_axis_/s_axi_ names; tie them to aclk/aresetn.
ipx::associate_bus_interfaces -busif s_axis -clock aclk $core
ipx::associate_bus_interfaces -busif m_axis -clock aclk $core
ipx::associate_bus_interfaces -busif s_axi  -clock aclk $core
ipx::create_xgui_files $core
ipx::update_checksums $core
ipx::save_core $core
close_project

# ---- 2. block design: PS7 + AXI DMA (MM2S -> engine -> S2MM) ----------------------------
create_project -force offload $build -part $part
set_property ip_repo_paths $build/ip/offload [current_project]
update_ip_catalog
create_bd_design offload

set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:processing_system7 ps7]
# PYNQ-Z2 board preset would normally come from board files; enable what we need explicitly.
set_property -dict [list CONFIG.PCW_USE_S_AXI_HP0 1 CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ 100] $ps
apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 \
    -config {make_external "FIXED_IO, DDR" apply_board_preset "1"} $ps

set dma [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma dma]
set_property -dict [list CONFIG.c_include_sg 0 CONFIG.c_sg_length_width 23 \
    CONFIG.c_m_axis_mm2s_tdata_width 64 CONFIG.c_s_axis_s2mm_tdata_width 64 \
    CONFIG.c_mm2s_burst_size 64 CONFIG.c_s2mm_burst_size 64] $dma

set eng [create_bd_cell -type ip -vlnv offload.dev:user:offload_axi:1.0 offload]

connect_bd_intf_net [get_bd_intf_pins dma/M_AXIS_MM2S] [get_bd_intf_pins offload/s_axis]
connect_bd_intf_net [get_bd_intf_pins offload/m_axis] [get_bd_intf_pins dma/S_AXIS_S2MM]

# Control: PS GP0 -> DMA registers and engine registers; data: DMA masters -> PS HP0.
apply_bd_automation -rule xilinx.com:bd_rule:axi4 \
    -config {Master /ps7/M_AXI_GP0 Clk Auto} [get_bd_intf_pins dma/S_AXI_LITE]
apply_bd_automation -rule xilinx.com:bd_rule:axi4 \
    -config {Master /ps7/M_AXI_GP0 Clk Auto} [get_bd_intf_pins offload/s_axi]
apply_bd_automation -rule xilinx.com:bd_rule:axi4 \
    -config {Slave /ps7/S_AXI_HP0 Clk Auto} [get_bd_intf_pins dma/M_AXI_MM2S]
apply_bd_automation -rule xilinx.com:bd_rule:axi4 \
    -config {Slave /ps7/S_AXI_HP0 Clk Auto} [get_bd_intf_pins dma/M_AXI_S2MM]
connect_bd_net [get_bd_pins ps7/FCLK_CLK0] [get_bd_pins offload/aclk]
connect_bd_net [get_bd_pins dma/axi_resetn] [get_bd_pins offload/aresetn]

validate_bd_design
save_bd_design

# ---- 3. implement -----------------------------------------------------------------------
make_wrapper -files [get_files offload.bd] -top -import
set_property top offload_wrapper [current_fileset]
launch_runs impl_1 -to_step write_bitstream -jobs 4
wait_on_run impl_1
file copy -force [glob $build/offload.runs/impl_1/*.bit] $build/offload.bit
file copy -force [glob $build/offload.gen/sources_1/bd/offload/hw_handoff/offload.hwh] $build/offload.hwh
