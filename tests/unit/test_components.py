"""Component browser statistics, the UMAP map and the figure builders, on small planted decompositions."""
import io
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import analysis.components as cs
import analysis.embedding as emb
from analysis.figures import components as figs
from analysis.models import ParamScope
from analysis.npeff import LrmDecomposition
from analysis.parameters import parameter_offsets
from analysis.peak_memory import measured
from analysis.store import Workspace

LABELS = ["neg", "pos", "neu"]


def _planted(n_per: int = 20, r: int = 3, seed: int = 0) -> tuple[cs.BrowseData, LrmDecomposition]:
    """Component k's examples all have gold label k and are predicted as label k except in component 2."""
    rng = np.random.default_rng(seed)
    n = n_per * r
    owner = np.repeat(np.arange(r), n_per)  # [n]
    W = (0.01 * rng.random((n, r))).astype(np.float32)
    W[np.arange(n), owner] = 1.0 + rng.random(n).astype(np.float32)
    logits = np.full((n, r), -2.0, dtype=np.float32)
    pred = np.where(owner == 2, 0, owner)
    logits[np.arange(n), pred] = 2.0
    G = rng.normal(size=(r, 10)).astype(np.float32)
    G[1] = G[0] + 0.05 * G[1]  # component 1 nearly parallel to 0
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    dec = LrmDecomposition(W=W, G=G, kept=np.array([0, 1, 2, 5, 6, 7, 8, 11, 12, 13]), n_parameters=14,
                           losses=np.array([1.0, 0.5]), relative_error=0.5)
    data = cs.BrowseData(W=W, labels=owner.astype(np.int64), probs=cs.softmax(logits), label_names=LABELS)
    return data, dec


# ------------------------------------------------------------------------------------------------ top table

def test_top_table_matches_a_full_argsort_with_ties_broken_by_index():
    rng = np.random.default_rng(0)
    W = np.where(rng.random((300, 7)) < 0.3, rng.integers(0, 4, (300, 7)), 0).astype(np.float32)  # many ties
    indices, values = cs.top_table(W, 40, block=3)
    for k in range(7):
        brute = np.argsort(-W[:, k], kind="stable")[:40]
        np.testing.assert_array_equal(indices[k], brute)
        np.testing.assert_array_equal(values[k], W[brute, k])
        np.testing.assert_array_equal(cs.top_examples(W, k, 25, indices), brute[:25])
        np.testing.assert_array_equal(cs.top_examples(W, k, 100, indices), np.argsort(-W[:, k], kind="stable")[:100])


def test_top_table_clamps_k_and_checks_its_arguments():
    W = np.random.default_rng(1).random((5, 2)).astype(np.float32)
    indices, _ = cs.top_table(W, 50)
    assert indices.shape == (2, 5)
    with pytest.raises(ValueError, match="^k must be >= 1, got 0$"):
        cs.top_table(W, 0)
    with pytest.raises(ValueError, match=r"^component must be in \[0, 2\), got 2$"):
        cs.top_examples(W, 2, 3)


def test_component_index_is_computed_once_and_stored(tmp_path, monkeypatch):
    data, dec = _planted()
    ws = Workspace(tmp_path / "ws")
    run = ws.start_run("npeff-lrm", {"planted": 1})
    first = cs.component_index(ws, run, dec, k=10)
    monkeypatch.setattr(cs, "top_table", lambda *a, **k: pytest.fail("recomputed a stored index"))
    again = cs.component_index(ws, run, dec, k=10)
    for name in ("top_indices", "top_values", "similarity"):
        np.testing.assert_array_equal(first[name], again[name])
    assert again["top_indices"].shape == (3, 10)


# ---------------------------------------------------------------------------------------------- statistics

def test_overview_recovers_planted_purity_accuracy_and_similarity():
    data, dec = _planted()
    indices, _ = cs.top_table(data.W, 20)
    table = cs.overview(data, indices, cs.similarity(dec.G), n_top=20)
    assert table["component"].tolist() == [0, 1, 2]
    assert table["majority_label"].tolist() == LABELS
    np.testing.assert_allclose(table["purity"], 1.0)
    np.testing.assert_allclose(table["entropy_bits"], 0.0)
    np.testing.assert_allclose(table["accuracy"], [1.0, 1.0, 0.0])  # component 2 is always mispredicted
    assert table["most_similar"].iloc[0] == 1 and table["most_similar"].iloc[1] == 0
    assert table["similar_abs_cos"].iloc[0] > 0.99
    assert table["notable"].tolist() == [20, 20, 20]  # the 0.01 noise is below 1% of the max (>= 1)
    with pytest.raises(ValueError, match=r"^n_top must be <= 20 \(the stored top table\), got 30$"):
        cs.overview(data, indices, np.eye(3), n_top=30)


