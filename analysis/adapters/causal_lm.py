"""Causal language models (*ForCausalLM) as classifiers: the next-token logits at the last prompt position.

causal-lm-classifier   a prompt template with {column} fields and a verbalizer (one label word per class);
                       class logits are the next-token logits of the label words' first tokens [B, C].
causal-lm-next-token   the classes are the vocabulary: logits [B, V]; PEFs over the top_k_classes most
                       probable next tokens (TriviaQA-style free-form answers).

Both pad on the left, so the answer position is the last one in any batch, and pass a causal + padding
[B, 1, L, L] additive mask and position ids that count real tokens only: a padded example then gives the
logits it gives alone, and transformers' own mask code (which vmap rejects) never runs. What each family
needed, measured against a per-example autograd loop on tiny random configs (tests/integration/test_causal_lm.py):

GPT-2       learned absolute position embeddings: without position ids a left-padded example is shifted
            and its logits change; no padding token (pad with end-of-sequence, `with_pad_token`); its eager
            attention applies its own causal triangle and then adds the 4-D mask, so the mask carries it too.
GPT-NeoX    rotary embeddings over part of each head (rotary_pct): position ids, 4-D mask; nothing else.
Llama       rotary embeddings: position ids, 4-D mask (which replaces the causal mask transformers would
            build); its tokenizers prepend <s>, which stays inside the prompt (padding goes before it).
Qwen2       like Llama; the 4-D mask also stands in for the sliding-window mask (off in its default config).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from string import Formatter

import numpy as np
import torch
from torch import nn

from analysis.adapters.base import Batch, OptionSpec, register
from analysis.adapters.text import (TextAdapter, causal_padding_mask, is_decoder_only, load_tokenizer, positions,
                                    with_pad_token)
from analysis.datasets import TextDataset, hash_parts

DEFAULT_TOP_K = 8  # next-token classes per example in the PEFs unless the Compute page says otherwise


def _next_token_logits(net: nn.Module, batch: Batch) -> torch.Tensor:
    """Logits [B, V] of the token after the last position of left-padded prompts."""
    mask = batch["attention_mask"]
    dtype = next(net.parameters()).dtype
    out = net(input_ids=batch["input_ids"], attention_mask=causal_padding_mask(mask, dtype),
              position_ids=positions(mask), logits_to_keep=1)
    return out.logits[:, -1]


def _first_token(tokenizer, text: str) -> int | None:
    """Id of the first token `text` encodes to (no special tokens), or None when it encodes to nothing."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if ids else None


def _following_token(tokenizer, prompt: str, word: str) -> int | None:
    """Id of the first token `word` adds when it follows `prompt` (after a space unless the prompt ends in one):
    GPT-2's 'Ġpositive' after 'Sentiment:', not the 'positive' of the bare word. When the prompt's tokens are not
    a prefix of the joined text's (a merge across the boundary), the bare word's first token."""
    before = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    joined = prompt + word if prompt[-1:].isspace() else f"{prompt} {word}"
    after = tokenizer(joined, add_special_tokens=False)["input_ids"]
    if after[:len(before)] == before and len(after) > len(before):
        return after[len(before)]
    return _first_token(tokenizer, word)


