"""offload.sim: Verilator build and drive, the simulated PYNQ device, cocotb benches."""
