"""Statistics for browsing NPEFF components: top examples, label purity, similarity, module profiles, search.

Everything here reads a finished decomposition from the workspace and never recomputes Fishers.
Top examples are argsort(−W[:, k]) (spec §5); the per-component top-K table and the |cos| matrix
are computed once per decomposition and stored next to it (runs.cached_arrays).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Mapping

import numpy as np
import pandas as pd

from analysis.models import ClassifierModel, ParamScope
from analysis.npeff import Decomposition
from analysis.parameters import ParameterLayout, layer_of, module_of
from analysis.runs import cached_arrays, load_decomposition
from analysis.store import Run, Workspace
from analysis.tables import csv_bytes
from analysis.variants import VARIANTS, variant_of

if TYPE_CHECKING:
    from analysis.notes import ComponentNote

TOP_K = 500  # examples per component kept in the precomputed top table
N_TOP_STATS = 50  # purity, entropy, accuracy, annotation shares and summaries are over this many top examples
NOTABLE_FRACTION = 0.01  # a coefficient is notable when > this fraction of the largest coefficient in W
NOT_AVAILABLE = "not available"  # what a gold-label statistic reads when no example it covers has a gold label


# ------------------------------------------------------------------------------------------------ loading

@dataclass(frozen=True)
class BrowseData:
    """What the component browser shows about every example of a decomposition's dataset."""

    W: np.ndarray  # [n, r] float32, coefficients (components are unit norm, spec §10.8)
    labels: np.ndarray  # [n] int64, gold label or -1 when unknown
    probs: np.ndarray  # [n, C] float32, the model's softmax probabilities
    label_names: list[str]  # [C]

    @property
    def n_examples(self) -> int:
        return int(self.W.shape[0])

    @property
    def n_components(self) -> int:
        return int(self.W.shape[1])

    @property
    def predictions(self) -> np.ndarray:
        """[n] int64, argmax of the logits."""
        return self.probs.argmax(1)

    @property
    def correct(self) -> np.ndarray:
        """[n] bool, prediction equals the gold label (False when the label is unknown)."""
        return self.predictions == self.labels

    @property
    def known(self) -> np.ndarray:
        """[n] bool, the example has a gold label (free-form next-token datasets may have none)."""
        return self.labels >= 0

    @property
    def has_labels(self) -> bool:
        """Whether any example has a gold label (else gold-label statistics are not available)."""
        return bool(self.known.any())


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits [n, C] (float32)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(1, keepdims=True))
    return (z / z.sum(1, keepdims=True)).astype(np.float32)


def check_decomposition_run(run: Run) -> None:
    kinds = [v.run_kind for v in VARIANTS.values()]
    if run.kind not in kinds or run.status != "complete":
        raise ValueError(f"run {run.id} must be a complete {' or '.join(kinds)} run, got a {run.status} {run.kind} run")


def load_browse_data(ws: Workspace, run: Run) -> BrowseData:
    """W of a decomposition with the labels and logits stored in its PEF run (no model call)."""
    check_decomposition_run(run)
    pefs_id = run.summary["pefs_run"]
    dataset = ws.dataset_record(run.dataset_id)
    W = np.asarray(load_decomposition(ws, run).W)
    logits = ws.load_array(pefs_id, "logits", mmap=False)
    labels = ws.load_array(pefs_id, "labels", mmap=False).astype(np.int64)
    label_names = (json.loads(dataset["label_names"]) if dataset
                   else [str(c) for c in range(logits.shape[1])])
    return BrowseData(W=W, labels=labels, probs=softmax(logits), label_names=label_names)


# -------------------------------------------------------------------------------------------- top examples

def _top_of_column(column: np.ndarray, k: int) -> np.ndarray:
    """Indices [k] of the k largest entries of column [n], by value descending then index ascending."""
    kth = np.partition(column, len(column) - k)[len(column) - k]  # the k-th largest value
    above = np.flatnonzero(column > kth)
    chosen = np.concatenate([above, np.flatnonzero(column == kth)[:k - len(above)]])
    return chosen[np.lexsort((chosen, -column[chosen]))]


