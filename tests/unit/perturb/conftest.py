"""Fixtures of the planted problem (tests/unit/perturb/planted.py)."""
import numpy as np
import pytest
import torch

from analysis.adapters.images import ImageModule
from analysis.datasets import ImageDataset
from analysis.models import ClassifierModel
from analysis.npeff import DiagDecomposition, LrmDecomposition
from tests.unit.perturb.planted import C, D, LABELS, M, N, N_DEPENDENT, Planted, unit


@pytest.fixture
def model() -> ClassifierModel:
    torch.manual_seed(0)
    net = Planted()
    with torch.no_grad():
        net.linear.weight.mul_(0.3)
    return ClassifierModel(net, adapter=ImageModule(LABELS), name="planted", content_hash="planted-model")


@pytest.fixture(scope="module")
def examples() -> ImageDataset:
    """Dependent examples are large on features 0-2 and tiny (< 0.01) on 3-5; the others the reverse."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0.0, 0.01, (N, 1, D)).astype(np.float32)
    X[:N_DEPENDENT, 0, :3] = rng.uniform(0.5, 1.0, (N_DEPENDENT, 3))
    X[N_DEPENDENT:, 0, 3:] = rng.uniform(0.5, 1.0, (N - N_DEPENDENT, 3))
    return ImageDataset(images=X, labels=rng.integers(0, C, N), label_names=LABELS, name="planted", source="test",
                        content_hash="planted-data")


@pytest.fixture(scope="module")
def decomposition() -> LrmDecomposition:
    """Component 0: a direction in the weights of features 0-2; component 1: a random direction."""
    rng = np.random.default_rng(1)
    planted = np.zeros(M)
    planted[[c * D + j for c in range(C) for j in range(3)]] = rng.normal(size=C * 3)
    W = rng.uniform(0.0, 0.1, (N, 2)).astype(np.float32)
    W[:N_DEPENDENT, 0] = rng.uniform(5.0, 10.0, N_DEPENDENT)
    W[:, 1] = rng.uniform(0.0, 1.0, N)
    return LrmDecomposition(W=W, G=np.stack([unit(planted), unit(rng.normal(size=M))]), kept=np.arange(M),
                            n_parameters=M, losses=np.zeros(1), relative_error=0.0)


@pytest.fixture(scope="module")
def diag_decomposition(decomposition) -> DiagDecomposition:
    H = np.abs(decomposition.G)
    return DiagDecomposition(W=decomposition.W, H=H / np.linalg.norm(H, axis=1, keepdims=True), kept=np.arange(M),
                             n_parameters=M, losses=np.zeros(1), relative_error=0.0)
