"""Component perturbations (spec npeff.md §4, §10.3-4), one module per concern:

api.py         perturb_component, sweep_component, perturb_all
lrm.py         LRM-NPEFF: Δ = sign·ε·ĝ_k (semi-orthogonalized direction)
diag.py        D-NPEFF: the Fisher-weighted merge Δ (dataset Fisher, sign pattern)
targeting.py   the (δ, λ) search that brings the top examples' KL into a range
evaluation.py  example sets, the cached unperturbed reference, KL and accuracy of one perturbation
weights.py     forward passes at θ₀ + Δ through functional_call on a private view: the model is never written
prefix.py      replaying the modules a perturbation cannot change (outputs recorded once at θ₀)
runs.py        sweeps and perturb-all tables stored in the workspace

Import from the modules (the variant registry imports lrm.py and diag.py, and api.py imports the registry).
"""
