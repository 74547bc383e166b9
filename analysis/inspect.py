"""Inspect a new input against an open decomposition: the model's prediction, the input's coefficients on every
component and the highlights of its top component.

The coefficients are those `fit_coefficients` gives with the components fixed, on the input's PEF computed as the
decomposition's PEF run computed its PEFs (same scope, variant, values kept per example and classes), so an
unedited dataset example gets about its row of W back (the W step with the components fixed is convex). One input
takes a second or two on CPU (one per-example gradient, 200 multiplicative updates, 16 backwards), so pages run it
inline.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import components as cs
from analysis.datasets import (MAX_IMAGE_PIXELS, Dataset, ImageDataset, TextDataset, image_examples, make_batches,
                               text_examples)
from analysis.fisher import compute_pefs
from analysis.highlights import ExampleHighlight, compute_highlights
from analysis.models import ClassifierModel
from analysis.notes import ComponentNote
from analysis.npeff import Decomposition, fit_coefficients
from analysis.store import Run, Workspace
from analysis.variants import variant_of

N_ITERS = 200  # coefficient-fitting updates (the command line's fit-coeffs default)
N_TOP = 5  # components listed by coefficient


@dataclass(frozen=True)
class Inspection:
    """What one input gives against a decomposition."""

    probabilities: np.ndarray  # [C] the model's softmax
    coefficients: np.ndarray  # [r] its coefficients, components fixed
    top_component: int  # argmax of the coefficients
    highlight: ExampleHighlight | None  # integrated gradients of s_top(x); None when s_k is not defined

    @property
    def prediction(self) -> int:
        return int(self.probabilities.argmax())


def pef_settings(ws: Workspace, run: Run) -> dict:
    """How the decomposition's PEF run computed its PEFs: compute_pefs' kind, n_values_per_example, top_k_classes."""
    params = ws.get_run(run.summary["pefs_run"]).params
    return {"kind": params["kind"], "n_values_per_example": params["n_values_per_example"],
            "top_k_classes": params["top_k_classes"]}


def input_pefs(ws: Workspace, run: Run, model: ClassifierModel, example: Dataset):
    """The PEFs of `example`'s inputs as the decomposition's PEF run computes them (LrmPefs or DiagPefs)."""
    scoped = cs.scoped_model(ws, run, model)
    return compute_pefs(scoped, make_batches(scoped, example, batch_size=len(example)), **pef_settings(ws, run))


def inspect_input(ws: Workspace, run: Run, dec: Decomposition, model: ClassifierModel, example: Dataset, *,
                  n_iters: int = N_ITERS, seed: int = 0) -> Inspection:
    """Prediction, coefficients and top-component highlights of a one-example dataset."""
    if len(example) != 1:
        raise ValueError(f"example must hold one input, got {len(example)}")
    pefs = input_pefs(ws, run, model, example)
    coefficients = fit_coefficients(dec, pefs, n_iters=n_iters, seed=seed)[0]  # [r]
    top = int(coefficients.argmax())
    highlight = None
    if variant_of(dec).component_attributions:
        highlight = compute_highlights(cs.scoped_model(ws, run, model), example, dec.full_component(top),
                                       np.array([0])).example(0)
    return Inspection(probabilities=cs.softmax(pefs.logits)[0], coefficients=coefficients, top_component=top,
                      highlight=highlight)


def top_components(coefficients: np.ndarray, W: np.ndarray, notes: dict[int, ComponentNote],
                   n: int = N_TOP) -> pd.DataFrame:
    """The n components with the largest coefficients: component, name, coefficient, the share of dataset
    examples with a smaller one on it (percentile) and its largest coefficient in the dataset (W [N, r])."""
    order = np.argsort(-coefficients, kind="stable")[:n]
    W = np.asarray(W)
    return pd.DataFrame({
        "component": order,
        "name": [notes[k].name if k in notes else "" for k in order],
        "coefficient": coefficients[order].astype(np.float64),
        "dataset percentile": [float((W[:, k] < coefficients[k]).mean()) for k in order],
        "largest in dataset": W[:, order].max(0).astype(np.float64),
    })


def text_example(dataset: TextDataset, texts: tuple[str, ...]) -> TextDataset:
    """A typed input with the dataset's text columns (one text per column) and classes, without a gold label."""
    if len(texts) != len(dataset.text_columns):
        raise ValueError(f"texts must give one text per column {list(dataset.text_columns)}, got {len(texts)}")
    if not all(t.strip() for t in texts):
        raise ValueError(f"every text column {list(dataset.text_columns)} needs some text; type a word or more")
    return text_examples([tuple(texts)], list(dataset.label_names), name="inspected", text_columns=dataset.text_columns)


def image_example(dataset: ImageDataset, data: bytes, name: str = "upload") -> ImageDataset:
    """An uploaded PNG or JPEG as an input like the dataset's images: grey or RGB as they are, resized (bilinear)
    to their height and width, values in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data), formats=("PNG", "JPEG"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{name}: could not be read as a PNG or JPEG image ({e}); re-save it as PNG") from None
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise ValueError(f"{name}: has {image.width}x{image.height} pixels, more than {MAX_IMAGE_PIXELS}; shrink it")
    images = np.asarray(dataset.images)
    height, width = images.shape[-2:]
    colour = images.ndim == 4 and images.shape[1] == 3
    pixels = np.asarray(image.convert("RGB" if colour else "L").resize((width, height), Image.Resampling.BILINEAR),
                        dtype=np.float32) / 255.0  # [H, W] or [H, W, 3]
    if colour:
        pixels = pixels.transpose(2, 0, 1)
    elif images.ndim == 4:  # one grey channel [1, H, W]
        pixels = pixels[None]
    return image_examples(pixels[None], list(dataset.label_names), name=name)
