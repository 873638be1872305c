"""The memory model and planner: pure Python, no torch, importable by the operator."""
