"""Comparing decompositions: pseudo-Fisher cosines against dense matrices, Hungarian matching against brute force
over all permutations, planted permutations and fits recovered, stability falling with perturbation."""
from itertools import permutations

import numpy as np
import pytest

from analysis import compare as cmp
from analysis.npeff import DiagDecomposition, LrmDecomposition, fit_lrm_npeff
from analysis.pefs import LrmPefs
from analysis.store import Workspace

LOSSES = np.array([1.0, 0.5])


def lrm(W, G, kept, M):
    return LrmDecomposition(W=np.asarray(W, np.float32), G=np.asarray(G, np.float32), kept=np.asarray(kept),
                            n_parameters=M, losses=LOSSES, relative_error=0.5)


def diag(W, H, kept, M):
    return DiagDecomposition(W=np.asarray(W, np.float32), H=np.asarray(H, np.float32), kept=np.asarray(kept),
                             n_parameters=M, losses=LOSSES, relative_error=0.5)


def random_lrm(seed=0, n=60, r=4, M=30, m=20):
    rng = np.random.default_rng(seed)
    kept = np.sort(rng.choice(M, m, replace=False))
    G = rng.normal(size=(r, m))
    return lrm(rng.exponential(size=(n, r)), G / np.linalg.norm(G, axis=1, keepdims=True), kept, M)


def random_diag(seed=0, n=60, r=4, M=30, m=20):
    rng = np.random.default_rng(seed)
    return diag(rng.exponential(size=(n, r)), rng.random((r, m)), np.sort(rng.choice(M, m, replace=False)), M)


def dense_pseudo_fisher(dec) -> np.ndarray:
    """P_k [r, M, M] as matrices over all M parameters: g gᵀ (LRM) or diag(h) (D)."""
    full = np.stack([dec.full_component(k) for k in range(dec.n_components)]).astype(np.float64)  # [r, M]
    if isinstance(dec, LrmDecomposition):
        return np.einsum("kp,kq->kpq", full, full)
    return np.stack([np.diag(row) for row in full])


def slow_cosines(dec_a, dec_b) -> np.ndarray:
    """Frobenius cosine of the dense pseudo-Fisher matrices; a pair with a D side compares the diagonals."""
    Pa, Pb = dense_pseudo_fisher(dec_a), dense_pseudo_fisher(dec_b)
    if isinstance(dec_a, DiagDecomposition) or isinstance(dec_b, DiagDecomposition):
        Pa = np.stack([np.diag(np.diagonal(p)) for p in Pa])
        Pb = np.stack([np.diag(np.diagonal(p)) for p in Pb])
    out = np.zeros((len(Pa), len(Pb)))
    for i, p in enumerate(Pa):
        for j, q in enumerate(Pb):
            out[i, j] = (p * q).sum() / (np.linalg.norm(p) * np.linalg.norm(q))
    return out


def brute_force_best(scores: np.ndarray) -> float:
    """The largest total score of any one-to-one matching (all injective maps of the smaller side)."""
    ra, rb = scores.shape
    if ra <= rb:
        return max(sum(scores[i, p[i]] for i in range(ra)) for p in permutations(range(rb), ra))
    return brute_force_best(scores.T)


def permuted(dec, perm, signs=None, kept_extra=0):
    """dec with components reordered (new k = old perm[k]), optionally sign-flipped, and stored over a larger
    kept set (zeros on the extra parameters) of a larger n_parameters: the same components in the same space."""
    C = dec.components[perm] * (1 if signs is None else np.asarray(signs)[:, None])
    kept = np.asarray(dec.kept)
    if kept_extra:
        extra = np.setdiff1d(np.arange(dec.n_parameters), kept)[:kept_extra]
        kept = np.concatenate([kept, extra])
        C = np.concatenate([C, np.zeros((len(C), kept_extra))], 1)
        order = np.argsort(kept)
        kept, C = kept[order], C[:, order]
    return type(dec)(**{"W": dec.W[:, perm], dec.factor: C.astype(np.float32), "kept": kept,
                        "n_parameters": dec.n_parameters, "losses": LOSSES, "relative_error": 0.5})


