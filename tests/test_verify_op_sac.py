"""torchtitan's per-op selective activation checkpointing, checked against PyTorch.

torchtitan wraps each transformer block in `torch.utils.checkpoint` with a policy
(`create_selective_checkpoint_contexts`) that must-saves the outputs of every odd-numbered
`aten.mm` of the block, of the attention kernel and of the sequence-parallel reduce-scatters, and
recomputes everything else (torchtitan models/llama3/parallelize_llama.py, op mode). Here the same
policy wraps each decoder layer of a transformers Llama under fake tensors on the CPU, and
PyTorch's memory tracker measures the activation bytes alive after the forward. Against the same
model with full recomputation (only the block inputs held), the difference is exactly what the
policy saved; llmsizer's `selective-op` saved set must equal it to the byte. On the CPU the SDPA
kernel is `_scaled_dot_product_flash_attention_for_cpu`, listed beside the CUDA kernels the
policy names. Issue 10, item 7.
"""

from collections import defaultdict

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
mem_tracker = pytest.importorskip("torch.distributed._tools.mem_tracker")

from llmsizer.analysis.activations import layer_activations  # noqa: E402
from llmsizer.catalog import get_model  # noqa: E402

LAYERS = 3


def _policy():
    from torch.utils.checkpoint import CheckpointPolicy

    aten = torch.ops.aten
    save = {aten.mm.default, aten._scaled_dot_product_flash_attention.default,
            aten._scaled_dot_product_efficient_attention.default,
            aten._scaled_dot_product_flash_attention_for_cpu.default}
    meta: dict[str, int] = defaultdict(int)

    def policy(ctx, func, *args, **kwargs):
        key = ("recompute" if ctx.is_recompute else "forward") + "_mm_count"
        if func == aten.mm.default:
            meta[key] += 1
        keep = func in save and not (func == aten.mm.default and meta[key] % 2 == 0)
        return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE
    return policy


class _Checkpointed(torch.nn.Module):
    def __init__(self, layer, selective: bool):
        super().__init__()
        self.layer, self.selective = layer, selective

    def forward(self, *args, **kwargs):
        from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts

        extra = {"context_fn": lambda: create_selective_checkpoint_contexts(_policy())} \
            if self.selective else {}
        return checkpoint(self.layer, *args, use_reentrant=False, **extra, **kwargs)


def _activations_after_forward(config: dict, batch: int, seq: int, selective: bool) -> int:
    from torch._subclasses.fake_tensor import FakeTensorMode

    cfg = transformers.LlamaConfig(**config, attn_implementation="sdpa")
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.bfloat16)
        with FakeTensorMode():
            model = transformers.LlamaForCausalLM(cfg)
            for i, layer in enumerate(model.model.layers):
                model.model.layers[i] = _Checkpointed(layer, selective)
            ids = torch.randint(0, cfg.vocab_size, (batch, seq))
            tracker = mem_tracker.MemTracker()
            tracker.track_external(model)
            with tracker:
                model(input_ids=ids, labels=ids)
                snap = tracker.get_tracker_snapshot()
            return int(snap[torch.device("cpu")][mem_tracker._MemRefType.ACT])
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("heads,kv_heads,ffn,batch,seq", [
    (8, 4, 688, 2, 256),   # GQA
    (4, 4, 512, 1, 512),   # MHA
    (8, 1, 352, 3, 128),   # MQA
])
def test_op_sac_saved_set_matches_pytorch(heads, kv_heads, ffn, batch, seq):
    config = dict(hidden_size=256, intermediate_size=ffn, num_hidden_layers=LAYERS,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=2048,
                  max_position_embeddings=4096, tie_word_embeddings=False)
    measured = (_activations_after_forward(config, batch, seq, True)
                - _activations_after_forward(config, batch, seq, False))
    spec = get_model(dict(config, model_type="llama"))
    kept = {rc: layer_activations(spec, batch, seq, recompute=rc).bytes
            for rc in ("selective-op", "full")}
    assert measured > 0
    assert LAYERS * (kept["selective-op"] - kept["full"]) == measured


def test_op_sac_keeps_less_than_attention_only_recompute():
    # Megatron's selective recomputation (the attention core) keeps every other tensor of the
    # layer; the per-op policy keeps the block input and about half of the products' outputs.
    spec = get_model("llama-3.1-8b")
    op = layer_activations(spec, 2, 8192, recompute="selective-op").bytes
    core = layer_activations(spec, 2, 8192, recompute="selective").bytes
    # by hand: (h + q + kv + f + h + a·d_v) bf16 elements per token + the fp32 log-sum-exp
    h, f, kv = 4096, 14336, 1024
    per_token = 2 * (h + h + kv + f + h + h) + 4 * 32
    assert op == 2 * 8192 * per_token
    assert op < core
