"""A 2-D map of the examples: UMAP of their normalized coefficient vectors, stored once per decomposition.

umap-learn compiles with numba on first import (~20 s) and its first fit in a process takes ~15 s
(ECOSYSTEM.md), so coordinates are fitted once per (decomposition, settings) and kept in the
workspace; `stored_umap` looks them up without ever fitting.
"""
from __future__ import annotations

import numpy as np

from analysis.runs import cached_arrays
from analysis.store import Run, Workspace

UMAP_KIND = "umap-coefficients"


def normalized_coefficients(W: np.ndarray) -> np.ndarray:
    """Rows of W [n, r] scaled to unit L2 norm (all-zero rows stay zero): [n, r] float32."""
    W = np.asarray(W, dtype=np.float32)
    norms = np.linalg.norm(W, axis=1, keepdims=True)
    return np.divide(W, norms, out=np.zeros_like(W), where=norms > 0)


def dominant_component(W: np.ndarray) -> np.ndarray:
    """[n] int64, the component with the largest coefficient per example, −1 for all-zero rows."""
    W = np.asarray(W)
    dominant = W.argmax(1).astype(np.int64)
    dominant[W.max(1) <= 0] = -1
    return dominant


def umap_params(run: Run, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0) -> dict:
    """The settings a stored map is keyed by."""
    return {"decomposition": run.key, "n_neighbors": n_neighbors, "min_dist": min_dist, "seed": seed}


def fit_umap(W: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0) -> np.ndarray:
    """UMAP of the normalized rows of W [n, r] (Euclidean, i.e. cosine on the raw rows): [n, 2] float32.

    n_neighbors is capped at n − 1 so tiny datasets work; n < 3 gives the first two coordinates.
    """
    if n_neighbors < 2:
        raise ValueError(f"n_neighbors must be >= 2, got {n_neighbors}")
    X = normalized_coefficients(W)
    n = len(X)
    if n < 4:
        return np.pad(X[:, :2], ((0, 0), (0, max(0, 2 - X.shape[1])))).astype(np.float32)
    import umap  # deferred: numba compiles on first import

    reducer = umap.UMAP(n_neighbors=min(n_neighbors, n - 1), min_dist=min_dist, n_components=2,
                        random_state=seed, n_jobs=1, init="spectral" if n > 10 else "random")
    return reducer.fit_transform(X).astype(np.float32)


def stored_umap(ws: Workspace, run: Run, **settings) -> np.ndarray | None:
    """Stored coordinates [n, 2] for these settings, or None when they were never fitted (no fit here)."""
    found = ws.find_run(UMAP_KIND, umap_params(run, **settings))
    if found is None or found.status != "complete":
        return None
    return ws.load_array(found.id, "xy", mmap=False)


def umap_coordinates(ws: Workspace, run: Run, W: np.ndarray, **settings) -> np.ndarray:
    """UMAP coordinates [n, 2] of a decomposition's examples: stored ones, else fitted once and stored."""
    return cached_arrays(ws, UMAP_KIND, umap_params(run, **settings),
                         lambda: {"xy": fit_umap(W, **settings)})["xy"]