def test_overview_takes_the_selectivity_of_each_component():
    data, dec = _planted()
    indices, _ = cs.top_table(data.W, 20)
    table = cs.overview(data, indices, cs.similarity(dec.G), n_top=20)
    assert cs.with_selectivity(table, None) is table  # no perturb-all run: no column
    shown = cs.with_selectivity(table, pd.Series([12.5, 0.8], index=[2, 0], name="selectivity"))
    np.testing.assert_array_equal(shown["selectivity"], [0.8, np.nan, 12.5])  # by component, NaN where missing
    assert "selectivity" not in table.columns  # the cached overview is not modified
    assert shown.sort_values("selectivity", ascending=False)["component"].tolist()[0] == 2


def test_entropy_and_label_distribution():
    assert cs.entropy_bits(np.array([0.5, 0.5])) == pytest.approx(1.0)
    assert cs.entropy_bits(np.array([1.0, 0.0, 0.0])) == 0.0
    np.testing.assert_allclose(cs.label_distribution(np.array([0, 0, 1, -1]), 3), [2 / 3, 1 / 3, 0])


def test_breakdown_compares_top_examples_with_the_dataset():
    data, _ = _planted()
    frame = cs.breakdown(data, np.arange(20))  # the examples of component 0
    sums = frame.groupby(["group", "what"])["fraction"].sum()
    np.testing.assert_allclose(sums, 1.0)
    top_gold = frame[(frame.group == "top examples") & (frame.what == "gold label")].set_index("label")["fraction"]
    assert top_gold["neg"] == 1.0
    all_pred = frame[(frame.group == "all examples") & (frame.what == "prediction")].set_index("label")["fraction"]
    np.testing.assert_allclose(all_pred[LABELS], [2 / 3, 1 / 3, 0.0])


