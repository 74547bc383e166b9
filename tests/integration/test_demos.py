"""The offline demos build, reach their accuracy, and are reused without rebuilding."""
import json

from analysis.cli import main
from analysis.datasets import predict
from analysis.demos import demo_folder, load_demo


def test_image_demo_is_accurate_and_cached(tmp_path):
    model, dataset, metrics = load_demo("image", tmp_path)
    assert metrics.test_accuracy >= 0.9 and metrics.n_test == len(dataset) == 500
    assert model.label_names == [str(d) for d in range(10)]
    logits = predict(model, dataset, device="cpu")
    assert abs(float((logits.argmax(1) == dataset.labels).mean()) - metrics.test_accuracy) < 1e-9
    built = (demo_folder("image", tmp_path) / "model.safetensors").stat().st_mtime
    load_demo("image", tmp_path)
    assert (demo_folder("image", tmp_path) / "model.safetensors").stat().st_mtime == built


def test_text_demo_beats_frozen_embeddings(demo_workspace):
    """Fine-tuning the top layers must beat the 77% of a logistic regression on frozen embeddings."""
    model, dataset, metrics = load_demo("text", demo_workspace)
    assert metrics.test_accuracy >= 0.78, metrics
    assert model.label_names == ["rotten", "fresh"] and len(dataset) == 1000
    assert model.summary().n_parameters_in_scope < 2_000_000  # default scope: last layer + head


def test_cli_reports_the_cached_demo(demo_workspace, capsys):
    assert main(["--workspace", str(demo_workspace), "demo", "image"]) == 0
    out = capsys.readouterr().out
    recorded = json.loads((demo_folder("image", demo_workspace) / "demo_metrics.json").read_text())
    assert f"held-out accuracy {recorded['test_accuracy']:.1%}" in out
