"""Command line: build demos, compute PEFs, fit NPEFF and coefficients into a workspace.

Heavy runs can go here (also under torchrun on a GPU box) and be browsed later in the dashboard:
  python -m analysis.cli demo text
  python -m analysis.cli pefs --demo text --kind lrm --values-per-example 2000
  python -m analysis.cli pefs --model gpt2/ --data sst2.csv --label-column label --adapter causal-lm-classifier \
      --option "template=Review: {text} Sentiment:" --option "verbalizer=negative,positive"
  torchrun --nproc_per_node 2 -m analysis.cli pefs --demo text
  python -m analysis.cli fit --pefs RUN_ID --components 16 --iters 300
  torchrun --nproc_per_node 2 -m analysis.cli fit --pefs RUN_ID --components 16 --iters 300
  python -m analysis.cli fit-coeffs --decomposition RUN_ID --pefs OTHER_RUN_ID --iters 200
  python -m analysis.cli merge --demo --out merged/
  python -m analysis.cli merge --model a/ --fisher-data a_train.npz --eval-data a_val.npz \
      --model b/ --fisher-data b_train.npz --eval-data b_val.npz --lambdas 51 --out merged/
  python -m analysis.cli runs
  python -m analysis.cli jobs
  python -m analysis.cli job run JOB_ID   (what the dashboard starts in the background)

Under torchrun `pefs` shares the chunks out over the ranks (rank 0 leases the run and assembles it) and `fit`
splits the parameters; each rank takes its own GPU when there are GPUs. `pefs` and `fit` add themselves to the
workspace's jobs (seen on the dashboard's Jobs page, which can cancel them); `job run` runs a job the dashboard
queued (analysis/jobs.py).

Before computing PEFs the command prints its disk, memory and time estimates, and refuses (unless --yes)
when they exceed the workspace's free disk or the available memory. An error prints one line,
`error: ...`, naming the file or run and what to do, and exits with status 2 (as argparse does for bad
arguments); --debug prints the traceback instead. Ctrl-C prints `interrupted` and exits with status 130.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from contextlib import suppress
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tqdm import tqdm

from analysis.adapters import ADAPTERS
from analysis.demos import DEMOS, METRICS, build_demo, demo_folder
from analysis.errors import about, describe_error
from analysis.estimates import (Resources, default_values_per_example, describe_estimate, estimate_pefs,
                                machine_resources, measure_seconds_per_example, resource_problems)
from analysis.jobs import JobCancelled, compute_spec, list_jobs, own_job, run_job
from analysis.loading import (DatasetSpec, ModelSpec, adapter_settings, check_pair, demo_specs, load_dataset_spec,
                              load_model_spec, pair_dataset, paired_dataset_spec, register_pair)
from analysis.models import ParamScope
from analysis.perturb.diag import FISHER_FLOOR
from analysis.store import DEFAULT_WORKSPACE, Workspace
from analysis.variants import DEFAULT_VARIANT, VARIANTS

if TYPE_CHECKING:
    from analysis.variants import Variant

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


def parse_scope(text: str) -> ParamScope:
    """'all', 'last:N' (last N layers + head) or 're:PATTERN' (names matching a regex)."""
    if text == "all":
        return ParamScope("all")
    if text.startswith("last:") and text[5:].isdigit():
        return ParamScope("last_layers", n_layers=int(text[5:]))
    if text.startswith("re:"):
        return ParamScope("pattern", pattern=text[3:])
    raise ValueError(f"--scope must be 'all', 'last:N' or 're:PATTERN', got '{text}'")


def _bar(desc: str, unit: str):
    bar = tqdm(desc=desc, unit=unit, disable=None)  # no bar when the output is not a terminal

    def progress(done: int, total: int | None, loss: float | None = None) -> None:
        bar.total = total
        bar.n = done
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.4g}")
        bar.refresh()

    return bar, progress


def _demo(args: argparse.Namespace) -> int:
    with tqdm(total=100, desc=f"{args.kind} demo", bar_format="{l_bar}{bar}| {postfix}", disable=None) as bar:
        def progress(frac: float, message: str) -> None:
            bar.n = int(100 * frac)
            bar.set_postfix_str(message[:60])
            bar.refresh()

        with about(demo_folder(args.kind, Path(args.workspace))):
            folder, metrics = build_demo(args.kind, Path(args.workspace), progress)
    print(f"{args.kind} demo at {folder}: held-out accuracy {metrics.test_accuracy:.1%} on {metrics.n_test} "
          f"examples, built in {metrics.build_seconds:.0f} s ({metrics.trained})")
    return 0


def _workspace(args: argparse.Namespace) -> Workspace:
    with about(Path(args.workspace) / "npeff.duckdb"):
        return Workspace(args.workspace)


def _model_source(args: argparse.Namespace, ws: Workspace) -> Path:
    return demo_folder(args.demo, ws.root) if args.demo else Path(args.model)


def _specs(args: argparse.Namespace, root: Path) -> tuple[ModelSpec, DatasetSpec]:
    """The model and dataset the arguments name (a demo, or --model and --data), the model read through
    --adapter with its --option values (as the Load page reads it)."""
    scope = parse_scope(args.scope) if args.scope else None
    if args.demo:
        if args.model or args.data:
            raise ValueError("--demo brings its own model and dataset; drop --model and --data, or drop --demo")
        model_spec, dataset_spec = demo_specs(args.demo, scope)
    elif not (args.model and args.data):
        raise ValueError(f"give --demo {'|'.join(DEMOS)}, or both --model PATH and --data PATH")
    else:
        model_spec = ModelSpec(source=args.model, scope=scope or ParamScope(), config=args.config,
                               architecture=args.architecture,
                               label_names=tuple(args.labels.split(",")) if args.labels else ())
        dataset_spec = DatasetSpec(source=args.data, text_columns=tuple(args.text_column or ["text"]),
                                   label_column=args.label_column)
    adapter = adapter_settings(model_spec.source, root, args.adapter, args.option or [])
    return replace(model_spec, **adapter), dataset_spec


def _load_pair(args: argparse.Namespace, ws: Workspace):
    """Load and check the model and dataset the arguments name (a demo must be built already)."""
    with about(_model_source(args, ws)):
        model_spec, dataset_spec = _specs(args, ws.root)
        model = load_model_spec(model_spec, ws.root)
    if not model_spec.demo:
        dataset_spec = paired_dataset_spec(model, dataset_spec)
    with about(args.data or dataset_spec.source):
        dataset = pair_dataset(model, load_dataset_spec(dataset_spec))
        check_pair(model, dataset)
    return model_spec, dataset_spec, model, dataset


def _model_and_data(args: argparse.Namespace, ws: Workspace):
    """Load, check and register (like the dashboard does) the model and dataset the arguments name."""
    if args.demo:
        build_demo(args.demo, ws.root)
    model_spec, dataset_spec, model, dataset = _load_pair(args, ws)
    register_pair(ws, model, dataset, model_spec.source)
    return model_spec, dataset_spec, model, dataset


def _top_k_classes(args: argparse.Namespace, model) -> int | None:
    """--top-k-classes, else the adapter's default (a next-token model's top_k_classes option), as on the
    Compute page."""
    return args.top_k_classes if args.top_k_classes is not None else model.adapter.default_top_k_classes


def _values_per_example(args: argparse.Namespace, model) -> int | None:
    """--values-per-example: default min(2048, parameters in scope × classes), as on the Compute page; 0 = all."""
    if args.values_per_example is None:
        return default_values_per_example(model)
    if args.values_per_example < 0:
        raise ValueError(f"--values-per-example must be >= 0 (0 keeps all), got {args.values_per_example}")
    return args.values_per_example or None


def _check_estimate(args: argparse.Namespace, ws: Workspace, model, dataset, k: int | None,
                    top_k: int | None) -> None:
    """Print the disk, memory and time estimates; refuse what does not fit unless --yes."""
    with about(_model_source(args, ws)):
        seconds = measure_seconds_per_example(ws.root, model, dataset, kind=args.kind, top_k_classes=top_k,
                                              n_values_per_example=k, batch_size=args.batch_size, device=args.device)
    estimate = estimate_pefs(model, dataset, kind=args.kind, n_values_per_example=k, top_k_classes=top_k,
                             n_components=None, batch_size=args.batch_size, seconds_each=seconds)
    resources = args.resources or machine_resources(ws.root)
    print(describe_estimate(estimate, resources), flush=True)
    problems = resource_problems(estimate, resources)
    if problems and not args.yes:
        raise ValueError(f"{ws.root}: {'; '.join(problems)}; keep fewer values (--values-per-example), use fewer "
                         "examples or another workspace, or pass --yes to start anyway")


def _pefs(args: argparse.Namespace) -> int:
    """Under torchrun rank 0 leases the run and every rank computes its share of the chunks."""
    return _on_ranks(args, _pefs_on_rank)


def _pefs_on_rank(args: argparse.Namespace, rank: int, world: int) -> int:
    """Rank 0 runs pefs_run; when it has chunks to compute it hands the run, its recorded chunks and the settings
    to the other ranks, which have loaded the same model and dataset meanwhile and compute their share alongside
    (pefs_share), then wait for rank 0 to complete or fail the run. They also hear when there is nothing to do or
    the setup failed, so none hangs. Rank 0 alone prints and reports progress."""
    from analysis.runs import every_rank, pefs_run, pefs_settings, pefs_share

    if rank != 0:
        inputs = _rank_inputs(args)
        # ("compute", (run, recorded chunks, settings)) | ("done", None) | ("failed", rank 0's error)
        state, handed = _broadcast([None], world)[0]
        if state == "compute":
            run, done, options = handed

            def share() -> None:
                ws, model, dataset = inputs()
                with about(_model_source(args, ws)):
                    pefs_share(ws, run, done, model, dataset, **options, device=_rank_device(args, world))

            try:
                every_rank(share)
            finally:
                state, handed = _broadcast([None], world)[0]  # ("done" | "failed", ...) once rank 0 ended the run
        if state == "failed":  # said here too: torchrun may stop rank 0 before it prints, once this rank exits
            raise RuntimeError(f"rank 0 of {world} failed: {handed}")
        return 0
    tell = _Teller(world)
    try:
        ws = _workspace(args)
        model_spec, dataset_spec, model, dataset = _model_and_data(args, ws)
        options = _pefs_options(args, model)
        stored = ws.find_run("pefs", pefs_settings(model, dataset, kind=args.kind,
                                                   n_values_per_example=options["n_values_per_example"],
                                                   top_k_classes=options["top_k_classes"]))
        if stored is None or stored.status != "complete":
            _check_estimate(args, ws, model, dataset, options["n_values_per_example"], options["top_k_classes"])
        bar, progress = _bar("per-example Fishers", "ex")
        # the command as a job spec (the dashboard's Jobs page lists it and can start it again)
        spec = compute_spec(model_spec, dataset_spec, fit=None, pefs={**options, "device": args.device})
        with own_job(ws, "pefs", spec) as job, bar, about(_model_source(args, ws)):
            run = pefs_run(ws, model, dataset, **options, device=_rank_device(args, world),
                           progress=lambda done, total: (progress(done, total),
                                                         job("Per-example Fishers", done, total)),
                           on_compute=lambda leased, done: tell("compute", (leased, done, options)))
            job.result = run.id
    except BaseException as e:
        # an interrupt while computing skips the ranks' meeting point (every_rank): torchrun interrupts them too
        if isinstance(e, Exception) or tell.first is None:
            with suppress(Exception):  # the other ranks may be gone (one was killed): keep this error
                tell.end("failed", describe_error(e))
        raise
    tell.end("done")
    print(f"PEF run {run.id}: {run.summary['n_examples']} examples × {run.summary['n_parameters']:,} parameters "
          f"({run.params['kind']}) in {ws.root}")
    return 0


def _rank_inputs(args: argparse.Namespace) -> Callable[[], tuple]:
    """A torchrun rank's (workspace, model, dataset): loaded now, while rank 0 sets the run up, unless rank 0 has the
    demo to build first (then when called); a loading error is raised when called, inside every_rank."""
    def load() -> tuple:
        ws = _workspace(args)
        return ws, *_load_pair(args, ws)[2:]

    if args.demo and not (demo_folder(args.demo, Path(args.workspace)) / METRICS).exists():
        return load
    try:
        inputs = load()
    except Exception as e:
        error = e

        def fail() -> tuple:
            raise error

        return fail
    return lambda: inputs


def _pefs_options(args: argparse.Namespace, model) -> dict:
    """pefs_run's settings from the arguments and the model's defaults."""
    return {"kind": args.kind, "n_values_per_example": _values_per_example(args, model),
            "top_k_classes": _top_k_classes(args, model), "chunk_size": args.chunk_size, "batch_size": args.batch_size}


def _distributed() -> tuple[int, int]:
    """Join the torchrun process group when launched by torchrun; (rank, world size)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def _on_ranks(args: argparse.Namespace, body) -> int:
    """body(args, rank, world) on this process, inside the torchrun process group when launched by torchrun."""
    rank, world = _distributed()
    try:
        return body(args, rank, world)
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _fit_settings(args: argparse.Namespace, variant: Variant) -> dict:
    """fit_run's settings from the arguments; options the variant does not have (LRM's, for D-NPEFF) are ignored."""
    given = {"n_components": args.components, "n_iters": args.iters, "seed": args.seed, "lr": args.lr,
             "step": args.step, "n_iters_g_only": args.g_only_iters, "ortho_reg": args.ortho_reg, "tol": args.tol}
    names = {f.name for f in fields(variant.config)}
    return {k: v for k, v in given.items() if v is not None and k in names}