def test_quantile_sample_draws_from_rank_bands():
    column = np.concatenate([np.zeros(10), np.linspace(1, 100, 100)])
    frame = cs.quantile_sample(column, n_bands=4, per_band=3, seed=1)
    assert frame["band"].tolist() == [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3
    assert (frame["coefficient"] > 0).all()  # zeros are below the threshold
    assert ((frame["coefficient"] >= frame["band_low"]) & (frame["coefficient"] <= frame["band_high"])).all()
    assert frame.groupby("band")["band_low"].first().is_monotonic_decreasing
    pd.testing.assert_frame_equal(frame, cs.quantile_sample(column, n_bands=4, per_band=3, seed=1))
    assert cs.quantile_sample(np.zeros(5)).empty
    with pytest.raises(ValueError, match="^n_bands and per_band must be >= 1, got 0 and 3$"):
        cs.quantile_sample(column, n_bands=0, per_band=3)


def test_each_sampled_example_lies_in_the_percentiles_its_band_names():
    rng = np.random.default_rng(3)
    column = np.concatenate([np.zeros(7), rng.exponential(1.0, 93)])  # 93 notable, unequal band sizes
    for n_bands in (2, 3, 5, 7):
        frame = cs.quantile_sample(column, n_bands=n_bands, per_band=50, threshold=0.0)
        notable = column[column > 0]
        for row in frame.itertuples():
            # the example's rank percentile among the notable coefficients, counted directly
            below, above = (notable < row.coefficient).sum(), (notable > row.coefficient).sum()
            named = re.fullmatch(rf"{row.band}/{n_bands} \((\d+)–(\d+)(?:st|nd|rd|th) pct\)", row.band_name)
            low, high = map(float, named.groups())
            tolerance = 100 / len(notable) + 0.5  # array_split bands differ by one example; labels are rounded
            assert 100 * below / len(notable) >= low - tolerance and 100 * (len(notable) - above) / len(notable) <= (
                high + tolerance), (n_bands, row)
    assert cs.band_name(1, 5) == "1/5 (80–100th pct)" and cs.band_name(3, 5) == "3/5 (40–60th pct)"
    assert [cs.band_name(b, 3) for b in (1, 2, 3)] == ["1/3 (67–100th pct)", "2/3 (33–67th pct)", "3/3 (0–33rd pct)"]
    assert cs.band_name(7, 10) == "7/10 (30–40th pct)" and cs.band_name(6, 7) == "6/7 (14–29th pct)"
    assert cs.band_name(7, 7) == "7/7 (0–14th pct)" and cs.band_name(3, 7) == "3/7 (57–71st pct)"


def test_similarity_is_abs_cosine_accumulated_over_column_blocks():
    C = np.random.default_rng(2).normal(size=(4, 11))
    C[3] = -2 * C[0]
    sim = cs.similarity(C, block=3)
    unit = C / np.linalg.norm(C, axis=1, keepdims=True)
    np.testing.assert_allclose(sim, np.abs(unit @ unit.T), rtol=1e-5)
    assert sim[0, 3] == pytest.approx(1.0)
    near = cs.most_similar(sim, 0, n=2)
    assert near["component"].tolist()[0] == 3 and len(near) == 2


def test_tensor_profiles_match_a_per_tensor_loop():
    rng = np.random.default_rng(3)
    sizes = [4, 3, 5, 2]  # the third tensor has no kept column below
    offsets = parameter_offsets(sizes)
    kept = np.array([0, 2, 3, 4, 6, 12, 13])
    C = rng.normal(size=(3, len(kept)))
    profiles = cs.tensor_profiles(C, kept, offsets)
    tensor = np.searchsorted(offsets, kept, side="right") - 1
    for k in range(3):
        loop = np.array([np.sum(C[k, tensor == t] ** 2) for t in range(4)]) / np.sum(C[k] ** 2)
        np.testing.assert_allclose(profiles[k], loop)
    assert profiles[:, 2].max() == 0.0
    np.testing.assert_allclose(cs.tensor_profiles(np.zeros((1, 7)), kept, offsets), 0.0)
    with pytest.raises(ValueError, match="^kept must be ascending indices below 14, got max 14$"):
        cs.tensor_profiles(C, np.array([0, 2, 3, 4, 6, 12, 14]), offsets)


def test_tensor_profiles_take_rows_a_block_at_a_time():
    """Float64 copies of all of C took 13.5 GiB for the whole corpus's components (r = 128, m = 4.05M) when the
    Components page first opened it; a block of rows at a time keeps the rise near C's own size."""
    rng = np.random.default_rng(0)
    C = rng.random((32, 1 << 20), dtype=np.float32)  # [r, m], 128 MiB
    kept, offsets = np.arange(C.shape[1]), parameter_offsets([1 << 18] * 4)
    run = measured(lambda: cs.tensor_profiles(C, kept, offsets))
    if run.peak_growth_bytes is None:
        pytest.skip("peak memory cannot be reset here")
    # 8 rows at a time: 2 float64 copies of them; all rows at once: 6 × C.nbytes (three float64 copies)
    assert run.peak_growth_bytes < 1.25 * C.nbytes
    np.testing.assert_allclose(run.result, cs.tensor_profiles(C, kept, offsets, block=32), rtol=1e-12)


def test_group_profiles_by_module_and_layer():
    query = "net.bert.encoder.layer.5.attention.self.query"
    names = [f"{query}.weight", f"{query}.bias", "net.bert.encoder.layer.5.output.dense.weight",
             "net.classifier.weight", "net.classifier.bias"]
    profiles = np.array([[0.1, 0.1, 0.2, 0.5, 0.1]])
    modules = cs.group_profiles(profiles, names, by="module")
    assert list(modules.columns) == ["bert.encoder.layer.5.attention.self.query", "bert.encoder.layer.5.output.dense",
                                     "classifier"]
    np.testing.assert_allclose(modules.iloc[0], [0.2, 0.2, 0.6])
    layers = cs.group_profiles(profiles, names, by="layer")
    assert list(layers.columns) == ["bert.encoder.layer.5", "classifier"]
    np.testing.assert_allclose(layers.iloc[0], [0.4, 0.6])
    with pytest.raises(ValueError, match=r"^names must have 5 entries \(one per tensor\), got 1$"):
        cs.group_profiles(profiles, names[:1])


@pytest.mark.parametrize("scope", [ParamScope("all"), ParamScope("pattern", pattern=r"pooler|classifier"),
                                   ParamScope("last_layers", n_layers=2)])
def test_parse_scope_inverts_describe(scope):
    assert cs.parse_scope(scope.describe()) == scope


def test_parse_scope_refuses_other_text():
    with pytest.raises(ValueError, match=r"^scope text must come from ParamScope.describe\(\), got 'some'$"):
        cs.parse_scope("some")


# -------------------------------------------------------------------------------------------------- search

def test_find_examples_by_index_or_substring():
    texts = ["A good film", "bad PLOT", "good grief"]
    assert cs.find_examples("#2, 0, 9", texts, 3).tolist() == [2, 0]
    assert cs.find_examples("GOOD", texts, 3).tolist() == [0, 2]
    assert cs.find_examples("plot", None, 3).tolist() == []
    assert cs.find_examples("  ", texts, 3).tolist() == []


def test_loadings_list_the_largest_coefficients():
    W = np.array([[0.0, 3.0, 1.0], [0.0, 0.0, 0.0]])
    frame = cs.loadings(W, np.array([0, 1]), n=2)
    assert frame["components"].iloc[0] == [1, 2]
    assert frame["coefficients"].iloc[0] == [3.0, 1.0]
    assert frame["share"].tolist() == [1.0, 0.0]


def test_example_table_and_exports():
    data, dec = _planted()
    table = cs.example_table(data, np.array([0, 45]), 2, texts=[f"t{i}" for i in range(60)])
    assert table["gold"].tolist() == ["neg", "neu"] and table["prediction"].tolist() == ["neg", "neg"]
    assert table["correct"].tolist() == [True, False] and table["text"].tolist() == ["t0", "t45"]
    frame = cs.coefficients_frame(data)
    assert list(frame.columns[:3]) == ["idx", "gold", "prediction"] and frame.shape == (60, 6)
    texts = [f"=t{i}, \"quoted\"" for i in range(60)]
    assert cs.coefficients_frame(data, texts).columns.tolist() == ["idx", "gold", "prediction", "w0", "w1", "w2",
                                                                   "text"]
    from safetensors.numpy import load

    loaded = load(cs.components_safetensors(dec, {"run": "abc"}))
    np.testing.assert_array_equal(loaded["components"], dec.G)
    np.testing.assert_array_equal(loaded["kept"], dec.kept)


def test_values_below_float32_resolution_of_their_row_maximum_become_zero():
    W = np.array([[1.0, 5.2e-44, 1.1e-7, 1.3e-7], [0.0, 0.0, 0.0, 0.0], [1e-30, 3e-38, 0.0, 2e-30]], np.float32)
    eps = np.finfo(np.float32).eps  # 1.19e-7
    expected = np.array([[1.0, 0, 0, 1.3e-7], [0, 0, 0, 0], [1e-30, 0, 0, 2e-30]], np.float32)
    np.testing.assert_array_equal(cs.below_resolution_as_zero(W), expected)
    W = np.random.default_rng(4).random((50, 6)).astype(np.float32) ** 40  # spans 1 down to ~1e-40
    kept = cs.below_resolution_as_zero(W)
    for i in range(len(W)):  # entry by entry: zero exactly when below eps times the row's maximum
        for j in range(W.shape[1]):
            assert kept[i, j] == (0 if W[i, j] < eps * W[i].max() else W[i, j])


def test_coefficient_csv_has_texts_and_no_subnormal_noise():
    data, _ = _planted(n_per=4)
    W = data.W.copy()
    W[0, 1], W[1, 2] = 5.2e-44, 1e-9  # noise: below 1.19e-7 times their rows' maxima (> 1)
    W[2, :] = [0.123456789, 1e-9, 2e-8]  # 2e-8 > 0.1235 * 1.19e-7 = 1.47e-8: a real small value, kept
    data = cs.BrowseData(W=W, labels=data.labels, probs=data.probs, label_names=data.label_names)
    texts = [f"=cmd {i}, \"quoted\"\nline" for i in range(len(W))]
    text = cs.coefficients_csv(data, texts).decode()
    assert "e-44" not in text and "e-09" not in text and "2e-08" in text
    back = pd.read_csv(io.StringIO(text))
    assert back.columns.tolist() == ["idx", "gold", "prediction", "w0", "w1", "w2", "text"]
    assert back["text"].tolist() == ["'" + t for t in texts]  # kept whole (quoted) and defused
    assert back.loc[0, "w1"] == 0.0 and back.loc[1, "w2"] == 0.0 and back.loc[2].tolist()[3:6] == [0.123457, 0, 2e-8]
    expected = cs.below_resolution_as_zero(W).astype(np.float64)
    np.testing.assert_allclose(back[["w0", "w1", "w2"]].to_numpy(), expected, rtol=5e-6, atol=0)


# -------------------------------------------------------------------------------------------------- map

def test_normalized_coefficients_and_dominant_component():
    W = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(emb.normalized_coefficients(W), [[0.6, 0.8], [0, 0], [0, 1]])
    assert emb.dominant_component(W).tolist() == [1, -1, 1]


def test_umap_is_fitted_once_per_decomposition_and_stored(tmp_path, monkeypatch):
    data, _ = _planted(n_per=15)
    ws = Workspace(tmp_path / "ws")
    run = ws.start_run("npeff-lrm", {"planted": 2})
    assert emb.stored_umap(ws, run, n_neighbors=10) is None
    xy = emb.umap_coordinates(ws, run, data.W, n_neighbors=10)
    assert xy.shape == (45, 2) and np.isfinite(xy).all()
    centers = np.stack([xy[data.labels == k].mean(0) for k in range(3)])
    spread = max(np.linalg.norm(xy[data.labels == k] - centers[k], axis=1).mean() for k in range(3))
    assert min(np.linalg.norm(centers[a] - centers[b]) for a, b in [(0, 1), (0, 2), (1, 2)]) > spread
    monkeypatch.setattr(emb, "fit_umap", lambda *a, **k: pytest.fail("refitted a stored map"))
    np.testing.assert_array_equal(emb.umap_coordinates(ws, run, data.W, n_neighbors=10), xy)
    np.testing.assert_array_equal(emb.stored_umap(ws, run, n_neighbors=10), xy)


# ------------------------------------------------------------------------------------------------ figures

def test_figure_builders_return_figures_with_the_data():
    data, dec = _planted()
    hist = figs.coefficient_histogram(data.W[:, 0], k=0, threshold=0.02)
    assert isinstance(hist, go.Figure) and len(hist.data[0].x) == 60
    assert hist.layout.shapes[0].x0 == hist.layout.annotations[0].x == 0.02 and hist.layout.yaxis.type == "log"
    labels = figs.label_breakdown_figure(cs.breakdown(data, np.arange(20)), k=0, n_top=20)
    assert len(labels.data) == 4 and list(labels.data[0].y) == [1.0, 0.0, 0.0]
    assert [(t.xaxis, t.yaxis) for t in labels.data] == [("x", "y")] * 2 + [("x2", "y2")] * 2  # gold | prediction
    assert labels.layout.yaxis2.matches == "y" and [a.text for a in labels.layout.annotations] == ["gold label",
                                                                                                  "prediction"]
    similar = figs.similar_components_figure(cs.most_similar(cs.similarity(dec.G), 0, n=2), k=0)
    assert list(similar.data[0].x) == ["1", "2"]
    shares = pd.Series([0.7, 0.3], index=["encoder", "classifier"])
    profile = figs.module_profile_figure(shares, k=0)
    assert list(profile.data[0].y) == ["encoder", "classifier"]
    xy = np.random.default_rng(0).normal(size=(60, 2))
    scatter = figs.example_map(xy, data.labels, colour_name="gold", hover=[str(i) for i in range(60)])
    assert sum(len(t.x) for t in scatter.data) == 60
    assert sorted(int(i) for t in scatter.data for i in t.customdata) == list(range(60))
    tokens = figs.token_attribution_figure(["[CLS]", "good", "film", "[SEP]"] * 4,
                                           {"class": np.arange(16.0) - 8, "component": np.ones(16)}, width=6)
    assert len(tokens.data) == 2 and tokens.data[0].z.shape == (3, 6)
    assert np.nanmax(np.abs(tokens.data[0].z)) == 1.0
    pixels = figs.pixel_attribution_figure(np.zeros((8, 8)), {"class": np.ones((8, 8)), "component": -np.ones((8, 8))})
    assert len(pixels.data) == 3


def test_module_shares_heatmap_names_component_module_and_share_on_every_cell():
    shares = pd.DataFrame([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]], columns=["embeddings", "layer.0", "classifier"])
    fig = figs.module_shares_figure(shares)
    heat = fig.data[0]
    np.testing.assert_array_equal(np.asarray(heat.z), shares.to_numpy())
    assert list(heat.x) == ["embeddings", "layer.0", "classifier"] and list(heat.y) == ["0", "1"]
    assert "component %{y}" in heat.hovertemplate and "module %{x}" in heat.hovertemplate
    assert "%{z:.1%}" in heat.hovertemplate and heat.text[0][0] == "70%"
    assert fig.layout.xaxis.title.text == "module" and fig.layout.yaxis.title.text == "component"
    assert heat.colorbar.title.text == "share of ‖g‖²"


