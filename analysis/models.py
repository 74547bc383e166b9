"""Load sequence/image classifiers safely and wrap them behind one interface (ClassifierModel).

ClassifierModel is an nn.Module whose forward takes a dict batch and returns logits [B, C], so
torch.func.functional_call/vmap work on it directly (the text path builds the 4-D additive
attention mask itself: transformers' 2-D mask code does not vmap, see ECOSYSTEM.md).
"""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from analysis.image_models import build_image_model
from analysis.safe_io import DEFAULT_MAX_UNPACKED_BYTES, load_state_dict, safe_extract_zip, sha256_files

IMAGE_CONFIG = "npeff_image_config.json"  # {"architecture", "label_names", "kwargs"} beside the weights
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
LAYER_INDEX = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The given device, else CUDA when present, else the CPU."""
    return torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class ParamScope:
    """Which parameters per-example Fishers are taken over: all, a name regex, or last N layers + head."""

    mode: Literal["all", "pattern", "last_layers"] = "all"
    pattern: str = ""
    n_layers: int = 1

    def describe(self) -> str:
        return {"all": "all parameters", "pattern": f"names matching /{self.pattern}/",
                "last_layers": f"last {self.n_layers} layer(s) + head"}[self.mode]

    def select(self, named: list[tuple[str, nn.Parameter]]) -> list[str]:
        """Names in scope, in named_parameters() order."""
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
            return _last_layers(names, self.n_layers)
        raise ValueError(f"scope mode must be 'all', 'pattern' or 'last_layers', got '{self.mode}'")


def _block_of(name: str) -> str:
    """The block a parameter belongs to: its numbered layer for transformers, else its module path."""
    m = LAYER_INDEX.search(name)
    return name[: m.end()] if m else name.rsplit(".", 1)[0]


def _last_layers(names: list[str], n_layers: int) -> list[str]:
    """Last n numbered layers plus every parameter after them (pooler, classifier head).

    Models without numbered layers (small CNNs/MLPs) count each module as a layer.
    """
    indexed = [i for i, n in enumerate(names) if LAYER_INDEX.search(n)]
    if indexed:
        layers = list(dict.fromkeys(_block_of(names[i]) for i in indexed))
        keep = set(layers[-n_layers:])
        return [n for i, n in enumerate(names) if _block_of(n) in keep or i > indexed[-1]]
    blocks = list(dict.fromkeys(_block_of(n) for n in names))
    keep = set(blocks[-n_layers:])
    return [n for n in names if _block_of(n) in keep]


@dataclass(frozen=True)
class ModelSummary:
    """What the Load page shows about a model."""

    name: str
    architecture: str
    input_kind: str
    label_names: tuple[str, ...]
    n_parameters: int
    n_parameters_in_scope: int
    scope: str
    content_hash: str


class ClassifierModel(nn.Module):
    """One interface for every classifier: forward(batch dict) -> logits [B, C]."""

    def __init__(self, net: nn.Module, *, input_kind: Literal["text", "image"], label_names: list[str],
                 name: str, content_hash: str, tokenizer=None, max_length: int = 128,
                 scope: ParamScope = ParamScope()):
        super().__init__()
        self.net = net.eval()
        self.input_kind = input_kind
        self.label_names = list(label_names)
        self.name = name
        self.content_hash = content_hash
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.scope = scope
        self.param_names_in_scope()  # validate the scope now, with the model's names in the message

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits [B, C]; text batches carry input_ids/attention_mask [B, L], image batches pixels [B, H, W]."""
        if self.input_kind == "image":
            return self.net(batch["pixels"])
        mask = batch["attention_mask"]
        dtype = next(self.net.parameters()).dtype
        # additive mask [B, 1, 1, L]: 0 where attended, dtype-min where padded (vmap-safe, no .all())
        additive = (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        kwargs = {"input_ids": batch["input_ids"], "attention_mask": additive}
        if "token_type_ids" in batch:
            kwargs["token_type_ids"] = batch["token_type_ids"]
        return self.net(**kwargs).logits

    def param_names_in_scope(self) -> list[str]:
        """Names (as in self.named_parameters()) of the parameters that Fishers are taken over."""
        return self.scope.select(list(self.named_parameters()))

    def with_scope(self, scope: ParamScope) -> "ClassifierModel":
        """A view sharing these weights under another parameter scope (validated; self is unchanged)."""
        return ClassifierModel(self.net, input_kind=self.input_kind, label_names=self.label_names, name=self.name,
                               content_hash=self.content_hash, tokenizer=self.tokenizer,
                               max_length=self.max_length, scope=scope)

    def summary(self) -> ModelSummary:
        params = dict(self.named_parameters())
        in_scope = self.param_names_in_scope()
        return ModelSummary(
            name=self.name, architecture=type(self.net).__name__, input_kind=self.input_kind,
            label_names=tuple(self.label_names), n_parameters=sum(p.numel() for p in params.values()),
            n_parameters_in_scope=sum(params[n].numel() for n in in_scope), scope=self.scope.describe(),
            content_hash=self.content_hash)


def _check_no_remote_code(config_path: Path) -> dict:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{config_path}: not valid JSON ({e}); re-save the config with save_pretrained") from e
    if "auto_map" in config:
        raise ValueError(f"{config_path}: this model needs custom code (auto_map); NPEFF Explorer never runs "
                         "trust_remote_code. Use a checkpoint of a built-in transformers architecture.")
    return config


def _label_names(config) -> list[str]:
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    if not any((folder / f).exists() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise ValueError(f"{folder}: no tokenizer files (tokenizer.json or vocab.txt); save the tokenizer "
                         "with tokenizer.save_pretrained(folder) next to the weights")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)


def _checkpoint_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.suffix == ".json")]


