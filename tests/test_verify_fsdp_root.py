"""FSDP2 keeps its root unit gathered after the forward, as llmsizer's peak memory counts it.

Two CPU processes on gloo run PyTorch's own `fully_shard` on a small transformers Llama wrapped as
torchtitan and llmsizer's fsdp2 profile assume (each decoder block, then the model): after the
forward, the blocks' parameters are sharded again while the root unit's — the embedding, the final
norm and the output head — are still whole (frameworks.Profile.root_gathered). The processes start
from a fresh interpreter (a subprocess), not forked from this one and its thread pools. Skipped
without torch and transformers (the `verify` extra).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
dist = pytest.importorskip("torch.distributed")

CONFIG = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64,
          "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
          "vocab_size": 256, "max_position_embeddings": 128, "tie_word_embeddings": False}


def after_forward(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """One rank: wrap, run the forward, report which parameters are whole."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from llmsizer.measure.model import build, decoder_layers

    model = build(payload["config"], torch.float32, torch.device("cpu"))
    for layer in decoder_layers(model):
        fully_shard(layer)
    fully_shard(model)
    ids = torch.randint(0, payload["config"]["vocab_size"], (1, 16))
    model(input_ids=ids, labels=ids)  # the forward only: what it leaves gathered
    whole = {name: not isinstance(p, DTensor) for name, p in model.named_parameters()}
    return {"root": [v for k, v in whole.items() if ".layers." not in k],
            "blocks": [v for k, v in whole.items() if ".layers." in k]}


RUN = """
import json, sys
sys.path.insert(0, {tests!r})
from test_verify_fsdp_root import CONFIG, after_forward
from llmsizer.measure.runtime import launch
print(json.dumps(launch(after_forward, 2, "cpu", {{"config": CONFIG}}, quiet=True)[0]))
"""


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="this torch build has no gloo")
def test_fsdp2_keeps_the_root_unit_gathered_after_the_forward():
    from llmsizer.measure.runtime import usable_cores

    if usable_cores() < 2:
        pytest.skip("two processes need two cores")
    out = subprocess.run([sys.executable, "-c", RUN.format(tests=os.path.dirname(__file__))],
                         capture_output=True, text=True, timeout=300,
                         env=os.environ | {"PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["root"] and all(r["root"])  # embedding, final norm, output head: whole
    assert r["blocks"] and not any(r["blocks"])  # every block: sharded again
