"""cocotb benches of the exported engine (``rtl/offload_axi.v`` + ``rtl/offload_engine.v``).

* :mod:`offload.sim.cocotb.runner`: build the RTL with the cocotb runner for Verilator or
  Icarus, once per (simulator, RTL hash, parameters) in ``$OFFLOAD_CACHE_DIR/cocotb``, and run
  a bench module, returning per-test results (never ``sys.exit``);
* :mod:`offload.sim.cocotb.plan`: the stimulus (batches, malformed framing, flow settings) and
  the expected output, computed on the host with :func:`offload.wire.reference_engine`;
* :mod:`offload.sim.cocotb.engine_bench`: the cocotb tests (run inside the simulator), which
  drive AXI-Stream and AXI-Lite with cocotbext-axi and compare with the plan's expectation.
"""