def _broadcast(decision: list, world: int) -> list:
    """Rank 0's decision, on every rank."""
    if world > 1:
        import torch.distributed as dist

        dist.broadcast_object_list(decision, src=0)
    return decision


class _Teller:
    """Rank 0's word to the other ranks, (state, payload): the first call broadcasts it and later ones do nothing;
    `end` tells the outcome, as a second word after a "compute" (for ranks that compute and then wait for it)."""

    def __init__(self, world: int):
        self.world = world
        self.first: str | None = None  # the state told first

    def __call__(self, state: str, payload=None) -> None:
        if self.first is None:
            self.first = state
            _broadcast([(state, payload)], self.world)

    def end(self, state: str, payload=None) -> None:
        if self.first == "compute":
            _broadcast([(state, payload)], self.world)
        else:
            self(state, payload)


def _fit(args: argparse.Namespace) -> int:
    """Rank 0 looks up the stored run and tells every rank whether there is anything to compute."""
    return _on_ranks(args, _fit_on_rank)


def _fit_on_rank(args: argparse.Namespace, rank: int, world: int) -> int:
    """Rank 0 runs fit_run; when it has to fit (no stored run to reuse), it tells the other ranks, which fit their
    column slices alongside. They also hear when there is nothing to do or the setup failed, so none hangs."""
    from analysis.runs import PefsSummary, fit_config, fit_run, load_pefs
    from analysis.variants import get_variant

    if rank != 0:
        state, pefs = _broadcast([None], world)[0]  # ("compute", pefs run) | ("done", None) | ("failed", None)
        if state == "compute":
            variant = get_variant(PefsSummary.of(pefs).kind)
            with about(f"PEF run {pefs.id}"):
                variant.fit(load_pefs(_workspace(args), pefs), fit_config(variant, _fit_settings(args, variant)),
                            device=_rank_device(args, world))
        return EXIT_ERROR if state == "failed" else 0
    tell = _Teller(world)
    try:
        ws = _workspace(args)
        pefs = ws.get_run(args.pefs)
        variant = get_variant(PefsSummary.of(pefs).kind)
        bar, progress = _bar("NPEFF", "it")
        settings = _fit_settings(args, variant)

        def report(done: int, total: int, loss: float | None = None) -> None:
            progress(done, total, loss)
            job("NPEFF", done, total, "" if loss is None else f"loss {loss:.4g}")

        with own_job(ws, "fit", {"pefs_run": pefs.id, "fit": settings, "device": args.device}) as job, bar, \
                about(f"PEF run {pefs.id}"):
            run = fit_run(ws, pefs, device=_rank_device(args, world), progress=report,
                          on_compute=lambda: tell("compute", pefs), **settings)
            job.result = run.id
    except BaseException:
        tell("failed")
        raise
    tell("done")
    print(f"NPEFF run {run.id}: {args.components} components, relative error "
          f"{run.summary['relative_error']:.4f}, in {ws.root}")
    return 0


