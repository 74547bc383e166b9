"""The `merge` command on the merge-pair demo, headless: table, CSV, figures, and the stored run reused."""
import re

import pandas as pd

from analysis.cli import main
from analysis.demos import build_demo, merge_pair_tasks
from analysis.merge.specs import MERGE_DEMO


def test_merge_demo_headless(merge_pair_workspace, tmp_path, capsys):
    demo_workspace = merge_pair_workspace
    folder, metrics = build_demo(MERGE_DEMO, demo_workspace)  # built already: its folder and metrics
    assert [t.model.exists() for t in merge_pair_tasks(folder)] == [True, True]
    assert metrics.accuracy_by_group["A on task A"] > 0.95 and metrics.accuracy_by_group["B on task B"] > 0.95

    argv = ["--workspace", str(demo_workspace), "merge", "--demo", "--lambdas", "11", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    run_id = re.search(r"merge run (\w+)", out).group(1)
    assert "best λ per method" in out
    table = pd.read_csv(tmp_path / "merge_sweep.csv")
    assert len(table) == 22 and set(table["method"]) == {"average", "fisher"}
    assert (tmp_path / "merge_tasks.html").exists() and (tmp_path / "merge_lambda.html").exists()
    # λ = 1 is model A itself, λ = 0 model B, for both methods
    for method in ("average", "fisher"):
        rows = table[table["method"] == method].set_index("lambda")
        assert rows.loc[1.0, "accuracy A"] == metrics.accuracy_by_group["A on task A"]
        assert rows.loc[0.0, "KL B"] < 1e-9
    # the demo's claim: Fisher merging's best λ keeps more of both tasks than averaging's best λ
    mean = table.assign(mean=table[["accuracy A", "accuracy B"]].mean(axis=1)).groupby("method")["mean"].max()
    assert mean["fisher"] > mean["average"] + 0.02

    assert main(argv) == 0
    assert f"merge run {run_id}" in capsys.readouterr().out  # stored once, reused


def test_merge_refuses_a_single_model(demo_workspace, capsys):
    argv = ["--workspace", str(demo_workspace), "merge", "--model", "a/", "--fisher-data", "a.npz",
            "--eval-data", "b.npz"]
    assert main(argv) == 2
    assert ("give --model, --fisher-data and --eval-data once per model, for 2 or more models (or --demo), got "
            "{'--model': 1, '--fisher-data': 1, '--eval-data': 1}") in capsys.readouterr().err
