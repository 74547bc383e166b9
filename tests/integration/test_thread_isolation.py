"""A model shared by threads (one cached model serves every browser session) is never written by a
perturbation: while one thread perturbs it in a loop, another computes PEFs and predictions on the very
same object and gets bitwise the results it got alone."""
import threading

import numpy as np

from analysis.datasets import image_dataset, make_batches, predict
from analysis.demos import load_demo
from analysis.fisher import compute_pefs
from analysis.npeff import DiagDecomposition, LrmDecomposition
from analysis.perturb.api import perturb_component

N_EXAMPLES, N_PROBE, N_ROUNDS, MIN_PERTURBATIONS = 200, 48, 8, 6
SETS = dict(top_n=16, baseline_n=48, batch_size=32, device="cpu")


def _decompositions(n: int, M: int) -> tuple[LrmDecomposition, DiagDecomposition]:
    """Random unit-norm components over every parameter: a perturbation changes every weight."""
    rng = np.random.default_rng(0)
    G = rng.standard_normal((2, M)).astype(np.float32)
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    W = rng.uniform(0.0, 1.0, (n, 2)).astype(np.float32)
    common = dict(W=W, kept=np.arange(M), n_parameters=M, losses=np.zeros(1), relative_error=0.0)
    return LrmDecomposition(G=G, **common), DiagDecomposition(H=np.abs(G), **common)


def _arrays(pefs) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in vars(pefs).items() if isinstance(value, np.ndarray)}


def test_pefs_and_predictions_are_unchanged_while_another_thread_perturbs_the_model(image_workspace):
    model, dataset, _ = load_demo("image", image_workspace)
    data = image_dataset(dataset.images[:N_EXAMPLES], dataset.labels[:N_EXAMPLES], label_names=dataset.label_names,
                         name="head", source="demo")
    probe = image_dataset(dataset.images[-N_PROBE:], dataset.labels[-N_PROBE:], label_names=dataset.label_names,
                          name="probe", source="demo")
    lrm, diag = _decompositions(N_EXAMPLES, model.summary().n_parameters_in_scope)

    def pefs() -> dict[str, np.ndarray]:
        return _arrays(compute_pefs(model, make_batches(model, probe, batch_size=16), kind="lrm",
                                    n_values_per_example=100, device="cpu"))

    def logits() -> np.ndarray:
        return predict(model, probe, batch_size=16, device="cpu")

    alone_pefs, alone_logits = pefs(), logits()
    assert alone_pefs
    stop, done, errors = threading.Event(), [], []

    def perturb_forever() -> None:
        try:
            while not stop.is_set():
                perturb_component(model, data, lrm, 0, magnitude=100.0, **SETS)  # far from θ₀: every logit moves
                perturb_component(model, data, diag, 1, magnitude=5.0, lam=0.9, **SETS)
                done.append(2)
        except Exception as e:  # reported by the main thread
            errors.append(e)

    worker = threading.Thread(target=perturb_forever, daemon=True)
    worker.start()
    try:
        rounds = 0
        while rounds < N_ROUNDS or (sum(done) < MIN_PERTURBATIONS and not errors):
            np.testing.assert_array_equal(logits(), alone_logits)
            for name, array in pefs().items():
                np.testing.assert_array_equal(array, alone_pefs[name], err_msg=name)
            rounds += 1
    finally:
        stop.set()
        worker.join()
    if errors:
        raise errors[0]
    assert sum(done) >= MIN_PERTURBATIONS