def test_the_zero_baseline_is_described_as_it_is_drawn():
    grey = figs.pixel_attribution_figure(np.zeros((4, 4)), {"class": np.ones((4, 4))})
    position, drawn = grey.data[0].colorscale[0]  # the colour of a 0 pixel in the input panel (zmin = 0)
    assert grey.data[0].zmin == 0 and position == 0
    assert min(map(int, re.findall(r"\d+", drawn))) >= 250, drawn  # white (gray_r starts at rgb(254, 254, 253))
    assert "white" in figs.zero_image_description(np.zeros((4, 4)))
    rgb = figs.pixel_attribution_figure(np.zeros((4, 4, 3)), {"class": np.ones((4, 4))})
    assert np.asarray(rgb.data[0].z).max() == 0  # go.Image of rgb(0, 0, 0): black
    assert "black" in figs.zero_image_description(np.zeros((4, 4, 3)))


def test_example_grid_puts_each_caption_over_its_image_row_major():
    images = np.zeros((10, 4, 4))
    images[:, 0, 0] = np.arange(10) / 10  # image i is marked by its corner pixel
    fig = figs.example_grid(images, [f"c{i}" for i in range(10)], n_cols=4, title="top")
    def domains(i: int) -> tuple:
        suffix = "" if i == 0 else str(i + 1)
        return fig.layout[f"xaxis{suffix}"].domain, fig.layout[f"yaxis{suffix}"].domain

    for i, trace in enumerate(fig.data):
        assert trace.z[0][0] == pytest.approx(i / 10)
        assert trace.xaxis == ("x" if i == 0 else f"x{i + 1}")
        (x0, x1), (_, top) = domains(i)
        caption = fig.layout.annotations[i]
        assert caption.text == f"c{i}" and x0 <= caption.x <= x1 and caption.y == pytest.approx(top)
        if i >= 4:  # the next row lies below
            assert top < domains(i - 4)[1][0]