def top_table(W: np.ndarray, k: int = TOP_K, block: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Per component, the k examples with the largest coefficient, descending (ties: lower index first,
    as a stable argsort(−W[:, k]) orders them).

    Returns (indices [r, k] int64, values [r, k] float32). Columns are copied `block` at a time, so a
    memory-mapped W is read in large contiguous pieces and memory stays O(n * block).
    """
    n, r = W.shape
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, n)
    indices = np.empty((r, k), dtype=np.int64)
    for start in range(0, r, block):
        cols = np.ascontiguousarray(np.asarray(W[:, start:start + block], dtype=np.float32).T)  # [b, n]
        for j, column in enumerate(cols):
            indices[start + j] = _top_of_column(column, k)
    values = np.asarray(W[indices, np.arange(r)[:, None]], dtype=np.float32)  # [r, k]
    return indices, values


def component_index(ws: Workspace, run: Run, dec: Decomposition, k: int = TOP_K) -> dict[str, np.ndarray]:
    """Top table and |cos| similarity of a decomposition, computed once and stored in the workspace.

    Keys: "top_indices" [r, k], "top_values" [r, k], "similarity" [r, r].
    """
    def compute() -> dict[str, np.ndarray]:
        indices, values = top_table(np.asarray(dec.W), k)
        return {"top_indices": indices, "top_values": values, "similarity": similarity(dec.components)}

    return cached_arrays(ws, "component-index", {"decomposition": run.key, "k": k}, compute)


def top_examples(W: np.ndarray, k: int, n: int, table: np.ndarray | None = None) -> np.ndarray:
    """Indices [min(n, n_examples)] of component k's examples by coefficient, descending.

    Uses the precomputed top table [r, K] when n <= K, else sorts the column.
    """
    if not 0 <= k < W.shape[1]:
        raise ValueError(f"component must be in [0, {W.shape[1]}), got {k}")
    if table is not None and n <= table.shape[1]:
        return table[k, :n]
    column = np.asarray(W[:, k])
    return np.lexsort((np.arange(len(column)), -column))[:n]


def quantile_sample(column: np.ndarray, *, n_bands: int = 5, per_band: int = 4, seed: int = 0,
                    threshold: float = 0.0) -> pd.DataFrame:
    """Examples drawn from coefficient bands of one component.

    The examples with coefficient > threshold are split into n_bands equal-count bands by rank (band 1
    holds the largest coefficients); per_band are drawn from each without replacement (seeded).
    Columns: idx, band, band_name (the band and its percentiles, '1/5 (80–100th pct)'), band_low, band_high,
    coefficient; rows ordered by band then coefficient.
    """
    if n_bands < 1 or per_band < 1:
        raise ValueError(f"n_bands and per_band must be >= 1, got {n_bands} and {per_band}")
    column = np.asarray(column, dtype=np.float64)
    candidates = np.flatnonzero(column > threshold)
    ranked = candidates[np.lexsort((candidates, -column[candidates]))]
    rng = np.random.default_rng(seed)
    rows = []
    for band, members in enumerate(np.array_split(ranked, n_bands), start=1):
        if len(members) == 0:
            continue
        low, high = column[members].min(), column[members].max()
        for i in rng.choice(members, size=min(per_band, len(members)), replace=False):
            rows.append((int(i), band, band_name(band, n_bands), low, high, column[i]))
    frame = pd.DataFrame(rows, columns=["idx", "band", "band_name", "band_low", "band_high", "coefficient"])
    return frame.sort_values(["band", "coefficient"], ascending=[True, False], ignore_index=True)


def _ordinal(n: int) -> str:
    """'1st', '2nd', '33rd', '11th', '40th'."""
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def band_name(band: int, n_bands: int) -> str:
    """'3/5 (40–60th pct)': a quantile band and the rank percentiles it spans among the notable coefficients
    (band 1 holds the largest, so it spans the top percentiles)."""
    low, high = round(100 * (n_bands - band) / n_bands), round(100 * (n_bands - band + 1) / n_bands)
    return f"{band}/{n_bands} ({low}–{_ordinal(high)} pct)"


# ------------------------------------------------------------------------------------------- label stats

def label_distribution(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Fraction of each class among labels [k] (unknown -1 labels ignored): [n_classes]."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels >= 0], minlength=n_classes)[:n_classes].astype(np.float64)
    return counts / counts.sum() if counts.sum() else counts


def purity(labels: np.ndarray, n_classes: int) -> float:
    """Share of the majority class among the known labels [k]; NaN when none is known."""
    dist = label_distribution(labels, n_classes)
    return float(dist.max()) if dist.sum() else float("nan")


def accuracy(data: BrowseData, indices: np.ndarray) -> float:
    """The model's accuracy on those of some examples that have a gold label; NaN when none has."""
    known = np.asarray(indices, dtype=np.int64)[data.known[indices]]
    return float(data.correct[known].mean()) if len(known) else float("nan")


def percent(value: float) -> str:
    """A share as the pages show it: '83%', or 'not available' for NaN (no gold labels)."""
    return NOT_AVAILABLE if np.isnan(value) else f"{value:.0%}"


def entropy_bits(distribution: np.ndarray) -> float:
    """Shannon entropy H(p) = −Σ p log2 p of a distribution, in bits."""
    p = np.asarray(distribution, dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def breakdown(data: BrowseData, indices: np.ndarray) -> pd.DataFrame:
    """Gold-label and prediction fractions of some examples vs the whole dataset (long format).

    Columns: group ("top examples" | "all examples"), what ("gold label" | "prediction"), label, fraction.
    Gold-label rows only when the dataset has gold labels; labels at 0 in every row are left out (a
    next-token model's classes are its whole vocabulary).
    """
    C = len(data.label_names)
    whats = (("gold label", data.labels), ("prediction", data.predictions)) if data.has_labels else (
        ("prediction", data.predictions),)
    fractions = {(group, what): label_distribution(values[idx], C)  # [C]
                 for group, idx in (("top examples", np.asarray(indices)), ("all examples", np.arange(data.n_examples)))
                 for what, values in whats}
    shown = np.flatnonzero(np.any(np.stack(list(fractions.values())) > 0, axis=0))
    rows = [(group, what, data.label_names[c], float(frac[c])) for (group, what), frac in fractions.items()
            for c in shown]
    return pd.DataFrame(rows, columns=["group", "what", "label", "fraction"])


# ------------------------------------------------------------------------------------- annotation stats

def annotation_values(annotations: dict[str, list[str]], n_examples: int) -> dict[str, np.ndarray]:
    """A dataset's annotation columns (e.g. a ground-truth rule) as string arrays [n], those covering all
    n_examples of the decomposition; {} for a dataset without annotations."""
    return {name: np.asarray(values, dtype=str) for name, values in annotations.items() if len(values) == n_examples}


def majority(values: np.ndarray) -> tuple[str, float]:
    """The most frequent of values [k] (ties: the first in sorted order) and its share; ("", 0.0) when empty."""
    if len(values) == 0:
        return "", 0.0
    unique, counts = np.unique(values, return_counts=True)
    return str(unique[counts.argmax()]), float(counts.max() / len(values))


def annotation_overview(annotations: dict[str, np.ndarray], top: np.ndarray) -> pd.DataFrame:
    """Per component (a row of top [r, n_top]) and annotation, the majority value among its top examples and
    its share. Columns: "<name>_majority", "<name>_share" for each annotation (none without annotations)."""
    columns = {}
    for name, values in annotations.items():
        found = [majority(values[row]) for row in top]
        columns[f"{name}_majority"] = [value for value, _ in found]
        columns[f"{name}_share"] = np.array([share for _, share in found], dtype=np.float64)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(top)))