def _rank_device(args: argparse.Namespace, world: int) -> str | None:
    """The --device, else each torchrun rank's own GPU (cuda:LOCAL_RANK) when there are GPUs, else the default."""
    return args.device or (f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if world > 1 and _cuda() else None)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _fit_coeffs(args: argparse.Namespace) -> int:
    from analysis.runs import coefficients_run

    ws = _workspace(args)
    bar, progress = _bar("coefficients", "ex")
    with bar:
        run = coefficients_run(ws, ws.get_run(args.decomposition), ws.get_run(args.pefs), n_iters=args.iters,
                               seed=args.seed, device=args.device, progress=progress)
    print(f"coefficient run {run.id}: {run.summary['n_examples']} examples in {ws.root}")
    return 0


def _merge_parents(args: argparse.Namespace, root: Path):
    """The merge-pair demo's parents, or one parent per --model with its --fisher-data and --eval-data."""
    from analysis.merge.specs import ParentSpec, demo_parents

    if args.demo:
        if args.model or args.fisher_data or args.eval_data:
            raise ValueError("--demo merges the merge-pair demo; leave out --model, --fisher-data and --eval-data")
        return demo_parents(root)
    counts = {"--model": len(args.model), "--fisher-data": len(args.fisher_data), "--eval-data": len(args.eval_data)}
    if len(set(counts.values())) != 1 or counts["--model"] < 2:
        raise ValueError(f"give --model, --fisher-data and --eval-data once per model, for 2 or more models (or "
                         f"--demo), got {counts}")
    names = args.name or [chr(ord("A") + i) for i in range(len(args.model))]
    if len(names) != len(args.model):
        raise ValueError(f"give one --name per --model, got {len(names)} names for {len(args.model)} models")
    scope = parse_scope(args.scope)
    parents = []
    for name, model, fisher, evaluation in zip(names, args.model, args.fisher_data, args.eval_data):
        loaded = load_model_spec(ModelSpec(source=model, scope=scope), root)
        data = [paired_dataset_spec(loaded, DatasetSpec(source=path, text_columns=tuple(args.text_column),
                                                        label_column=args.label_column))
                for path in (fisher, evaluation)]
        parents.append(ParentSpec(name, ModelSpec(source=model, scope=scope), *data))
    return parents


