"""Serving under load: engine profiles, the per-step cost model, workloads, the continuous-batching
scheduler and its metrics. `llmsizer.analysis.serving_sim.simulate` ties them together."""
