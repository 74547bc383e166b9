"""How well components recover known groups of examples (planted rules): purity of each group's
best-matching component and the adjusted Rand index of the dominant component against the groups."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.components import top_examples


@dataclass(frozen=True)
class GroupMatch:
    """The component whose top examples are most often of one group."""

    group: str
    component: int  # best-matching component k
    purity: float  # fraction of component k's top_n examples (by coefficient) that belong to the group
    n_examples: int  # examples of the group


@dataclass(frozen=True)
class Recovery:
    """Per group its best-matching component, and the agreement of dominant components with the groups."""

    matches: tuple[GroupMatch, ...]  # one per group, in sorted group order
    adjusted_rand: float  # ARI of argmax_k W[i, k] vs group (1 = same partition, ~0 = chance)
    top_n: int

    @property
    def min_purity(self) -> float:
        return min(m.purity for m in self.matches)


def rule_recovery(W: np.ndarray, groups, top_n: int = 20) -> Recovery:
    """Recovery of the ground-truth `groups` [n] (one label per example) by coefficients W [n, r].

    An example with all coefficients zero has no dominant component and counts as a cluster of its own kind.
    """
    from sklearn.metrics import adjusted_rand_score

    W = np.asarray(W)
    groups = np.asarray(groups).astype(str)
    if W.ndim != 2 or W.shape[0] != len(groups):
        raise ValueError(f"W must have shape [n, r] with n = {len(groups)} (one row per group label), got {W.shape}")
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    top = [groups[top_examples(W, k, top_n)] for k in range(W.shape[1])]  # r × [top_n] group labels
    matches = []
    for group in sorted(set(groups)):
        purities = [float(np.mean(t == group)) for t in top]  # [r]
        best = int(np.argmax(purities))
        matches.append(GroupMatch(group=group, component=best, purity=purities[best],
                                  n_examples=int((groups == group).sum())))
    dominant = np.where(W.max(axis=1) > 0, W.argmax(axis=1), -1)  # [n]
    return Recovery(matches=tuple(matches), adjusted_rand=float(adjusted_rand_score(groups, dominant)), top_n=top_n)
