"""FLOPs against torch.utils.flop_counter.FlopCounterMode on full-size models.

Models are built and run under FakeTensorMode (no real memory: a full 7B forward+backward is
counted in seconds). Eager attention: FlopCounterMode counts it dense (no causal halving) and its
backward as 4 matrix products, which is llmsizer's ("dense", "eager") convention. Mixtral's experts
use transformers' "batched_mm" implementation, whose products the counter sees (grouped_mm it
does not count).
"""

import pytest

from llmsizer.analysis.flops import forward_ops, training_step_flops
from llmsizer.catalog import model_entry

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

pytestmark = pytest.mark.verify


def counted(config: dict, batch: int, seq: int) -> tuple[int, int]:
    cfg = transformers.AutoConfig.for_model(
        config["model_type"], **{k: v for k, v in config.items() if k != "model_type"})
    extra = {"experts_implementation": "batched_mm"} if config["model_type"] == "mixtral" else {}
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = transformers.AutoModelForCausalLM.from_config(
            cfg, attn_implementation="eager", dtype=torch.bfloat16, **extra)
        ids = torch.randint(0, cfg.vocab_size, (batch, seq))
        with FlopCounterMode(display=False) as fwd:
            out = model(input_ids=ids, labels=ids)
        with FlopCounterMode(display=False) as bwd:
            out.loss.backward()
    return fwd.get_total_flops(), bwd.get_total_flops()


@pytest.mark.parametrize("name,batch,seq", [("llama-2-7b", 1, 2048), ("llama-3-8b", 2, 1024),
                                            ("mixtral-8x7b", 1, 1024)])
def test_forward_and_backward_match_flop_counter(name, batch, seq):
    entry = model_entry(name)
    forward, backward = counted(entry.config, batch, seq)
    ours = training_step_flops(entry.spec(), batch, seq, attention_convention="dense",
                               attention_backward="eager")
    assert ours.forward == forward
    assert ours.backward == backward


def test_llama2_7b_forward_written_out():
    # Per layer: q,k,v,o 4·2·T·h² + gate,up,down 3·2·T·h·f + attention 2·2·b·s²·h; lm_head 2·T·h·V.
    b, s, h, f, V, L = 1, 2048, 4096, 11008, 32000, 32
    T = b * s
    expected = L * (8 * T * h * h + 6 * T * h * f + 4 * b * s * s * h) + 2 * T * h * V
    fwd = sum(o.forward for o in forward_ops(model_entry("llama-2-7b").spec(), b, s))
    assert fwd == expected