def annotation_breakdown(values: np.ndarray, indices: np.ndarray) -> pd.DataFrame:
    """Fraction of each annotation value among some examples vs all examples (long format, like breakdown).

    Columns: group ("top examples" | "all examples"), value, fraction; values most frequent overall first.
    """
    unique, counts = np.unique(values, return_counts=True)
    order = unique[np.lexsort((unique, -counts))]  # [v], by overall count, then by value
    rows = []
    for group, chosen in (("top examples", values[np.asarray(indices, dtype=np.int64)]), ("all examples", values)):
        found, found_counts = np.unique(chosen, return_counts=True)
        share = dict(zip(found.tolist(), (found_counts / max(len(chosen), 1)).tolist()))
        rows += [(group, str(v), float(share.get(v, 0.0))) for v in order.tolist()]
    return pd.DataFrame(rows, columns=["group", "value", "fraction"])


# ------------------------------------------------------------------------------------- component geometry

def similarity(C: np.ndarray, block: int = 65_536) -> np.ndarray:
    """|cos| between component rows, C [r, m] -> [r, r] float32 (diagonal 1 for non-zero rows).

    The Gram matrix C Cᵀ is accumulated over column blocks, so a memory-mapped C is read once.
    """
    r, m = C.shape
    CCt = np.zeros((r, r), dtype=np.float64)
    for start in range(0, m, block):
        part = np.asarray(C[:, start:start + block], dtype=np.float64)
        CCt += part @ part.T
    norms = np.sqrt(np.clip(np.diag(CCt), 0, None))
    norms[norms == 0] = 1.0
    return np.abs(CCt / np.outer(norms, norms)).astype(np.float32)


