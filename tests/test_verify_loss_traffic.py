"""The eager cross-entropy's memory traffic over the logits (frameworks.LOSS_BYTES["eager"]),
checked against the aten ops PyTorch itself runs for torch.nn.functional.cross_entropy on fp32
logits, forward and backward, recorded on the CPU with a TorchDispatchMode. Each op's tensors of
the logits' size are counted once read or written; the softmax kernels' extra passes inside one
op (the forward's max and sum passes, the backward's sum pass: aten cunn_SoftMaxForward /
cunn_SoftMaxBackward) are what the count adds beyond that. Issue 10."""

import pytest

torch = pytest.importorskip("torch")
dispatch = pytest.importorskip("torch.utils._python_dispatch")

from llmsizer.analysis import frameworks  # noqa: E402

N, V = 64, 1000
# ops that take the logits but only gather the targets' entries (or write none of them)
GATHERS = {"nll_loss_forward", "nll_loss_backward"}
# passes of 4 bytes a kernel makes beyond reading its inputs once and writing its output once
KERNEL_EXTRA = {"_log_softmax": 2, "_log_softmax_backward_data": 1}


class _Record(dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, int, int]] = []  # (op, bytes read, bytes written)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__

        def big(ts):
            return [t for t in ts if isinstance(t, torch.Tensor) and t.numel() == N * V]

        flat_out = out if isinstance(out, (tuple, list)) else [out]
        reads = sum(t.element_size() * t.numel() for t in big(list(args)))
        writes = sum(t.element_size() * t.numel() for t in big(flat_out))
        # views (detach) alias their input: no traffic
        if (reads or writes) and not getattr(func, "is_view", name == "detach"):
            self.ops.append((name, reads, writes))
        return out


def _traffic():
    logits = torch.randn(N, V, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, V, (N,))
    rec = _Record()
    with rec:
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
    return rec.ops


def test_eager_cross_entropy_moves_the_counted_bytes_per_logit():
    ops = _traffic()
    names = [o for o, _, _ in ops]
    # the op sequence the count assumes: cast, log_softmax, nll_loss, and their backwards
    for op in ("_to_copy", "_log_softmax", "nll_loss_forward", "nll_loss_backward",
               "_log_softmax_backward_data"):
        assert op in names, (op, names)
    total = 0.0
    for name, r, w in ops:
        if name in GATHERS:
            # they read only the targets' logits; the backward writes (zero-fills) a gradient
            # of the logits' size
            total += w
            continue
        total += r + w + 4 * N * V * KERNEL_EXTRA.get(name, 0)
    per_element = total / (N * V)
    assert per_element == frameworks.LOSS_BYTES["eager"], (per_element, ops)


def loss_bytes(framework):
    return frameworks.profile(framework).loss_bytes


def test_frameworks_run_the_loss_they_document():
    assert loss_bytes("fsdp2") == frameworks.LOSS_BYTES["eager"]
    assert loss_bytes("torchtitan") == frameworks.LOSS_BYTES["eager"]
    # torchtitan's compiled loss (2025) runs as one fused kernel each way
    assert loss_bytes("torchtitan+compile-loss") == frameworks.LOSS_BYTES["fused"]
    assert loss_bytes("megatron") == frameworks.LOSS_BYTES["megatron-unfused"]
    assert loss_bytes("nemo") == frameworks.LOSS_BYTES["fused"]
    # the unfused losses move several times what a fused kernel does
    assert frameworks.LOSS_BYTES["eager"] > 3 * frameworks.LOSS_BYTES["fused"]
