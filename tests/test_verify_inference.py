"""Serving numbers against the truth: Hugging Face cache objects and FlopCounterMode.

KV-cache bytes are read off the caches `transformers` builds (dynamic after a prefill, after
`generate`, static, grouped-query, sliding-window); prefill and decode FLOPs are counted by
torch.utils.flop_counter on a full-size Llama-2-7B under FakeTensorMode (eager attention: dense,
which for one decode query is the same as causal).
"""

import pytest

from llmsizer.analysis.flops import forward_ops
from llmsizer.analysis.kvcache import KVCache
from llmsizer.catalog import model_entry
from llmsizer.specs.hf import spec_from_hf_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

pytestmark = pytest.mark.verify


def model_for(config: dict, dtype):
    cfg = transformers.AutoConfig.for_model(
        config["model_type"], **{k: v for k, v in config.items() if k != "model_type"})
    return transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()


def cache_of(output):
    return getattr(output, "cache", None) or output.past_key_values


def cache_bytes(cache) -> int:
    return sum(layer.keys.numel() * layer.keys.element_size()
               + layer.values.numel() * layer.values.element_size() for layer in cache.layers)


GQA = dict(model_type="llama", hidden_size=64, intermediate_size=128, num_attention_heads=4,
           num_key_value_heads=2, num_hidden_layers=3, vocab_size=100)
MHA = GQA | dict(num_key_value_heads=4)
WINDOW = dict(GQA, model_type="mistral", sliding_window=8)


@pytest.mark.parametrize("config", [GQA, MHA], ids=["gqa", "mha"])
@pytest.mark.parametrize("dtype,size", [("float32", 4), ("bfloat16", 2)])
def test_dynamic_cache_after_prefill(config, dtype, size):
    model = model_for(config, getattr(torch, dtype))
    ids = torch.randint(0, 100, (3, 10))
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
    ours = KVCache(spec_from_hf_config(config), size).bytes_for(10, batch=3)
    assert cache_bytes(cache_of(out)) == ours
    # written out: 2 (K and V) · layers · KV heads · head_dim · bytes · tokens
    assert ours == 2 * 3 * config["num_key_value_heads"] * 16 * size * 10 * 3


@pytest.mark.parametrize("implementation", [None, "static"])
def test_generate_caches_prompt_plus_new_tokens_minus_one(implementation):
    model = model_for(GQA, torch.float32)
    ids = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0,
                             return_dict_in_generate=True, cache_implementation=implementation)
    # The last generated token is never fed back, so s + n - 1 positions are cached.
    assert cache_bytes(cache_of(out)) == KVCache(spec_from_hf_config(GQA), 4).bytes_for(14, 2)


def test_sliding_window_cache_keeps_window_minus_one():
    model = model_for(WINDOW, torch.float32)
    ids = torch.randint(0, 100, (2, 20))
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0,
                             return_dict_in_generate=True)
    spec = spec_from_hf_config(WINDOW)
    assert cache_bytes(cache_of(out)) == KVCache(spec, 4).bytes_for(22, 2)
    assert KVCache(spec, 4).bytes_for(22, 2) == 2 * 3 * 2 * 16 * 4 * 7 * 2


def counted_serving_flops(config: dict, batch: int, prompt: int) -> tuple[int, int]:
    cfg = transformers.AutoConfig.for_model(
        config["model_type"], **{k: v for k, v in config.items() if k != "model_type"})
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = transformers.AutoModelForCausalLM.from_config(
            cfg, attn_implementation="eager", dtype=torch.bfloat16).eval()
        ids = torch.randint(0, cfg.vocab_size, (batch, prompt))
        with torch.no_grad():
            with FlopCounterMode(display=False) as pre:
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            nxt = torch.randint(0, cfg.vocab_size, (batch, 1))
            with FlopCounterMode(display=False) as dec:
                model(input_ids=nxt, cache=cache_of(out), use_cache=True,
                      logits_to_keep=1)
    return pre.get_total_flops(), dec.get_total_flops()


