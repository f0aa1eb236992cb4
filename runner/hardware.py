"""What the machine runs fast: device choice, the autocast dtype that pays on it, what the CPU is (model, the
flags that matter for speed, physical cores), and the process settings a CPU-bound pass wants (threads, allocator).
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path

import torch

SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
"""The CPU flags that decide which kernels oneDNN runs (and whether bf16 is fast); shown by ``bench/compare.py``."""


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux's /proc/cpuinfo; empty elsewhere)."""
    for line in _cpuinfo().splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model() -> str:
    """The CPU's model name, e.g. ``AMD EPYC``; the platform's processor string where /proc/cpuinfo is absent."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX-512 BF16, where oneDNN runs bf16 convolutions several times faster than fp32."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def cpu_summary() -> str:
    """One line: model, usable cores (physical) and the speed flags present, e.g.
    ``AMD EPYC, 2 cores (2 physical), avx2`` -- what a benchmark figure needs beside it."""
    flags = [f for f in SPEED_FLAGS if f in cpu_flags()] or ["no avx2"]
    return f"{cpu_model()}, {len(usable_cpus())} cores ({physical_cores()} physical), {' '.join(flags)}"


def usable_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity mask; all of them where that cannot be read)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores among the CPUs this process may use: hyper-threads of one core count once (they share its
    vector units, so a second thread per core slows convolutions down)."""
    usable, cores = usable_cpus(), set()
    for cpu in usable:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            return max(1, len(usable))
    return max(1, len(cores))


@contextlib.contextmanager
def compute_threads(device: torch.device):
    """torch's intra-op threads set to the physical cores for a CPU-bound pass, and put back after. Left alone when
    the user chose (``OMP_NUM_THREADS``, as torchrun sets for several processes) or off the CPU."""
    if device.type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(physical_cores())
    try:
        yield
    finally:
        torch.set_num_threads(before)


_ALLOCATOR_TUNED = False


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep large freed blocks for reuse instead of returning them to the kernel each time.

    A CNN's activations at a useful batch are tens to hundreds of MB each; glibc serves blocks above its mmap
    threshold (128 KiB, adapting up to 32 MiB) with a fresh ``mmap`` and unmaps them on free, so every layer of
    every batch page-faults its output in again (measured: a third of a 2-core Lite0 extraction was kernel time).
    Raising the mmap and trim thresholds is what jemalloc/tcmalloc (PyTorch's CPU tuning guide) achieve: memory
    is reused, the process keeps its peak. Process-wide and once (glibc has no way to read the old values back);
    a no-op where the C library is not glibc. Returns whether it is in effect."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED or not sys.platform.startswith("linux"):
        return _ALLOCATOR_TUNED
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: musl has mallopt as a stub  # noqa: B018
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    # older glibc refuses an mmap threshold above 32 MiB: then blocks up to that size are reused
    mapped = mallopt(M_MMAP_THRESHOLD, 1 << 30) or mallopt(M_MMAP_THRESHOLD, 1 << 25)
    _ALLOCATOR_TUNED = bool(mapped) and bool(mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1))
    return _ALLOCATOR_TUNED


def resolve_precision(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (None: plain fp32). auto: bf16 where it is fast, else fp32."""
    if setting == "fp32":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if setting == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else None


def _train_rate(model: torch.nn.Module, batch: torch.Tensor, classes: int, dtype, steps: int = 3) -> float:
    """Images/s of forward+backward+SGD steps on ``model`` (a throwaway copy) under autocast ``dtype``."""
    import contextlib
    import time

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-6)
    labels = torch.arange(batch.shape[0], device=batch.device) % classes
    autocast = (lambda: torch.autocast(batch.device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    model.train()
    started = 0.0
    for i in range(steps + 2):  # two warm-up steps: oneDNN picks its kernels on the first calls
        if i == 2:
            if batch.device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        with autocast():
            loss = torch.nn.functional.cross_entropy(model(batch).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if batch.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch.shape[0] / (time.perf_counter() - started)


def faster_training_dtype(model: torch.nn.Module, batch: torch.Tensor, classes: int, dtype,
                          trainable: set[str] | None = None) -> tuple:
    """``dtype`` or None (fp32), whichever trains ``model`` faster here, and both rates.

    Reduced precision is not always faster to train: on AVX-512 BF16 CPUs bf16 autocast runs resnet18 about 3x
    faster but EfficientNet's depthwise convolutions slower than fp32. A few steps on a copy settle it.
    """
    import copy

    probe = copy.deepcopy(model)
    if trainable is not None:  # every parameter the run will train, also those a policy unfreezes later
        for name, param in probe.named_parameters():
            param.requires_grad_(name in trainable)
    fp32 = _train_rate(probe, batch, classes, None)
    reduced = _train_rate(probe, batch, classes, dtype)
    return (dtype if reduced > fp32 else None), {"fp32": fp32, str(dtype).replace("torch.", ""): reduced}
