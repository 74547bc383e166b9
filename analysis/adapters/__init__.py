"""Model adapters: one module per kind of model, registered by kind (base.ADAPTERS).

sequence_classification.py  Hugging Face *ForSequenceClassification (encoders and decoder-only)
images.py                   image inputs; plain PyTorch image classifiers
"""
from analysis.adapters import images, sequence_classification  # noqa: F401  (registers the adapters)
from analysis.adapters.base import ADAPTERS, Attribution, ModelAdapter, OptionSpec, adapter_class

__all__ = ["ADAPTERS", "Attribution", "ModelAdapter", "OptionSpec", "adapter_class"]
