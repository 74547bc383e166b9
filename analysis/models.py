"""Load models safely and wrap them behind one interface (ClassifierModel).

ClassifierModel is an nn.Module whose forward takes a dict batch and returns class logits [B, C] through
its model adapter (analysis.adapters), so torch.func.functional_call/vmap work on it directly.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn

from analysis.adapters import ModelAdapter, adapter_class, checkpoint_adapters
from analysis.adapters.images import (IMAGENET_MEAN, IMAGENET_STD, PREPROCESSOR_CONFIG, ImageModule, Preprocessing,
                                      TorchvisionClassifier)
from analysis.image_models import build_image_model
from analysis.parameters import has_layer_index, layer_of, module_of
from analysis.safe_io import (DEFAULT_MAX_UNPACKED_BYTES, conversion_command, load_state_dict, safe_extract_zip,
                              sha256_files, tensor_dtypes)

IMAGE_CONFIG = "npeff_image_config.json"  # {"architecture", "label_names", "kwargs"} beside the weights
ADAPTER_CONFIG = "npeff_adapter.json"  # {"adapter": kind, "options": {...}}: how a checkpoint folder is read
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class ParamScope:
    """Which parameters per-example Fishers are taken over: all, a name regex, or last N layers + head."""

    mode: Literal["all", "pattern", "last_layers"] = "all"
    pattern: str = ""
    n_layers: int = 1

    def describe(self) -> str:
        return {"all": "all parameters", "pattern": f"names matching /{self.pattern}/",
                "last_layers": f"last {self.n_layers} layer(s) + head"}[self.mode]

    def to_dict(self) -> dict:
        """The scope as data (stored with the runs computed over it)."""
        return {"mode": self.mode, "pattern": self.pattern, "n_layers": self.n_layers}

    def select(self, named: list[tuple[str, nn.Parameter]], layer_of: Callable[[str], str] = layer_of) -> list[str]:
        """Names in scope, in named_parameters() order; layer_of names each parameter's layer."""
        names = [n for n, _ in named]
        if self.mode == "all":
            return names
        if self.mode == "pattern":
            try:
                rx = re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"parameter pattern /{self.pattern}/ is not a valid regex: {e}") from e
            chosen = [n for n in names if rx.search(n)]
            if not chosen:
                raise ValueError(f"parameter pattern /{self.pattern}/ matches no parameter; "
                                 f"names look like {names[:3]}")
            return chosen
        if self.mode == "last_layers":
            if self.n_layers < 1:
                raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
            return _last_layers(names, self.n_layers, layer_of)
        raise ValueError(f"scope mode must be 'all', 'pattern' or 'last_layers', got '{self.mode}'")


def _last_layers(names: list[str], n_layers: int, layer_of: Callable[[str], str]) -> list[str]:
    """Last n numbered layers plus every parameter after them (pooler, classifier head).

    Models without numbered layers (small CNNs/MLPs) count each module as a layer.
    """
    indexed = [i for i, n in enumerate(names) if has_layer_index(n)]
    if indexed:
        layers = list(dict.fromkeys(layer_of(names[i]) for i in indexed))
        keep = set(layers[-n_layers:])
        return [n for i, n in enumerate(names) if layer_of(n) in keep or i > indexed[-1]]
    modules = list(dict.fromkeys(module_of(n) for n in names))
    keep = set(modules[-n_layers:])
    return [n for n in names if module_of(n) in keep]


@dataclass(frozen=True)
class ModelSummary:
    """What the Load page shows about a model."""

    name: str
    architecture: str
    adapter: str  # the adapter's title
    input_kind: str  # what the model reads ("text", "image")
    label_names: tuple[str, ...]
    n_parameters: int
    n_parameters_in_scope: int
    scope: str
    content_hash: str
    notes: tuple[str, ...]  # what loading changed without refusing, e.g. weights cast from float16


