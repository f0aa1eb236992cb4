"""What the machine runs fast: device choice and the autocast dtype that pays on it."""
from __future__ import annotations

import functools
from pathlib import Path

import torch


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX-512 BF16, where oneDNN runs bf16 convolutions several times faster than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


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
