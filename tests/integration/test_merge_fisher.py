"""Diagonal Fishers for merging (against an autograd loop over examples) and merge sweeps of tiny MLPs."""
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.datasets import image_dataset
from analysis.image_models import PixelMLP
from analysis.merge import Parent, SweepSettings, diagonal_fisher, merge_sweep
from analysis.merge.sweep import accuracy_column, flat_parameters
from analysis.models import ClassifierModel, load_model, save_image_model

PLANTED_LABELS = ["a0", "a1", "b0", "b1"]


def save_mlp(net: PixelMLP, folder: Path, labels: list[str], hidden: int) -> ClassifierModel:
    save_image_model(net.eval(), folder, architecture="pixel-mlp", label_names=labels,
                     arch_kwargs={"image_size": 4, "hidden": hidden})
    return load_model(folder)


def tiny(tmp_path: Path, n_classes: int, seed: int = 0):
    """A random PixelMLP over 4×4 images with n_classes classes, and 11 labelled images."""
    torch.manual_seed(seed)
    labels = [f"c{k}" for k in range(n_classes)]
    model = save_mlp(PixelMLP(n_classes=n_classes, image_size=4, hidden=5), tmp_path / f"mlp{n_classes}-{seed}",
                     labels, hidden=5)
    rng = np.random.default_rng(seed)
    data = image_dataset(rng.uniform(size=(11, 4, 4)), rng.integers(0, n_classes, 11), label_names=labels,
                         name="tiny", source="tiny.npz")
    return model, data


def log_prob_grads(model: ClassifierModel, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """p [C] and ∇_θ log p_y [C, M] of one example, one autograd call per class (the slow obvious way)."""
    params = [p for _, p in model.named_parameters()]
    logp = model({"pixels": pixels[None]})[0].log_softmax(-1)
    grads = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(logp[y], params, retain_graph=True)])
             for y in range(len(logp))]
    return logp.exp().detach(), torch.stack(grads).double()


def loop_fisher(model: ClassifierModel, data, empirical: bool) -> np.ndarray:
    """mean_i Σ_y p_y g_iy⊙² (or g_i,gold⊙²), squaring each example's own gradients."""
    total = 0
    for pixels, label in zip(torch.as_tensor(data.images), data.labels):
        p, g = log_prob_grads(model, pixels)
        total = total + (g[label] ** 2 if empirical else (p.double()[:, None] * g ** 2).sum(0))
    return (total / len(data)).numpy()


@pytest.mark.parametrize("n_classes", [3, 2])
@pytest.mark.parametrize("empirical", [False, True])
def test_fisher_is_the_mean_of_per_example_squared_gradients(tmp_path, n_classes, empirical):
    model, data = tiny(tmp_path, n_classes)
    F = diagonal_fisher(model, data, empirical=empirical, batch_size=4)
    np.testing.assert_allclose(F, loop_fisher(model, data, empirical), rtol=2e-4, atol=1e-9)


def test_the_batch_sum_shortcut_is_another_quantity(tmp_path):
    """Squaring the gradient of a batch's summed log-likelihood adds cross terms between examples."""
    model, data = tiny(tmp_path, 3)
    params = [p for _, p in model.named_parameters()]
    logp = model({"pixels": torch.as_tensor(data.images)}).log_softmax(-1)
    total = logp[torch.arange(len(data)), torch.as_tensor(data.labels)].sum()
    shortcut = torch.cat([g.reshape(-1) for g in torch.autograd.grad(total, params)]).double() ** 2 / len(data)
    F = diagonal_fisher(model, data, empirical=True)
    assert np.abs(shortcut.numpy() - F).max() > 0.1 * np.abs(F).max()


def test_empirical_fisher_needs_labels(tmp_path):
    model, data = tiny(tmp_path, 3)
    unlabelled = image_dataset(data.images, np.full(len(data), -1), label_names=data.label_names, name="u",
                               source="u.npz")
    with pytest.raises(ValueError, match=r"u.npz: the empirical Fisher needs a gold label for every example; "
                                         r"row 0 has none"):
        diagonal_fisher(model, unlabelled, empirical=True)


def test_merging_a_model_with_itself_gives_the_model(tmp_path):
    model, data = tiny(tmp_path, 3)
    parents = [Parent(name, model, data, data) for name in ("A", "B")]
    F = np.stack([diagonal_fisher(model, data)] * 2)
    sweep = merge_sweep(parents, SweepSettings(n_lambdas=3), F)
    own = sweep.parents.set_index("model").loc["A", accuracy_column("A")]
    np.testing.assert_allclose(sweep.table[accuracy_column("A")], own)
    np.testing.assert_allclose(sweep.table[["KL A", "KL B"]], 0.0, atol=1e-9)