# ------------------------------------------------------------------------------------------- cosines

@pytest.mark.parametrize("make_a, make_b", [(random_lrm, random_lrm), (random_diag, random_diag),
                                            (random_diag, random_lrm), (random_lrm, random_diag)])
def test_fisher_cosines_equal_the_dense_frobenius_cosines_over_different_kept_sets(make_a, make_b):
    a, b = make_a(seed=1, r=3), make_b(seed=2, r=5)
    assert not np.array_equal(a.kept, b.kept)
    np.testing.assert_allclose(cmp.fisher_cosines(a, b), slow_cosines(a, b), atol=1e-6)


def test_lrm_cosine_is_the_squared_vector_cosine_and_ignores_signs():
    a = random_lrm(seed=3)
    G = a.G.astype(np.float64)
    flipped = permuted(a, np.arange(4), signs=[-1, 1, -1, 1])
    np.testing.assert_allclose(cmp.fisher_cosines(a, flipped), np.square(G @ G.T), atol=1e-6)


def test_blocks_do_not_change_the_cosines(monkeypatch):
    a, b = random_lrm(seed=4, M=300, m=200), random_lrm(seed=5, M=300, m=150)
    whole = cmp.fisher_cosines(a, b)
    monkeypatch.setattr(cmp, "BLOCK", 7)
    np.testing.assert_allclose(cmp.fisher_cosines(a, b), whole, atol=1e-12)


# ----------------------------------------------------------------------------------------- matching

@pytest.mark.parametrize("make", [random_lrm, random_diag])
def test_match_recovers_a_planted_permutation_with_cosine_and_overlap_one(make):
    a = make(seed=6, r=6)
    perm = np.array([3, 0, 5, 1, 4, 2])
    b = permuted(a, perm, signs=[1, -1, 1, -1, 1, 1] if make is random_lrm else None, kept_extra=5)
    for by in cmp.MATCH_BY:
        m = cmp.match(a, b, by=by)
        np.testing.assert_array_equal(m.partner(), np.argsort(perm))  # a's component perm[j] is b's j
        np.testing.assert_allclose(m.cosine, 1.0, atol=1e-6)
        np.testing.assert_allclose(m.overlap, 1.0)
        assert len(m.unmatched_a) == len(m.unmatched_b) == 0
    result = cmp.stability(a, [a, b])
    np.testing.assert_allclose(result.mean, 1.0, atol=1e-6)
    np.testing.assert_allclose(result.min, 1.0, atol=1e-6)


@pytest.mark.parametrize("ra, rb, seed", [(4, 4, 0), (3, 5, 1), (5, 3, 2), (5, 5, 3)])
def test_hungarian_matching_is_as_good_as_brute_force_over_all_permutations(ra, rb, seed):
    a, b = random_lrm(seed=seed, r=ra, n=40), random_lrm(seed=seed + 10, r=rb, n=40)
    for by, criterion in cmp.MATCH_BY.items():
        m = cmp.match(a, b, by=by, top_n=8)
        scores = criterion.scores(m.cosines, m.overlaps)
        assert m.matched.sum() == pytest.approx(brute_force_best(scores), abs=1e-9)
        assert len(m.pairs) == min(ra, rb) and len(set(m.pairs[:, 1])) == min(ra, rb)
        np.testing.assert_array_equal(m.pairs[:, 0], np.sort(m.pairs[:, 0]))


