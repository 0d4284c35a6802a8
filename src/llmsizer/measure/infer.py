"""`measure infer`: a real prefill (time to first token) and real decode steps (time per output
token) of the model with transformers' KV cache, one static batch, on one device."""

from __future__ import annotations

import statistics
import time
from typing import Any

from llmsizer.measure.runtime import Context, peak_rss_bytes, rss_bytes, synchronize


def worker(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    import warnings

    import torch

    from llmsizer.measure.model import build

    # transformers 5.x announces the renaming of past_key_values on every call
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.manual_seed(1234 + ctx.rank)
    dev = ctx.torch_device()
    baseline = rss_bytes()
    dtype = torch.bfloat16 if ctx.device == "cuda" else torch.float32
    model = build(payload["config"] | {"use_cache": True}, dtype, dev).eval()
    model.config.use_cache = True
    batch, prompt, output = payload["batch"], payload["prompt"], payload["output"]
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt), device=dev)
    ttfts, tpots = [], []
    with torch.inference_mode():
        for rep in range(payload["warmup"] + payload["steps"]):
            synchronize(ctx.device)
            t0 = time.perf_counter()
            out = model(input_ids=ids, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            synchronize(ctx.device)
            ttft = time.perf_counter() - t0
            cache = out.past_key_values
            steps = []
            for _ in range(output - 1):
                t1 = time.perf_counter()
                out = model(input_ids=token, past_key_values=cache, use_cache=True)
                token = out.logits[:, -1:].argmax(-1)
                synchronize(ctx.device)
                steps.append(time.perf_counter() - t1)
                cache = out.past_key_values
            if rep >= payload["warmup"]:
                ttfts.append(ttft)
                tpots.append(statistics.median(steps) if steps else 0.0)
                ctx.progress(f"run {rep + 1 - payload['warmup']}/{payload['steps']}: TTFT "
                             f"{ttft * 1e3:.1f} ms, TPOT {tpots[-1] * 1e3:.2f} ms")
    peak = int(torch.cuda.max_memory_allocated()) if ctx.device == "cuda" else peak_rss_bytes()
    return {"ttft_s": statistics.median(ttfts), "tpot_s": statistics.median(tpots),
            "peak_memory_bytes": peak, "baseline_rss_bytes": baseline,
            "params": sum(p.numel() for p in model.parameters())}
