"""offload: one operator set, four executions that agree bit for bit."""