def test_parents_of_other_classes_are_refused(tmp_path):
    (a, data), (b, _) = tiny(tmp_path, 3), tiny(tmp_path, 2)
    with pytest.raises(ValueError, match=r"model 'B' predicts \['c0', 'c1'\] but 'A' predicts"):
        merge_sweep([Parent("A", a, data, data), Parent("B", b, data, data)], SweepSettings(), None)


@contextmanager
def one_thread():
    """Train on one thread: tiny models run many times faster than on threads a busy machine shares."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def planted_task(rng: np.random.Generator, n: int, which: int):
    """Task A (which=0) lives in pixel rows 0-1, task B in rows 2-3: classes 2·which + [left half brighter]."""
    x = np.zeros((n, 4, 4), np.float32)
    x[:, 2 * which:2 * which + 2] = rng.uniform(size=(n, 2, 4))
    rows = x[:, 2 * which:2 * which + 2]
    return x, (rows[:, :, :2].sum((1, 2)) > rows[:, :, 2:].sum((1, 2))).astype(np.int64) + 2 * which


def test_fisher_merging_keeps_both_planted_tasks_better_than_averaging(tmp_path):
    """Two MLPs from one init, trained on disjoint tasks: at λ = 1/2 Fisher merging keeps both tasks, the
    isotropic average loses at least one."""
    rng, hidden = np.random.default_rng(0), 32
    torch.manual_seed(0)
    init = PixelMLP(n_classes=4, image_size=4, hidden=hidden).state_dict()
    parents = []
    with one_thread():
        for which, name in enumerate("AB"):
            (x, y), (xv, yv) = planted_task(rng, 200, which), planted_task(rng, 200, which)
            net = PixelMLP(n_classes=4, image_size=4, hidden=hidden)
            net.load_state_dict(init)
            opt = torch.optim.Adam(net.parameters(), lr=1e-2)
            for _ in range(200):
                loss = torch.nn.functional.cross_entropy(net(torch.as_tensor(x)), torch.as_tensor(y))
                opt.zero_grad()
                loss.backward()
                opt.step()
            model = save_mlp(net, tmp_path / name, PLANTED_LABELS, hidden)
            parents.append(Parent(name, model, image_dataset(x, y, label_names=PLANTED_LABELS, name=name, source=name),
                                  image_dataset(xv, yv, label_names=PLANTED_LABELS, name=name, source=name)))
        assert not np.allclose(flat_parameters(parents[0].model), flat_parameters(parents[1].model))
        F = np.stack([diagonal_fisher(p.model, p.fisher_data) for p in parents])
        table = merge_sweep(parents, SweepSettings(n_lambdas=3), F).table.set_index(["method", "lambda"])
    accuracy = table[[accuracy_column("A"), accuracy_column("B")]]
    fisher, average = accuracy.loc[("fisher", 0.5)], accuracy.loc[("average", 0.5)]
    assert (fisher > 0.9).all()
    assert fisher.min() > average.min() + 0.03



def test_component_survival_matches_a_merged_copy_of_the_model(tmp_path):
    """KL ratios against a model built by loading the averaged state dict (no functional_call), planted tops."""
    from analysis.merge.methods import MergeSettings
    from analysis.merge.survival import component_survival, merged_parameters

    (a, data), (b, _) = tiny(tmp_path, 3, seed=0), tiny(tmp_path, 3, seed=1)
    merged = merged_parameters([Parent("A", a, data, data), Parent("B", b, data, data)], None, "average", 0.5,
                               MergeSettings())
    copy = PixelMLP(n_classes=3, image_size=4, hidden=5)
    copy.load_state_dict({k: (a.net.state_dict()[k] + b.net.state_dict()[k]) / 2 for k in copy.state_dict()})
    pixels = torch.as_tensor(data.images)
    with torch.no_grad():
        p = a({"pixels": pixels}).double().softmax(-1).numpy()  # [n, C]
        q = copy(pixels).double().softmax(-1).numpy()
    kl = (p * np.log(p / q)).sum(1)  # [n]
    W = np.zeros((len(data), 2))  # component 0's top 3 are rows 0-2, component 1's rows 10, 9, 8
    W[:3, 0], W[8:, 1] = 1.0, [1.0, 2.0, 3.0]
    table = component_survival(a, data, W, merged, top_n=3)
    np.testing.assert_allclose(table["KL top"], [kl[:3].mean(), kl[8:].mean()], rtol=1e-4)
    np.testing.assert_allclose(table["KL ratio"], table["KL top"] / kl.mean(), rtol=1e-4)
    assert kl.mean() > 1e-4  # the two parents differ: the merge moves the predictions