def most_similar(sim: np.ndarray, k: int, n: int = 5) -> pd.DataFrame:
    """The n components most similar to k (excluding k): columns component, abs_cos."""
    scores = np.asarray(sim[k], dtype=np.float64).copy()
    scores[k] = -np.inf
    order = np.lexsort((np.arange(len(scores)), -scores))[:min(n, len(scores) - 1)]
    return pd.DataFrame({"component": order.astype(int), "abs_cos": scores[order]})


def tensor_profiles(C: np.ndarray, kept: np.ndarray, offsets: np.ndarray, block: int = 8) -> np.ndarray:
    """Share of ‖c_k‖² in each parameter tensor: [r, T], rows sum to 1 (0 for a zero component).

    kept [m] ascending flat indices of C's columns; offsets [T + 1] as in ParameterLayout.offsets. Rows are
    taken `block` at a time: float64 copies of all of C took 13.5 GiB at r = 128, m = 4.05M (the whole corpus).
    """
    kept = np.asarray(kept)
    if len(kept) and (kept[-1] >= offsets[-1] or np.any(np.diff(kept) <= 0)):
        raise ValueError(f"kept must be ascending indices below {offsets[-1]}, got max {kept.max()}")
    bounds = np.searchsorted(kept, offsets)  # [T + 1] column range of each tensor
    per_tensor = np.zeros((len(C), len(offsets) - 1))  # [r, T]
    for start in range(0, len(C), block):
        sq = np.array(C[start:start + block], dtype=np.float64)  # [b, m]
        np.square(sq, out=sq)
        cum = np.zeros((len(sq), sq.shape[1] + 1))  # [b, m + 1]
        np.cumsum(sq, axis=1, out=cum[:, 1:])
        per_tensor[start:start + block] = cum[:, bounds[1:]] - cum[:, bounds[:-1]]
        del sq, cum  # before the next block's copies
    total = per_tensor.sum(1, keepdims=True)
    return np.divide(per_tensor, total, out=np.zeros_like(per_tensor), where=total > 0)


def group_profiles(profiles: np.ndarray, names: list[str],
                   by: Literal["module", "layer"] = "module") -> pd.DataFrame:
    """Sum tensor shares [r, T] into modules or layers: DataFrame [r, groups] in parameter order."""
    if profiles.shape[1] != len(names):
        raise ValueError(f"names must have {profiles.shape[1]} entries (one per tensor), got {len(names)}")
    group = module_of if by == "module" else layer_of
    keys = [group(n).removeprefix("net.") for n in names]
    frame = pd.DataFrame(profiles, columns=keys)
    return frame.T.groupby(level=0, sort=False).sum().T


