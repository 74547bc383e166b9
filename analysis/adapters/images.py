"""What image adapters share (pixel batches, the pixels as attributed input, images to show), plain PyTorch
image classifiers (the built-in architectures or any module whose forward takes the image tensor), and classifiers
that normalize and resize the pixels first: transformers *ForImageClassification and torchvision models."""
from __future__ import annotations

import json
from abc import abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from analysis.adapters.base import AttributedInput, Batch, ModelAdapter, config_label_names, register
from analysis.datasets import Dataset, ImageDataset


class ImageAdapter(ModelAdapter):
    """Batches {"pixels": images as stored in [0, 1], [B, H, W] or [B, C, H, W]}; logits are the subclass's."""

    data = ImageDataset

    def __init__(self, label_names: list[str]):
        self._label_names = list(label_names)

    @property
    def label_names(self) -> list[str]:
        return self._label_names

    def batches(self, dataset: ImageDataset, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(dataset), batch_size):
            yield {"pixels": torch.as_tensor(np.asarray(dataset.images[start:start + batch_size])),
                   "labels": torch.as_tensor(np.asarray(dataset.labels[start:start + batch_size]))}

    def attributed_input(self, forward: Callable[[Batch], torch.Tensor], net: nn.Module,
                         batch: Batch) -> AttributedInput:
        """The pixels as stored, from a black image; scores summed over channels: [B, H, W]."""
        pixels = batch["pixels"].to(next(net.parameters()).dtype)
        return AttributedInput(inputs=pixels, baselines=torch.zeros_like(pixels),
                               run=lambda p: forward({"pixels": p}), summed=(1,) if pixels.ndim == 4 else (),
                               tokens=None, real=None)

    def display_texts(self, dataset: Dataset) -> None:
        return None

    def display_images(self, dataset: ImageDataset) -> np.ndarray:
        """[n, H, W] for grey images, [n, H, W, 3] for colour ones."""
        images = np.asarray(dataset.images)
        if images.ndim == 3:
            return images
        return images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)


@register
class ImageModule(ImageAdapter):
    """A PyTorch module whose forward takes the pixel tensor and returns logits [B, C]."""

    kind = "image-module"
    title = "Image classifier (PyTorch module)"

    def settings(self) -> dict:
        return {"adapter": self.kind}

    def logits(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return net(batch["pixels"])


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's (and timm's) ImageNet statistics
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSOR_CONFIG = "preprocessor_config.json"  # what save_pretrained writes for an image processor


@dataclass(frozen=True)
class Preprocessing:
    """What a model does to [0, 1] pixels before its first layer: x = (scale·resize(pixels) − mean) / std.

    Resizing is bilinear interpolation without antialiasing (differentiable and vmap-safe), so it differs
    slightly from the PIL resampling a Hugging Face image processor applies to image files.
    """

    channels: int = 3  # input channels the model takes; grey images are repeated to 3
    mean: tuple[float, ...] = IMAGENET_MEAN  # [channels]
    std: tuple[float, ...] = IMAGENET_STD  # [channels]
    scale: float = 1.0  # 255 · rescale_factor: pixel values the model sees per [0, 1] unit
    size: tuple[int, int] | None = None  # resize to (height, width); None keeps the stored size
    shortest_edge: int | None = None  # ... or resize the shorter side to this, keeping the aspect ratio
    crop: tuple[int, int] | None = None  # then take the centre (height, width)

    def to_dict(self) -> dict:
        return asdict(self)

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels as stored, [B, H, W] or [B, C, H, W] in [0, 1] -> model input [B, channels, h, w]."""
        x = pixels.unsqueeze(1) if pixels.ndim == 3 else pixels
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        x = self._resize(x)
        if self.crop is not None:
            x = _center_crop(x, self.crop)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)[:, None, None]
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device)[:, None, None]
        return (self.scale * x - mean) / std

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.size is not None:
            target = self.size
        elif self.shortest_edge is not None:
            short, long = sorted((height, width))
            # the shorter side becomes shortest_edge, the longer one int(shortest_edge · long / short)
            other = int(self.shortest_edge * long / short)
            target = (self.shortest_edge, other) if height <= width else (other, self.shortest_edge)
        else:
            return x
        if tuple(target) == (height, width):
            return x
        return F.interpolate(x, size=tuple(target), mode="bilinear", align_corners=False, antialias=False)


def _center_crop(x: torch.Tensor, crop: tuple[int, int]) -> torch.Tensor:
    """The centre crop [.., h, w] of x [.., H, W] (as transformers' center_crop: top = (H − h) // 2)."""
    height, width = x.shape[-2:]
    h, w = crop
    if h > height or w > width:
        raise ValueError(f"images of {height}x{width} pixels are smaller than the model's crop {h}x{w}; "
                         "give larger images or a preprocessor_config.json with a smaller crop_size")
    top, left = (height - h) // 2, (width - w) // 2
    return x[..., top:top + h, left:left + w]


def _pair(value, what: str) -> tuple[int, int]:
    """An image processor's size entry ({"height", "width"}, or one int) as (height, width)."""
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict) and {"height", "width"} <= value.keys():
        return int(value["height"]), int(value["width"])
    raise ValueError(f"{PREPROCESSOR_CONFIG}: {what} must be an int or {{'height', 'width'}}, got {value!r}")