def test_many_categories_fold_into_other():
    xy = np.zeros((30, 2))
    fig = figs.example_map(xy, list(range(30)), colour_name="component", hover=[""] * 30)
    names = [t.name for t in fig.data]
    assert len(names) == figs.MAX_CATEGORIES + 1 and names[-1] == "other"


# -------------------------------------------------------------------------------------- annotations

def _rules(n_per: int = 20, r: int = 3) -> np.ndarray:
    """A planted ground truth: component k's examples follow rule 'r{k}', except every fourth one ('none')."""
    owner = np.repeat(np.arange(r), n_per)
    return np.where(np.arange(n_per * r) % 4 == 3, "none", np.char.add("r", owner.astype(str)))


def test_annotation_values_keep_the_columns_that_cover_every_example():
    found = cs.annotation_values({"rule": ["a", "b", "a"], "short": ["x"]}, 3)
    assert list(found) == ["rule"] and found["rule"].tolist() == ["a", "b", "a"]
    assert cs.annotation_values({}, 3) == {}


def test_majority_breaks_ties_by_value_and_handles_no_examples():
    assert cs.majority(np.array(["b", "a", "b", "a", "c"])) == ("a", 0.4)
    assert cs.majority(np.array([], dtype=str)) == ("", 0.0)


def test_annotation_overview_recovers_the_planted_rules():
    data, _ = _planted()
    rules = _rules()
    top, _ = cs.top_table(data.W, 10)
    table = cs.annotation_overview({"rule": rules}, top)
    assert list(table.columns) == ["rule_majority", "rule_share"]
    assert table["rule_majority"].tolist() == ["r0", "r1", "r2"]
    np.testing.assert_allclose(table["rule_share"], [(rules[t] == f"r{k}").mean() for k, t in enumerate(top)])
    assert (table["rule_share"] >= 0.5).all()
    assert cs.annotation_overview({}, top).shape == (3, 0)  # no annotations, no columns


