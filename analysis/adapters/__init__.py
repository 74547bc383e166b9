"""Model adapters: one module per kind of model, registered by kind (base.ADAPTERS). Each says which
transformers checkpoints it reads (its auto mapping, reads_config); base.checkpoint_adapters is the one place
that lists, best first, the adapters that read a checkpoint.

sequence_classification.py  Hugging Face *ForSequenceClassification (encoders and decoder-only)
causal_lm.py                Hugging Face *ForCausalLM: prompt + label words, or free-form next token
images.py                   image inputs; plain PyTorch, transformers *ForImageClassification and
                            torchvision image classifiers
"""
from analysis.adapters import causal_lm, images, sequence_classification  # noqa: F401  (registers the adapters)
from analysis.adapters.base import (ADAPTERS, AttributedInput, Attribution, ModelAdapter, OptionSpec, adapter_class,
                                    checkpoint_adapters)

__all__ = ["ADAPTERS", "AttributedInput", "Attribution", "ModelAdapter", "OptionSpec", "adapter_class",
           "checkpoint_adapters"]