def parse_scope(text: str) -> ParamScope:
    """Invert ParamScope.describe() (the PEF run stores its text): 'last 1 layer(s) + head' -> scope."""
    if text == "all parameters":
        return ParamScope("all")
    if m := re.fullmatch(r"names matching /(.*)/", text, re.S):
        return ParamScope("pattern", pattern=m.group(1))
    if m := re.fullmatch(r"last (\d+) layer\(s\) \+ head", text):
        return ParamScope("last_layers", n_layers=int(m.group(1)))
    raise ValueError(f"scope text must come from ParamScope.describe(), got {text!r}")


def decomposition_scope(ws: Workspace, run: Run) -> ParamScope:
    """The parameter scope the decomposition's PEFs were taken over (stored as data; as its description by runs
    stored before scopes were)."""
    params = ws.get_run(run.summary["pefs_run"]).params
    return ParamScope(**params["scope_spec"]) if "scope_spec" in params else parse_scope(params["scope_text"])


def scoped_model(ws: Workspace, run: Run, model: ClassifierModel) -> ClassifierModel:
    """The model viewed under the decomposition's scope; checks the parameter count matches."""
    scoped = model if model.scope == (scope := decomposition_scope(ws, run)) else model.with_scope(scope)
    M = scoped.summary().n_parameters_in_scope
    if M != int(run.summary["n_parameters"]):
        raise ValueError(f"model '{model.name}' has {M} parameters in scope '{scope.describe()}' but run {run.id} "
                         f"was fitted over {run.summary['n_parameters']}; load the model the run was computed with")
    return scoped


def parameter_layout(model: ClassifierModel) -> tuple[list[str], np.ndarray]:
    """Names of the parameters in scope and their offsets [T + 1] in the flat vector of M parameters."""
    layout = ParameterLayout.in_scope(model)
    return list(layout.names), layout.offsets


def component_profiles(ws: Workspace, run: Run, dec: Decomposition, offsets: np.ndarray) -> np.ndarray:
    """tensor_profiles of a decomposition, computed once per run and stored: [r, T]."""
    return cached_arrays(ws, "component-profiles", {"decomposition": run.key, "tensors": len(offsets) - 1},
                         lambda: {"profiles": tensor_profiles(dec.components, dec.kept, offsets)})["profiles"]


# ---------------------------------------------------------------------------------------------- overview

def notable_threshold(W: np.ndarray, fraction: float = NOTABLE_FRACTION) -> float:
    """A coefficient is notable above this: `fraction` of the largest coefficient in W (components are unit
    norm, so coefficients compare across components)."""
    return fraction * float(W.max()) if W.size else 0.0


def overview(data: BrowseData, top_indices: np.ndarray, sim: np.ndarray, *, n_top: int = N_TOP_STATS,
             notable_fraction: float = NOTABLE_FRACTION) -> pd.DataFrame:
    """One row per component: notable count, top coefficient, purity/entropy/accuracy of its top examples
    and its most similar other component.

    top_indices [r, K >= n_top]; sim [r, r] |cos|. Purity is the majority gold label's share among the
    top n_top examples, entropy that distribution's entropy in bits, accuracy the model's accuracy on them
    (each over the examples with a gold label; NaN, and majority label 'not available', when none has one).
    """
    W, r = data.W, data.n_components
    if top_indices.shape[1] < n_top:
        raise ValueError(f"n_top must be <= {top_indices.shape[1]} (the stored top table), got {n_top}")
    top = top_indices[:, :n_top]  # [r, n_top]
    C = len(data.label_names)
    dists = np.stack([label_distribution(data.labels[t], C) for t in top])  # [r, C]
    known = dists.sum(1) > 0  # [r] some top example has a gold label
    threshold = notable_threshold(W, notable_fraction)
    sim_off = np.asarray(sim, dtype=np.float64).copy()
    np.fill_diagonal(sim_off, -np.inf)
    nearest = sim_off.argmax(1) if r > 1 else np.zeros(r, dtype=int)
    return pd.DataFrame({
        "component": np.arange(r),
        "notable": (W > threshold).sum(0) if threshold > 0 else np.zeros(r, dtype=int),
        "top_coefficient": W.max(0) if len(W) else np.zeros(r),
        "majority_label": [data.label_names[i] if ok else NOT_AVAILABLE for i, ok in zip(dists.argmax(1), known)],
        "purity": [purity(data.labels[t], C) for t in top],  # the one purity the pages show
        "entropy_bits": [entropy_bits(d) if ok else np.nan for d, ok in zip(dists, known)],
        "accuracy": [accuracy(data, t) for t in top],
        "most_similar": nearest if r > 1 else [-1] * r,
        "similar_abs_cos": sim_off[np.arange(r), nearest] if r > 1 else np.zeros(r),
    })


