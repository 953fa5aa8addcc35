"""offload.hw: Amaranth components for every operator and the offload engine top."""
