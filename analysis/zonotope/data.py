"""Datasets for the zonotope explorer: the spec's presets (zonotope.md §8) and CSV points with targets."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.datasets import read_table
from analysis.zonotope.arrangement import homogenize

FIG1_X = np.array([[1.0, 0.2], [-0.5, 1.0], [-1.0, -0.7], [0.3, -1.2], [1.5, 1.1]])  # spec §8 item 3


def figure1() -> tuple[np.ndarray, np.ndarray]:
    """The Fig. 1-like 5-point set in general position, with targets from a fixed 2-unit teacher."""
    return FIG1_X.copy(), teacher_targets(FIG1_X, width=2, seed=1)


def xor() -> tuple[np.ndarray, np.ndarray]:
    """(±1, ±1) with y = XOR: m=1 optimum 0.5, m=2 optimum 0."""
    return np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]), np.array([0.0, 1.0, 1.0, 0.0])


def near_degenerate(eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(−1,0), (0,ε), (1,0) with y = (0,1,0): m=1 optimum 1/3 at ε=0 and 0 for every ε>0 (spec §4)."""
    return np.array([[-1.0, 0.0], [0.0, eps], [1.0, 0.0]]), np.array([0.0, 1.0, 0.0])


def teacher_targets(X: np.ndarray, *, width: int, seed: int) -> np.ndarray:
    """y = f_teacher(X) for a random ReLU teacher with `width` units and random output signs."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((width, X.shape[1] + 1))  # [width, d+1]
    signs = rng.choice([-1.0, 1.0], size=width)
    return np.maximum(homogenize(X) @ W.T, 0.0) @ signs


def teacher_student(n: int = 40, d: int = 2, teacher_width: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian inputs labelled by a wider random teacher (students narrower than it are underparameterized)."""
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X, teacher_targets(X, width=teacher_width, seed=seed + 1)


PRESETS = {"Figure 1 (5 points)": figure1, "XOR": xor, "Teacher-student (random)": teacher_student}


def read_points(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """A CSV/JSONL/Parquet of 1-3 input columns and a target column named `y`."""
    frame = read_table(path)
    name = Path(path).name
    if "y" not in frame.columns:
        raise ValueError(f"{name}: needs a target column named 'y'; the columns are {list(frame.columns)}")
    inputs = [c for c in frame.columns if c != "y"]
    if not 1 <= len(inputs) <= 3:
        raise ValueError(f"{name}: needs 1 to 3 input columns besides 'y', got {inputs}")
    try:
        X, y = frame[inputs].to_numpy(dtype=float), frame["y"].to_numpy(dtype=float)
    except ValueError as e:
        raise ValueError(f"{name}: inputs and 'y' must be numbers ({e})") from e
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise ValueError(f"{name}: inputs and 'y' must be finite numbers (found NaN or Inf)")
    return X, y
