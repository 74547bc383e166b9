"""A planted linear classifier: examples 0..19 use features 0-2, the others features 3-5; component 0 of the
LRM decomposition is a direction in the weights of features 0-2, component 1 a random direction."""
import numpy as np
import torch
from torch import nn

LABELS = ["a", "b", "c"]
D, C = 6, 3
N, N_DEPENDENT = 200, 20  # examples 0..19 use features 0-2; the others use features 3-5
TOP_N, BASELINE_N = N_DEPENDENT, 60
M = C * D + C  # weight [3, 6] row-major, then bias [3]
SETS = dict(top_n=TOP_N, baseline_n=BASELINE_N, device="cpu")


class Planted(nn.Module):
    """logits = (x W^T + b) * scale for pixels [B, 1, 6]; `scale` is a buffer."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(D, C)
        self.register_buffer("scale", torch.ones(1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.linear(pixels.flatten(1)) * self.scale


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def assert_identical(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name
