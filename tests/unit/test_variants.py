"""The variant registry: one name per variant, every piece found from any of its objects, clear errors."""
from dataclasses import fields, replace

import numpy as np
import pytest

from analysis.npeff import (DiagDecomposition, DiagFitConfig, LrmDecomposition, LrmFitConfig, fit_d_npeff,
                            fit_lrm_npeff)
from analysis.pefs import DiagPefs, LrmPefs
from analysis.runs import fit_config
from analysis.variants import VARIANTS, get_variant, register, variant_of, variant_of_run_kind


def test_each_variant_is_found_from_its_name_run_kind_and_objects():
    for name, pefs, config, dec in (("lrm", LrmPefs, LrmFitConfig, LrmDecomposition),
                                    ("diag", DiagPefs, DiagFitConfig, DiagDecomposition)):
        variant = get_variant(name)
        assert variant.name == name and variant_of_run_kind(f"npeff-{name}") is variant
        assert (variant.pefs, variant.config, variant.decomposition) == (pefs, config, dec)
        assert variant_of(pefs) is variant and variant_of(config) is variant and variant_of(dec) is variant
    assert list(VARIANTS) == ["lrm", "diag"]


def test_unknown_names_and_types_list_what_exists():
    with pytest.raises(ValueError, match=r"^kind must be 'lrm' or 'diag', got 'nmf'$"):
        get_variant("nmf")
    with pytest.raises(ValueError, match=r"^run kind must be one of \['npeff-lrm', 'npeff-diag'\], got 'pefs'$"):
        variant_of_run_kind("pefs")
    with pytest.raises(TypeError, match=r"^dict belongs to no NPEFF variant; expected one of "
                                        r"LrmPefs/LrmDecomposition, DiagPefs/DiagDecomposition$"):
        variant_of({})
    with pytest.raises(ValueError, match=r"^variant 'lrm' is registered already$"):
        register(replace(get_variant("lrm")))


def test_fit_results_carry_their_components_under_the_variant_factor():
    rng = np.random.default_rng(0)
    lrm = fit_lrm_npeff(LrmPefs.from_dense(rng.normal(size=(6, 2, 9))), 2, n_iters=3, n_iters_g_only=1)
    diag = fit_d_npeff(DiagPefs.from_dense(rng.random((6, 9))), 2, n_iters=3)
    assert lrm.components is lrm.G and diag.components is diag.H
    assert (lrm.factor, diag.factor) == ("G", "H") and lrm.n_components == diag.n_components == 2


def test_settings_are_keyed_without_unset_values_and_unknown_ones_are_refused():
    config = fit_config(get_variant("lrm"), {"n_components": 4, "n_iters": 10})
    assert config.params() == {"n_components": 4, "n_iters": 10, "seed": 0, "min_nnz_per_col": 1,
                               "n_iters_g_only": 50, "lr": 1.0, "step": "line_search", "ortho_reg": 0.0}
    names = [f.name for f in fields(DiagFitConfig)]
    with pytest.raises(ValueError, match=rf"^ortho_reg is not a setting of D-NPEFF; its settings are "
                                         rf"{names!r}".replace("[", r"\[").replace("]", r"\]")):
        fit_config(get_variant("diag"), {"n_components": 4, "n_iters": 10, "ortho_reg": 1.0})


def test_settings_are_checked_by_the_fit_not_at_construction():
    """A stored fit records bad settings as a failed run, so the config itself accepts them (sklearn's way)."""
    config = LrmFitConfig(n_components=0, n_iters=5)
    with pytest.raises(ValueError, match=r"^n_components must be >= 1, got 0$"):
        config.validate()
