"""Causal LMs through the causal-lm-classifier and causal-lm-next-token adapters, on tiny random GPT-2,
GPT-NeoX, Llama and Qwen2 configs: PEFs of padded batches equal an autograd loop over each example alone."""
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.adapters import ADAPTERS
from analysis.adapters.causal_lm import DEFAULT_TOP_K, CausalLmClassifier, CausalLmNextToken
from analysis.datasets import make_batches, predict, text_dataset
from analysis.fisher import compute_pefs
from analysis.loading import ModelSpec, load_model_spec
from analysis.models import ADAPTER_CONFIG, load_model
from analysis.npeff import fit_lrm_npeff
from analysis.perturb.api import perturb_component

VOCAB = ["<eos>", "<unk>", "good", "bad", "film", "plot", "very", "not", "the", "a", "is", "was", "boring", "great",
         "Review:", "Sentiment:", "positive", "negative", "pos", "posh"]
WORDS = VOCAB[2:14]
FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2")
LABELS = ["positive", "negative"]
TEMPLATE = "Review: {text} Sentiment:"


def make_tokenizer():
    """Word-level tokenizer with an end-of-sequence token and no padding token (as GPT-2's and Llama's)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token="<unk>"))
    core.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="<unk>")


def make_net(family: str):
    """A random 2-layer causal LM, hidden size 32, of one family (eager attention, fixed seed)."""
    import transformers as tf

    torch.manual_seed(0)
    common = {"vocab_size": len(VOCAB), "attn_implementation": "eager", "eos_token_id": 0, "bos_token_id": 0,
              "pad_token_id": None}
    config = {
        "gpt2": lambda: tf.GPT2Config(n_positions=32, n_embd=32, n_layer=2, n_head=2, **common),
        "gpt_neox": lambda: tf.GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64, max_position_embeddings=32, rotary_pct=0.5,
                                             **common),
        "llama": lambda: tf.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=1, intermediate_size=64, max_position_embeddings=32,
                                        **common),
        "qwen2": lambda: tf.Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=1, intermediate_size=64, max_position_embeddings=32,
                                        **common),
    }[family]()
    return tf.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, object]:
    """One saved checkpoint folder (config, safetensors, tokenizer) per family."""
    out = {}
    for family in FAMILIES:
        folder = tmp_path_factory.mktemp(family)
        make_net(family).save_pretrained(folder)
        make_tokenizer().save_pretrained(folder)
        out[family] = folder
    return out


@pytest.fixture(scope="module")
def reviews():
    """7 texts of 1 to 7 words (padded batches mix lengths), labels positive/negative."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"text": [" ".join(rng.choice(WORDS, size=n)) for n in (3, 1, 7, 2, 5, 4, 6)],
                          "label": [LABELS[i % 2] for i in range(7)]})
    return text_dataset(frame, text_columns=["text"], label_column="label", label_names=LABELS, name="reviews",
                        source="reviews.csv")


def load(folders, family: str, kind: str):
    options = {"template": TEMPLATE, "verbalizer": ",".join(LABELS)} if kind == "classifier" else {"top_k_classes": 3}
    return load_model(folders[family], adapter=f"causal-lm-{'classifier' if kind == 'classifier' else 'next-token'}",
                      options=options)