def test_unmatched_components_when_sizes_differ_score_zero():
    big = random_lrm(seed=7, r=5)
    small = permuted(big, np.array([4, 1, 2]))  # three of big's five components
    m = cmp.match(big, small)
    np.testing.assert_array_equal(m.partner(), [-1, 1, 2, -1, 0])
    np.testing.assert_array_equal(m.unmatched_a, [0, 3])
    np.testing.assert_allclose(m.score(), [0, 1, 1, 0, 1], atol=1e-6)
    rows, cols = m.matched_order()
    np.testing.assert_array_equal(rows, [1, 2, 4, 0, 3])
    np.testing.assert_array_equal(cols, [1, 2, 0])
    reverse = cmp.match(small, big)
    np.testing.assert_array_equal(reverse.unmatched_b, [0, 3])
    np.testing.assert_array_equal(reverse.matched_order()[1], [4, 1, 2, 0, 3])
    table = cmp.stability_table(cmp.stability(big, [small]), ["B"], names={1: "one"})
    assert table.columns.tolist() == ["component", "name", "stability", "min", "B component", "B cos", "B overlap"]
    assert table["name"].tolist() == ["", "one", "", "", ""]
    assert table["B component"].tolist() == [-1, 1, 2, -1, 0]
    assert np.isnan(table["B cos"].iloc[0]) and table["B overlap"].iloc[1] == 1.0


def test_a_perturbed_run_is_less_stable_the_more_it_is_perturbed():
    a = random_lrm(seed=8, r=5, n=200, M=400, m=300)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=a.G.shape)
    means = []
    for scale in (0.0, 0.05, 0.2, 0.6):
        G = a.G + scale * noise / np.sqrt(a.G.shape[1])
        W = a.W * np.exp(scale * rng.normal(size=a.W.shape))
        means.append(cmp.stability(a, [lrm(W, G / np.linalg.norm(G, axis=1, keepdims=True), a.kept, 400)]).mean)
    assert means[0] == pytest.approx(np.ones(5), abs=1e-6)
    for before, after in zip(means, means[1:]):
        assert np.all(after < before)


def test_top_example_overlap_counts_positive_coefficients_only():
    W_a = np.array([[3, 0], [2, 0], [1, 0], [0, 0]], np.float32)  # component 1 is dead
    W_b = np.array([[0, 1], [5, 0], [2, 0], [4, 0]], np.float32)
    np.testing.assert_allclose(cmp.top_overlaps(W_a, W_b, top_n=2), [[1 / 3, 0.5], [0.0, 0.0]])
    np.testing.assert_array_equal(cmp.top_sets(W_a, 2)[:, 1], [False] * 4)


def test_a_planted_lrm_fit_is_matched_to_the_truth_and_two_seeds_agree():
    rng = np.random.default_rng(0)
    n, r, M = 80, 4, 120
    G = np.zeros((r, M), np.float32)
    for k in range(r):
        G[k, rng.choice(M, 20, replace=False)] = rng.normal(size=20)
    W = np.zeros((n, r), np.float32)
    for i in range(n):
        on = rng.choice(r, 2, replace=False)
        W[i, on] = rng.uniform(0.5, 1.5, size=2)
    pefs = LrmPefs.from_dense(np.sqrt(W)[:, :, None] * G[None])
    truth = lrm(W, G / np.linalg.norm(G, axis=1, keepdims=True), np.arange(M), M)
    fits = [fit_lrm_npeff(pefs, r, n_iters=20, n_iters_g_only=20, seed=s) for s in (1, 2)]
    for fit in fits:
        m = cmp.match(truth, fit)
        assert m.cosine.min() > 0.95
        best = np.argmax(cmp.fisher_cosines(truth, fit), axis=1)
        np.testing.assert_array_equal(m.partner(), best)  # planted components are distinct: no conflicts
    assert cmp.stability(fits[0], [fits[1]]).min.min() > 0.9


def test_errors_name_the_bad_argument():
    a = random_lrm(seed=9)
    with pytest.raises(ValueError, match="^decompositions must be over one parameter space, got 30 and 31 parameters$"):
        cmp.fisher_cosines(a, random_lrm(seed=9, M=31))
    with pytest.raises(ValueError, match="^decompositions must be of one dataset, got 60 and 61 examples$"):
        cmp.match(a, random_lrm(seed=9, n=61))
    with pytest.raises(ValueError, match=r"^by must be one of \['examples', 'fisher'\], got 'cos'$"):
        cmp.match(a, a, by="cos")
    with pytest.raises(ValueError, match="^others must hold at least one decomposition"):
        cmp.stability(a, [])
    with pytest.raises(ValueError, match="^top_n must be >= 1, got 0$"):
        cmp.match(a, a, top_n=0)


