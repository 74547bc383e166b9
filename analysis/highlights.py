"""Token and pixel highlights of a component's top examples: integrated gradients of its score s_k(x).

For the top N examples of component k, batched integrated gradients (N_STEPS midpoints, one backward per step and
batch) give the attribution on the input the model's adapter attributes (word embeddings summed over the hidden
dimension: one score per token; pixels summed over channels: a heat map), from the adapter's baseline x' (padding
tokens with the sequence markers kept; a black image). Each example's completeness error
Σ scores − (s_k(x) − s_k(x')) is kept with it. A single gradient at x (gradient × input) was measured first and
rejected: its error was about 100% of s_k(x) − s_k(x'), s_k being far from linear between x' and x. The result is
stored in the workspace, once per decomposition, component, N and step count; tokens carry their character spans in
the display text, so pages colour the words of the original text.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Callable

import numpy as np

from analysis import components as cs
from analysis.attributions import component_path_attribution, direction_tangents
from analysis.datasets import Dataset, dataset_subset, length_order, make_batches
from analysis.models import ClassifierModel
from analysis.runs import cached_arrays, load_decomposition
from analysis.store import ArraysSummary, Run, Workspace

KIND = "component-highlights"  # stored-arrays kind
N_STEPS = 16  # integration steps (midpoint rule)
DEFAULT_N = 20  # top examples highlighted unless told
BATCH_SIZE = 8  # examples per backward pass
POSITIVE = (214, 39, 40)  # red: the token raises s_k
NEGATIVE = (31, 119, 180)  # blue: the token lowers s_k
MAX_ALPHA = 0.8  # the background of the strongest token (text stays readable)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ExampleHighlight:
    """One example's scores: per token with its character span, or per pixel."""

    idx: int  # dataset index
    scores: np.ndarray  # [L] per token, or [H, W] per pixel
    spans: np.ndarray | None  # [L, 2] [start, end) in the display text, [-1, -1] for special tokens; None: pixels
    value: float  # s_k(x)
    baseline_value: float  # s_k(baseline)

    @property
    def delta(self) -> float:
        """Completeness error Σ scores − (s_k(x) − s_k(baseline))."""
        return float(self.scores.sum() - (self.value - self.baseline_value))

    @property
    def relative_error(self) -> float:
        """|delta| / |s_k(x) − s_k(baseline)| (inf when both ends score the same)."""
        gap = abs(self.value - self.baseline_value)
        return abs(self.delta) / gap if gap > 0 else float("inf")


@dataclass(frozen=True)
class Highlights:
    """Highlights of N examples of one component, in the order given (top examples: descending coefficient)."""

    indices: np.ndarray  # [N] int64 dataset indices
    scores: np.ndarray  # [N, L] per token, NaN past an example's last token; or [N, H, W] per pixel
    spans: np.ndarray | None  # [N, L, 2] int64 character spans, -1 for special tokens and past the end; None: pixels
    values: np.ndarray  # [N] s_k(x)
    baseline_values: np.ndarray  # [N] s_k(baseline)

    def __len__(self) -> int:
        return len(self.indices)

    def example(self, i: int) -> ExampleHighlight:
        """Row i, its tokens trimmed to the example's own."""
        if self.spans is None:
            return ExampleHighlight(int(self.indices[i]), self.scores[i], None, float(self.values[i]),
                                    float(self.baseline_values[i]))
        n_tokens = int((~np.isnan(self.scores[i])).sum())
        return ExampleHighlight(int(self.indices[i]), self.scores[i, :n_tokens], self.spans[i, :n_tokens],
                                float(self.values[i]), float(self.baseline_values[i]))

    def by_index(self) -> dict[int, ExampleHighlight]:
        """{dataset index: its highlight}."""
        return {int(idx): self.example(i) for i, idx in enumerate(self.indices)}

    @property
    def relative_errors(self) -> np.ndarray:
        """[N] |Σ scores − (s_k(x) − s_k(baseline))| / |s_k(x) − s_k(baseline)|."""
        return np.array([self.example(i).relative_error for i in range(len(self))])

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"indices": self.indices, "scores": self.scores, "values": self.values,
                  "baseline_values": self.baseline_values}
        return arrays if self.spans is None else {**arrays, "spans": self.spans}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Highlights":
        return cls(indices=arrays["indices"], scores=arrays["scores"], spans=arrays.get("spans"),
                   values=arrays["values"], baseline_values=arrays["baseline_values"])