def test_annotation_breakdown_compares_top_examples_with_all_examples():
    rules = _rules()
    frame = cs.annotation_breakdown(rules, np.arange(20))  # component 0's examples
    assert list(frame.columns) == ["group", "value", "fraction"]
    top = frame[frame["group"] == "top examples"].set_index("value")["fraction"]
    every = frame[frame["group"] == "all examples"].set_index("value")["fraction"]
    assert top.index.tolist() == every.index.tolist() == ["none", "r0", "r1", "r2"]  # most frequent first
    assert top.to_dict() == {"none": 0.25, "r0": 0.75, "r1": 0.0, "r2": 0.0}
    assert every.to_dict() == {"none": 0.25, "r0": 0.25, "r1": 0.25, "r2": 0.25}


def test_annotation_breakdown_figure_has_top_and_all_bars():
    fig = figs.annotation_breakdown_figure(cs.annotation_breakdown(_rules(), np.arange(20)), name="rule", k=0, n_top=20)
    assert isinstance(fig, go.Figure) and [t.name for t in fig.data] == ["top 20", "all examples"]
    assert list(fig.data[0].x) == ["none", "r0", "r1", "r2"] and list(fig.data[0].y) == [0.25, 0.75, 0.0, 0.0]
    assert "rule of component 0" in fig.layout.title.text