class ClassifierModel(nn.Module):
    """One interface for every model: forward(batch dict) -> class logits [B, C], through its adapter."""

    def __init__(self, net: nn.Module, *, adapter: ModelAdapter, name: str, content_hash: str,
                 scope: ParamScope = ParamScope(), notes: tuple[str, ...] = ()):
        super().__init__()
        self.net = net.eval()
        self.adapter = adapter
        self.name = name
        self.content_hash = content_hash
        self.scope = scope
        self.notes = tuple(notes)
        self.eval()  # the wrapper too: a module in training mode makes per-example Fishers batch-dependent
        self.param_names_in_scope()  # validate the scope now, with the model's names in the message

    @property
    def label_names(self) -> list[str]:
        return self.adapter.label_names

    @property
    def input_kind(self) -> str:
        """What the model reads ("text", "image"): the kind of dataset its adapter takes."""
        return self.adapter.data.kind

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class logits [B, C] of a batch made by the adapter."""
        return self.adapter.logits(self.net, batch)

    def param_names_in_scope(self) -> list[str]:
        """Names (as in self.named_parameters()) of the parameters that Fishers are taken over."""
        return self.scope.select(list(self.named_parameters()), lambda name: self.adapter.layer_of(name))

    def with_scope(self, scope: ParamScope) -> "ClassifierModel":
        """A view sharing these weights under another parameter scope (validated; self is unchanged)."""
        return ClassifierModel(self.net, adapter=self.adapter, name=self.name, content_hash=self.content_hash,
                               scope=scope, notes=self.notes)

    def summary(self) -> ModelSummary:
        params = dict(self.named_parameters())
        in_scope = self.param_names_in_scope()
        return ModelSummary(
            name=self.name, architecture=type(self.net).__name__, adapter=self.adapter.title,
            input_kind=self.input_kind, label_names=tuple(self.label_names),
            n_parameters=sum(p.numel() for p in params.values()),
            n_parameters_in_scope=sum(params[n].numel() for n in in_scope), scope=self.scope.describe(),
            content_hash=self.content_hash, notes=self.notes)


def _check_no_remote_code(config_path: Path) -> dict:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{config_path}: not valid JSON ({e}); re-save the config with save_pretrained") from e
    if "auto_map" in config:
        raise ValueError(f"{config_path}: this model needs custom code (auto_map); NPEFF Explorer never runs "
                         "trust_remote_code. Use a checkpoint of a built-in transformers architecture.")
    return config


# the weights from_pretrained reads in a folder, one file or a shard index, in the order it prefers them
# (Hub snapshots often hold both formats; the safetensors copy is the one read, the pickle is never opened)
HF_WEIGHTS = (("model.safetensors", "model.safetensors.index.json"), ("pytorch_model.bin", "pytorch_model.bin.index.json"))
# what to do about weights that do not fit the architecture, for a bare weights file and for a folder
BARE_FIX = "pick the config/architecture the weights were saved from"
FOLDER_FIX = ("config.json and the weights are not from the same model; save both from the trained model with "
              "save_pretrained")


def _checkpoint_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.suffix == ".json")]


def _weight_files(folder: Path, source: str) -> list[Path]:
    """The weights of the one checkpoint in a folder: one file, or the shards its index lists.

    Of a Hugging Face folder, the format from_pretrained prefers (safetensors over pickles). Two candidates of
    one format (a single file beside a shard index, two weight files beside an image config) are refused:
    loading would silently pick one of them.
    """
    if (folder / IMAGE_CONFIG).exists():
        found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    else:
        found = next(([folder / n for n in names if (folder / n).is_file()] for names in HF_WEIGHTS
                      if any((folder / n).is_file() for n in names)), [])
    if not found:
        raise ValueError(f"{source}: no weights file; expected model.safetensors (or pytorch_model.bin)")
    if len(found) > 1:
        raise ValueError(f"{source}: holds {len(found)} weight files for one config "
                         f"({', '.join(p.name for p in found)}); keep the one you mean and delete the others")
    if found[0].name.endswith(".index.json"):
        return sorted({folder / shard for shard in json.loads(found[0].read_text())["weight_map"].values()})
    return found


def _few(items: list[str]) -> str:
    """The first three of a sorted list, and how many more there are."""
    return f"{items[:3]}" + (f" and {len(items) - 3} more" if len(items) > 3 else "")


def _refuse_mismatch(source: str, missing, unexpected, mismatched, fix: str) -> None:
    """Refuse weights that would leave parameters at random values: missing, unexpected or mis-shaped keys.

    `mismatched` holds (key, shape in the weights, shape in the model) triples.
    """
    problems = [f"{label} {_few(sorted(keys))}" for label, keys in (("missing", missing), ("unexpected", unexpected))
                if keys]
    if mismatched:
        shapes = [f"{k}: weights {tuple(a)}, model {tuple(b)}" for k, a, b in sorted(mismatched, key=lambda m: m[0])]
        problems.append(f"shapes differ for {_few(shapes)}")
    if problems:
        raise ValueError(f"{source}: weights do not match the architecture ({'; '.join(problems)}); {fix}")


def _cast_notes(source: str, net: nn.Module, stored: dict[str, torch.dtype]) -> tuple[str, ...]:
    """Refuse non-float weights where `net` holds floats; one note per other dtype cast.

    Keys are compared as stored: one that transformers renames on loading (legacy names) is not compared.
    """
    expected = {k: v.dtype for k, v in net.state_dict().items()}
    casts = {k: (stored[k], expected[k]) for k in stored.keys() & expected.keys() if stored[k] != expected[k]}
    not_float = sorted(k for k, (src, dst) in casts.items() if dst.is_floating_point and not src.is_floating_point)
    if not_float:
        shown = [f"{k} ({str(casts[k][0]).removeprefix('torch.')})" for k in not_float]
        raise ValueError(f"{source}: weights {_few(shown)} are not floating point where the model holds floats "
                         "(quantized or corrupted weights); save the trained model's float weights again")
    counts = Counter(casts.values())
    return tuple(f"{source}: {n} weight tensor(s) stored as {str(src).removeprefix('torch.')} were loaded as "
                 f"{str(dst).removeprefix('torch.')}" for (src, dst), n in sorted(counts.items(), key=str))


def _hf_net(model_class: type, source: str, fix: str, pretrained: str | None, config, **load) -> nn.Module:
    """A transformers network of `model_class` from a folder (`pretrained`) or from `state_dict=` (pretrained None).

    Refused when weights are missing, unexpected or of another shape (transformers only logs these and
    starts the parameters at random values); keys it declares ignorable (tied weights, its
    _keys_to_ignore_on_load_* patterns) pass.
    """
    net, info = model_class.from_pretrained(pretrained, config=config, attn_implementation="eager",
                                            output_loading_info=True, ignore_mismatched_sizes=True, **load)
    _refuse_mismatch(source, info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"], fix)
    return net


@dataclass(frozen=True)
class AdapterChoice:
    """How a transformers checkpoint is read: the adapters that can, and the one chosen with its options."""

    kinds: tuple[str, ...]  # the registered adapters that read the checkpoint, the default first
    kind: str  # as asked, else as the folder's npeff_adapter.json says, else kinds[0]
    options: tuple[tuple[str, object], ...]  # the adapter's options as (name, value) pairs


def adapter_choice(config, folder: Path, adapter: str | None = None, options: dict | None = None) -> AdapterChoice:
    """The adapter that reads a transformers checkpoint of `config` in `folder` (the registry lists those that
    can), and its options; an adapter asked for that cannot read it is refused, naming those that can."""
    kinds = checkpoint_adapters(config, str(folder))
    declared = folder / ADAPTER_CONFIG
    if adapter is None and declared.exists():
        spec = json.loads(declared.read_text(encoding="utf-8"))
        adapter, options = spec["adapter"], {**spec.get("options", {}), **(options or {})}
    kind = adapter or kinds[0]
    adapter_class(kind)  # an unknown name lists the registered ones
    if kind not in kinds:
        saved = ", ".join(config.architectures or []) or f"a '{config.model_type}' config"
        raise ValueError(f"{folder}: adapter '{kind}' does not read a checkpoint saved as {saved}; "
                         f"use one of {kinds}")
    return AdapterChoice(tuple(kinds), kind, tuple((options or {}).items()))


def read_config(folder: Path):
    """The transformers config in a checkpoint folder, from local files only, refusing remote code."""
    from transformers import AutoConfig

    _check_no_remote_code(folder / "config.json")
    return AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)


def _transformers_model(config, folder: Path, source: str, fix: str, pretrained: str | None, *, adapter: str | None,
                        options: dict | None, max_length: int, **load) -> tuple[nn.Module, ModelAdapter]:
    """The network (from the folder, or from `state_dict=`) and adapter of a transformers checkpoint whose
    config, tokenizer and image processor lie in `folder`, read through the adapter adapter_choice picks."""
    choice = adapter_choice(config, folder, adapter, options)
    cls = adapter_class(choice.kind)
    net = _hf_net(cls.transformers_class(config), source, fix, pretrained, config, **load)
    return net, cls.from_checkpoint(net, folder, dict(choice.options), max_length)


def load_hf_folder(folder: Path, *, scope: ParamScope = ParamScope(), max_length: int = 128,
                   adapter: str | None = None, options: dict | None = None) -> ClassifierModel:
    """A Hugging Face checkpoint folder (config.json + weights + tokenizer or image processor), read through
    `adapter` with `options` (default: its npeff_adapter.json, else the first adapter that reads it)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder; give the folder that holds config.json")
    if (folder / IMAGE_CONFIG).exists():
        if adapter is not None or options:
            raise ValueError(f"{folder}: adapter and options apply to transformers checkpoints, not to an image model")
        return load_image_folder(folder, scope=scope)
    config_path = folder / "config.json"
    if not config_path.exists():
        raise ValueError(f"{folder}: no config.json; a Hugging Face checkpoint folder needs config.json, "
                         "model.safetensors and tokenizer files")
    config = read_config(folder)
    weights = _weight_files(folder, str(folder))
    try:
        net, model_adapter = _transformers_model(config, folder, str(folder), FOLDER_FIX, str(folder),
                                                 adapter=adapter, options=options, max_length=max_length,
                                                 local_files_only=True, weights_only=True)
    except Exception as e:
        if "weights_only" in str(e) or "Unpickl" in type(e).__name__ or "unpickl" in str(e).lower():
            pickled = sorted(p.name for p in folder.glob("pytorch_model*.bin*"))
            convert = conversion_command([p.resolve() for p in weights], (folder / "model.safetensors").resolve())
            raise ValueError(f"{folder}: the weights need unpickling of arbitrary objects; convert them to "
                             f"model.safetensors, only if you trust the files, with `{convert}`, then delete "
                             f"{', '.join(pickled)}") from e
        raise
    notes = _cast_notes(str(folder), net, {k: d for path in weights for k, d in tensor_dtypes(path).items()})
    return ClassifierModel(net, adapter=model_adapter, name=folder.name,
                           content_hash=sha256_files(_checkpoint_files(folder)), scope=scope, notes=notes)


