"""What one engine instance's simulation records (serving/scheduler.py run_replica fills it;
analysis/serving_sim.py and serving/disaggregated.py turn it into metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ReplicaTrace:
    """What happened to each request and to the engine; times in seconds from the start."""

    send_s: list[float]
    first_token_s: list[float]
    finish_s: list[float]
    itl_values: list[np.ndarray] = field(default_factory=list)
    itl_weights: list[np.ndarray] = field(default_factory=list)
    sample_t: list[float] = field(default_factory=list)  # step ends
    sample_kv_blocks: list[int] = field(default_factory=list)
    sample_queue: list[int] = field(default_factory=list)
    kv_block_seconds: float = 0.0  # ∫ blocks in use dt
    queue_seconds: float = 0.0  # ∫ waiting requests dt
    busy_s: float = 0.0
    end_s: float = 0.0
    steps: int = 0
    preemptions: int = 0
    max_kv_blocks: int = 0
    total_blocks: int = 0
    max_running: int = 0
