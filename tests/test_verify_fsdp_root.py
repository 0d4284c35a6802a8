"""FSDP2 keeps its root unit gathered after the forward, as llmsizer's peak memory counts it.

Two CPU processes on gloo run PyTorch's own `fully_shard` on a small transformers Llama wrapped as
torchtitan and llmsizer's fsdp2 profile assume (each decoder block, then the model): after the
forward, the blocks' parameters are sharded again while the root unit's — the embedding, the final
norm and the output head — are still whole (frameworks.Profile.root_gathered). Skipped without
torch and transformers (the `verify` extra).
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
dist = pytest.importorskip("torch.distributed")

from llmsizer.measure.runtime import Context, launch  # noqa: E402

CONFIG = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64,
          "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
          "vocab_size": 256, "max_position_embeddings": 128, "tie_word_embeddings": False}


def _after_forward(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from llmsizer.measure.model import build, decoder_layers

    model = build(payload["config"], torch.float32, torch.device("cpu"))
    for layer in decoder_layers(model):
        fully_shard(layer)
    fully_shard(model)
    ids = torch.randint(0, CONFIG["vocab_size"], (1, 16))
    model(input_ids=ids, labels=ids).loss  # the forward only: what it leaves gathered
    whole = {name: not isinstance(p, DTensor) for name, p in model.named_parameters()}
    return {"root": [v for k, v in whole.items() if ".layers." not in k],
            "blocks": [v for k, v in whole.items() if ".layers." in k]}


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="this torch build has no gloo")
def test_fsdp2_keeps_the_root_unit_gathered_after_the_forward():
    from llmsizer.measure.runtime import usable_cores

    if usable_cores() < 2:
        pytest.skip("two processes need two cores")
    r = launch(_after_forward, 2, "cpu", {"config": CONFIG}, quiet=True)[0]
    assert r["root"] and all(r["root"])  # embedding, final norm, output head: whole
    assert r["blocks"] and not any(r["blocks"])  # every block: sharded again