def loop_pefs(model, dataset, top_k: int | None):
    """Slow reference: A [n, c, M] and class ids [n, c]; each prompt alone, unpadded, with transformers' own
    causal mask and positions, one autograd.grad of log p_y per kept class."""
    net, adapter = model.net, model.adapter
    params = [p for _, p in net.named_parameters()]
    A, ids = [], []
    for (prompt,) in adapter.texts(dataset):
        input_ids = torch.as_tensor([adapter.tokenizer(prompt)["input_ids"]])  # [1, L]
        logits = net(input_ids=input_ids).logits[0, -1]  # [V]
        if isinstance(adapter, CausalLmClassifier):
            logits = logits[adapter.token_ids]  # [C]
        logp = logits.log_softmax(-1)
        classes = range(len(logp)) if top_k is None else logp.argsort(descending=True)[:top_k].tolist()
        A.append(torch.stack([logp[y].exp().sqrt() * torch.cat(
            [g.flatten() for g in torch.autograd.grad(logp[y], params, retain_graph=True)]) for y in classes]
        ).detach().numpy())
        ids.append(list(classes))
    return np.stack(A), np.array(ids)


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal to 1e-5 relative to the largest entry."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["classifier", "next-token"])
def test_pefs_of_padded_batches_match_the_autograd_loop(folders, reviews, family, kind):
    model = load(folders, family, kind)
    top_k = None if kind == "classifier" else 3
    A, ids = loop_pefs(model, reviews, top_k)
    batches = list(make_batches(model, reviews, batch_size=4))
    assert (batches[0]["attention_mask"] == 0).any()  # left padding happened
    lrm = compute_pefs(model, batches, kind="lrm", top_k_classes=top_k)
    np.testing.assert_array_equal(lrm.class_ids, ids)
    assert_close(lrm.dense(), A)
    diag = compute_pefs(model, batches, kind="diag", top_k_classes=top_k)
    assert_close(diag.dense(), (A ** 2).sum(axis=1))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["classifier", "next-token"])
def test_predict_of_a_padded_batch_equals_each_example_alone(folders, reviews, family, kind):
    model = load(folders, family, kind)
    batched = predict(model, reviews, batch_size=7, device="cpu")
    alone = np.concatenate([predict(model, reviews.subset([i]), device="cpu") for i in range(len(reviews))])
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5)


def test_adapters_name_their_classes_and_tokens(folders):
    classifier = load(folders, "gpt2", "classifier")
    assert classifier.label_names == LABELS and classifier.adapter.label_tokens == {"positive": "positive",
                                                                                   "negative": "negative"}
    assert classifier.adapter.padding_side == "left" and classifier.adapter.tokenizer.pad_token == "<eos>"
    next_token = load_model(folders["gpt2"])  # a causal LM defaults to free-form next token
    assert isinstance(next_token.adapter, CausalLmNextToken) and next_token.label_names == VOCAB
    assert next_token.adapter.top_k_classes == DEFAULT_TOP_K


def test_next_token_gold_labels_are_the_answers_first_tokens(folders):
    model = load(folders, "llama", "next-token")
    frame = pd.DataFrame({"text": ["the film was", "a plot is", "very"], "answer": ["good", "boring film", "good"]})
    answers = text_dataset(frame, text_columns=["text"], label_column="answer", label_names=["good", "boring film"],
                           name="qa", source="qa.csv")
    (batch,) = make_batches(model, answers, batch_size=3)
    assert batch["labels"].tolist() == [VOCAB.index("good"), VOCAB.index("boring"), VOCAB.index("good")]


def test_fit_and_perturb_a_tiny_gpt2(folders, reviews):
    model = load(folders, "gpt2", "next-token")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pefs = compute_pefs(model, list(make_batches(model, reviews, batch_size=4)), kind="lrm", top_k_classes=3,
                        n_values_per_example=500)
    decomposition = fit_lrm_npeff(pefs, 2, n_iters=20, seed=0)
    assert decomposition.W.shape == (7, 2) and (decomposition.W >= 0).all()
    result = perturb_component(model, reviews, decomposition, 0, magnitude=1.0, top_n=2, baseline_n=4, batch_size=4,
                               device="cpu")
    assert result.kl_top >= 0 and result.kl_baseline >= 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_adapter_and_options_round_trip_through_the_folder_and_the_spec(folders, reviews, tmp_path):
    expected = predict(load(folders, "qwen2", "classifier"), reviews, device="cpu")
    folder = shutil.copytree(folders["qwen2"], tmp_path / "qwen2")
    (folder / ADAPTER_CONFIG).write_text(
        '{"adapter": "causal-lm-classifier", "options": {"template": "Review: {text} Sentiment:", '
        '"verbalizer": "positive, negative"}}')
    np.testing.assert_array_equal(predict(load_model(folder), reviews, device="cpu"), expected)
    spec = ModelSpec(source=str(folders["qwen2"]), adapter="causal-lm-classifier",
                     options=(("template", TEMPLATE), ("verbalizer", "positive,negative")))
    hash(spec)
    np.testing.assert_array_equal(predict(load_model_spec(spec, tmp_path), reviews, device="cpu"), expected)


