"""What text adapters share: tokenizing examples into padded batches, attention masks that vmap, the attributed
input (word embeddings), and the text shown for an example with its tokens' character spans.

transformers' own mask code does not run under torch.func.vmap (it calls `padding_mask.all()`), so the
adapters pass prepared 4-D additive masks: [B, 1, 1, L] (padding only) for encoders, [B, 1, L, L]
(causal and padding) for decoder-only models, whose own causal mask a 4-D mask replaces.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from analysis.adapters.base import AttributedInput, Batch, ModelAdapter
from analysis.datasets import PAIR_SEPARATOR, Dataset, TextDataset

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")  # tokenizer.json read as it is


def padding_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [B, 1, 1, L] from mask [B, L]: 0 where attended, dtype-min at padding (no .all(): vmap-safe)."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def causal_padding_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [B, 1, L, L] from mask [B, L]: query i sees key j when j <= i and j is not padding."""
    L = mask.shape[-1]
    causal = torch.ones(L, L, dtype=torch.bool, device=mask.device).tril()  # [L, L]
    allowed = causal[None, None] & mask[:, None, None, :].bool()  # [B, 1, L, L]
    return (~allowed).to(dtype) * torch.finfo(dtype).min


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids [B, L] counting real tokens only, so a left-padded example gets the ids it has unpadded."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def is_decoder_only(config) -> bool:
    """A causal LM architecture without a masked-LM form (GPT-2, GPT-NeoX, Llama, Qwen2 ...), as opposed to
    encoders such as BERT, which transformers also offers as causal LMs but which attend both ways."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_MASKED_LM_MAPPING

    return type(config) in MODEL_FOR_CAUSAL_LM_MAPPING and type(config) not in MODEL_FOR_MASKED_LM_MAPPING


def with_pad_token(tokenizer):
    """Decoder-only tokenizers (GPT-2, Llama) often have no padding token: pad with end-of-sequence."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has neither a padding nor an end-of-sequence "
                             "token; set tokenizer.pad_token and save it again")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(folder: Path):
    """The tokenizer saved in a checkpoint folder, from local files only, without remote code."""
    from transformers import AutoTokenizer

    if not any((folder / f).exists() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise ValueError(f"{folder}: no tokenizer files (tokenizer.json or vocab.txt); save the tokenizer "
                         "with tokenizer.save_pretrained(folder) next to the weights")
    saved = folder / "tokenizer_config.json"
    saved_class = json.loads(saved.read_text(encoding="utf-8")).get("tokenizer_class") if saved.exists() else None
    if saved_class in GENERIC_TOKENIZERS and (folder / "tokenizer.json").exists():
        # AutoTokenizer would pick the model type's own class (Qwen2Tokenizer ...), which rebuilds the
        # tokenizer from vocab and merges and mangles a word-level tokenizer.json; read the file as saved
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)


class TextAdapter(ModelAdapter):
    """Tokenized text inputs: batches of input_ids / attention_mask (/ token_type_ids) padded on one side."""

    data = TextDataset
    padding_side = "right"

    def __init__(self, tokenizer, max_length: int = 128):
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.tokenizer, self.max_length = tokenizer, max_length

    def texts(self, dataset: TextDataset) -> list[tuple[str, ...]]:
        """The model's input text(s) of each example (prompt templates rewrite them)."""
        return dataset.texts

    def encode(self, texts: list[tuple[str, ...]]) -> Batch:
        """Token inputs of some examples, padded to the longest of them on `padding_side`."""
        columns = [list(c) for c in zip(*texts)]
        enc = self.tokenizer(*columns, padding=True, truncation=True, max_length=self.max_length,
                             padding_side=self.padding_side, return_tensors="pt")
        return {k: v for k, v in enc.items() if k in TOKEN_INPUTS}

    def batches(self, dataset: TextDataset, batch_size: int) -> Iterator[Batch]:
        texts = self.texts(dataset)
        for start in range(0, len(dataset), batch_size):
            batch = self.encode(texts[start:start + batch_size])
            batch["labels"] = torch.as_tensor(np.asarray(dataset.labels[start:start + batch_size]))
            yield batch

    def input_sizes(self, dataset: TextDataset) -> np.ndarray:
        columns = [list(c) for c in zip(*self.texts(dataset))]
        ids = self.tokenizer(*columns, truncation=True, max_length=self.max_length)["input_ids"]
        return np.array([len(i) for i in ids], dtype=np.int64)

    def _baseline(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Same shape [B, L], sequence markers ([CLS], [SEP], <s>, </s>) kept, every other token replaced by padding."""
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        markers = torch.tensor(sorted({tok.cls_token_id, tok.sep_token_id, tok.bos_token_id, tok.eos_token_id}
                                      - {None, pad}), dtype=input_ids.dtype)
        return torch.where(torch.isin(input_ids, markers), input_ids, torch.full_like(input_ids, pad))

    def attributed_input(self, forward: Callable[[Batch], torch.Tensor], net: nn.Module,
                         batch: Batch) -> AttributedInput:
        """The word-embedding layer's output (what LayerIntegratedGradients attributes): replaced through a forward
        hook, so position and type embeddings are added to the replacement as to the original."""
        embed = net.get_input_embeddings()
        ids = batch["input_ids"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            x, baseline = embed(ids), embed(self._baseline(ids))  # [B, L, D] each

        def run(replacement: torch.Tensor) -> torch.Tensor:
            steps = replacement.shape[0] // ids.shape[0]  # integrated gradients stacks its steps step-major
            handle = embed.register_forward_hook(lambda _module, _args, _output: replacement)
            try:
                return forward({k: v.repeat(steps, *[1] * (v.ndim - 1)) for k, v in inputs.items()})
            finally:
                handle.remove()

        return AttributedInput(inputs=x, baselines=baseline, run=run, summed=(-1,),
                               tokens=[self.tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()],
                               real=batch["attention_mask"].bool())

    def display_spans(self, dataset: Dataset) -> list[np.ndarray]:
        """Token character spans in the display text (the parts joined by PAIR_SEPARATOR), from the tokenizer's
        offsets; the tokens are those `encode` gives each example, padding left out."""
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"token highlighting needs a fast tokenizer (character offsets), got "
                             f"{type(self.tokenizer).__name__}; save the model with its tokenizer.json")
        spans = []
        for parts in self.texts(dataset):
            enc = self.tokenizer(*[[p] for p in parts], truncation=True, max_length=self.max_length,
                                 return_offsets_mapping=True)
            shift = np.cumsum([0] + [len(p) + len(PAIR_SEPARATOR) for p in parts[:-1]])  # [parts] start in display
            spans.append(np.array([(-1, -1) if part is None else (start + shift[part], end + shift[part])
                                   for (start, end), part in zip(enc["offset_mapping"][0], enc.sequence_ids(0))],
                                  dtype=np.int64).reshape(-1, 2))
        return spans

    def display_texts(self, dataset: Dataset) -> list[str]:
        return dataset.display_texts()

    def display_images(self, dataset: Dataset) -> None:
        return None
