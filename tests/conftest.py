"""Shared fixtures: tiny checkpoints and a demo workspace built in the test session (no downloads)."""
import fcntl
import os
import subprocess
import sys
from pathlib import Path

# One compute thread per process (servers and CLIs started by tests inherit it): two xdist workers, their app
# servers and browsers share 2 cores, and oversubscribed OpenMP threads spin. A 50x80 D-NPEFF fit of 484
# iterations took 6.3 s on two threads beside a busy worker and 0.18 s on one.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import pytest  # noqa: E402  (after the thread settings, which torch reads on import)
import torch  # noqa: E402

from analysis.demos import METRICS, build_demo, demo_folder, load_demo
from analysis.runs import fit_run, pefs_run
from analysis.store import Workspace

ROOT = Path(__file__).resolve().parents[1]
TINY_LABELS = ["neg", "neu", "pos"]
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "plot", "very", "not", "fine",
              "the", "a", "is", "was", "boring", "great", "acting", "story"]


def build_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer BERT sequence classifier (3 classes) with a word-level tokenizer, saved as safetensors."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=3,
                        id2label=dict(enumerate(TINY_LABELS)), label2id={n: i for i, n in enumerate(TINY_LABELS)})
    BertForSequenceClassification(config).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB))
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """Folder of a tiny random BERT classifier: config.json, model.safetensors, tokenizer files."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def shared_temp(tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this run sees (the run's base temp; the worker's own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


# built one by one, in this order, by the early build (each under the lock): the image demo takes seconds, so the tests
# that need it alone run while the text demo builds (~2 min)
DEMO_GROUPS = (("image",), ("text",), ("merge-pair",), ("planted",))


def build_demos_locked(root: Path, kinds: tuple[str, ...]) -> Path:
    """These demos built in `root`, under a file lock so that xdist workers (and the early build) share one build."""
    if all((demo_folder(kind, root) / METRICS).exists() for kind in kinds):
        return root  # built (a build is renamed into place when done): no wait on another group's build
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.build-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        for kind in kinds:
            build_demo(kind, root)
    return root


def demo_root(base: Path) -> Path:
    """The test run's demo workspace under the run's shared base temp; NPEFF_TEST_WORKSPACE reuses one across runs."""
    return Path(os.environ.get("NPEFF_TEST_WORKSPACE") or base / "workspace")


def build_shared_demos(tmp_path_factory, kinds: tuple[str, ...]) -> Path:
    """The test run's demo workspace with these demos built."""
    return build_demos_locked(demo_root(shared_temp(tmp_path_factory)), kinds)


@pytest.hookimpl(trylast=True)  # after the tmp_path plugin has set up the run's base temp
def pytest_configure(config) -> None:
    """With xdist, the controller starts building the demos at once in a process of its own, while the workers run
    the tests that need none (ordered first below), instead of a worker building them while the other waits."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "numprocesses", None):
        return
    root = demo_root(config._tmp_path_factory.getbasetemp())
    code = ("import sys; from pathlib import Path; from tests.conftest import DEMO_GROUPS, build_demos_locked\n"
            "for group in DEMO_GROUPS: build_demos_locked(Path(sys.argv[1]), group)")
    # two threads that sleep when idle (not spin): the build gets both cores while the workers wait for it
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    config._early_demo_build = subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=ROOT, env=env,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pytest_unconfigure(config) -> None:
    """A build still running when the run ends (e.g. a run cut short) is stopped."""
    if (build := getattr(config, "_early_demo_build", None)) is not None and build.poll() is None:
        build.kill()


def pytest_collection_modifyitems(items) -> None:
    """Files whose tests need no demo first, then those that need the image demo alone (built in seconds), then the
    browser files and those marked long, then the rest: the workers have work while the demos build, and the run
    does not end on one long file. xdist hands out whole files in this order (`--no-loadscope-reorder`: by default it
    sorts them by their number of tests)."""
    others = {"demo_workspace", "planted_workspace", "merge_pair_workspace"}
    needs, long = {}, {}  # file -> the most any of its tests needs: 0 no demo, 1 the image demo alone, 2 more
    for item in items:
        names = set(item.fixturenames)  # with the fixtures they depend on
        need = 2 if others & names else 1 if "image_workspace" in names else 0
        needs[item.path] = max(needs.get(item.path, 0), need)
        long[item.path] = (long.get(item.path, False) or item.path.name.endswith("browser.py")
                           or item.get_closest_marker("long") is not None)

    def rank(item) -> int:
        return needs[item.path] if needs[item.path] < 2 else 2 if long[item.path] else 3
    items.sort(key=rank)  # stable: the order within each group is kept


@pytest.fixture(scope="session")
def image_workspace(tmp_path_factory) -> Path:
    """The demo workspace with the image demo built (seconds), once per test run; other demos may be missing."""
    return build_shared_demos(tmp_path_factory, ("image",))


@pytest.fixture(scope="session")
def demo_workspace(image_workspace, tmp_path_factory) -> Path:
    """The image and text demos (text ~2 min), built once per test run."""
    return build_shared_demos(tmp_path_factory, ("text",))


@pytest.fixture(scope="session")
def planted_workspace(demo_workspace, tmp_path_factory) -> Path:
    """The demo workspace with the planted demo built too (about a minute), once per test run."""
    return build_shared_demos(tmp_path_factory, ("planted",))


@pytest.fixture(scope="session")
def merge_pair_workspace(image_workspace, tmp_path_factory) -> Path:
    """The demo workspace with the image and merge-pair demos built (seconds), once per test run."""
    return build_shared_demos(tmp_path_factory, ("merge-pair",))


@pytest.fixture
def app_env(demo_workspace, monkeypatch) -> Path:
    """The app under test opens this workspace."""
    monkeypatch.setenv("NPEFF_WORKSPACE", str(demo_workspace))
    return demo_workspace


@pytest.fixture(scope="session")
def image_run(demo_workspace) -> str:
    """A real LRM-NPEFF run of the image demo (PEFs shared with the Compute page test; seconds)."""
    model, dataset, _ = load_demo("image", demo_workspace)
    ws = Workspace(demo_workspace)
    pefs = pefs_run(ws, model, dataset, kind="lrm", n_values_per_example=200)
    run = fit_run(ws, pefs, n_components=6, n_iters=40)
    ws.close()
    return run.id
