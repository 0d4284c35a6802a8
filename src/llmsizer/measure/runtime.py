"""Processes, devices and clocks for the measurements.

N worker processes are started with `torch.multiprocessing` (spawn) and joined in one process
group, as `torchrun` would start them (the same MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE
variables): gloo on CPUs, NCCL on CUDA devices (torch.distributed docs, "Backends"). On a CPU
each process is one "device" that gets an equal share of the cores, so N processes on C cores
measure what a C/N-core device does while its neighbours are busy.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmsizer.measure import MeasureError, require_torch

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Context:
    """What a worker knows about itself: its rank, the group, its device and thread count."""

    rank: int
    world: int
    device: str  # "cpu" or "cuda"
    threads: int
    quiet: bool

    @property
    def backend(self) -> str:
        return "nccl" if self.device == "cuda" else "gloo"

    def torch_device(self) -> Any:
        import torch

        return torch.device("cuda", self.rank) if self.device == "cuda" else torch.device("cpu")

    def progress(self, text: str) -> None:
        """One line on the terminal from rank 0 (never into a pipe or a --json answer)."""
        if self.rank == 0 and not self.quiet and sys.stderr.isatty():
            print(f"  … {text}", file=sys.stderr, flush=True)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_device(device: str, nproc: int) -> None:
    """One-line errors for a device or backend this machine does not have."""
    torch = require_torch()
    import torch.distributed as dist

    if device not in DEVICES:
        raise MeasureError(f"--device={device!r} is not allowed: cpu or cuda")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise MeasureError("--device=cuda is not allowed here: torch sees no CUDA device "
                               "(torch.cuda.is_available() is False; a CPU build of torch?); "
                               "use --device cpu")
        if nproc > torch.cuda.device_count():
            raise MeasureError(f"--nproc={nproc} is not allowed: {torch.cuda.device_count()} "
                               "CUDA device(s) visible, one process per device")
        if nproc > 1 and not dist.is_nccl_available():
            raise MeasureError("--nproc is not allowed above 1 here: this torch build has no NCCL")
    elif nproc > 1 and not dist.is_gloo_available():
        raise MeasureError("--nproc is not allowed above 1 here: this torch build has no gloo")
    if device == "cpu" and nproc > usable_cores():
        raise MeasureError(f"--nproc={nproc} is not allowed: at most {usable_cores()} on this "
                           "machine's CPU (one core per process at least)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, worker: Callable[[Context, dict[str, Any]], dict[str, Any]], world: int,
           device: str, port: int, payload: dict[str, Any], outdir: str, quiet: bool) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    threads = max(1, usable_cores() // world) if device == "cpu" else 1
    torch.set_num_threads(threads)
    if device == "cuda":
        torch.cuda.set_device(rank)
    ctx = Context(rank, world, device, threads, quiet)
    # NCCL: bind the group to this rank's GPU up front (torch.distributed docs, device_id)
    device_id = torch.device("cuda", rank) if device == "cuda" else None
    dist.init_process_group(ctx.backend, rank=rank, world_size=world, device_id=device_id)
    try:
        result = worker(ctx, payload)
        Path(outdir, f"rank{rank}.json").write_text(json.dumps(result), "utf-8")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def launch(worker: Callable[[Context, dict[str, Any]], dict[str, Any]], nproc: int, device: str,
           payload: dict[str, Any], quiet: bool = False) -> list[dict[str, Any]]:
    """Run `worker` in `nproc` processes joined in one group; their results, by rank."""
    import torch.multiprocessing as mp

    # CPU workers are forked where the OS allows it: they inherit the imported torch and
    # transformers instead of importing them again (seconds each); CUDA needs spawn.
    method = "fork" if device == "cpu" and sys.platform == "linux" else "spawn"
    with tempfile.TemporaryDirectory(prefix="llmsizer-measure-") as outdir:
        try:
            mp.start_processes(_entry, args=(worker, nproc, device, _free_port(), payload, outdir,
                                             quiet),
                               nprocs=nproc, join=True, start_method=method)
        except mp.ProcessRaisedException as e:
            last = [ln for ln in str(e).strip().splitlines() if ln.strip()][-1]
            raise MeasureError(f"a measurement process failed: {last.strip()}") from None
        except mp.ProcessExitedException as e:
            raise MeasureError(f"a measurement process died ({e}); out of memory?") from None
        return [json.loads(Path(outdir, f"rank{r}.json").read_text("utf-8"))
                for r in range(nproc)]


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def device_seconds(ctx: Context) -> Callable[[], float]:
    """The clock a device's time is read from. A GPU: the wall clock after synchronising. A CPU
    process with one thread: the CPU time it used (time.process_time), which leaves out time the
    OS or the hypervisor gave to other programs: on an idle machine it equals the wall clock, on
    a shared one it is what the work costs on its core, as a GPU's own timer is. With several
    threads the wall clock: a descheduled thread stalls the others at every parallel region's
    barrier, which no per-process CPU time can account for."""
    if uses_cpu_time(ctx):
        return time.process_time
    return time.perf_counter


def uses_cpu_time(ctx: Context) -> bool:
    return ctx.device == "cpu" and ctx.threads == 1


# Written before every timed call, untimed: more than the last-level cache holds (a server
# CPU's L3 slice, 32 MiB per AMD EPYC CCD; H100's 50 MiB and B200's 126 MiB L2), so each call
# starts with its operands in memory, as a step's kernels do — a step streams every layer's
# weights and activations through the caches between two uses of any of them. Triton's
# benchmark helper (triton.testing.do_bench) clears the L2 with a 256 MiB write the same way.
EVICT_BYTES = {"cpu": 64 * 2**20, "cuda": 256 * 2**20}
_evict_buffers: dict[str, Any] = {}


def evict_caches(ctx: Context) -> None:
    """Write EVICT_BYTES of this device's memory: what a timed call finds in cache is gone."""
    import torch

    buf = _evict_buffers.get(ctx.device)
    if buf is None:
        buf = torch.empty(EVICT_BYTES[ctx.device] // 4, dtype=torch.float32,
                          device=ctx.torch_device())
        _evict_buffers[ctx.device] = buf
    buf.fill_(1.0)