def _padded(rows: list[np.ndarray], fill: float, width: int) -> np.ndarray:
    """Rows [L_i, ...] stacked into [N, width, ...], `fill` past each row's end."""
    out = np.full((len(rows), width, *rows[0].shape[1:]), fill, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def compute_highlights(model: ClassifierModel, dataset: Dataset, direction: np.ndarray, indices: np.ndarray, *,
                       batch_size: int = BATCH_SIZE, n_steps: int = N_STEPS,
                       progress: Progress | None = None) -> Highlights:
    """Integrated gradients of s_k for the examples `indices` of `dataset`, g_k = `direction` [M] over the model's
    parameters in scope; texts batched by length, n_steps backwards per batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    indices = np.asarray(indices, dtype=np.int64)
    tangents = direction_tangents(model, direction)
    subset = dataset_subset(dataset, indices)
    order = length_order(model, subset)  # [N] short texts together: less padding, same scores
    spans = model.adapter.display_spans(subset)  # [N] of [L_i, 2], or None for images
    scores, values, baselines = [None] * len(indices), np.zeros(len(indices)), np.zeros(len(indices))
    done = 0
    for batch in make_batches(model, dataset_subset(subset, order), batch_size=batch_size):
        part = component_path_attribution(model, batch, tangents, n_steps)
        for b, row in enumerate(order[done:done + len(part.values)]):
            scores[row] = part.scores[b] if part.real is None else part.scores[b][part.real[b]]
            values[row], baselines[row] = part.values[b], part.baseline_values[b]
            if spans is not None and len(spans[row]) != len(scores[row]):
                raise RuntimeError(f"example {indices[row]}: {len(scores[row])} tokens in the batch but "
                                   f"{len(spans[row])} character spans; the adapter's display_spans must "
                                   "tokenize as its batches do")
        done += len(part.values)
        if progress is not None:
            progress(done, len(indices))
    if spans is None:
        return Highlights(indices, np.stack(scores), None, values, baselines)
    width = max(len(s) for s in scores)
    return Highlights(indices, _padded(scores, np.nan, width), _padded(spans, -1, width), values, baselines)


# --------------------------------------------------------------------------------------------- stored

def highlight_params(run: Run, component: int, n: int) -> dict:
    """What stored highlights are keyed by (the decomposition's key covers its model, dataset and scope)."""
    return {"decomposition": run.key, "component": int(component), "n": int(n), "method": "integrated-gradients",
            "n_steps": N_STEPS}


def highlights_run(ws: Workspace, model: ClassifierModel, dataset: Dataset, run: Run, component: int,
                   n: int = DEFAULT_N, *, batch_size: int = BATCH_SIZE, progress: Progress | None = None) -> Highlights:
    """Highlights of the top n examples of a component of a decomposition run: stored ones, else computed once."""
    if not run.summary.get("n_components", 0) > component >= 0:
        raise ValueError(f"component must be in [0, {run.summary.get('n_components')}), got {component}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")

    def compute() -> dict[str, np.ndarray]:
        dec = load_decomposition(ws, run)
        top = cs.top_examples(dec.W, component, n, cs.component_index(ws, run, dec)["top_indices"])
        scoped = cs.scoped_model(ws, run, model)
        return compute_highlights(scoped, dataset, dec.full_component(component), top, batch_size=batch_size,
                                  progress=progress).to_arrays()

    return Highlights.from_arrays(cached_arrays(ws, KIND, highlight_params(run, component, n), compute))


def stored_highlights(ws: Workspace, run: Run, component: int) -> Highlights | None:
    """The stored highlights of a component with the most examples, or None when none were computed (no compute
    here)."""
    stored = ws.runs(KIND, "complete")
    sizes = [p["n"] for p in map(json.loads, stored["params"]) if p.get("decomposition") == run.key
             and p.get("component") == component]
    for n in sorted(sizes, reverse=True):
        found = ws.find_run(KIND, highlight_params(run, component, n))
        if found is not None and found.status == "complete" and ws.file_problem(found) is None:
            return Highlights.from_arrays({name: ws.load_array(found.id, name, mmap=False)
                                           for name in ArraysSummary.of(found).arrays})
    return None


# ------------------------------------------------------------------------------------------- rendering

def _colour(score: float, scale: float) -> str:
    """rgba background of a score: red for > 0, blue for < 0, alpha ∝ |score| / scale."""
    r, g, b = POSITIVE if score > 0 else NEGATIVE
    alpha = MAX_ALPHA * min(abs(score) / scale, 1.0) if scale > 0 else 0.0
    return f"rgba({r}, {g}, {b}, {alpha:.2f})"


def highlighted_html(text: str, highlight: ExampleHighlight, *, limit: int | None = None) -> str:
    """The text as escaped HTML, each token's characters on a background coloured by its score (red raises s_k,
    blue lowers it; alpha ∝ |score| / the example's largest |score|); cut after `limit` characters with ' …'.

    Tokens sharing a span (byte pieces of one character) add up; special tokens ([-1, -1]) are not shown.
    """
    if highlight.spans is None:
        raise ValueError(f"example {highlight.idx} has pixel scores, not token spans; draw it with heat_overlay")
    shown = text if limit is None else text[:limit]
    merged: dict[tuple[int, int], float] = {}
    for (start, end), score in zip(highlight.spans.tolist(), highlight.scores.tolist()):
        if start >= 0 and end > start:
            merged[(start, end)] = merged.get((start, end), 0.0) + score
    scale = max((abs(s) for s in merged.values()), default=0.0)
    parts, cursor = [], 0
    for (start, end), score in sorted(merged.items()):
        start, end = max(start, cursor), min(end, len(shown))
        if start >= end:
            continue
        parts.append(html.escape(shown[cursor:start]))
        parts.append(f'<span class="npeff-token" style="background: {_colour(score, scale)}; border-radius: 3px" '
                     f'title="{score:+.3g}">{html.escape(shown[start:end])}</span>')
        cursor = end
    parts.append(html.escape(shown[cursor:]))
    more = " …" if len(shown) < len(text) else ""
    return (f'<div class="npeff-highlight" style="line-height: 1.8; white-space: pre-wrap">{"".join(parts)}{more}'
            "</div>")


def heat_overlay(images: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """RGB images [N, H, W, 3] in [0, 1]: grey images [N, H, W] (ink dark, as the example grids draw them) or RGB
    ones [N, H, W, 3], blended with red where the score is > 0 and blue where < 0, alpha ∝ |score| / the image's
    largest |score| (scores [N, H, W])."""
    images, scores = np.asarray(images, dtype=float), np.asarray(scores, dtype=float)
    base = np.repeat((1.0 - images)[..., None], 3, axis=-1) if images.ndim == 3 else images  # [N, H, W, 3]
    scale = np.abs(scores).reshape(len(scores), -1).max(1)[:, None, None]  # [N, 1, 1]
    alpha = MAX_ALPHA * np.divide(np.abs(scores), scale, out=np.zeros_like(scores), where=scale > 0)  # [N, H, W]
    colour = np.where((scores > 0)[..., None], np.array(POSITIVE) / 255, np.array(NEGATIVE) / 255)  # [N, H, W, 3]
    return base * (1 - alpha[..., None]) + colour * alpha[..., None]


def legend(highlights: Highlights) -> str:
    """One line naming the attribution, its colours and its completeness error over the examples."""
    errors = highlights.relative_errors
    finite = errors[np.isfinite(errors)]
    error = (f"median {np.median(finite):.0%}, largest {finite.max():.0%} of s_k(x) − s_k(baseline)"
             if len(finite) else "not defined (s_k(x) = s_k(baseline))")
    return (f"Highlights: integrated gradients ({N_STEPS} steps) of the component score s_k(x) for the top "
            f"{len(highlights)} examples "
            "(red raises s_k, blue lowers it; each example scaled to its largest |score|). Completeness error "
            f"|Σ scores − (s_k(x) − s_k(baseline))|: {error}. The Attributions tab integrates one example "
            "with more steps.")