def test_new_seeds_skip_the_used_ones():
    assert cmp.new_seeds([0, 2, 5], 4) == [1, 3, 4, 6]
    with pytest.raises(ValueError, match="^k must be >= 1, got 0$"):
        cmp.new_seeds([], 0)


# --------------------------------------------------------------------------------------- stored runs

def _stored(ws, kind, scope, *, n_parameters=30, seed=0, model="m", dataset="d", variant="lrm"):
    ids = {"model_id": model, "dataset_id": dataset}
    pefs = ws.start_run("pefs", {"model": model, "dataset": dataset, "scope": scope, "kind": variant,
                                 "scope_spec": {"mode": "pattern", "pattern": scope}}, **ids)
    ws.complete_run(pefs.id, {"n_examples": 60, "n_parameters": n_parameters, "kind": variant})
    run = ws.start_run(kind, {"pefs": pefs.key, "n_components": 4, "n_iters": 10, "seed": seed}, **ids)
    ws.complete_run(run.id, {"pefs_run": pefs.id, "kind": variant, "n_components": 4, "n_parameters": n_parameters,
                             "relative_error": 0.5, "final_loss": 1.0})
    return ws.get_run(run.id)


def test_runs_are_comparable_over_one_scope_across_variants_and_refused_otherwise(tmp_path):
    ws = Workspace(tmp_path / "ws")
    a = _stored(ws, "npeff-lrm", "blocks")
    seed1 = _stored(ws, "npeff-lrm", "blocks", seed=1)
    d = _stored(ws, "npeff-diag", "blocks", variant="diag")
    cmp.check_comparable(ws, a, seed1)
    cmp.check_comparable(ws, a, d)
    other_scope = _stored(ws, "npeff-lrm", "head", n_parameters=12)
    with pytest.raises(ValueError, match=f"^runs {a.id} and {other_scope.id} are not comparable: {a.id} was fitted "
                                         f"over scope 'names matching /blocks/' \\(30 parameters\\) and "
                                         f"{other_scope.id} over 'names matching /head/' \\(12\\); compare "
                                         "decompositions of PEFs over the same parameter scope$"):
        cmp.check_comparable(ws, a, other_scope)
    other_data = _stored(ws, "npeff-lrm", "blocks", dataset="e")
    with pytest.raises(ValueError, match=f"^runs {a.id} and {other_data.id} are not comparable: they are of "
                                         "different models or datasets"):
        cmp.check_comparable(ws, a, other_data)
    assert [s.id for s in cmp.seed_siblings(ws, a)] == [seed1.id]
    assert cmp.fit_settings(seed1) == {"n_components": 4, "n_iters": 10, "seed": 1}


# ------------------------------------------------------------------------------------------------ figures

def test_heatmap_puts_the_matched_pairs_on_the_diagonal_and_the_unmatched_last():
    from analysis.figures.compare import matched_heatmap, stability_figure

    big = random_lrm(seed=10, r=5)
    small = permuted(big, np.array([4, 1, 2]))
    m = cmp.match(small, big)  # small's 0, 1, 2 are big's 4, 1, 2; big's 0 and 3 are unmatched
    fig = matched_heatmap(m, m.cosines, name_a="A", name_b="B", score_name="cos", labels_a=["x", "y", "z"])
    heat = fig.data[0]
    assert list(heat.y) == ["A x", "A y", "A z"] and list(heat.x) == ["B 4", "B 1", "B 2", "B 0", "B 3"]
    np.testing.assert_allclose(np.diagonal(np.asarray(heat.z)), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(heat.z), m.cosines[:, [4, 1, 2, 0, 3]])
    result = cmp.stability(big, [small])
    bars = stability_figure(result.mean, result.min, score_name="cos", n_others=1)
    np.testing.assert_allclose(bars.data[0].y, [0, 1, 1, 0, 1], atol=1e-6)
