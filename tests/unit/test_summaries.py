"""Automatic component summaries: enriched words (weighted log-odds, Monroe et al. 2008), labels, layers."""
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest

import analysis.components as cs
from analysis import summaries as sm


def _slow_log_odds_z(a_texts: list[str], b_texts: list[str], bigrams: bool) -> dict[str, float]:
    """The formula term by term with Counters and floats, prior = the counts in both corpora together."""
    y_a = Counter(t for text in a_texts for t in sm.ngrams(text, bigrams=bigrams))
    y_b = Counter(t for text in b_texts for t in sm.ngrams(text, bigrams=bigrams))
    alpha = y_a + y_b
    n_a, n_b, a0 = sum(y_a.values()), sum(y_b.values()), sum(alpha.values())
    z = {}
    for w, aw in alpha.items():
        delta = (math.log((y_a[w] + aw) / (n_a + a0 - y_a[w] - aw))
                 - math.log((y_b[w] + aw) / (n_b + a0 - y_b[w] - aw)))
        z[w] = delta / math.sqrt(1 / (y_a[w] + aw) + 1 / (y_b[w] + aw))
    return z


def _corpus(n: int = 300, seed: int = 0, planted: str = "zebra") -> tuple[list[str], np.ndarray]:
    """Random sentences over a filler vocabulary; the first 30 (the 'top examples') each contain `planted`."""
    rng = np.random.default_rng(seed)
    filler = ["the", "a", "film", "plot", "is", "was", "good", "bad", "very", "not", "story", "acting"]
    texts = [" ".join(rng.choice(filler, size=rng.integers(4, 12))) for _ in range(n)]
    top = np.arange(30)
    for i in top:
        words = texts[i].split()
        words.insert(int(rng.integers(0, len(words) + 1)), planted)
        texts[i] = " ".join(words)
    texts[200] += f" {planted}"  # once outside the top examples too
    return texts, top


def test_words_are_lowercase_and_split_at_punctuation():
    assert sm.words("Low-key, DON'T miss it: 10/10_ok!") == ["low", "key", "don't", "miss", "it", "10", "10", "ok"]
    assert sm.ngrams("a b c", bigrams=True) == ["a", "b", "c", "a b", "b c"]
    assert sm.ngrams("a b c", bigrams=False) == ["a", "b", "c"]


def test_term_counts_match_a_counter_per_example():
    texts = ["A b a", "", "b c. C"]
    counts = sm.term_counts(texts, bigrams=True)
    for i, text in enumerate(texts):
        row = counts.counts[i].toarray().ravel()
        assert {counts.vocabulary[v]: int(row[v]) for v in np.flatnonzero(row)} == Counter(sm.ngrams(text))


@pytest.mark.parametrize("bigrams", [False, True])
def test_log_odds_match_the_slow_formula(bigrams):
    texts, top = _corpus(seed=1)
    counts = sm.term_counts(texts, bigrams=bigrams)
    in_top = np.isin(np.arange(len(texts)), top)
    y_a = np.asarray(counts.counts[in_top].sum(0)).ravel()
    y_b = np.asarray(counts.counts[~in_top].sum(0)).ravel()
    fast = sm.log_odds_z(y_a, y_b, y_a + y_b)
    slow = _slow_log_odds_z([texts[i] for i in top], [t for i, t in enumerate(texts) if not in_top[i]], bigrams)
    np.testing.assert_allclose(fast, [slow[w] for w in counts.vocabulary], rtol=1e-10)


def test_log_odds_are_antisymmetric_and_check_their_arguments():
    y_a, y_b, alpha = np.array([5.0, 1, 0]), np.array([1.0, 4, 2]), np.array([1.0, 2, 3])
    np.testing.assert_allclose(sm.log_odds_z(y_a, y_b, alpha), -sm.log_odds_z(y_b, y_a, alpha))
    assert sm.log_odds_z(y_a, y_b, alpha)[0] > 0 > sm.log_odds_z(y_a, y_b, alpha)[1]
    with pytest.raises(ValueError, match=r"^alpha must be > 0 for every term, got min 0.0; add a pseudo-count$"):
        sm.log_odds_z(y_a, y_b, np.array([1.0, 0, 1]))
    with pytest.raises(ValueError, match=r"^y_a, y_b and alpha must have one shape, got \(3,\), \(2,\), \(3,\)$"):
        sm.log_odds_z(y_a, y_b[:2], alpha)


