"""Fisher-weighted model merging (Matena & Raffel's Laplace view): merge checkpoints of one architecture by
θ* = Σ_j λ_j F_j θ_j / Σ_j λ_j F_j, against isotropic averaging, over a sweep of the coefficients λ.

fisher.py    the diagonal Fisher of a model on a dataset (mean of per-example D-PEFs; empirical option)
methods.py   the merge methods registry: average, fisher (floor, optional normalization)
sweep.py     parents, the λ grid, the merged models' accuracy and KL to each parent on each parent's data
runs.py      the sweep stored in the workspace (Fishers cached per model and dataset)
specs.py     parents as model/dataset specs, and the "merge" job spec
survival.py  how much of each NPEFF component of a parent survives a merge
"""
from analysis.merge.fisher import diagonal_fisher
from analysis.merge.methods import METHODS, MergeSettings, get_method
from analysis.merge.sweep import MergeSweep, Parent, SweepSettings, lambda_grid, merge_sweep

__all__ = ["METHODS", "MergeSettings", "MergeSweep", "Parent", "SweepSettings", "diagonal_fisher", "get_method",
           "lambda_grid", "merge_sweep"]
