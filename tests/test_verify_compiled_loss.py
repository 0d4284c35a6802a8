"""The cross-entropy under torch.compile (torchtitan compiles its loss with --training.compile
from 2025), checked against what PyTorch itself keeps and allocates: the tensors the compiled
graph saves for backward (saved_tensors_hooks) and the temporaries of its backward
(torch.distributed._tools.mem_tracker.MemTracker), on the CPU. Issue 10, item 7."""

import pytest

torch = pytest.importorskip("torch")
mem_tracker = pytest.importorskip("torch.distributed._tools.mem_tracker")

from llmsizer.analysis import frameworks  # noqa: E402
from llmsizer.analysis.activations import output_activations  # noqa: E402
from llmsizer.catalog import get_model  # noqa: E402

B, S = 2, 256


def _loss(pred, labels):
    # torchtitan/components/loss.py (cross_entropy_loss @ e7c0cae)
    return torch.nn.functional.cross_entropy(pred.flatten(0, 1).float(), labels.flatten(0, 1))


@pytest.fixture(scope="module")
def measured():
    """(bytes saved for backward, backward temporaries at their peak) of the compiled loss on
    bf16 logits of (B, S, V)."""
    vocab = 4096
    try:
        fn = torch.compile(_loss)
        fn(torch.randn(1, 8, 16, dtype=torch.bfloat16), torch.zeros(1, 8, dtype=torch.long))
    except Exception as e:  # no C++ toolchain for inductor's CPU backend
        pytest.skip(f"torch.compile unavailable here: {type(e).__name__}")
    logits = torch.randn(B, S, vocab, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, vocab, (B, S))
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn(logits, labels)
    mt = mem_tracker.MemTracker()
    mt.track_external(logits)
    with mt:
        loss.backward()
    peak = mt.get_tracker_snapshot("peak")
    temp = sum(v for dev in peak.values() for k, v in dev.items()
               if str(k).endswith("TEMP"))
    return vocab, sum(storages.values()), temp


def test_the_compiled_loss_keeps_the_logits_and_two_values_per_row(measured):
    vocab, saved, _ = measured
    spec = get_model({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                      "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": vocab,
                      "max_position_embeddings": 4096})
    ours = output_activations(spec, B, S, convention="hf-sdpa", compiled_loss=True)
    loss_part = [t for t in ours.saved if t.name.startswith(
        ("logits (compiled", "row max", "shifted labels", "loss normaliser"))]
    assert sum(t.bytes for t in loss_part) == saved
    # and less than eager's fp32 log-softmax by (4 - 2) bytes per logit, less the per-row values
    eager = output_activations(spec, B, S, convention="hf-sdpa")
    assert eager.bytes - ours.bytes == 2 * B * S * vocab - 8 * B * S


def test_the_compiled_loss_backward_allocates_only_the_logits_gradient(measured):
    vocab, _, temp = measured
    assert temp == 2 * B * S * vocab  # bf16, the logits' dtype
    prof = frameworks.profile("torchtitan+compile-loss")
    assert prof.compiled_loss and not frameworks.profile("torchtitan").compiled_loss
