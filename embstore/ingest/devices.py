"""Where the forward pass runs and how: the device, autocast, channels-last, decode workers.

Every GPU option falls back on CPU with a one-line note instead of failing: autocast (fp16/bf16)
needs CUDA here, and page-locked (pinned) batches only help a CUDA copy. What ran is recorded in
the run's config, since autocast changes the stored values (~1e-3 relative for fp16).

*Channels-last* is a memory layout that CPU kernels (oneDNN) run faster on, so on CPU it is the
default (`channels_last=None`: on for CPU, off for CUDA unless asked). Measured with ingest's
hooked forward pass (bench/layouts.py), batch 16, 2 threads (ms per image, contiguous → channels-last):
efficientnet_lite0 10.6 → 8.5, resnet18 14.4 → 11.7, resnet50 37.3 → 30.2, densenet121 37.2 → 28.8,
vgg16 111 → 87, googlenet 28.6 → 13.5, inception_v3 57.9 → 39.2, mobilenet_v2 9.2 → 6.7,
squeezenet1_1 9.6 → 4.8; the transformers (vit_b_16, swin_t, maxvit_t, convnext_tiny) within ±4 %.
The stored values agree to 3e-6 relative (other kernels, the same arithmetic).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from embstore.errors import UsageError

AMP_CHOICES = ("off", "fp16", "bf16")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
MAX_AUTO_WORKERS = 8


@dataclass(frozen=True)
class GpuOptions:
    """How a forward pass runs: `amp` autocast dtype (off | fp16 | bf16) and the memory layout."""

    amp: str = "off"
    channels_last: bool | None = None  # None: on for CPU, off for CUDA (`channels_last_for`)


def autocast_dtype(amp: str):
    """The torch dtype autocast runs in for `amp`, or None for off."""
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)


def check_amp(amp: str) -> None:
    if amp not in AMP_CHOICES:
        raise UsageError(f"unknown amp '{amp}'; choose one of {', '.join(AMP_CHOICES)} (`amp=`)")


def channels_last_for(asked: bool | None, device_type: str) -> bool:
    """The layout a forward pass on `device_type` runs in: what was asked, else on for CPU only.

    >>> channels_last_for(None, "cpu"), channels_last_for(None, "cuda"), channels_last_for(False, "cpu")
    (True, False, False)
    """
    return device_type == "cpu" if asked is None else bool(asked)


def check_device(device: str) -> None:
    if device not in DEVICE_CHOICES:
        raise UsageError(f"unknown device '{device}'; choose {', '.join(DEVICE_CHOICES[:-1])} or {DEVICE_CHOICES[-1]}")


@dataclass
class Placement:
    device: object  # torch.device
    gpu: GpuOptions
    workers: int
    notes: list[str] = field(default_factory=list)


def check_placement(device: str, amp: str, workers: int | None) -> None:
    """The device, amp and workers options checked as text: no torch (what `place` resolves)."""
    check_device(device)
    check_amp(amp)
    if workers is not None and workers < 0:
        raise UsageError(f"workers must be 0 or more, not {workers} (`workers=`)")


def place(device: str, *, amp: str = "off", channels_last: bool | None = None, workers: int | None = None) -> Placement:
    """Resolve `device` (auto | cpu | cuda) and the GPU options for this machine.

    >>> p = place("cpu", amp="fp16")
    >>> p.gpu.amp, p.notes
    ('off', ['autocast fp16 needs a CUDA device: running float32 on cpu'])
    """
    import torch

    check_placement(device, amp, workers)
    dev = resolve_device(device)
    notes = []
    if amp != "off" and dev.type != "cuda":
        notes.append(f"autocast {amp} needs a CUDA device: running float32 on {dev.type}")
        amp = "off"
    if amp == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        notes.append("this GPU has no bfloat16: autocast fp16 instead")
        amp = "fp16"
    if workers is None:
        workers = auto_workers(dev.type)
    return Placement(dev, GpuOptions(amp, channels_last_for(channels_last, dev.type)), workers, notes)


def auto_workers(device_type: str) -> int:
    """Decode processes when `workers` is not given. On CUDA up to 8 (decoding outruns a thread);
    on CPU one per core that torch's threads leave free, where decoding overlaps the forward pass
    (in processes it does not contend for this one's interpreter lock: measured on 2 cores, torch
    on one, efficientnet_lite0 ingest 0.835 → 0.868 × a raw loop); none where torch uses every
    core, as decoding then takes turns with the network (ingest/local.py)."""
    if device_type == "cuda":
        return min(MAX_AUTO_WORKERS, max(1, (os.cpu_count() or 2) - 1))
    return min(MAX_AUTO_WORKERS, spare_cores())


def spare_cores() -> int:
    """Cores this process may use beyond torch's intra-op threads."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, usable - torch.get_num_threads())


def resolve_device(device: str):
    import torch

    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' asked for, but torch sees no CUDA GPU here; use device 'cpu' or 'auto'")
    return torch.device(device)