SELECTIVITY_HELP = ("KL ratio of the newest Perturb → Perturb all components run: mean KL on the component's top "
                    "examples / mean KL on a random baseline after moving the weights along the component "
                    "(the sign with the larger ratio). Higher = more selective: its direction in weight space "
                    "changes the predictions it explains far more than the others (≫ 1 is faithful).")


def with_selectivity(table: pd.DataFrame, selectivity: pd.Series | None) -> pd.DataFrame:
    """The overview with a 'selectivity' column (per-component KL ratio, indexed by component; NaN for
    components it lacks), or unchanged when there is no perturb-all run (None)."""
    if selectivity is None:
        return table
    return table.assign(selectivity=table["component"].map(selectivity).astype(float))


def with_notes(table: pd.DataFrame, notes: Mapping[int, ComponentNote], summaries: list[str] | None, *,
               note_text: bool = False) -> pd.DataFrame:
    """The overview with each component's 'name' and 'tags' (a researcher's, "" when none; also the 'note' when
    note_text) and its automatic 'summary' (one per component; None leaves it out), right after 'component'."""
    shown = table.copy()
    at = shown.columns.get_loc("component") + 1
    read = {"name": lambda n: n.name, "tags": lambda n: n.tags_text, "note": lambda n: n.note}
    columns = ["name", "tags", "note"] if note_text else ["name", "tags"]
    for i, column in enumerate(columns):
        shown.insert(at + i, column, [read[column](notes[c]) if c in notes else "" for c in shown["component"]])
    if summaries is not None:
        if len(summaries) != len(shown):
            raise ValueError(f"summaries must have one entry per component ({len(shown)}), got {len(summaries)}")
        shown.insert(at + len(columns), "summary", shown["component"].map(dict(enumerate(summaries))))
    return shown


def example_table(data: BrowseData, indices: np.ndarray, k: int | None = None,
                  texts: list[str] | None = None) -> pd.DataFrame:
    """Rows for some examples: idx, gold, prediction, probability (of the prediction), correct, coefficient on
    k, text. An example without a gold label has gold 'not available' and correct None."""
    indices = np.asarray(indices, dtype=np.int64)
    pred = data.predictions[indices]
    known = data.known[indices]
    frame = pd.DataFrame({
        "idx": indices,
        "gold": [data.label_names[l] if l >= 0 else NOT_AVAILABLE for l in data.labels[indices]],
        "prediction": [data.label_names[p] for p in pred],
        "probability": data.probs[indices, pred],
        "correct": data.correct[indices] if known.all() else
        [bool(c) if ok else None for c, ok in zip(data.correct[indices], known)],
    })
    if k is not None:
        frame["coefficient"] = np.asarray(data.W[indices, k], dtype=np.float64)
    if texts is not None:
        frame["text"] = [texts[i] for i in indices]
    return frame


# ------------------------------------------------------------------------------------------------ search

def find_examples(query: str, texts: list[str] | None, n_examples: int, limit: int = 200) -> np.ndarray:
    """Example indices for a search: '#12' or '12, 40' (indices) or a case-insensitive text substring."""
    query = query.strip()
    if not query:
        return np.zeros(0, dtype=np.int64)
    if re.fullmatch(r"#?\d+(\s*,\s*#?\d+)*", query):
        found = [int(t.strip().lstrip("#")) for t in query.split(",")]
        return np.array([i for i in found if 0 <= i < n_examples][:limit], dtype=np.int64)
    if texts is None:
        return np.zeros(0, dtype=np.int64)
    needle = query.casefold()
    return np.array([i for i, t in enumerate(texts) if needle in t.casefold()][:limit], dtype=np.int64)


