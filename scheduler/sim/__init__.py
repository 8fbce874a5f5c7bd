"""Trace-driven simulation: replay workloads through the same `decide()` the live
scheduler runs, with an injected clock and a simulated launcher."""
