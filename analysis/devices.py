"""Where computations run: the device a caller asked for, else CUDA when present, else the CPU."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The given device, else CUDA when present, else the CPU."""
    return torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