@pytest.mark.parametrize("adapter, options, message", [
    ("causal-lm-classifier", {"template": "Review: {review} Sentiment:", "verbalizer": "positive,negative"},
     r"^template field 'review' is not a text column of 'reviews'; its text columns are \['text'\]$"),
    ("causal-lm-next-token", {"top_k": 3},
     r"^adapter 'causal-lm-next-token' takes options \['top_k_classes'\], got 'top_k'$"),
    ("gpt", {}, rf"^adapter must be one of {re.escape(str(sorted(ADAPTERS)))}, got 'gpt'$"),
])
def test_bad_options_give_one_line_errors(folders, reviews, adapter, options, message):
    with pytest.raises(ValueError, match=message):
        model = load_model(folders["gpt2"], adapter=adapter, options=options)
        predict(model, reviews, device="cpu")


def test_verbalizer_words_sharing_a_first_token_are_refused():
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from tokenizers.pre_tokenizers import WhitespaceSplit

    # a BPE in which "posh" is "pos" "h": it shares its first token with "pos"
    core = Tokenizer(BPE({"p": 0, "o": 1, "s": 2, "h": 3, "n": 4, "e": 5, "g": 6, "po": 7, "pos": 8, "ne": 9,
                          "<eos>": 10}, [("p", "o"), ("po", "s"), ("n", "e")]))
    core.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>")
    with pytest.raises(ValueError, match=r"^verbalizer words 'pos' and 'posh' share their first token 'pos'; "
                                         r"choose words that start with different tokens$"):
        CausalLmClassifier(tokenizer, template="{text}", verbalizer="pos,neg,posh")
    assert CausalLmClassifier(tokenizer, verbalizer="pos,neg").label_tokens == {"pos": "pos", "neg": "ne"}


def test_label_words_stand_for_the_token_that_follows_the_prompt():
    """Byte-level BPE (GPT-2's kind) has 'Ġpositive' after 'Sentiment:' and 'positive' alone: the label is the
    former, unless the template itself ends in a space (then the prompt's last token is that space)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["Sentiment: positive", "Sentiment: negative", "positive,negative"] * 20,
                            vocab_size=300, min_frequency=1, show_progress=False, special_tokens=["<eos>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<eos>")
    assert tokenizer.tokenize("Sentiment: positive")[-1] == "Ġpositive" and tokenizer.tokenize("positive") == ["positive"]
    spaced = CausalLmClassifier(tokenizer, template="Review: {text} Sentiment:", verbalizer="negative,positive")
    assert spaced.label_tokens == {"negative": "Ġnegative", "positive": "Ġpositive"}
    trailing = CausalLmClassifier(tokenizer, template="Review: {text} Sentiment: ", verbalizer="negative, positive")
    assert trailing.label_tokens == {"negative": "negative", "positive": "positive"}


@pytest.mark.parametrize("kwargs, message", [
    ({"template": "{text", "verbalizer": "a,b"}, r"^template '\{text' is not a valid format string"),
    ({"template": "no fields", "verbalizer": "a,b"},
     r"^template 'no fields' needs \{column\} fields naming text columns, got \[\]$"),
    ({"verbalizer": "good"}, r"^verbalizer must give at least 2 label words, got \['good'\]; "),
])
def test_bad_templates_and_verbalizers_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CausalLmClassifier(make_tokenizer(), **kwargs)
