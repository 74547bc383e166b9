"""Comparing NPEFF decompositions: components matched across runs (seeds, sizes, variants) and their stability.

LRM-NPEFF is non-convex, so a component is only worth reading when other seeds find it too. Two components
are compared through their pseudo-Fisher matrices P_k (LRM: g_k g_kᵀ; D: diag(h_k)) by the Frobenius cosine
⟨P_a, P_b⟩_F / (‖P_a‖_F ‖P_b‖_F): for two LRM components (g_aᵀg_b)² / (‖g_a‖²‖g_b‖²), for two D components
the cosine of h_a and h_b. A D component against an LRM one compares diagonals, h_a against g_b ∘ g_b (the
diagonal of g_b g_bᵀ; diag(h)'s cosine with the whole g gᵀ would be ~1/√m for any spread-out g). Components
live in the full in-scope parameter space (zeros outside their run's `kept`), so runs over different sparsified
PEFs of one model, dataset and scope compare exactly; components are matched one-to-one by the Hungarian
algorithm (scipy's linear_sum_assignment) on this cosine or on the overlap of their top examples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from analysis.components import check_decomposition_run, decomposition_scope, top_table
from analysis.npeff import Decomposition
from analysis.runs import load_decomposition
from analysis.store import Run, Workspace
from analysis.variants import variant_of

TOP_N = 20  # top examples per component whose overlap (Jaccard) is reported and can be matched on
BLOCK = 65_536  # shared parameters multiplied at a time (memory-mapped components are read once)


# --------------------------------------------------------------------------------- pseudo-Fisher forms

@dataclass(frozen=True)
class PseudoFisherForm:
    """How a variant's component rows C [r, m] read as pseudo-Fisher matrices."""

    diagonal: Callable[[np.ndarray], np.ndarray]  # C [r, b] -> diagonal of P_k on those parameters [r, b]
    rank_one: bool  # P_k = c_k c_kᵀ (else P_k = diag(c_k))


# variant name -> its form; a new variant adds one line here
FORMS: dict[str, PseudoFisherForm] = {
    "lrm": PseudoFisherForm(diagonal=np.square, rank_one=True),
    "diag": PseudoFisherForm(diagonal=lambda C: C, rank_one=False),
}


def form_of(dec: Decomposition) -> PseudoFisherForm:
    name = variant_of(dec).name
    if name not in FORMS:
        raise ValueError(f"no pseudo-Fisher form for variant '{name}'; analysis.compare.FORMS has {sorted(FORMS)}")
    return FORMS[name]


def _row_norms(C: np.ndarray, read: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """‖read(C)_k‖ of each row over all of C's columns [r] (float64), a block of columns at a time."""
    sq = np.zeros(C.shape[0])
    for start in range(0, C.shape[1], BLOCK):
        sq += np.square(read(np.asarray(C[:, start:start + BLOCK], dtype=np.float64))).sum(1)
    return np.sqrt(sq)


def fisher_cosines(dec_a: Decomposition, dec_b: Decomposition) -> np.ndarray:
    """Frobenius cosine of every pair of pseudo-Fisher matrices [r_a, r_b] in [0, 1] (the module docstring).

    The inner products run over the parameters both runs kept (elsewhere one side is zero); the norms over each
    run's own kept parameters.
    """
    if dec_a.n_parameters != dec_b.n_parameters:
        raise ValueError(f"decompositions must be over one parameter space, got {dec_a.n_parameters} and "
                         f"{dec_b.n_parameters} parameters")
    form_a, form_b = form_of(dec_a), form_of(dec_b)
    rank_one = form_a.rank_one and form_b.rank_one
    read_a, read_b = (np.asarray, np.asarray) if rank_one else (form_a.diagonal, form_b.diagonal)
    _, ia, ib = np.intersect1d(np.asarray(dec_a.kept), np.asarray(dec_b.kept), assume_unique=True,
                               return_indices=True)  # columns of each run holding the shared parameters
    A, B = dec_a.components, dec_b.components
    dots = np.zeros((A.shape[0], B.shape[0]))  # [r_a, r_b]
    for start in range(0, len(ia), BLOCK):
        part_a = read_a(np.asarray(A[:, ia[start:start + BLOCK]], dtype=np.float64))  # [r_a, b]
        part_b = read_b(np.asarray(B[:, ib[start:start + BLOCK]], dtype=np.float64))  # [r_b, b]
        dots += part_a @ part_b.T
    norms = np.outer(_row_norms(A, read_a), _row_norms(B, read_b))
    cos = np.abs(np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0))
    # ⟨g_a g_aᵀ, g_b g_bᵀ⟩_F = (g_aᵀg_b)² and ‖g gᵀ‖_F = ‖g‖²
    return np.minimum(cos ** 2 if rank_one else cos, 1.0)


# ----------------------------------------------------------------------------------- top-example overlap

def top_sets(W: np.ndarray, top_n: int = TOP_N) -> np.ndarray:
    """Membership [n, r] bool: example i is among component k's top_n by coefficient (positive ones only, so a
    dead component has no top examples)."""
    indices, values = top_table(np.asarray(W), top_n)  # [r, k]
    member = np.zeros(W.shape, dtype=bool)
    rows, cols = np.nonzero(values > 0)
    member[indices[rows, cols], rows] = True
    return member


