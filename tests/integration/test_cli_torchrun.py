"""`torchrun ... analysis.cli fit` twice: the second finds the stored run on every rank instead of leaving the
other ranks waiting in a collective (gloo: "Connection closed by peer"; NCCL: a hang)."""
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from analysis.cli import main

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240  # a hang fails the test instead of blocking the suite


def torchrun_cli(workspace: Path, *argv: str) -> subprocess.CompletedProcess:
    """`analysis.cli --workspace WORKSPACE ARGV` on two gloo ranks on CPU (one thread each); the whole process
    group is killed after TIMEOUT_S."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "analysis.cli", "--workspace", str(workspace), *argv]
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"torchrun {' '.join(argv)} hung for {TIMEOUT_S} s:\n{err[-4000:]}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def test_a_second_torchrun_fit_reuses_the_stored_run(image_workspace, tmp_path, capsys):
    workspace = tmp_path / "ws"
    shutil.copytree(image_workspace / "demos" / "image-demo", workspace / "demos" / "image-demo")
    assert main(["--workspace", str(workspace), "pefs", "--demo", "image", "--values-per-example", "200"]) == 0
    pefs_id = re.search(r"^PEF run (\w+):", capsys.readouterr().out, re.M).group(1)

    ids = []
    for attempt in ("computes", "reuses"):
        done = torchrun_cli(workspace, "fit", "--pefs", pefs_id, "--components", "3", "--iters", "10")
        assert done.returncode == 0, f"the fit that {attempt}: {done.stderr[-4000:]}"
        printed = re.findall(r"^NPEFF run (\w+): 3 components", done.stdout, re.M)
        assert len(printed) == 1, done.stdout  # rank 0 reports, once
        ids += printed
    assert ids[0] == ids[1]
