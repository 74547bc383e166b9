"""Model adapters: one module per kind of model, registered by kind (base.ADAPTERS).

sequence_classification.py  Hugging Face *ForSequenceClassification (encoders and decoder-only)
causal_lm.py                Hugging Face *ForCausalLM: prompt + label words, or free-form next token
images.py                   image inputs; plain PyTorch, transformers *ForImageClassification and
                            torchvision image classifiers
"""
from analysis.adapters import causal_lm, images, sequence_classification  # noqa: F401  (registers the adapters)
from analysis.adapters.base import ADAPTERS, Attribution, ModelAdapter, OptionSpec, adapter_class

__all__ = ["ADAPTERS", "Attribution", "ModelAdapter", "OptionSpec", "adapter_class"]