def top_overlaps(W_a: np.ndarray, W_b: np.ndarray, top_n: int = TOP_N) -> np.ndarray:
    """Jaccard |T_a ∩ T_b| / |T_a ∪ T_b| of the top-example sets of every pair [r_a, r_b] (0 when both empty)."""
    if W_a.shape[0] != W_b.shape[0]:
        raise ValueError(f"decompositions must be of one dataset, got {W_a.shape[0]} and {W_b.shape[0]} examples")
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    Ta, Tb = top_sets(W_a, top_n).astype(np.float64), top_sets(W_b, top_n).astype(np.float64)  # [n, r_a], [n, r_b]
    both = Ta.T @ Tb  # [r_a, r_b] |T_a ∩ T_b|
    union = Ta.sum(0)[:, None] + Tb.sum(0)[None, :] - both
    return np.divide(both, union, out=np.zeros_like(both), where=union > 0)


# ------------------------------------------------------------------------------------------------ matching

@dataclass(frozen=True)
class MatchCriterion:
    """What components can be matched on: one of the two score matrices [r_a, r_b] in [0, 1]."""

    title: str
    help: str
    scores: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (cosines, overlaps) -> the matrix maximized


MATCH_BY: dict[str, MatchCriterion] = {
    "fisher": MatchCriterion("pseudo-Fisher cosine", "Frobenius cosine of the components' pseudo-Fisher matrices "
                             "(LRM: (g_aᵀg_b)²/(‖g_a‖²‖g_b‖²); D, and D against LRM: cosine of the diagonals)",
                             lambda cosines, _overlaps: cosines),
    "examples": MatchCriterion("top-example overlap", f"Jaccard overlap of the components' top {TOP_N} examples "
                               "(those with a positive coefficient)", lambda _cosines, overlaps: overlaps),
}


@dataclass(frozen=True)
class Matching:
    """A one-to-one matching of the components of decomposition a with those of b (maximum total score)."""

    pairs: np.ndarray  # [p, 2] int64 (component of a, component of b), p = min(r_a, r_b), ascending in a
    cosine: np.ndarray  # [p] pseudo-Fisher cosine of each pair
    overlap: np.ndarray  # [p] Jaccard overlap of each pair's top_n examples
    cosines: np.ndarray  # [r_a, r_b] every pair's pseudo-Fisher cosine
    overlaps: np.ndarray  # [r_a, r_b] every pair's top-example overlap
    matched: np.ndarray  # [p] the maximized criterion's score of each pair
    by: str  # the MATCH_BY criterion that was maximized
    top_n: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.cosines.shape

    @property
    def unmatched_a(self) -> np.ndarray:
        """Components of a without a partner (a has more components) [r_a − p]."""
        return np.setdiff1d(np.arange(self.shape[0]), self.pairs[:, 0])

    @property
    def unmatched_b(self) -> np.ndarray:
        """Components of b without a partner [r_b − p]."""
        return np.setdiff1d(np.arange(self.shape[1]), self.pairs[:, 1])

    def partner(self) -> np.ndarray:
        """[r_a] the component of b matched to each component of a, −1 when unmatched."""
        found = np.full(self.shape[0], -1, dtype=np.int64)
        found[self.pairs[:, 0]] = self.pairs[:, 1]
        return found

    def score(self) -> np.ndarray:
        """[r_a] the matched score (the criterion's) of each component of a, 0 when unmatched."""
        found = np.zeros(self.shape[0])
        found[self.pairs[:, 0]] = self.matched
        return found

    def matched_order(self) -> tuple[np.ndarray, np.ndarray]:
        """(a's components [r_a], b's components [r_b]): the matched pairs first, in a's order, then the unmatched;
        indexing a score matrix with them puts each pair on the diagonal."""
        rows = np.concatenate([self.pairs[:, 0], self.unmatched_a]).astype(np.int64)
        return rows, np.concatenate([self.pairs[:, 1], self.unmatched_b]).astype(np.int64)


def match(dec_a: Decomposition, dec_b: Decomposition, *, by: str = "fisher", top_n: int = TOP_N) -> Matching:
    """Hungarian matching of a's components with b's maximizing the total score of the criterion `by`."""
    if by not in MATCH_BY:
        raise ValueError(f"by must be one of {sorted(MATCH_BY)}, got '{by}'")
    cosines = fisher_cosines(dec_a, dec_b)
    overlaps = top_overlaps(np.asarray(dec_a.W), np.asarray(dec_b.W), top_n)
    scores = MATCH_BY[by].scores(cosines, overlaps)
    rows, cols = linear_sum_assignment(scores, maximize=True)  # rows ascending
    return Matching(pairs=np.stack([rows, cols], 1).astype(np.int64), cosine=cosines[rows, cols],
                    overlap=overlaps[rows, cols], cosines=cosines, overlaps=overlaps, matched=scores[rows, cols],
                    by=by, top_n=top_n)


# ----------------------------------------------------------------------------------------------- stability

