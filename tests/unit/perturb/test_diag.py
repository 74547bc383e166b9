"""D-NPEFF perturbations: the Fisher-weighted merge with the max floor, the dataset Fisher, the sign pattern,
and KL targeting end to end."""
import numpy as np
import pytest
import torch

from analysis.datasets import ImageDataset
from analysis.fisher import compute_pefs
from analysis.fisher import dataset_fisher
from analysis.perturb.api import perturb_component
from analysis.perturb.diag import fisher_merge_delta, sign_pattern
from analysis.perturb.targeting import KlTargeter
from tests.unit.perturb.planted import LABELS, SETS


def test_fisher_merge_uses_max_floor_and_moves_only_where_the_component_dominates():
    theta0 = torch.tensor([0.5, -1.0, 2.0, 0.3], dtype=torch.float64)
    f_D = torch.tensor([0.0, 1e-3, 1e-8, 0.9], dtype=torch.float64)
    f_C = torch.tensor([0.0, 1e-3, 0.9, 0.0], dtype=torch.float64)
    s = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    delta, lam, floor = 0.2, 0.4, 1e-6
    change = fisher_merge_delta(f_D, f_C, s, delta=delta, lam=lam, floor=floor)
    assert torch.isfinite(change).all()  # f_D = f_C = 0 at parameter 0: min(f_D, floor) would give 0/0
    w1, w2 = (1 - lam) * torch.maximum(f_D, torch.tensor(floor, dtype=torch.float64)), lam * f_C
    merged = (w1 * theta0 + w2 * (theta0 - delta * s)) / (w1 + w2)
    torch.testing.assert_close(theta0 + change, merged, rtol=0, atol=1e-12)
    assert change[0] == 0 and change[3] == 0  # f_C = 0: stays at θ₀
    assert change[2] == pytest.approx(-delta, rel=1e-5)  # f_C ≫ f_D: moves (almost) all the way to θ_p
    assert 0 < change[1] / (-delta * s[1]) < 1  # comparable Fishers: part of the way to θ_p
    with pytest.raises(ValueError, match=r"^lam must be in \(0, 1\), got 1.0$"):
        fisher_merge_delta(f_D, f_C, s, delta=delta, lam=1.0)


def test_d_perturbation_hits_a_reachable_kl_range_and_reports_an_unreachable_one(model, examples, diag_decomposition):
    hit = perturb_component(model, examples, diag_decomposition, 0, magnitude=0.5, kl_range=(0.01, 0.02), **SETS)
    assert hit.targeting_converged is True and 0.01 <= hit.kl_top <= 0.02
    assert hit.delta == hit.magnitude and 0 < hit.lam < 1
    fixed = perturb_component(model, examples, diag_decomposition, 0, magnitude=0.5, lam=0.3, **SETS)
    assert fixed.targeting_converged is None and (fixed.delta, fixed.lam) == (0.5, 0.3)
    miss = perturb_component(model, examples, diag_decomposition, 0, magnitude=0.5, kl_range=(50.0, 60.0),
                             targeter=KlTargeter(max_iters=4), **SETS)
    assert miss.targeting_converged is False and miss.kl_top < 50
    with pytest.raises(ValueError, match="^max_sim applies to LRM-NPEFF decompositions only; "):
        perturb_component(model, examples, diag_decomposition, 0, magnitude=0.5, max_sim=0.5, **SETS)


def test_dataset_fisher_is_the_normalized_mean_of_the_diagonal_pefs(model, examples):
    subset = ImageDataset(images=examples.images[:30], labels=examples.labels[:30], label_names=LABELS,
                          name="subset", source="test")
    f_D = dataset_fisher(model, subset, batch_size=7, device="cpu").numpy()
    dense = compute_pefs(model, [{"pixels": torch.as_tensor(subset.images)}], kind="diag").dense().mean(axis=0)
    np.testing.assert_allclose(f_D, dense / np.linalg.norm(dense), rtol=1e-4, atol=1e-7)


def test_sign_pattern_is_the_sign_of_the_summed_loss_gradient(model, examples):
    indices = np.arange(5, 17)
    s = sign_pattern(model, examples, indices, batch_size=5, device="cpu")
    model.zero_grad()
    logits = model({"pixels": torch.as_tensor(examples.images[indices])})
    torch.nn.functional.cross_entropy(logits, torch.as_tensor(examples.labels[indices]), reduction="sum").backward()
    expected = torch.cat([model.net.linear.weight.grad.flatten(), model.net.linear.bias.grad]).sign()
    torch.testing.assert_close(s, expected)
