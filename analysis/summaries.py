"""Automatic one-line summaries of components, computed from their top examples against the rest.

Three things a researcher looks at first: the words enriched in the top examples (the weighted log-odds
ratio with an informative Dirichlet prior of Monroe, Colaresi & Quinn 2008, "Fightin' Words", z-scored),
the majority gold label and prediction of the top examples, and the layers the component's direction
lives in (the share of ‖g_k‖² per layer, from components.tensor_profiles).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from analysis.components import NOT_AVAILABLE, BrowseData, label_distribution

WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # a run of letters/digits, with inner apostrophes (don't, it's)
MIN_Z = 1.96  # a term is enriched when its log-odds z-score exceeds this (two-sided 5%)
N_TERMS = 5  # enriched terms shown per component
MAIN_LAYER_SHARE = 0.2  # a layer after the largest is listed when it holds at least this share of ‖g‖²


# ------------------------------------------------------------------------------------------------ terms

def words(text: str) -> list[str]:
    """Lowercase word tokens of a text (punctuation and spaces separate words; 'low-key' -> low, key)."""
    return WORD.findall(text.lower())


def ngrams(text: str, *, bigrams: bool = True) -> list[str]:
    """The unigrams of a text, then its bigrams as 'w1 w2' when asked."""
    tokens = words(text)
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])] if bigrams else tokens


@dataclass(frozen=True)
class TermCounts:
    """How often each term occurs in each example."""

    vocabulary: tuple[str, ...]  # [V] terms, in order of first occurrence
    counts: sparse.csr_matrix  # [n, V] int64, occurrences of term v in example i
    n_words: np.ndarray  # [V] int64, 1 for a unigram, 2 for a bigram


def term_counts(texts: Sequence[str], *, bigrams: bool = True) -> TermCounts:
    """The example-by-term count matrix of some texts (one pass, sparse)."""
    index: dict[str, int] = {}
    rows, cols = [], []
    for i, text in enumerate(texts):
        found = [index.setdefault(t, len(index)) for t in ngrams(text or "", bigrams=bigrams)]
        rows += [i] * len(found)
        cols += found
    data = np.ones(len(rows), dtype=np.int64)
    counts = sparse.csr_matrix((data, (rows, cols)), shape=(len(texts), len(index)))  # duplicates are summed
    n_words = np.array([t.count(" ") + 1 for t in index], dtype=np.int64)
    return TermCounts(vocabulary=tuple(index), counts=counts, n_words=n_words)


def log_odds_z(y_a: np.ndarray, y_b: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """z-scores of the weighted log-odds ratio of each term in corpus a vs corpus b (Monroe et al. 2008).

    y_a, y_b [V] term counts; alpha [V] > 0 the informative Dirichlet prior (pseudo-counts), α₀ = Σ alpha.
    δ_w = log((y_a + α)/(n_a + α₀ − y_a − α)) − log((y_b + α)/(n_b + α₀ − y_b − α)),
    σ²(δ_w) ≈ 1/(y_a + α) + 1/(y_b + α), z_w = δ_w / σ(δ_w). Positive: over-represented in a.
    """
    y_a, y_b, alpha = (np.asarray(v, dtype=np.float64) for v in (y_a, y_b, alpha))
    if not (y_a.shape == y_b.shape == alpha.shape):
        raise ValueError(f"y_a, y_b and alpha must have one shape, got {y_a.shape}, {y_b.shape}, {alpha.shape}")
    if np.any(alpha <= 0):
        raise ValueError(f"alpha must be > 0 for every term, got min {alpha.min()}; add a pseudo-count")
    n_a, n_b, alpha0 = y_a.sum(), y_b.sum(), alpha.sum()
    delta = (np.log(y_a + alpha) - np.log(n_a + alpha0 - y_a - alpha)
             - np.log(y_b + alpha) + np.log(n_b + alpha0 - y_b - alpha))  # [V]
    return delta / np.sqrt(1.0 / (y_a + alpha) + 1.0 / (y_b + alpha))


def enriched_terms(counts: TermCounts, top: np.ndarray, *, n: int = N_TERMS, min_z: float = MIN_Z,
                   prior_size: float | None = None) -> list[tuple[str, float]]:
    """The n terms most enriched in the examples `top` vs all others, with their z-scores, largest first.

    The prior is the whole dataset's term frequencies scaled to prior_size pseudo-counts (None: the dataset's
    own size, i.e. alpha = the corpus counts). Only terms with z > min_z are listed, and a term sharing a word
    with one listed before it is skipped ('low key' hides 'low' and 'key'; on equal z the bigram comes first).
    """
    if counts.counts.shape[1] == 0:
        return []
    in_top = np.zeros(counts.counts.shape[0], dtype=bool)
    in_top[np.asarray(top, dtype=np.int64)] = True
    y_all = np.asarray(counts.counts.sum(0)).ravel()  # [V]
    y_a = np.asarray(counts.counts[in_top].sum(0)).ravel()  # [V]
    scale = 1.0 if prior_size is None else prior_size / y_all.sum()
    z = log_odds_z(y_a, y_all - y_a, y_all * scale)
    chosen: list[tuple[str, float]] = []
    used: set[str] = set()
    for v in np.lexsort((np.arange(len(z)), -counts.n_words, -z)):  # z descending; on a tie, the bigram first
        if z[v] <= min_z or len(chosen) == n:
            break
        term_words = set(counts.vocabulary[v].split())
        if term_words & used:
            continue
        chosen.append((counts.vocabulary[v], float(z[v])))
        used |= term_words
    return chosen


# ------------------------------------------------------------------------------------- labels and layers

def majority_label(values: np.ndarray, names: list[str]) -> tuple[str, float] | None:
    """The most frequent label among values [k] (-1 unknown ignored) and its share of the known ones;
    None when none is known."""
    dist = label_distribution(values, len(names))  # [C]
    return (names[int(dist.argmax())], float(dist.max())) if dist.sum() else None


def main_layers(shares: pd.Series, *, n: int = 2, min_share: float = MAIN_LAYER_SHARE) -> list[tuple[str, float]]:
    """The layer holding most of a direction's ‖g‖², then up to n − 1 more holding at least min_share each.

    shares: one component's share per layer (a row of components.group_profiles(..., by="layer")).
    """
    ordered = shares.sort_values(ascending=False, kind="stable")
    return [(str(layer), float(s)) for i, (layer, s) in enumerate(ordered.items())
            if i < n and (i == 0 or s >= min_share) and s > 0]


# ---------------------------------------------------------------------------------------------- summary

@dataclass(frozen=True)
class ComponentSummary:
    """What a component's top examples have in common, against the rest of the dataset."""

    component: int
    n_top: int  # top examples summarized
    terms: tuple[tuple[str, float], ...] | None  # enriched (term, z), largest first; None: not a text dataset
    gold: tuple[str, float] | None  # majority gold label and its share; None: no gold labels
    prediction: tuple[str, float]  # majority prediction and its share
    layers: tuple[tuple[str, float], ...]  # main layers and their share of ‖g‖²; (): profile unknown

    @property
    def text(self) -> str:
        """One line for the overview: 'low key, too · mostly fresh (80%) · encoder.layer.5 62%'."""
        parts = []
        if self.terms is not None:
            parts.append(", ".join(t for t, _ in self.terms) or "no enriched words")
        if self.gold is not None:
            parts.append(f"mostly {self.gold[0]} ({self.gold[1]:.0%})")
        else:
            parts.append(f"label {NOT_AVAILABLE}, predicts {self.prediction[0]} {self.prediction[1]:.0%}")
        if self.layers:
            parts.append(", ".join(f"{layer} {share:.0%}" for layer, share in self.layers))
        return " · ".join(parts)


def summarize(data: BrowseData, top: np.ndarray, counts: TermCounts | None = None,
              layer_shares: pd.DataFrame | None = None, *, n_terms: int = N_TERMS) -> list[ComponentSummary]:
    """A summary of each component from its top examples top [r, n_top] (rows of the top table; the pages pass
    the first components.N_TOP_STATS, the N of the overview's purity, so both describe the same examples).

    counts: the dataset's term counts (None for images); layer_shares [r, L] from group_profiles by layer
    (None when the model does not match the decomposition).
    """
    if len(top) != data.n_components:
        raise ValueError(f"top must have one row per component ({data.n_components}), got {len(top)}")
    return [ComponentSummary(
        component=k, n_top=len(row),
        terms=None if counts is None else tuple(enriched_terms(counts, row, n=n_terms)),
        gold=majority_label(data.labels[row], data.label_names),
        prediction=majority_label(data.predictions[row], data.label_names),
        layers=() if layer_shares is None else tuple(main_layers(layer_shares.iloc[k])))
        for k, row in enumerate(np.asarray(top, dtype=np.int64))]
