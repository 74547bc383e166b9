"""Zonotope view of shallow ReLU training (spec zonotope.md, Matena & Raffel 2022).

A unit with weights w ∈ R^D acts on homogenised inputs x̃ = (x, 1); its activation pattern
S = {i : ⟨w, x̃_i⟩ > 0} is a chamber of the central arrangement {H_i = x̃_i^⊥}, i.e. a vertex
v_S = Σ_{i∈S} x̃_i of the zonotope Z = Σ_i [0, x̃_i]. With the patterns of all m units fixed, the
network f(x) = Σ_j s_j ReLU(⟨w_j, x̃⟩) is linear in W, and ½·SSE is a QP (kernels/zonotope_qp.py).

Modules: arrangement (homogenisation, distinct hyperplanes, input checks), enumeration (chambers, the
graph of Z, the chamber LP), vertex (vertex QPs, global optimum, random and doubling vertices), gd (Adam
baseline), search (greedy vertex search); data (presets, CSV points) and experiments (seed and width
studies) are imported by their module path.
"""
from analysis.zonotope.arrangement import homogenize
from analysis.zonotope.enumeration import Zonotope, chambers, is_feasible, zonotope_graph
from analysis.zonotope.gd import GdResult, PatternChange, gd_train
from analysis.zonotope.search import SearchResult, SearchStep, greedy_search
from analysis.zonotope.vertex import (VertexSolution, best_unit_losses, doubling_vertex, doubling_width,
                                      global_optimum, random_vertex_losses, solve_vertex)

__all__ = ["GdResult", "PatternChange", "SearchResult", "SearchStep", "VertexSolution", "Zonotope",
           "best_unit_losses", "chambers", "doubling_vertex", "doubling_width", "gd_train", "global_optimum",
           "greedy_search", "homogenize", "is_feasible", "random_vertex_losses", "solve_vertex", "zonotope_graph"]