def loadings(W: np.ndarray, indices: np.ndarray, n: int = 3) -> pd.DataFrame:
    """The components each example loads on most: idx, components (list), coefficients (list), share.

    share is the fraction of the example's total coefficient mass on those n components.
    """
    indices = np.asarray(indices, dtype=np.int64)
    rows = np.asarray(W[indices], dtype=np.float64)  # [b, r]
    n = min(n, W.shape[1])
    order = np.argsort(-rows, axis=1, kind="stable")[:, :n]
    values = np.take_along_axis(rows, order, axis=1)
    total = rows.sum(1)
    return pd.DataFrame({"idx": indices, "components": [list(map(int, o)) for o in order],
                         "coefficients": [list(map(float, v)) for v in values],
                         "share": np.divide(values.sum(1), total, out=np.zeros_like(total), where=total > 0)})


# ------------------------------------------------------------------------------------------------ export

CSV_FLOAT_FORMAT = "%.6g"  # coefficients in CSV: 6 significant digits (float32 holds about 7)


def coefficients_frame(data: BrowseData, texts: list[str] | None = None) -> pd.DataFrame:
    """All coefficients with each example's label, prediction and text: idx, gold, prediction, w0..w{r-1}, text
    (text only when texts [n] are given, i.e. not for images). The coefficients are W's float32 values."""
    frame = pd.DataFrame(np.asarray(data.W), columns=[f"w{k}" for k in range(data.n_components)])
    frame.insert(0, "prediction", [data.label_names[p] for p in data.predictions])
    frame.insert(0, "gold", [data.label_names[l] if l >= 0 else "" for l in data.labels])
    frame.insert(0, "idx", np.arange(data.n_examples))
    if texts is not None:
        frame["text"] = texts
    return frame


def below_resolution_as_zero(W: np.ndarray) -> np.ndarray:
    """W [n, r] with each entry below float32 resolution of its row's largest coefficient set to 0: [n, r].

    Multiplicative updates shrink unused coefficients towards 0 without reaching it (values like 5.2e-44). The
    row's largest coefficient is itself only known to within eps32 · max_j W[i, j] (one or two units in its last
    place), so an entry below that is indistinguishable from 0 at the precision W is stored in.
    """
    W = np.asarray(W, dtype=np.float32)
    floor = np.finfo(np.float32).eps * np.abs(W).max(axis=1, keepdims=True)  # [n, 1]
    return np.where(np.abs(W) < floor, np.float32(0), W)


def coefficients_csv(data: BrowseData, texts: list[str] | None = None) -> bytes:
    """coefficients_frame as CSV for spreadsheets: values below float32 resolution of the row maximum written
    as 0, the others with CSV_FLOAT_FORMAT (the Parquet export keeps every bit)."""
    frame = coefficients_frame(data, texts)
    columns = [f"w{k}" for k in range(data.n_components)]
    frame[columns] = below_resolution_as_zero(frame[columns].to_numpy())
    return csv_bytes(frame, float_format=CSV_FLOAT_FORMAT)


def components_frame(table: pd.DataFrame, notes: Mapping[int, ComponentNote], summaries: list[str]) -> pd.DataFrame:
    """The overview as a file, one row per component: name, tags, note, summary, then its statistics (the
    per-module share lists of the bar column left out)."""
    return with_notes(table, notes, summaries, note_text=True).drop(columns="modules", errors="ignore")


def components_safetensors(dec: Decomposition, metadata: dict[str, str]) -> bytes:
    """The component vectors over the kept parameters as safetensors: components [r, m], kept [m]."""
    from safetensors.numpy import save

    meta = {**{k: str(v) for k, v in metadata.items()}, "n_parameters": str(dec.n_parameters),
            "kind": variant_of(dec).name}
    return save({"components": np.ascontiguousarray(dec.components, dtype=np.float32),
                 "kept": np.ascontiguousarray(dec.kept, dtype=np.int64)}, metadata=meta)