class CausalLmAdapter(TextAdapter):
    """What both causal-LM adapters share: left padding and the next-token logits at the last position."""

    padding_side = "left"
    auto_mapping = "MODEL_FOR_CAUSAL_LM_MAPPING"
    checkpoint_classes = "decoder-only *ForCausalLM (GPT-2, GPT-NeoX, Llama, Qwen2 ...)"

    def __init__(self, tokenizer, max_length: int = 128):
        super().__init__(with_pad_token(tokenizer), max_length)

    @classmethod
    def reads_config(cls, config) -> bool:
        """A decoder-only architecture (not an encoder that transformers also offers as a causal LM) saved as
        its *ForCausalLM class, or with no class named."""
        return is_decoder_only(config) and super().reads_config(config)

    @classmethod
    def from_checkpoint(cls, net: nn.Module, folder: Path, options: dict, max_length: int) -> "CausalLmAdapter":
        """The adapter of a loaded *ForCausalLM `net` with the options the Load page or the command line gave."""
        return cls(load_tokenizer(folder), **cls._net_kwargs(net), **cls.check_options(options), max_length=max_length)

    @staticmethod
    def _net_kwargs(net: nn.Module) -> dict:
        """What the adapter needs to know of the network besides the options."""
        return {}

    def vocab_logits(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        """Next-token logits over the whole vocabulary [B, V]."""
        return _next_token_logits(net, batch)


@register
class CausalLmClassifier(CausalLmAdapter):
    """Zero-/few-shot classification: the template's prompt, then the next-token logits of the label words.

    Each label word stands for its first token (`label_tokens` says which): write the word as it follows
    the prompt, e.g. " positive" with its leading space for GPT-2's byte-level tokens.
    """

    kind = "causal-lm-classifier"
    title = "Causal LM as a classifier (prompt + label words)"
    rank = 2
    options = (
        OptionSpec("template", "Prompt template", "{text}",
                   "the prompt of each example, with {column} fields filled from the dataset's text columns; "
                   "the class is predicted as the token that follows it"),
        OptionSpec("verbalizer", "Label words", "",
                   "one word per class, comma-separated, in class order; each stands for the first token it adds after the "
                   "prompt (with a space before it unless the template ends in one)"),
    )

    def __init__(self, tokenizer, *, template: str = "{text}", verbalizer: str | list[str] | tuple[str, ...] = "",
                 max_length: int = 128):
        super().__init__(tokenizer, max_length)
        self.template = template
        self.fields = self._fields(template)
        words = [w.strip() for w in verbalizer.split(",")] if isinstance(verbalizer, str) else list(verbalizer)
        self.words = [w for w in words if w]
        if len(self.words) < 2:
            raise ValueError(f"verbalizer must give at least 2 label words, got {self.words}; "
                             "write one word per class, comma-separated")
        self.token_ids = self._token_ids(self.words)

    @staticmethod
    def _fields(template: str) -> list[str]:
        try:
            fields = [f for _, f, _, _ in Formatter().parse(template) if f is not None]
        except ValueError as e:
            raise ValueError(f"template '{template}' is not a valid format string ({e}); "
                             "write fields as {column} and braces as {{ }}") from e
        if not fields or any(not f.isidentifier() for f in fields):
            raise ValueError(f"template '{template}' needs {{column}} fields naming text columns, got {fields}")
        return list(dict.fromkeys(fields))

    def _token_ids(self, words: list[str]) -> list[int]:
        """The first token of each label word as it follows a prompt (the template filled with a placeholder);
        words that encode to nothing or share a first token are refused."""
        prompt = self.template.format(**{field: "x" for field in self.fields})
        ids, owner = [], {}
        for word in words:
            token = _following_token(self.tokenizer, prompt, word)
            if token is None:
                raise ValueError(f"verbalizer word '{word}' encodes to no token")
            if token in owner:
                raise ValueError(f"verbalizer words '{owner[token]}' and '{word}' share their first token "
                                 f"'{self.tokenizer.convert_ids_to_tokens(token)}'; choose words that start "
                                 "with different tokens")
            owner[token] = word
            ids.append(token)
        return ids

    @property
    def label_names(self) -> list[str]:
        return list(self.words)

    @property
    def label_tokens(self) -> dict[str, str]:
        """Label word -> the token that stands for it (its first token), for the UI to show."""
        return dict(zip(self.words, self.tokenizer.convert_ids_to_tokens(self.token_ids)))

    def settings(self) -> dict:
        return {"adapter": self.kind, "max_length": self.max_length, "template": self.template,
                "verbalizer": self.words, "token_ids": self.token_ids}

    def check_dataset(self, dataset) -> None:
        super().check_dataset(dataset)
        missing = [f for f in self.fields if f not in dataset.text_columns]
        if missing:
            raise ValueError(f"template field '{missing[0]}' is not a text column of '{dataset.name}'; "
                             f"its text columns are {list(dataset.text_columns)}")

    def texts(self, dataset: TextDataset) -> list[tuple[str]]:
        """One prompt per example: the template filled with the example's text columns."""
        self.check_dataset(dataset)
        return [(self.template.format(**dict(zip(dataset.text_columns, t))),) for t in dataset.texts]

    def display_texts(self, dataset: TextDataset) -> list[str]:
        return [t for (t,) in self.texts(dataset)]

    def logits(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return self.vocab_logits(net, batch)[:, self.token_ids]  # [B, C]


@register
class CausalLmNextToken(CausalLmAdapter):
    """Free-form next token: the classes are the vocabulary, named by decoding each token id.

    Gold labels: the dataset's labels when its classes are this vocabulary; otherwise a label column of
    answer strings gives each answer's first token (-1 where an example has no answer).
    """

    kind = "causal-lm-next-token"
    title = "Causal LM, free-form next token"
    rank = 1  # a causal LM's default: it needs no options
    options = (OptionSpec("top_k_classes", "Next-token classes per example", DEFAULT_TOP_K,
                          "PEFs are taken over this many most probable next tokens of each example"),)

    def __init__(self, tokenizer, *, vocab_size: int, top_k_classes: int = DEFAULT_TOP_K, max_length: int = 128):
        super().__init__(tokenizer, max_length)
        if not 1 <= int(top_k_classes) <= vocab_size:
            raise ValueError(f"top_k_classes must be in [1, {vocab_size}], got {top_k_classes}")
        self.vocab_size, self.top_k_classes = vocab_size, int(top_k_classes)
        self.default_top_k_classes = self.top_k_classes
        n = min(vocab_size, len(self.tokenizer))
        # ids the model has beyond the tokenizer's (embeddings padded to a round size) have no text
        self._label_names = (self.tokenizer.batch_decode([[i] for i in range(n)])
                             + [f"<id {i}>" for i in range(n, vocab_size)])

    @staticmethod
    def _net_kwargs(net: nn.Module) -> dict:
        return {"vocab_size": net.get_output_embeddings().weight.shape[0]}

    @property
    def label_names(self) -> list[str]:
        return self._label_names

    def settings(self) -> dict:
        return {"adapter": self.kind, "max_length": self.max_length}

    def data_label_names(self) -> tuple[str, ...]:
        """() : a label column holds answer strings, read as they are and mapped to tokens by align_labels."""
        return ()

    def gold_ids(self, dataset: TextDataset) -> np.ndarray:
        """Gold next-token id per example [n], or -1 where there is none."""
        labels = np.asarray(dataset.labels, dtype=np.int64)
        if list(dataset.label_names) == self.label_names:
            return labels
        answers = {}
        for j, name in enumerate(dataset.label_names):
            token = _first_token(self.tokenizer, name)
            answers[j] = -1 if token is None else token
        return np.array([answers.get(int(y), -1) for y in labels], dtype=np.int64)

    def align_labels(self, dataset: TextDataset) -> TextDataset:
        """The classes are the vocabulary: a label column of answer strings becomes each answer's first token
        (-1 where there is none)."""
        if list(dataset.label_names) == self.label_names:
            return dataset
        self.check_dataset(dataset)
        labels = self.gold_ids(dataset)  # [n] token ids, -1 unknown
        return replace(dataset, labels=labels, label_names=list(self.label_names),
                       content_hash=hash_parts(dataset.inputs_bytes(), labels.tobytes(),
                                               json.dumps(self.label_names).encode()))

    def batches(self, dataset: TextDataset, batch_size: int):
        gold = self.gold_ids(dataset)
        texts = self.texts(dataset)
        for start in range(0, len(dataset), batch_size):
            batch = self.encode(texts[start:start + batch_size])
            batch["labels"] = torch.as_tensor(gold[start:start + batch_size])
            yield batch

    def logits(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return self.vocab_logits(net, batch)  # [B, V]
