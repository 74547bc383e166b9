"""The last-N-layers scope selects exactly the parameters it selected before the layer helpers moved to
analysis.parameters (the former selection, with its own block names that kept the trailing dot, is the
reference), on a tiny BERT, a tiny GPT-2 and the digits CNN."""
import re

import pytest

from analysis.adapters.images import ImageModule
from analysis.image_models import DigitsCNN
from analysis.models import ClassifierModel, ParamScope
from analysis.parameters import layer_of

FORMER_LAYER_INDEX = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")


def _former_block_of(name: str) -> str:
    m = FORMER_LAYER_INDEX.search(name)
    return name[: m.end()] if m else name.rsplit(".", 1)[0]


def former_last_layers(names: list[str], n_layers: int) -> list[str]:
    """models._last_layers as it was written before."""
    indexed = [i for i, n in enumerate(names) if FORMER_LAYER_INDEX.search(n)]
    if indexed:
        layers = list(dict.fromkeys(_former_block_of(names[i]) for i in indexed))
        keep = set(layers[-n_layers:])
        return [n for i, n in enumerate(names) if _former_block_of(n) in keep or i > indexed[-1]]
    blocks = list(dict.fromkeys(_former_block_of(n) for n in names))
    keep = set(blocks[-n_layers:])
    return [n for n in names if _former_block_of(n) in keep]


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=3,
                                                    num_attention_heads=2, intermediate_size=16,
                                                    max_position_embeddings=16, num_labels=3))


def _tiny_gpt2():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    return GPT2ForSequenceClassification(GPT2Config(vocab_size=20, n_embd=8, n_layer=3, n_head=2, n_positions=16,
                                                    num_labels=3))


@pytest.mark.parametrize("build", [_tiny_bert, _tiny_gpt2, lambda: DigitsCNN(n_classes=10)],
                         ids=["bert", "gpt2", "digits-cnn"])
def test_last_layers_selects_the_same_names_as_before(build):
    net = build()
    model = ClassifierModel(net, adapter=ImageModule([str(i) for i in range(3)]), name="m",
                            content_hash="m")
    names = [n for n, _ in model.named_parameters()]
    n_blocks = len(dict.fromkeys(layer_of(n) for n in names))
    for n_layers in range(1, n_blocks + 2):
        chosen = model.with_scope(ParamScope("last_layers", n_layers=n_layers)).param_names_in_scope()
        assert chosen == former_last_layers(names, n_layers), n_layers
        if n_layers == 1:
            assert 0 < len(chosen) < len(names)
