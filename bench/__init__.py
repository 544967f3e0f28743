"""Benchmarks: the load generator and the agent-overhead comparison (not part of the test run)."""
