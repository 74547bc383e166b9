"""Small image classifiers that can be rebuilt from a name plus a safetensors state dict."""
from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Two conv layers and a linear head for small grey images (8×8 digits): ~5k parameters."""

    def __init__(self, n_classes: int = 10, image_size: int = 8, channels: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.head = nn.Linear(2 * channels * (image_size // 2) ** 2, n_classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, H, W] in [0, 1] -> logits [B, n_classes]."""
        h = torch.relu(self.conv1(pixels.unsqueeze(1)))  # [B, ch, H, W]
        h = torch.max_pool2d(torch.relu(self.conv2(h)), 2)  # [B, 2ch, H/2, W/2]
        return self.head(h.flatten(1))


class PixelMLP(nn.Module):
    """A one-hidden-layer MLP over flattened pixels."""

    def __init__(self, n_classes: int = 10, image_size: int = 8, hidden: int = 32):
        super().__init__()
        self.fc1 = nn.Linear(image_size * image_size, hidden)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, H, W] -> logits [B, n_classes]."""
        return self.head(torch.relu(self.fc1(pixels.flatten(1))))


ARCHITECTURES: dict[str, type[nn.Module]] = {"digits-cnn": DigitsCNN, "pixel-mlp": PixelMLP}


def build_image_model(architecture: str, **kwargs: int) -> nn.Module:
    """Instantiate a registered architecture; the error lists the known names."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got '{architecture}'")
    return ARCHITECTURES[architecture](**kwargs)