def _merge(args: argparse.Namespace) -> int:
    """A merge sweep, headless: a table of the best λ per method, the sweep as CSV and the figures."""
    from analysis.figures.export import figure_bytes
    from analysis.figures.merge import lambda_accuracy_figure, task_accuracy_figure
    from analysis.merge import MergeSettings, SweepSettings
    from analysis.merge.runs import load_merge, merge_run
    from analysis.merge.specs import MERGE_DEMO, load_parent, merge_spec
    from analysis.merge.sweep import best_by_method

    ws = _workspace(args)
    if args.demo:
        with about(demo_folder(MERGE_DEMO, ws.root)):
            build_demo(MERGE_DEMO, ws.root)
    specs = _merge_parents(args, ws.root)
    settings = SweepSettings(methods=tuple(args.methods), n_lambdas=args.lambdas, empirical=args.empirical,
                             merge=MergeSettings(fisher_floor=args.floor, normalize=args.normalize),
                             batch_size=args.batch_size)
    bar, progress = _bar("merge", "step")
    with own_job(ws, "merge", merge_spec(specs, settings, demo=MERGE_DEMO if args.demo else None)) as job, bar:
        parents = [load_parent(ws, spec) for spec in specs]

        def report(stage: str, done: int, total: int) -> None:
            bar.set_description(stage)
            progress(done, total)
            job(stage, done, total)

        run = merge_run(ws, parents, settings, device=args.device, progress=report)
        job.result = run.id
    sweep = load_merge(ws, run)
    out = Path(args.out) if args.out else ws.root / "merges" / run.id
    out.mkdir(parents=True, exist_ok=True)
    sweep.table.to_csv(out / "merge_sweep.csv", index=False)
    written = [out / "merge_sweep.csv"]
    for name, fig in (("merge_tasks", task_accuracy_figure(sweep)), ("merge_lambda", lambda_accuracy_figure(sweep))):
        (out / f"{name}.html").write_text(fig.to_html(include_plotlyjs="cdn"))
        written.append(out / f"{name}.html")
        if args.png:
            (out / f"{name}.png").write_bytes(figure_bytes(fig, "png"))
            written.append(out / f"{name}.png")
    print(f"merge run {run.id} ({len(parents)} models, {args.lambdas} values of λ)")
    print("parents on each task's validation data:")
    print(sweep.parents.to_string(index=False, float_format="{:.3f}".format))
    print("best λ per method (highest mean accuracy):")
    print(best_by_method(sweep).to_string(index=False, float_format="{:.3f}".format))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _runs(args: argparse.Namespace) -> int:
    table = _workspace(args).runs()
    print(table[["id", "kind", "status", "created", "summary"]].to_string(index=False) if len(table) else "no runs")
    return 0


