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
