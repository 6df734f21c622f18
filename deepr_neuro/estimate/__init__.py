"""Energy, latency and NeuroBench-style metrics of a deployed graph, from simulated spikes (above simulate)."""