def _job_run(args: argparse.Namespace) -> int:
    job = run_job(_workspace(args), args.id)
    print(f"job {job.id}: {job.status}, run {job.result}")
    return 0


def _jobs(args: argparse.Namespace) -> int:
    jobs = list_jobs(_workspace(args))
    for job in jobs:
        progress = f"{job.step:,}/{job.total:,}" if job.total else "-"
        elapsed = "-" if job.elapsed is None else f"{job.elapsed:.0f} s"
        print(f"{job.id}  {job.kind:8} {job.status:9} {progress:>13} {elapsed:>7}  "
              f"{job.error or job.message or ''}{f' -> run {job.result}' if job.result else ''}")
    if not jobs:
        print("no jobs")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="npeff", description="NPEFF Explorer command line",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--workspace", default=str(DEFAULT_WORKSPACE), help="workspace folder (default: %(default)s)")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error instead of one line")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="build an offline demo model once (cached in the workspace)")
    demo.add_argument("kind", choices=sorted(DEMOS))
    demo.set_defaults(func=_demo)

    pefs = sub.add_parser("pefs", help="compute per-example Fishers (resumes an interrupted run)")
    pefs.add_argument("--demo", choices=sorted(DEMOS), help="use a demo model and its dataset")
    pefs.add_argument("--model", help="checkpoint folder, .zip, or weights file")
    pefs.add_argument("--config", help="config.json for a bare transformers state dict")
    pefs.add_argument("--architecture", help="built-in image architecture for a bare state dict")
    pefs.add_argument("--labels", help="comma-separated class names (image architectures)")
    pefs.add_argument("--adapter", help="how a transformers checkpoint's outputs become classes: "
                                        f"{', '.join(sorted(ADAPTERS))} (default: the first that reads it, "
                                        "or its npeff_adapter.json)")
    pefs.add_argument("--option", action="append", metavar="KEY=VALUE",
                      help="an adapter option, repeatable: template=..., verbalizer=word,word (causal-lm-classifier), "
                           "top_k_classes=N (causal-lm-next-token)")
    pefs.add_argument("--data", help="CSV/JSONL/Parquet or .npz file")
    pefs.add_argument("--text-column", action="append", help="text column (twice for sentence pairs)")
    pefs.add_argument("--label-column", help="label column (class names or indices)")
    pefs.add_argument("--scope", help="'all', 'last:N' or 're:PATTERN' (demo default: text last:1, image all)")
    pefs.add_argument("--kind", choices=list(VARIANTS), default=DEFAULT_VARIANT, help="NPEFF variant of the PEFs")
    pefs.add_argument("--values-per-example", type=int,
                      help="keep the k largest entries (default: min(2048, parameters in scope × classes); 0: all)")
    pefs.add_argument("--top-k-classes", type=int,
                      help="LRM: keep the k most probable classes (default: all; a next-token model's top_k_classes)")
    pefs.add_argument("--chunk-size", type=int, default=128, help="examples committed together (resume unit)")
    pefs.add_argument("--batch-size", type=int, default=16)
    pefs.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    pefs.add_argument("--yes", action="store_true",
                      help="start even when the estimate exceeds the free disk or the available memory")
    pefs.set_defaults(func=_pefs)

    fit = sub.add_parser("fit", help="fit LRM-/D-NPEFF to a PEF run (torchrun splits the parameters)")
    fit.add_argument("--pefs", required=True, help="id of a complete PEF run")
    fit.add_argument("--components", type=int, required=True)
    fit.add_argument("--iters", type=int, default=300)
    fit.add_argument("--g-only-iters", type=int, help="LRM: G-only warm-up iterations")
    fit.add_argument("--step", choices=["line_search", "plain"],
                     help="LRM G step: exact line search along -grad (default), or the reference's plain G -= lr*grad")
    fit.add_argument("--lr", type=float, help="LRM: multiplies the line-search step, or the plain step's rate")
    fit.add_argument("--ortho-reg", type=float, help="LRM: orthogonal regularization strength")
    fit.add_argument("--tol", type=float, help="stop when the loss changes by less than this (relative)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--device")
    fit.set_defaults(func=_fit)

    coeffs = sub.add_parser("fit-coeffs", help="coefficients of another PEF run against a decomposition")
    coeffs.add_argument("--decomposition", required=True, help="id of a complete NPEFF run")
    coeffs.add_argument("--pefs", required=True, help="id of a complete PEF run of the same model and scope")
    coeffs.add_argument("--iters", type=int, default=200)
    coeffs.add_argument("--seed", type=int, default=0)
    coeffs.add_argument("--device")
    coeffs.set_defaults(func=_fit_coeffs)

    merge = sub.add_parser("merge", help="merge 2+ models by isotropic averaging and Fisher merging over λ")
    merge.add_argument("--demo", action="store_true", help="the merge-pair demo: CNNs on digits 0-4 and 5-9")
    merge.add_argument("--model", action="append", default=[], help="a checkpoint to merge (repeat per model)")
    merge.add_argument("--fisher-data", action="append", default=[], help="its Fisher's dataset (repeat per model)")
    merge.add_argument("--eval-data", action="append", default=[], help="its validation dataset (repeat per model)")
    merge.add_argument("--name", action="append", default=[], help="its task's name (default A, B, ...)")
    merge.add_argument("--text-column", action="append", default=[], help="text column(s) of text datasets")
    merge.add_argument("--label-column", help="label column of text datasets")
    merge.add_argument("--scope", default="all", help="all | last:N | re:PATTERN (default: all)")
    merge.add_argument("--methods", nargs="+", default=["average", "fisher"], help="merge methods to sweep")
    merge.add_argument("--lambdas", type=int, default=51, help="values of λ in [0, 1] (default: 51, the paper's)")
    merge.add_argument("--empirical", action="store_true", help="empirical Fisher (gold label) instead of the "
                                                                "expectation over the model's classes")
    merge.add_argument("--normalize", action="store_true", help="divide each Fisher by its L2 norm first")
    merge.add_argument("--floor", type=float, default=FISHER_FLOOR, help="Fisher floor (default: %(default)s)")
    merge.add_argument("--batch-size", type=int, default=32)
    merge.add_argument("--device", default=None)
    merge.add_argument("--out", help="folder for merge_sweep.csv and the figures (default: <workspace>/merges/RUN)")
    merge.add_argument("--png", action="store_true", help="also export the figures as PNG (needs Chromium)")
    merge.set_defaults(func=_merge)

    runs = sub.add_parser("runs", help="list the runs in the workspace")
    runs.set_defaults(func=_runs)

    jobs = sub.add_parser("jobs", help="list the background jobs (those whose process died are marked failed)")
    jobs.set_defaults(func=_jobs)
    job = sub.add_parser("job", help="run a job the dashboard queued").add_subparsers(dest="job_command",
                                                                                       required=True)
    job_run = job.add_parser("run", help="run a queued job in this process (its progress goes to the workspace)")
    job_run.add_argument("id", help="job id")
    job_run.set_defaults(func=_job_run)
    return p


def main(argv: list[str] | None = None, *, resources: Resources | None = None) -> int:
    """Run one command; `resources` replaces the machine's free disk and memory in the estimate check (tests)."""
    args = parser().parse_args(argv)
    args.resources = resources
    try:
        return args.func(args)
    except JobCancelled as e:
        print(str(e), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt as e:
        if args.debug:
            traceback.print_exc()
        print(describe_error(e), file=sys.stderr)  # "interrupted"
        return EXIT_INTERRUPTED
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        else:
            print(f"error: {describe_error(e)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