@dataclass(frozen=True)
class Stability:
    """How well each component of a reference decomposition is found again by the other decompositions."""

    matchings: tuple[Matching, ...]  # the reference against each other decomposition, in order

    @property
    def scores(self) -> np.ndarray:
        """[r, n_others] matched score of each reference component in each other run (0 when unmatched)."""
        return np.stack([m.score() for m in self.matchings], 1)

    @property
    def mean(self) -> np.ndarray:
        """[r] mean matched score over the other runs: the component's stability."""
        return self.scores.mean(1)

    @property
    def min(self) -> np.ndarray:
        """[r] the worst matched score over the other runs."""
        return self.scores.min(1)


def stability(reference: Decomposition, others: Sequence[Decomposition], *, by: str = "fisher",
              top_n: int = TOP_N) -> Stability:
    """Match the reference against each other decomposition (a component unmatched in a smaller run scores 0)."""
    if not others:
        raise ValueError("others must hold at least one decomposition to compare the reference with, got none")
    return Stability(tuple(match(reference, other, by=by, top_n=top_n) for other in others))


def stability_table(result: Stability, others: Sequence[str], names: dict[int, str] | None = None) -> pd.DataFrame:
    """One row per reference component: component, name, stability (mean), min, then per other run (labelled by
    `others`) its matched component (−1: none), cosine and top-example overlap."""
    if len(others) != len(result.matchings):
        raise ValueError(f"others must label each of the {len(result.matchings)} matchings, got {len(others)}")
    r = result.matchings[0].shape[0]
    frame = pd.DataFrame({"component": np.arange(r), "name": [(names or {}).get(k, "") for k in range(r)],
                          "stability": result.mean, "min": result.min})
    for label, m in zip(others, result.matchings):
        partner = m.partner()
        has = partner >= 0
        frame[f"{label} component"] = partner
        frame[f"{label} cos"] = np.where(has, m.cosines[np.arange(r), np.maximum(partner, 0)], np.nan)
        frame[f"{label} overlap"] = np.where(has, m.overlaps[np.arange(r), np.maximum(partner, 0)], np.nan)
    return frame


# ------------------------------------------------------------------------------------------- stored runs

def _pefs_of(ws: Workspace, run: Run) -> Run:
    return ws.get_run(run.summary["pefs_run"])


def check_comparable(ws: Workspace, run_a: Run, run_b: Run) -> None:
    """A ValueError naming both runs unless they are complete decompositions of one model and dataset whose PEFs
    were taken over the same parameter scope (their components then live in one parameter space)."""
    for run in (run_a, run_b):
        check_decomposition_run(run)
    ids = f"runs {run_a.id} and {run_b.id} are not comparable"
    if (run_a.model_id, run_a.dataset_id) != (run_b.model_id, run_b.dataset_id):
        raise ValueError(f"{ids}: they are of different models or datasets; compare decompositions of one model "
                         "and dataset")
    pefs_a, pefs_b = _pefs_of(ws, run_a).params, _pefs_of(ws, run_b).params
    n_a, n_b = int(run_a.summary["n_parameters"]), int(run_b.summary["n_parameters"])
    if pefs_a.get("scope") != pefs_b.get("scope") or n_a != n_b:
        scope_a, scope_b = (decomposition_scope(ws, run).describe() for run in (run_a, run_b))
        raise ValueError(f"{ids}: {run_a.id} was fitted over scope '{scope_a}' ({n_a:,} parameters) and {run_b.id} "
                         f"over '{scope_b}' ({n_b:,}); compare decompositions of PEFs over the same parameter scope")


def compare_runs(ws: Workspace, reference: Run, others: Sequence[Run], *, by: str = "fisher",
                 top_n: int = TOP_N) -> Stability:
    """Stability of the reference run's components against other stored runs (checked comparable first)."""
    for other in others:
        check_comparable(ws, reference, other)
    return stability(load_decomposition(ws, reference), [load_decomposition(ws, o) for o in others], by=by,
                     top_n=top_n)


def fit_settings(run: Run) -> dict:
    """The fit settings of a stored decomposition run (fit_run's keywords: n_components, n_iters, seed, ...)."""
    return {k: v for k, v in run.params.items() if k != "pefs"}


def seed_siblings(ws: Workspace, run: Run) -> list[Run]:
    """The complete runs with the same PEFs and settings as `run` but another seed, by seed."""
    mine = {k: v for k, v in fit_settings(run).items() if k != "seed"}
    found = [ws.get_run(i) for i in ws.runs(kind=run.kind, status="complete")["id"]]
    same = [o for o in found if o.id != run.id and o.params.get("pefs") == run.params.get("pefs")
            and {k: v for k, v in fit_settings(o).items() if k != "seed"} == mine]
    return sorted(same, key=lambda o: o.params.get("seed", 0))


def new_seeds(used: Sequence[int], k: int) -> list[int]:
    """The k smallest non-negative seeds not in `used`, ascending."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    taken, seeds, seed = set(used), [], 0
    while len(seeds) < k:
        if seed not in taken:
            seeds.append(seed)
        seed += 1
    return seeds
