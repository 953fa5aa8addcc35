"""offload.rtl: exported Verilog (generated, never hand-edited), hand-written wrappers, vendor scripts."""
