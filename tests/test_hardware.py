"""Device and precision choice: auto picks bf16 only where the hardware runs it fast."""
from __future__ import annotations

import torch

from runner import hardware


def test_precision_auto_follows_the_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: False)
    assert hardware.resolve_precision("auto", cpu) is None
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: True)
    assert hardware.resolve_precision("auto", cpu) is torch.bfloat16


def test_explicit_precisions():
    cpu = torch.device("cpu")
    assert hardware.resolve_precision("fp32", cpu) is None
    assert hardware.resolve_precision("bf16", cpu) is torch.bfloat16
    assert hardware.resolve_precision("fp16", cpu) is torch.float16


def test_cpu_flags_are_read_from_this_machine():
    flags = open("/proc/cpuinfo").read()
    assert hardware.cpu_has_fast_bf16() == ("amx_bf16" in flags or "avx512_bf16" in flags)


def test_device_auto_is_cpu_without_cuda():
    assert hardware.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_training_dtype_probe_measures_both_on_a_copy():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model[0].weight.requires_grad_(False)
    chosen, rates = hardware.faster_training_dtype(model, torch.randn(4, 3, 16, 16), 2, torch.bfloat16,
                                                   trainable={"0.weight", "4.weight"})
    assert chosen in (None, torch.bfloat16)
    assert set(rates) == {"fp32", "bfloat16"} and all(r > 0 for r in rates.values())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # the run's own model is untouched
    assert not model[0].weight.requires_grad