def load_image_folder(folder: Path, *, scope: ParamScope = ParamScope()) -> ClassifierModel:
    """A folder with npeff_image_config.json and a safetensors state dict of a registered architecture."""
    folder = Path(folder)
    cfg = json.loads((folder / IMAGE_CONFIG).read_text())
    weights = _weight_files(folder, str(folder))
    return load_weights_file(weights[0], architecture=cfg["architecture"], label_names=cfg["label_names"],
                             arch_kwargs=cfg.get("kwargs", {}), scope=scope, name=folder.name)


# torchvision classifiers by name: "torchvision:<name>" as an architecture; their classifier takes num_classes
TORCHVISION_PREFIX = "torchvision:"
TORCHVISION_ARCHITECTURES = ("convnext_tiny", "efficientnet_b0", "mobilenet_v3_small", "resnet18", "resnet50",
                             "vit_b_16")


def _torchvision_net(name: str, n_classes: int, kwargs: dict) -> nn.Module:
    """torchvision.models.get_model(name, weights=None, num_classes=n_classes, **kwargs): nothing downloaded."""
    if name not in TORCHVISION_ARCHITECTURES:
        raise ValueError(f"torchvision architecture must be one of {list(TORCHVISION_ARCHITECTURES)}, got '{name}'")
    try:
        import torchvision
    except (ImportError, RuntimeError) as e:
        raise ValueError(f"torchvision:{name} needs torchvision, which cannot be imported here ({e}); install the "
                         "torchvision release built for this torch (torchvision 0.28 for torch 2.13)") from e
    return torchvision.models.get_model(name, weights=None, num_classes=n_classes, **kwargs)