def load_hf_folder(folder: Path, *, scope: ParamScope = ParamScope(), max_length: int = 128) -> ClassifierModel:
    """A Hugging Face sequence-classification checkpoint folder (config.json + weights + tokenizer)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder; give the folder that holds config.json")
    if (folder / IMAGE_CONFIG).exists():
        return load_image_folder(folder, scope=scope)
    config_path = folder / "config.json"
    if not config_path.exists():
        raise ValueError(f"{folder}: no config.json; a Hugging Face checkpoint folder needs config.json, "
                         "model.safetensors and tokenizer files")
    _check_no_remote_code(config_path)
    weights = [p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES]
    if not weights:
        raise ValueError(f"{folder}: no weights file; expected model.safetensors (or pytorch_model.bin)")
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    try:
        net = AutoModelForSequenceClassification.from_pretrained(
            str(folder), config=config, local_files_only=True, trust_remote_code=False, weights_only=True,
            attn_implementation="eager")
    except ValueError as e:
        if "sequence classification" in str(e).lower() or "Unrecognized configuration" in str(e):
            raise ValueError(f"{config_path}: architecture '{config.model_type}' has no sequence-classification "
                             "head in transformers; NPEFF Explorer needs a classifier") from e
        raise
    except Exception as e:
        if "weights_only" in str(e) or "Unpickl" in type(e).__name__ or "unpickl" in str(e).lower():
            raise ValueError(f"{folder}: the weights need unpickling of arbitrary objects; convert them to "
                             "model.safetensors (model.save_pretrained(folder, safe_serialization=True))") from e
        raise
    return ClassifierModel(net, input_kind="text", label_names=_label_names(net.config), name=folder.name,
                           content_hash=sha256_files(_checkpoint_files(folder)), tokenizer=_load_tokenizer(folder),
                           max_length=max_length, scope=scope)


def load_image_folder(folder: Path, *, scope: ParamScope = ParamScope()) -> ClassifierModel:
    """A folder with npeff_image_config.json and a safetensors state dict of a registered architecture."""
    folder = Path(folder)
    cfg = json.loads((folder / IMAGE_CONFIG).read_text())
    weights = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if not weights:
        raise ValueError(f"{folder}: no weights file next to {IMAGE_CONFIG}; expected model.safetensors")
    return load_weights_file(weights[0], architecture=cfg["architecture"], label_names=cfg["label_names"],
                             arch_kwargs=cfg.get("kwargs", {}), scope=scope, name=folder.name)


def load_weights_file(path: Path, *, config: Path | None = None, architecture: str | None = None,
                      label_names: list[str] | None = None, arch_kwargs: dict | None = None,
                      scope: ParamScope = ParamScope(), name: str | None = None) -> ClassifierModel:
    """A bare state dict (.safetensors, or .bin/.pt read with weights_only=True) plus either a HF
    config (config.json or its folder, tokenizer beside it) or a registered image architecture."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    state = load_state_dict(path)
    if (config is None) == (architecture is None):
        raise ValueError(f"{path.name}: give exactly one of a config.json (transformers) or an image architecture")
    if architecture is not None:
        if not label_names:
            raise ValueError(f"{path.name}: label_names are required for an image architecture")
        net = build_image_model(architecture, n_classes=len(label_names), **(arch_kwargs or {}))
        _load_strict(net, state, path)
        return ClassifierModel(net, input_kind="image", label_names=label_names, name=name or path.stem,
                               content_hash=sha256_files([path]), scope=scope)
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = Path(config)
    config_path = config if config.name == "config.json" else config / "config.json"
    if not config_path.exists():
        raise ValueError(f"{config_path}: no such config; give the config.json that matches {path.name}")
    _check_no_remote_code(config_path)
    hf_config = AutoConfig.from_pretrained(str(config_path.parent), local_files_only=True, trust_remote_code=False)
    net = AutoModelForSequenceClassification.from_config(hf_config, attn_implementation="eager")
    _load_strict(net, state, path)
    return ClassifierModel(net, input_kind="text", label_names=_label_names(hf_config), name=name or path.stem,
                           content_hash=sha256_files([path, config_path]),
                           tokenizer=_load_tokenizer(config_path.parent), scope=scope)


def _load_strict(net: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path.name}: weights do not match the architecture "
                         f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                         f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}); "
                         "pick the config/architecture the weights were saved from")


def load_model(path: Path | str, *, scope: ParamScope = ParamScope(), extract_root: Path | None = None,
               max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES, **weights_kwargs) -> ClassifierModel:
    """Load a checkpoint folder, a zipped checkpoint folder, or a bare weights file (with config/architecture)."""
    path = Path(path)
    weights_kwargs = {k: v for k, v in weights_kwargs.items() if v is not None}
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if weights_kwargs and path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"{path.name}: {sorted(weights_kwargs)} only apply to a bare weights file; a checkpoint "
                         "folder or zip carries its own config")
    if path.is_dir():
        return load_hf_folder(path, scope=scope)
    if path.suffix == ".zip":
        root = Path(extract_root) if extract_root else Path(tempfile.mkdtemp(prefix="npeff-zip-"))
        return load_hf_folder(safe_extract_zip(path, root / path.stem, max_unpacked_bytes), scope=scope)
    if path.suffix in WEIGHT_SUFFIXES:
        return load_weights_file(path, scope=scope, **weights_kwargs)
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
