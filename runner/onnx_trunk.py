"""The frozen trunk's one pass in ONNX Runtime, where it is faster than torch: an optional path of the feature cache.

On a 2-core AVX2 EPYC, ONNX Runtime runs EfficientNet-Lite0's folded trunk at about 100 images/s against torch's
62 (batch 16, fp32; 77 against 57 when the loader's transforms run between batches: ``bench/onnx_export.py``):
its depthwise convolutions and fused kernels suit CPUs without bf16 hardware. The trunk (everything up to the
head's input, the head replaced by an identity) is exported with torch's ONNX exporter for the pass's batch shape
and kept (:func:`cache_dir`), keyed by its weights, that shape and the library versions, so every later run on the
same backbone reuses it. The shape is fixed so that ONNX Runtime folds the shape arithmetic of "same" padding
(TF-ported EfficientNets) into constants: exported with a dynamic batch, the same trunk ran at ~77 images/s. A
shorter batch is padded to the shape, and the padding's outputs dropped.

What it computes is checked, never assumed: a batch runs through both torch and ONNX Runtime, the outputs must agree
within fp32 rounding, and the faster of the two (timed on the pass's first batches, :class:`RuntimeTrial`) does the
rest of the pass. Any failure (the exporter cannot trace the model, no onnxruntime, a mismatch) leaves the torch
path, with the reason in the run's cache note.
"""
from __future__ import annotations

import copy
import hashlib
import io
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from runner.folding import agrees

AUTO_MIN_PASS_S = 6.0
"""``trunk_runtime: auto`` exports a trunk not yet cached only when torch's pass would take at least this long, at
its rate on the pass's second batch (its first warm one) alone (the loader's share of a real pass not counted: 6 s
of it are ~7-8 s of a pass).
The export costs ~2-3 s inside a run (the exporter's imports included) and ONNX Runtime runs a loader-fed pass
~1.35x as fast here, so a first run that exports ends in about the time torch's would (ants/bees' extract, a ~12 s
pass: 26.1 s exporting against 26.3 s in torch, ``bench/compare.py``), and the export is kept (:func:`cache_dir`,
beside the feature cache, not in it): every later run on the same backbone, whatever its dataset, runs its pass
~1/4 faster. A trunk already exported is used whatever the pass's length."""


def cache_dir() -> Path:
    """Where exported trunks are kept: ``$RUNNER_ONNX_CACHE``, default ``onnx`` beside the feature cache folder
    (``~/.cache/runner/onnx``). Emptying the feature cache keeps them: they depend on the weights only."""
    import os

    from runner.feature_cache import cache_dir as features

    return Path(os.environ.get("RUNNER_ONNX_CACHE") or features().parent / "onnx")


