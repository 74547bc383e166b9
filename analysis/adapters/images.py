"""What image adapters share (pixel batches, pixel attributions, images to show), and plain PyTorch image
classifiers: the built-in architectures or any module whose forward takes the image tensor."""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from analysis.adapters.base import Attribution, Batch, ModelAdapter, register
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

    def attribute(self, forward: Callable[[Batch], torch.Tensor], net: nn.Module, batch: Batch,
                  n_steps: int) -> Attribution:
        """Integrated gradients on the pixels from a black image; scores summed over channels: [H, W]."""
        from captum.attr import IntegratedGradients

        pixels = batch["pixels"].to(next(net.parameters()).dtype)
        baseline = torch.zeros_like(pixels)
        ig = IntegratedGradients(lambda p: forward({"pixels": p}))
        attr, delta = ig.attribute(pixels, baselines=baseline, n_steps=n_steps, internal_batch_size=n_steps,
                                   return_convergence_delta=True)
        with torch.no_grad():
            values = forward({"pixels": torch.cat([pixels, baseline])})
        scores = attr[0].detach().double()
        return Attribution(scores=(scores if scores.ndim == 2 else scores.sum(0)).numpy(), tokens=None,
                           target_value=float(values[0]), baseline_value=float(values[1]), delta=float(delta[0]))

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