# ------------------------------------------------------------------------------ no gold labels (next token)

def _unlabelled() -> cs.BrowseData:
    """The planted decomposition as a free-form next-token run whose dataset has no gold labels."""
    data, _ = _planted()
    return cs.BrowseData(W=data.W, labels=np.full(data.n_examples, -1, np.int64), probs=data.probs,
                         label_names=data.label_names)


def test_gold_label_statistics_are_not_available_without_gold_labels():
    data, dec = _planted()
    unlabelled = _unlabelled()
    index, _ = cs.top_table(unlabelled.W, 20)
    table = cs.overview(unlabelled, index, cs.similarity(dec.G), n_top=20)
    assert (table["majority_label"] == cs.NOT_AVAILABLE).all()
    assert table[["purity", "entropy_bits", "accuracy"]].isna().all().all()
    assert not unlabelled.has_labels and data.has_labels
    assert cs.percent(cs.accuracy(unlabelled, np.arange(20))) == cs.NOT_AVAILABLE
    assert cs.percent(cs.purity(unlabelled.labels[:20], 3)) == cs.NOT_AVAILABLE
    assert cs.percent(cs.accuracy(data, np.arange(20))) == "100%"
    rows = cs.example_table(unlabelled, np.array([0, 45]), 2)
    assert rows["gold"].tolist() == [cs.NOT_AVAILABLE] * 2 and rows["correct"].tolist() == [None, None]
    assert rows["prediction"].tolist() == ["neg", "neg"]  # predictions still shown


def test_partly_labelled_statistics_count_only_the_labelled_examples():
    data, _ = _planted()
    labels = data.labels.copy()
    labels[:10] = -1  # half of component 0's examples have no answer
    partial = cs.BrowseData(W=data.W, labels=labels, probs=data.probs, label_names=data.label_names)
    assert cs.accuracy(partial, np.arange(20)) == 1.0 and cs.purity(labels[:20], 3) == 1.0
    assert cs.example_table(partial, np.array([0, 15]))["correct"].tolist() == [None, True]


def test_breakdown_without_gold_labels_has_predictions_of_the_predicted_classes_only():
    frame = cs.breakdown(_unlabelled(), np.arange(20))
    assert set(frame["what"]) == {"prediction"}
    assert set(frame["label"]) == {"neg", "pos"}  # nothing is predicted 'neu': left out
    np.testing.assert_allclose(frame.groupby("group")["fraction"].sum(), 1.0)