def _timed_call(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``forward(images)`` and the images per second it ran at."""
    started = time.perf_counter()
    out = forward(images)
    return out, len(images) / max(time.perf_counter() - started, 1e-9)


class RuntimeTrial:
    """Which runtime runs the rest of a frozen trunk's pass, found on the pass's first batches, each of which is a
    batch of the pass (its output is kept) rather than a repeat run only to be timed: batch 1 through torch (its
    first call at a batch size sets its kernels up), batch 2 through torch timed; then, where a trunk is kept
    exported or torch's pass over ``total`` image views would take :data:`AUTO_MIN_PASS_S` or more at that rate
    (``total`` -1: always), batch 2 again through ONNX Runtime (the session's first call, which sets it up, and the
    check that it gives torch's features within fp32 rounding), batches 3 and 4 through ONNX Runtime timed. The
    faster rate runs the rest. A pass that ends first finishes the trial on its last batch (:meth:`settle`).
    The verdict goes to ``info``: ``onnx`` (the ONNX Runtime function, or None for torch), ``trunk_runtime``
    (``onnxruntime`` or ``torch``), ``runtime_why`` and ``runtime`` (the two in words, for the cache note)."""

    def __init__(self, torch_forward: Callable[[torch.Tensor], torch.Tensor], trunk: nn.Module, head_name: str,
                 total: int, info: dict):
        self.torch_forward, self.trunk, self.head_name, self.total, self.info = (torch_forward, trunk, head_name,
                                                                               total, info)
        self.calls, self.shape, self.torch_rate, self.onnx_rates = 0, None, 0.0, []
        self.runtime, self.note = None, ""

    @property
    def decided(self) -> bool:
        return "trunk_runtime" in self.info

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The head inputs of ``images``, the next batch of the pass, while the trial lasts."""
        self.calls += 1
        if self.calls == 1:
            self.shape = tuple(images.shape)  # the pass's batch: what an export is made for
            return self.torch_forward(images)
        if self.calls == 2:
            want, self.torch_rate = _timed_call(self.torch_forward, images)
            self._open(images, want)
            return want
        got, rate = _timed_call(self.runtime, images)
        self.onnx_rates.append(rate)
        if len(self.onnx_rates) == 2:  # the session's next calls still run slow for a while: the better of two
            rates = f"{max(self.onnx_rates):.0f} against torch's {self.torch_rate:.0f} images/s, trunk {self.note}"
            if max(self.onnx_rates) > self.torch_rate:
                self._decide("onnxruntime", rates, self.runtime)
            else:
                self._decide("torch", f"onnxruntime {rates}")
        return got

    def settle(self, images: torch.Tensor) -> None:
        """Finish the trial on ``images``, the last batch of a pass that ended before the trial did."""
        while not self.decided:
            self(images)

    def _open(self, images: torch.Tensor, want: torch.Tensor) -> None:
        export = self.total < 0 or self.total / self.torch_rate >= AUTO_MIN_PASS_S
        runtime, note = session(self.trunk, self.head_name, images.new_zeros(self.shape), cache_dir(), export)
        if runtime is None:
            return self._decide("torch", note)
        if not agrees(want, runtime(images)):
            return self._decide("torch", "the ONNX trunk's features differ from torch's")
        self.runtime, self.note = runtime, note

    def _decide(self, name: str, why: str, runtime=None) -> None:
        self.info.update(onnx=runtime, trunk_runtime=name, runtime_why=why, runtime=f"{name} ({why})")


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


def _traced(module: nn.Module, example: torch.Tensor) -> bytes:
    """The ONNX file of torch's TorchScript-based exporter."""
    buffer = io.BytesIO()
    torch.onnx.export(module, (example,), buffer, dynamo=False, input_names=["images"], output_names=["features"])
    return buffer.getvalue()


def _exported(module: nn.Module, example: torch.Tensor) -> bytes:
    """The ONNX file of torch's torch.export-based exporter, weights inline."""
    program = torch.onnx.export(module, (example,), dynamo=True, input_names=["images"], verbose=False)
    return program.model_proto.SerializeToString()


def _export(module: nn.Module, shape: tuple[int, ...], path: Path, dynamo: bool | None = None) -> None:
    """ONNX export for input ``shape``, written atomically. torch's TorchScript-based exporter first: it traces
    EfficientNet-Lite0's trunk in ~1.5 s on 2 cores where the torch.export-based one takes ~11-15 s (``python
    bench/onnx_export.py``); the latter where tracing fails or the former is gone. ``dynamo``: only the one
    exporter asked for."""
    from runner.runfolder import save_bytes

    module = module.to(memory_format=torch.contiguous_format)
    example = torch.zeros(shape)
    with warnings.catch_warnings(), torch.inference_mode(False):  # the pass runs under inference mode
        warnings.simplefilter("ignore")
        if dynamo is None:
            try:
                data = _traced(module, example)
            except Exception:  # not traceable, or an exporter without the TorchScript path
                data = _exported(module, example)
        else:
            data = (_exported if dynamo else _traced)(module, example)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_bytes(data, path)


def session(trunk: nn.Module, head_name: str, example: torch.Tensor, folder: Path,
            export: bool) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str]:
    """``(run, note)``: ``run(images)`` gives the head inputs of images through ONNX Runtime (in batches of
    ``example``'s size), or None with why not. ``export``: export the trunk when no cached one fits (else only a
    cached one is used)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None, "onnxruntime not installed (pip install 'runner-transfer[onnx]')"
    module = _trunk_only(trunk, head_name)
    shape = tuple(example.shape)
    path = folder / f"{_key(module, shape)}.onnx"
    started = time.perf_counter()
    if not path.is_file():
        if not export:
            return None, "no exported trunk cached"
        try:
            _export(module, shape, path)
        except Exception as exc:  # an exporter failure means this model stays on torch, nothing worse
            return None, f"the trunk did not export to ONNX ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    try:
        runtime = open_session(path)
    except Exception as exc:  # a damaged cached file: removed, so the next run exports again
        path.unlink(missing_ok=True)
        return None, f"cached ONNX trunk {path.name} unreadable ({type(exc).__name__}); removed"
    note = f"exported in {time.perf_counter() - started:.1f} s" if time.perf_counter() - started > 1 else "cached"
    return batched(runtime), note


def open_session(path: Path, spinning: bool = False):
    """An ONNX Runtime CPU session of ``path`` on torch's threads. ``spinning``: let its threads busy-wait between
    calls (off: in a pass the next batch's transforms need the cores, ``bench/onnx_export.py --recipe``)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def batched(runtime) -> Callable[[torch.Tensor], torch.Tensor]:
    """``runtime`` (an ONNX Runtime session of a fixed input shape) as a function of any number of images: run in
    batches of that shape, the last one padded with zeros and the padding's outputs dropped."""
    feed = runtime.get_inputs()[0]
    size = feed.shape[0]

    def run(images: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in images.float().split(size):
            real = len(chunk)
            if real < size:
                chunk = torch.cat([chunk, chunk.new_zeros(size - real, *chunk.shape[1:])])
            out.append(torch.from_numpy(runtime.run(None, {feed.name: chunk.contiguous().numpy()})[0][:real]))
        return torch.cat(out)

    return run
