"""Tiny models and datasets the tests build and save (no downloads): a word-level GPT-2 causal LM and short
reviews to read it with, shared by the Load page, page, browser and command-line tests."""
from pathlib import Path

import numpy as np
import pandas as pd

GPT2_WORDS = ("[PAD]", "[UNK]", "the", "movie", "was", "good", "bad", "great", "awful", "plot", "Answer:")


def build_tiny_gpt2(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer GPT-2 causal LM over a word-level vocabulary (GPT2_WORDS), saved with its tokenizer."""
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    core = Tokenizer(WordLevel({w: i for i, w in enumerate(GPT2_WORDS)}, unk_token="[UNK]"))
    core.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")
    net = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=len(GPT2_WORDS),
                                    bos_token_id=0, eos_token_id=0))
    folder.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def reviews_csv(path: Path, n: int = 24) -> Path:
    """Short reviews with a sentiment label (class names good/bad) and an answer string (the word itself)."""
    rng = np.random.default_rng(0)
    words = rng.choice(["good", "bad", "great", "awful"], n)
    frame = pd.DataFrame({"text": [f"the movie was {w}" for w in words],
                          "sentiment": ["good" if w in ("good", "great") else "bad" for w in words],
                          "answer": words})
    frame.to_csv(path, index=False)
    return path
