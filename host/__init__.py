"""offload.host: the runtime's backends (cpu, sim, fpga, smartnic) and the SmartNIC service."""
