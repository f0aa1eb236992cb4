"""The frozen trunk's one pass in ONNX Runtime, where it is faster than torch: an optional path of the feature cache.

On a 2-core AVX2 EPYC, ONNX Runtime runs EfficientNet-Lite0's folded trunk at about 113 images/s against torch's
46 (batch 16, fp32, ``bench/extract_speed.py``): its depthwise convolutions and fused kernels suit CPUs without
bf16 hardware. The trunk (everything up to the head's input, the head replaced by an identity) is exported once
with torch's ONNX exporter and kept under the cache folder, keyed by its weights, the input shape and the library
versions, so every later run on the same backbone reuses it (the export takes seconds: it is paid once).

What it computes is checked, never assumed: the first batch runs through both torch and ONNX Runtime, the outputs
must agree within fp32 rounding, and the faster of the two (timed on that batch) does the rest of the pass. Any
failure (the exporter cannot trace the model, no onnxruntime, a mismatch) leaves the torch path, with the reason in
the run's cache note.
"""
from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

AUTO_MIN_PASS_S = 60.0
"""``trunk_runtime: auto`` exports a trunk not yet cached only when torch's pass would take at least this long (at
the rate of the first batch): the export (12-16 s for EfficientNet-Lite0 on 2 cores) then clearly pays for itself
where ONNX Runtime runs the trunk up to twice as fast (105 against 46 images/s at 224 px there; at 64 px the two
are close, and a one-batch timing is noisy, so the margin is wide)."""


def available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx", "onnxscript"))


def _trunk_only(trunk: nn.Module, head_name: str) -> nn.Module:
    """A copy of ``trunk`` whose head is an identity: its output is what the head receives."""
    module = copy.deepcopy(trunk).eval()
    parent, _, leaf = head_name.rpartition(".")
    module.get_submodule(parent)._modules[leaf] = nn.Identity()
    return module


def _key(module: nn.Module, shape: tuple[int, ...]) -> str:
    import onnxruntime

    h = hashlib.sha256(f"{type(module).__qualname__} {shape} {torch.__version__} {onnxruntime.__version__}".encode())
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                 if tensor.numel() else b"")
    return h.hexdigest()[:32]


def _export(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """torch.export-based ONNX export with a dynamic batch, written through a temp file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with warnings.catch_warnings(), torch.inference_mode(False):  # the pass runs under inference mode; tracing cannot
        warnings.simplefilter("ignore")
        example = torch.zeros(2, *example.shape[1:])  # batch 2: a batch of 1 would be taken as a constant size
        program = torch.onnx.export(module.to(memory_format=torch.contiguous_format), (example,), dynamo=True,
                                    input_names=["images"], dynamic_shapes=({0: batch},), verbose=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        program.save(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def session(trunk: nn.Module, head_name: str, example: torch.Tensor, folder: Path,
            export: bool) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str]:
    """``(run, note)``: ``run(images)`` gives the head inputs of a batch through ONNX Runtime, or None with why not.
    ``export``: export the trunk when no cached one fits (else only a cached one is used)."""
    try:
        import onnxruntime
    except ImportError:
        return None, "onnxruntime not installed (pip install 'runner-transfer[onnx]')"
    module = _trunk_only(trunk, head_name)
    path = folder / f"{_key(module, tuple(example.shape[1:]))}.onnx"
    started = time.perf_counter()
    if not path.is_file():
        if not export:
            return None, "no exported trunk cached"
        try:
            _export(module, example[:1].contiguous(), path)
        except Exception as exc:  # an exporter failure means this model stays on torch, nothing worse
            return None, f"the trunk did not export to ONNX ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    try:
        runtime = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # a damaged cached file: removed, so the next run exports again
        path.unlink(missing_ok=True)
        return None, f"cached ONNX trunk {path.name} unreadable ({type(exc).__name__}); removed"
    name = runtime.get_inputs()[0].name
    note = f"exported in {time.perf_counter() - started:.1f} s" if time.perf_counter() - started > 1 else "cached"

    def run(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(runtime.run(None, {name: images.float().contiguous().numpy()})[0])

    return run, note
