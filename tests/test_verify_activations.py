"""Activation memory against the bytes PyTorch actually keeps for backward.

A small Hugging Face Llama runs a real forward pass on the CPU inside
`torch.autograd.graph.saved_tensors_hooks`; every kept tensor is attributed to the module that first
saves its storage (views share storage and count once; parameters are skipped). llmsizer's
"hf-eager" / "hf-sdpa" conventions must give the same bytes per layer and outside the layers, and
the op graph's tensors of each block (norm, attention, MLP) the bytes its modules save.
"""

import collections
import itertools

import pytest

from llmsizer.analysis.activations import layer_activations, output_activations
from llmsizer.graph import Saving, build_graph
from llmsizer.specs.hf import spec_from_hf_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.verify

H, HEADS, HEAD_DIM, FFN, VOCAB, LAYERS = 256, 8, 32, 688, 1000, 3


def kept_bytes(config: dict, impl: str, dtype, batch: int, seq: int, checkpointing: bool):
    """Bytes kept for backward in one forward pass: {layer index: bytes}, the rest, and
    {module name: bytes} for the modules inside the layers."""
    torch.manual_seed(0)
    cfg = transformers.AutoConfig.for_model(
        "llama", **{k: v for k, v in config.items() if k != "model_type"})
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=impl,
                                                          dtype=dtype).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    names = {module: name for name, module in model.named_modules()}
    where = ["outside"]
    for module in model.modules():
        module.register_forward_pre_hook(lambda mod, args: where.append(names[mod]))
        module.register_forward_hook(lambda mod, args, out: where.pop() and None)
    seen: set[int] = set()
    per_layer: collections.Counter = collections.Counter()
    per_module: collections.Counter = collections.Counter()
    outside = 0

    def pack(tensor):
        nonlocal outside
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in param_storages or ptr in seen or storage.nbytes() == 0:
            return tensor
        seen.add(ptr)
        name = where[-1]
        if name.startswith("model.layers."):
            per_layer[int(name.split(".")[2])] += storage.nbytes()
            per_module[name] += storage.nbytes()
        else:
            outside += storage.nbytes()
        return tensor

    ids = torch.randint(0, VOCAB, (batch, seq))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return per_layer, outside, per_module


CASES = [
    # impl, dtype, kv heads, batch, seq, checkpointing
    *itertools.product(["eager", "sdpa"], ["float32", "bfloat16"], [8, 2], [2], [64], [False]),
    ("eager", "bfloat16", 2, 1, 128, False),
    ("sdpa", "float32", 8, 1, 128, False),
    ("eager", "bfloat16", 2, 2, 64, True),
    ("sdpa", "float32", 8, 1, 64, True),
]


@pytest.mark.parametrize("impl,dtype,kv,batch,seq,ckpt", CASES)
def test_saved_bytes_match_the_hf_convention(impl, dtype, kv, batch, seq, ckpt):
    config = dict(model_type="llama", hidden_size=H, num_attention_heads=HEADS,
                  num_key_value_heads=kv, head_dim=HEAD_DIM, intermediate_size=FFN,
                  vocab_size=VOCAB, num_hidden_layers=LAYERS, attention_dropout=0.0,
                  tie_word_embeddings=False)
    spec = spec_from_hf_config(config)
    torch_dtype = getattr(torch, dtype)
    e = torch.tensor([], dtype=torch_dtype).element_size()
    per_layer, outside, _ = kept_bytes(config, impl, torch_dtype, batch, seq, ckpt)
    recompute = "full" if ckpt else "none"
    ours = layer_activations(spec, batch, seq, convention=f"hf-{impl}", act_bytes=e,
                             recompute=recompute).bytes
    head = output_activations(spec, batch, seq, convention=f"hf-{impl}", act_bytes=e,
                              recompute=recompute).bytes
    # The rotary cos/sin are computed once and first saved inside layer 0's attention: llmsizer
    # books them outside the layers.
    rope = 0 if ckpt else 2 * seq * HEAD_DIM * e
    assert [per_layer[i] for i in range(1, LAYERS)] == [ours] * (LAYERS - 1)
    assert per_layer[0] == ours + rope
    assert outside + rope == head


def _config(kv: int) -> dict:
    return dict(model_type="llama", hidden_size=H, num_attention_heads=HEADS,
                num_key_value_heads=kv, head_dim=HEAD_DIM, intermediate_size=FFN,
                vocab_size=VOCAB, num_hidden_layers=LAYERS, attention_dropout=0.0,
                tie_word_embeddings=False)


@pytest.mark.parametrize("impl,dtype,kv", [("eager", "bfloat16", 2), ("sdpa", "bfloat16", 2),
                                           ("eager", "float32", 8), ("sdpa", "float32", 8)])
def test_each_block_of_the_graph_keeps_what_its_modules_save(impl, dtype, kv):
    """Layer 1 (layer 0 also holds the shared rotary cos/sin), block by block: the input and
    post-attention RMSNorms against the layer's norm tensors, self_attn.* against the attention
    ops' tensors (q/k/v share their input), mlp.* against the FFN ops' tensors."""
    config = _config(kv)
    torch_dtype = getattr(torch, dtype)
    e = torch.tensor([], dtype=torch_dtype).element_size()
    batch, seq = 2, 64
    _, _, per_module = kept_bytes(config, impl, torch_dtype, batch, seq, False)
    theirs: collections.Counter = collections.Counter()
    for name, n in per_module.items():
        if name.startswith("model.layers.1."):
            theirs[name.split(".")[3]] += n  # input_layernorm, self_attn, ... of layer 1
    layer = build_graph(spec_from_hf_config(config)).layers[1]
    how = Saving(f"hf-{impl}", fp32_activations=e == 4)
    ours: collections.Counter = collections.Counter()
    keys: set[str] = set()
    for op in layer.ops:
        block = {"attention": "self_attn", "mlp": "mlp"}.get(op.component.split(".")[0])
        for t in op.saved_tensors(batch, seq, how):
            if block is not None and not (t.key and t.key in keys):
                keys.add(t.key)
                ours[block] += t.bytes(e)
    for t in layer.saved_tensors(batch, seq, how):
        if "RMSNorm" in t.name:
            norm = "input_layernorm" if t.name.startswith("attention") else \
                "post_attention_layernorm"
            ours[norm] += t.bytes(e)
    assert ours == theirs