def test_the_planted_word_is_the_most_enriched():
    texts, top = _corpus()
    counts = sm.term_counts(texts, bigrams=False)
    found = sm.enriched_terms(counts, top)
    assert found[0][0] == "zebra" and found[0][1] > 4
    assert all(z > sm.MIN_Z for _, z in found) and len(found) <= sm.N_TERMS
    rest = np.arange(30, len(texts))
    assert "zebra" not in [t for t, _ in sm.enriched_terms(counts, rest)]  # depleted there
    assert sm.enriched_terms(sm.term_counts(["", ""]), np.array([0])) == []  # no words at all


def test_a_bigram_hides_its_words_and_a_stronger_prior_shrinks_z():
    texts, top = _corpus(planted="low-key")
    counts = sm.term_counts(texts, bigrams=True)
    found = [t for t, _ in sm.enriched_terms(counts, top)]
    assert "low key" in found[:2] and not {"low", "key"} & set(found)
    z_default = dict(sm.enriched_terms(counts, top, min_z=-np.inf, n=1000))
    z_strong = dict(sm.enriched_terms(counts, top, min_z=-np.inf, n=1000, prior_size=100 * counts.counts.sum()))
    assert z_strong["low key"] < z_default["low key"]


def test_majority_label_and_main_layers():
    assert sm.majority_label(np.array([1, 1, 0, -1]), ["a", "b"]) == ("b", 2 / 3)
    assert sm.majority_label(np.array([-1, -1]), ["a", "b"]) is None
    shares = pd.Series({"embeddings": 0.05, "encoder.layer.4": 0.25, "encoder.layer.5": 0.6, "classifier": 0.1})
    assert sm.main_layers(shares) == [("encoder.layer.5", 0.6), ("encoder.layer.4", 0.25)]
    assert sm.main_layers(shares, min_share=0.3) == [("encoder.layer.5", 0.6)]
    assert sm.main_layers(pd.Series({"a": 0.1, "b": 0.0, "c": 0.0}), n=3, min_share=0.0) == [("a", 0.1)]


def _data(texts: list[str], labels: np.ndarray) -> cs.BrowseData:
    """Two components: 0 loads on the first 30 examples ('zebra', gold fresh), 1 on the others."""
    n = len(texts)
    W = np.zeros((n, 2), dtype=np.float32)
    W[:30, 0] = np.linspace(2, 1, 30)
    W[30:, 1] = 1.0
    logits = np.zeros((n, 2), dtype=np.float32)
    logits[np.arange(n), np.where(np.arange(n) < 24, 1, 0)] = 3.0  # predicted fresh on 24 of the first 30
    return cs.BrowseData(W=W, labels=labels, probs=cs.softmax(logits), label_names=["rotten", "fresh"])


def test_summaries_of_a_planted_text_decomposition():
    texts, _ = _corpus()
    labels = np.where(np.arange(len(texts)) < 30, 1, 0).astype(np.int64)
    data = _data(texts, labels)
    top, _ = cs.top_table(data.W, 30)
    layers = pd.DataFrame({"encoder.layer.4": [0.7, 0.1], "classifier": [0.3, 0.9]})
    s0, s1 = sm.summarize(data, top, sm.term_counts(texts), layers)
    assert s0.terms[0][0] == "zebra" and s0.gold == ("fresh", 1.0) and s0.prediction == ("fresh", 0.8)
    assert s0.layers == (("encoder.layer.4", 0.7), ("classifier", 0.3)) and s0.n_top == 30
    assert s0.text.startswith("zebra")
    assert s0.text.endswith(" · mostly fresh (100%) · encoder.layer.4 70%, classifier 30%")
    assert s1.gold[0] == "rotten" and s1.layers == (("classifier", 0.9),)
    with pytest.raises(ValueError, match=r"^top must have one row per component \(2\), got 1$"):
        sm.summarize(data, top[:1])


def test_summaries_without_texts_labels_or_profiles():
    texts, _ = _corpus()
    data = _data(texts, np.full(len(texts), -1, dtype=np.int64))  # a next-token dataset: no gold labels
    top, _ = cs.top_table(data.W, 30)
    s0 = sm.summarize(data, top)[0]  # images (no texts), model mismatch (no profiles)
    assert s0.terms is None and s0.gold is None and s0.layers == ()
    assert s0.text == "label not available, predicts fresh 80%"
    empty = sm.ComponentSummary(0, 5, (), ("fresh", 0.5), ("fresh", 0.5), ())
    assert empty.text == "no enriched words · mostly fresh (50%)"