def load_torchvision_weights(path: Path, state: dict[str, torch.Tensor], architecture: str,
                             label_names: list[str], arch_kwargs: dict, *, scope: ParamScope = ParamScope(),
                             name: str | None = None) -> ClassifierModel:
    """A torchvision classifier `architecture` (e.g. "resnet18") with a safetensors (or weights_only) state
    dict, strictly loaded.

    arch_kwargs: image_mean, image_std (default ImageNet's) and size [height, width] (default: images as
    stored) set the preprocessing; the rest go to the architecture (e.g. image_size for vit_b_16).
    """
    kwargs = dict(arch_kwargs)
    size = kwargs.pop("size", None)
    preprocessing = Preprocessing(channels=3, mean=tuple(kwargs.pop("image_mean", IMAGENET_MEAN)),
                                  std=tuple(kwargs.pop("image_std", IMAGENET_STD)),
                                  size=tuple(size) if size is not None else None)
    net = _torchvision_net(architecture, len(label_names), kwargs)
    notes = _load_strict(net, state, path)
    return ClassifierModel(net, adapter=TorchvisionClassifier(label_names, preprocessing),
                           name=name or path.stem, content_hash=sha256_files([path]), scope=scope,
                           notes=notes)


def load_weights_file(path: Path, *, config: Path | None = None, architecture: str | None = None,
                      label_names: list[str] | None = None, arch_kwargs: dict | None = None,
                      scope: ParamScope = ParamScope(), name: str | None = None, adapter: str | None = None,
                      options: dict | None = None) -> ClassifierModel:
    """A bare state dict (.safetensors, or .bin/.pt read with weights_only=True) plus either a HF
    config (config.json or its folder, tokenizer beside it; `adapter`/`options` as for a folder; an image
    classifier's preprocessor_config.json beside it) or an image architecture: a registered one, or
    "torchvision:<name>" (TORCHVISION_ARCHITECTURES)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    state = load_state_dict(path)
    if (config is None) == (architecture is None):
        raise ValueError(f"{path.name}: give exactly one of a config.json (transformers) or an image architecture")
    if architecture is not None:
        if adapter is not None or options:
            raise ValueError(f"{path.name}: adapter and options apply to transformers checkpoints, not to an "
                             "image architecture")
        if not label_names:
            raise ValueError(f"{path.name}: label_names are required for an image architecture")
        if architecture.startswith(TORCHVISION_PREFIX):
            return load_torchvision_weights(path, state, architecture.removeprefix(TORCHVISION_PREFIX),
                                            label_names, arch_kwargs or {}, scope=scope, name=name)
        net = build_image_model(architecture, n_classes=len(label_names), **(arch_kwargs or {}))
        notes = _load_strict(net, state, path)
        return ClassifierModel(net, adapter=ImageModule(label_names), name=name or path.stem,
                               content_hash=sha256_files([path]), scope=scope, notes=notes)
    config = Path(config)
    config_path = config if config.name == "config.json" else config / "config.json"
    if not config_path.exists():
        raise ValueError(f"{config_path}: no such config; give the config.json that matches {path.name}")
    net, model_adapter = _transformers_model(read_config(config_path.parent), config_path.parent, path.name,
                                             BARE_FIX, None, adapter=adapter, options=options, max_length=128,
                                             state_dict=state)
    files = [path, config_path] + [f for f in [config_path.parent / PREPROCESSOR_CONFIG] if f.is_file()]
    return ClassifierModel(net, adapter=model_adapter, name=name or path.stem, content_hash=sha256_files(files),
                           scope=scope, notes=_cast_notes(path.name, net, {k: v.dtype for k, v in state.items()}))


def _load_strict(net: nn.Module, state: dict[str, torch.Tensor], path: Path) -> tuple[str, ...]:
    """Copy a state dict into a plain module, refusing missing, unexpected, mis-shaped and non-float weights."""
    expected = net.state_dict()
    _refuse_mismatch(path.name, expected.keys() - state.keys(), state.keys() - expected.keys(),
                     [(k, state[k].shape, expected[k].shape) for k in state.keys() & expected.keys()
                      if state[k].shape != expected[k].shape], BARE_FIX)
    notes = _cast_notes(path.name, net, {k: v.dtype for k, v in state.items()})
    net.load_state_dict(state)
    return notes


def _checkpoint_in(folder: Path, zip_name: str) -> Path:
    """The one checkpoint inside an extracted zip: a folder with config.json or the image config beside weights."""
    roots = sorted({marker.parent for name in ("config.json", IMAGE_CONFIG) for marker in folder.rglob(name)
                    if any(p.suffix in WEIGHT_SUFFIXES for p in marker.parent.iterdir())})
    where = [zip_name if r == folder else f"{zip_name}/{r.relative_to(folder).as_posix()}" for r in roots]
    if not roots:
        raise ValueError(f"{zip_name}: holds no checkpoint (a folder with config.json or {IMAGE_CONFIG} beside "
                         "its weights); zip the folder that save_pretrained wrote")
    if len(roots) > 1:
        raise ValueError(f"{zip_name}: holds {len(roots)} checkpoints ({', '.join(where)}); "
                         "zip one checkpoint folder per upload")
    _weight_files(roots[0], where[0])
    return roots[0]


def load_model(path: Path | str, *, scope: ParamScope = ParamScope(), extract_root: Path | None = None,
               max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES, adapter: str | None = None,
               options: dict | None = None, **weights_kwargs) -> ClassifierModel:
    """Load a checkpoint folder, a zipped checkpoint folder, or a bare weights file (with config/architecture).

    `adapter` (a registered kind) and its `options` say how a transformers checkpoint is read (default: the
    folder's npeff_adapter.json, else the first of analysis.adapters.checkpoint_adapters, e.g. free-form next
    token for a causal LM); image architectures and image folders are read as they declare.
    A zip is extracted under `extract_root` into a folder named by its content hash; that folder is deleted
    when the checkpoint in it is refused.
    """
    how = {"adapter": adapter, "options": options}
    path = Path(path)
    weights_kwargs = {k: v for k, v in weights_kwargs.items() if v is not None}
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if weights_kwargs and path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"{path.name}: {sorted(weights_kwargs)} only apply to a bare weights file; a checkpoint "
                         "folder or zip carries its own config")
    if path.is_dir():
        return load_hf_folder(path, scope=scope, **how)
    if path.suffix == ".zip":
        root = Path(extract_root) if extract_root else Path(tempfile.mkdtemp(prefix="npeff-zip-"))
        extracted = safe_extract_zip(path, root, max_unpacked_bytes)
        try:
            return load_hf_folder(_checkpoint_in(extracted, path.name), scope=scope, **how)
        except BaseException:
            shutil.rmtree(extracted, ignore_errors=True)
            raise
    if path.suffix in WEIGHT_SUFFIXES:
        return load_weights_file(path, scope=scope, **how, **weights_kwargs)
    raise ValueError(f"{path.name}: unsupported model file; give a checkpoint folder, a .zip of one, "
                     "or a .safetensors state dict with a config")


def save_image_model(model: nn.Module, folder: Path, *, architecture: str, label_names: list[str],
                     arch_kwargs: dict | None = None) -> Path:
    """Save a registered image architecture as safetensors + npeff_image_config.json."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / IMAGE_CONFIG).write_text(json.dumps(
        {"architecture": architecture, "label_names": label_names, "kwargs": arch_kwargs or {}}, indent=2))
    return folder