def preprocessing_from_config(config: dict, channels: int) -> Preprocessing:
    """The Preprocessing a transformers image processor's saved config asks for (ViT, ConvNeXt/ResNet, BiT, ...).

    ConvNeXt's processor (also ResNet's) resizes the shorter side to shortest_edge / crop_pct and crops
    shortest_edge when shortest_edge < 384, else warps to shortest_edge²; others resize to `size`, then
    centre-crop `crop_size` when do_center_crop.
    """
    if "auto_map" in config:
        raise ValueError(f"{PREPROCESSOR_CONFIG}: this image processor needs custom code (auto_map); NPEFF "
                         "Explorer never runs trust_remote_code. Save a built-in transformers image processor.")
    size = config.get("size") if config.get("do_resize", True) else None
    fixed = shortest = crop = None
    if isinstance(size, dict) and "shortest_edge" in size:
        shortest = int(size["shortest_edge"])
        if "crop_pct" in config and config["crop_pct"] is not None:
            if shortest < 384:
                shortest, crop = int(shortest / config["crop_pct"]), (shortest, shortest)
            else:
                fixed, shortest = (shortest, shortest), None
    elif size is not None:
        fixed = _pair(size, "size")
    if crop is None and config.get("do_center_crop") and config.get("crop_size") is not None:
        crop = _pair(config["crop_size"], "crop_size")
    scale = 255.0 * float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 255.0
    if config.get("do_normalize", True):
        if config.get("image_mean") is None or config.get("image_std") is None:
            raise ValueError(f"{PREPROCESSOR_CONFIG}: do_normalize is set but image_mean or image_std is missing; "
                             "save the image processor with image_processor.save_pretrained(folder)")
        mean, std = _per_channel(config["image_mean"], channels), _per_channel(config["image_std"], channels)
    else:
        mean, std = (0.0,) * channels, (1.0,) * channels
    return Preprocessing(channels=channels, mean=mean, std=std, scale=scale, size=fixed, shortest_edge=shortest,
                         crop=crop)


def _per_channel(values, channels: int) -> tuple[float, ...]:
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{PREPROCESSOR_CONFIG}: image_mean and image_std need {channels} values (one per "
                         f"channel), got {values}")
    return tuple(values)


class NormalizedImageAdapter(ImageAdapter):
    """An image classifier that reads normalized, resized pixels: the Preprocessing is part of its logits."""

    def __init__(self, label_names: list[str], preprocessing: Preprocessing):
        super().__init__(label_names)
        self.preprocessing = preprocessing

    def settings(self) -> dict:
        return {"adapter": self.kind, "preprocessing": self.preprocessing.to_dict()}

    def check_dataset(self, dataset: Dataset) -> None:
        super().check_dataset(dataset)
        images = dataset.images
        if images.ndim == 4 and images.shape[1] == 3 and self.preprocessing.channels == 1:
            raise ValueError(f"'{dataset.name}' holds colour images but the model reads grey ones; convert "
                             "the images to grey (one channel) first")

    def logits(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return self.run(net, self.preprocessing.apply(batch["pixels"]))

    @abstractmethod
    def run(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] of the network on preprocessed images x [B, channels, h, w]."""


@register
class ImageClassification(NormalizedImageAdapter):
    """A transformers *ForImageClassification (ViT, ResNet, ConvNeXt, ...) with its image processor's preprocessing."""

    kind = "image-classification"
    title = "Image classifier (transformers)"
    auto_mapping = "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING"
    checkpoint_classes = "*ForImageClassification (ViT, ResNet, ConvNeXt ...) with preprocessor_config.json"

    @classmethod
    def from_checkpoint(cls, net: nn.Module, folder: Path, options: dict, max_length: int) -> "ImageClassification":
        """Its id2label classes and the preprocessing its preprocessor_config.json asks for (required:
        normalization changes every logit); max_length does not apply."""
        cls.check_options(options)
        path = folder / PREPROCESSOR_CONFIG
        if not path.is_file():
            raise ValueError(f"{folder}: no {PREPROCESSOR_CONFIG}; save the model's image processor next to the "
                             "weights with image_processor.save_pretrained(folder) (its resize and normalization "
                             "change the logits)")
        try:
            processor = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e}); re-save the image processor with save_pretrained") from e
        channels = int(getattr(net.config, "num_channels", 3))
        return cls(config_label_names(net.config), preprocessing_from_config(processor, channels))

    def run(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return net(pixel_values=x).logits


@register
class TorchvisionClassifier(NormalizedImageAdapter):
    """A torchvision classification architecture (ImageNet normalization unless told otherwise)."""

    kind = "torchvision"
    title = "Image classifier (torchvision)"

    def run(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return net(x)