def typical_time(fn: Callable[[], object], ctx: Context, budget_s: float = 0.25,
                 min_reps: int = 5, warmup: int = 1) -> float:
    """Median device seconds per call of `fn` over at least `min_reps` timed calls and about
    `budget_s` of wall time, after `warmup` untimed calls, each from cold caches
    (`evict_caches`). The median, not the minimum that Python's timeit recommends for a lower
    bound: these timings predict a step that `measure train` reports as the median of its
    steps, and the same statistic on both sides keeps a machine's background load out of the
    gap (on a busy machine the fastest of many kernel calls is faster than the typical call a
    step is made of; on a quiet one the two agree)."""
    clock = device_seconds(ctx)
    for _ in range(warmup):
        fn()
    synchronize(ctx.device)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_reps or (time.perf_counter() - start < budget_s
                                      and len(samples) < 1000):
        evict_caches(ctx)
        synchronize(ctx.device)
        t0 = clock()
        fn()
        synchronize(ctx.device)
        samples.append(clock() - t0)
    return max(statistics.median(samples), 1e-9)


def cpu_share(cpu_s: float, wall_s: float, ctx: Context) -> float:
    """The share of its cores a CPU worker actually got: process CPU seconds over wall seconds
    times its threads (1.0 on a quiet machine; 0.5 when other programs took half the cores).
    A timing taken at a low share measures the neighbours' load, not the device."""
    if ctx.device != "cpu" or wall_s <= 0:
        return 1.0
    return min(1.0, cpu_s / (wall_s * ctx.threads))


def cpu_name() -> str:
    """The processor's marketing name (/proc/cpuinfo "model name"), else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def host_memory_bytes() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def rss_bytes() -> int:
    """This process's resident set now (/proc/self/statm, pages)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """This process's peak resident set (getrusage ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
