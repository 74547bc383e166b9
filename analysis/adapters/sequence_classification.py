"""Hugging Face sequence classifiers (BERT, RoBERTa, DistilBERT, GPT-2, Llama ... ForSequenceClassification).

Encoders get a [B, 1, 1, L] padding mask and right padding. Decoder-only models (GPT-2, GPT-NeoX, Llama,
Qwen2) pool the last token: they are padded on the left, so the last position is always a real token
(transformers' pooling by pad id then agrees, and works without a pad id under vmap, where each example
is a batch of one), and get a causal + padding [B, 1, L, L] mask and position ids that skip the padding,
so a padded example gives the logits it gives alone.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from analysis.adapters.base import Batch, config_label_names, register
from analysis.adapters.text import (TextAdapter, causal_padding_mask, is_decoder_only, load_tokenizer, padding_mask,
                                    positions, with_pad_token)


@register
class SequenceClassification(TextAdapter):
    """Logits of a transformers *ForSequenceClassification head over its id2label classes."""

    kind = "sequence-classification"
    title = "Sequence classifier (Hugging Face)"
    auto_mapping = "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING"
    checkpoint_classes = "*ForSequenceClassification"

    def __init__(self, tokenizer, label_names: list[str], *, decoder_only: bool = False, max_length: int = 128):
        super().__init__(with_pad_token(tokenizer) if decoder_only else tokenizer, max_length)
        self._label_names = list(label_names)
        self.decoder_only = decoder_only
        self.padding_side = "left" if decoder_only else "right"

    @classmethod
    def from_checkpoint(cls, net: nn.Module, folder: Path, options: dict, max_length: int) -> "SequenceClassification":
        """Its id2label classes; decoder-only or not as the config says."""
        cls.check_options(options)
        return cls(load_tokenizer(folder), config_label_names(net.config), decoder_only=is_decoder_only(net.config),
                   max_length=max_length)

    @property
    def label_names(self) -> list[str]:
        return self._label_names

    def settings(self) -> dict:
        return {"adapter": self.kind, "max_length": self.max_length}

    def logits(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        mask = batch["attention_mask"]
        dtype = next(net.parameters()).dtype
        if self.decoder_only:
            kwargs = {"attention_mask": causal_padding_mask(mask, dtype), "position_ids": positions(mask)}
        else:
            kwargs = {"attention_mask": padding_mask(mask, dtype)}
            if "token_type_ids" in batch:
                kwargs["token_type_ids"] = batch["token_type_ids"]
        return net(input_ids=batch["input_ids"], **kwargs).logits
