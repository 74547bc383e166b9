"""NPEFF decompositions of per-example Fishers: LRM-NPEFF, D-NPEFF and coefficients for new examples.

One module per variant (lrm.py, diag.py: settings, result, fit) over the shared preprocessing in
common.py; analysis.variants binds each variant's pieces under its name.
"""
from analysis.npeff.coefficients import DEFAULT_CHUNK_SIZE, fit_coefficients
from analysis.npeff.common import Decomposition, FieldSpec, FitConfig
# LRM first: the variants are listed in this order (errors, pages)
from analysis.npeff.lrm import (DEFAULT_LR, DEFAULT_N_ITERS_G_ONLY, LrmDecomposition, LrmFitConfig, fit_lrm,
                                fit_lrm_npeff)
from analysis.npeff.diag import DiagDecomposition, DiagFitConfig, fit_d_npeff, fit_diag

__all__ = ["DEFAULT_CHUNK_SIZE", "DEFAULT_LR", "DEFAULT_N_ITERS_G_ONLY", "Decomposition", "DiagDecomposition",
           "DiagFitConfig", "FieldSpec", "FitConfig", "LrmDecomposition", "LrmFitConfig", "fit_coefficients",
           "fit_d_npeff", "fit_diag", "fit_lrm", "fit_lrm_npeff"]
