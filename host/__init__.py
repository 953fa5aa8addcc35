"""offload.host: the runtime's device backends (sim, fpga, smartnic) and the SmartNIC service."""