def test_prefill_and_decode_flops_match_flop_counter():
    entry = model_entry("llama-2-7b")
    prefill, decode = counted_serving_flops(entry.config, 2, 1024)
    spec = entry.spec()
    ours_prefill = sum(o.forward for o in forward_ops(spec, 2, 1024, convention="dense",
                                                      logits_tokens=1))
    ours_decode = sum(o.forward for o in forward_ops(spec, 2, 1, context=1025,
                                                     convention="dense", logits_tokens=1))
    assert ours_prefill == prefill
    assert ours_decode == decode


# ---- caches of the newer architectures (issue 9) ----------------------------------------------

def all_cache_bytes(cache) -> int:
    """Keys/values of attention layers plus convolution and recurrent states of linear-attention
    and state-space layers, as transformers 5.x's DynamicCache holds them."""
    total = 0
    for layer in cache.layers:
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if t is not None and hasattr(t, "numel"):
                total += t.numel() * t.element_size()
        for name in ("conv_states", "recurrent_states"):
            states = getattr(layer, name, None) or {}
            for t in (states.values() if isinstance(states, dict) else states):
                if t is not None:
                    total += t.numel() * t.element_size()
    return total


_S = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
          vocab_size=100)
NEW_CACHES = {
    "mla-latent": dict(model_type="deepseek_v3", hidden_size=64, intermediate_size=96,
                       moe_intermediate_size=32, num_attention_heads=4, num_key_value_heads=4,
                       num_hidden_layers=3, first_k_dense_replace=1, n_routed_experts=8,
                       num_experts_per_tok=2, n_shared_experts=1, n_group=2, topk_group=1,
                       vocab_size=100, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8,
                       qk_rope_head_dim=4, v_head_dim=8),
    "gemma3-windows": dict(_S, model_type="gemma3_text", num_hidden_layers=7, head_dim=16,
                           sliding_window=8),
    "gpt-oss-windows": dict(_S, model_type="gpt_oss", num_hidden_layers=2, num_local_experts=4,
                            num_experts_per_tok=2, head_dim=16, sliding_window=8),
    "llama4-chunks": dict(_S, model_type="llama4_text", num_hidden_layers=4,
                          intermediate_size_mlp=128, num_local_experts=4, num_experts_per_tok=1,
                          interleave_moe_layer_step=2, head_dim=16, attention_chunk_size=8),
    "qwen3-next-hybrid": dict(_S, model_type="qwen3_next", num_hidden_layers=4, num_experts=4,
                              num_experts_per_tok=2, moe_intermediate_size=32,
                              shared_expert_intermediate_size=48, head_dim=16,
                              linear_num_key_heads=2, linear_num_value_heads=4,
                              linear_key_head_dim=8, linear_value_head_dim=8),
    "mamba2-state": dict(model_type="mamba2", hidden_size=64, num_hidden_layers=2, vocab_size=100,
                         state_size=8, expand=2, conv_kernel=4, num_heads=8, head_dim=16,
                         n_groups=2),
    "mamba1-state": dict(model_type="falcon_mamba", hidden_size=64, num_hidden_layers=2,
                         vocab_size=100, state_size=8, expand=2, conv_kernel=4),
}


@pytest.mark.parametrize("name", list(NEW_CACHES))
def test_cache_of_newer_architectures_matches_transformers(name):
    config = NEW_CACHES[name]
    model = model_for(config, torch.float32)
    ids = torch.randint(0, 100, (2, 20))
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0,
                             attention_mask=torch.ones_like(ids), return_dict_in_generate=True)
    ours = KVCache(spec_from_hf_config(config), 4, layout="hf").bytes_for(22, 2)
    assert all_cache_bytes(cache_of(out)) == ours


def test_mla_latent_written_out():
    # per token and layer: kv_lora_rank + qk_rope_head_dim = 16 + 4 values (transformers 5.x
    # caches the compressed latent as keys and the rotary key as values)
    spec = spec_from_hf_config(NEW_CACHES["mla-latent"])
    assert KVCache(spec, 4).bytes_for(22, 2) == 3 * (16 + 4) * 4 * 22 * 2
    # expanded: per head, keys of nope + rope (12) and values (8), 4 heads
    assert KVCache(spec, 4, layout="expanded").bytes_for(22, 2) == 3 * 4 * (12 + 8) * 4 * 22 * 2
