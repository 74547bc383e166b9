"""Model loading: HF folders, zips, bare state dicts, refusal of unsafe inputs, parameter scopes."""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from analysis.adapters.images import ImageModule
from analysis.image_models import DigitsCNN
from analysis.models import ClassifierModel, ParamScope, load_model, save_image_model
from tests.conftest import TINY_LABELS


def _batch(model, texts):
    return dict(model.adapter.tokenizer(texts, padding=True, return_tensors="pt"))


def test_hf_folder_loads_with_labels_tokenizer_and_hash(tiny_bert_dir):
    model = load_model(tiny_bert_dir)
    s = model.summary()
    assert s.label_names == tuple(TINY_LABELS) and s.input_kind == "text"
    assert s.n_parameters == s.n_parameters_in_scope == sum(p.numel() for p in model.parameters())
    assert len(s.content_hash) == 64 and load_model(tiny_bert_dir).content_hash == s.content_hash
    logits = model(_batch(model, ["good film", "very bad plot not fine"]))
    assert logits.shape == (2, 3)


def test_forward_matches_the_raw_transformers_call_with_padding(tiny_bert_dir):
    model = load_model(tiny_bert_dir)
    batch = _batch(model, ["good film", "very bad plot not fine at all"])
    expected = model.net(**batch).logits
    torch.testing.assert_close(model(batch), expected)
    alone = model(_batch(model, ["good film"]))
    torch.testing.assert_close(model(batch)[0], alone[0], rtol=1e-5, atol=1e-6)


def test_zip_of_the_folder_loads_the_same_weights(tiny_bert_dir, tmp_path):
    archive = tmp_path / "ckpt.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in tiny_bert_dir.iterdir():
            z.write(f, f"tiny/{f.name}")
    zipped = load_model(archive, extract_root=tmp_path / "x")
    assert zipped.content_hash == load_model(tiny_bert_dir).content_hash


def test_zip_with_traversal_is_refused_before_loading(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../config.json", "{}")
    with pytest.raises(ValueError, match="escapes the archive with '..'; refused"):
        load_model(archive, extract_root=tmp_path / "x")


def test_bare_safetensors_with_config(tiny_bert_dir, tmp_path):
    weights = tmp_path / "w.safetensors"
    shutil.copy(tiny_bert_dir / "model.safetensors", weights)
    model = load_model(weights, config=tiny_bert_dir / "config.json")
    ref = load_model(tiny_bert_dir)
    batch = _batch(ref, ["great acting"])
    torch.testing.assert_close(model(batch), ref(batch))


def test_bare_weights_need_an_architecture(tiny_bert_dir):
    with pytest.raises(ValueError, match="model.safetensors: give exactly one of a config.json"):
        load_model(tiny_bert_dir / "model.safetensors")


def test_mismatched_weights_name_the_keys(tiny_bert_dir, tmp_path):
    weights = tmp_path / "cnn.safetensors"
    save_file(DigitsCNN().state_dict(), str(weights))
    with pytest.raises(ValueError, match=r"cnn.safetensors: weights do not match the architecture \(missing"):
        load_model(weights, config=tiny_bert_dir)


def test_remote_code_configs_are_refused(tiny_bert_dir, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_bert_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.Evil"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="needs custom code \\(auto_map\\); NPEFF Explorer never runs trust_remote_code"):
        load_model(folder)


@pytest.mark.parametrize("remove, message", [
    ("config.json", "no config.json; a Hugging Face checkpoint folder needs config.json"),
    ("model.safetensors", "no weights file; expected model.safetensors"),
])
def test_incomplete_folders_say_what_is_missing(tiny_bert_dir, tmp_path, remove, message):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_bert_dir, folder)
    (folder / remove).unlink()
    with pytest.raises(ValueError, match=message):
        load_model(folder)


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/npeff-model-pwned",))


def test_pickled_bin_checkpoint_is_refused(tiny_bert_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert_dir, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(1), "x": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="the weights need unpickling of arbitrary objects; convert them to "
                                         "model.safetensors"):
        load_model(folder)
    assert not os.path.exists("/tmp/npeff-model-pwned")


def test_image_architecture_round_trip(tmp_path):
    net = DigitsCNN()
    folder = save_image_model(net, tmp_path / "cnn", architecture="digits-cnn", label_names=list("0123456789"))
    model = load_model(folder)
    pixels = torch.rand(4, 8, 8)
    torch.testing.assert_close(model({"pixels": pixels}), net(pixels))
    assert model.input_kind == "image" and model.label_names[3] == "3"


def test_scopes_select_layers_head_and_patterns(tiny_bert_dir):
    model = load_model(tiny_bert_dir)
    last = model.with_scope(ParamScope("last_layers", n_layers=1)).param_names_in_scope()
    assert all(".layer.0." not in n and "embeddings" not in n for n in last)
    assert any(".layer.1." in n for n in last) and last[-1] == "net.classifier.bias"
    two = model.with_scope(ParamScope("last_layers", n_layers=2)).param_names_in_scope()
    assert any(".layer.0." in n for n in two) and not any("embeddings" in n for n in two)
    assert model.with_scope(ParamScope("pattern", pattern="classifier")).param_names_in_scope() == [
        "net.classifier.weight", "net.classifier.bias"]
    assert model.scope == ParamScope()  # with_scope returns a view; the original is unchanged


def test_scope_errors_are_explained(tiny_bert_dir):
    model = load_model(tiny_bert_dir)
    with pytest.raises(ValueError, match=r"parameter pattern /zzz/ matches no parameter"):
        model.with_scope(ParamScope("pattern", pattern="zzz"))
    with pytest.raises(ValueError, match=r"parameter pattern /\(/ is not a valid regex"):
        model.with_scope(ParamScope("pattern", pattern="("))
    with pytest.raises(ValueError, match="n_layers must be >= 1, got 0"):
        model.with_scope(ParamScope("last_layers", n_layers=0))


def test_last_layers_on_a_small_cnn_counts_modules():
    model = ClassifierModel(DigitsCNN(), adapter=ImageModule(list("0123456789")), name="cnn",
                            content_hash="x", scope=ParamScope("last_layers", n_layers=2))
    assert model.param_names_in_scope() == ["net.conv2.weight", "net.conv2.bias", "net.head.weight", "net.head.bias"]


def test_missing_path():
    with pytest.raises(ValueError, match="nowhere: no such file or folder"):
        load_model("nowhere")


FOLDER_FIX = ("config.json and the weights are not from the same model; save both from the trained model with "
              "save_pretrained")


def _variant(tiny_bert_dir, folder, edit_weights=lambda state: state, **config_changes):
    """A copy of the tiny BERT folder with its weights and config.json edited."""
    shutil.copytree(tiny_bert_dir, folder)
    save_file(edit_weights(load_file(str(folder / "model.safetensors"))), str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **config_changes}))
    return folder


def test_folder_with_fewer_layers_than_its_config_is_refused(tiny_bert_dir, tmp_path):
    folder = _variant(tiny_bert_dir, tmp_path / "deeper", num_hidden_layers=4)
    message = (f"{folder}: weights do not match the architecture (missing "
               "['bert.encoder.layer.2.attention.output.LayerNorm.bias', "
               "'bert.encoder.layer.2.attention.output.LayerNorm.weight', "
               f"'bert.encoder.layer.2.attention.output.dense.bias'] and 29 more); {FOLDER_FIX}")
    with pytest.raises(ValueError, match=re.escape(message)):
        load_model(folder)


@pytest.mark.parametrize("edit, problem", [
    (lambda s: {k: v for k, v in s.items() if ".layer.1.output.dense." not in k},
     "missing ['bert.encoder.layer.1.output.dense.bias', 'bert.encoder.layer.1.output.dense.weight']"),
    (lambda s: {**s, "bert.extra.weight": torch.zeros(2)}, "unexpected ['bert.extra.weight']"),
    (lambda s: {**s, "classifier.weight": torch.zeros(2, 16)},
     "shapes differ for ['classifier.weight: weights (2, 16), model (3, 16)']"),
])
def test_folder_with_missing_unexpected_or_misshaped_weights_is_refused(tiny_bert_dir, tmp_path, edit, problem):
    folder = _variant(tiny_bert_dir, tmp_path / "edited", edit)
    with pytest.raises(ValueError, match=re.escape(
            f"{folder}: weights do not match the architecture ({problem}); {FOLDER_FIX}")):
        load_model(folder)


def test_bare_weights_of_another_shape_are_refused(tiny_bert_dir, tmp_path):
    state = load_file(str(tiny_bert_dir / "model.safetensors"))
    save_file({**state, "classifier.weight": torch.zeros(2, 16)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match=re.escape(
            "w.safetensors: weights do not match the architecture (shapes differ for "
            "['classifier.weight: weights (2, 16), model (3, 16)']); pick the config/architecture the weights "
            "were saved from")):
        load_model(tmp_path / "w.safetensors", config=tiny_bert_dir)


def test_integer_weights_are_refused(tiny_bert_dir, tmp_path):
    to_int = lambda s: {**s, "classifier.weight": torch.ones(3, 16, dtype=torch.int64)}  # noqa: E731
    folder = _variant(tiny_bert_dir, tmp_path / "int", to_int)
    message = ("weights ['classifier.weight (int64)'] are not floating point where the model holds floats "
               "(quantized or corrupted weights); save the trained model's float weights again")
    with pytest.raises(ValueError, match=re.escape(f"{folder}: {message}")):
        load_model(folder)
    with pytest.raises(ValueError, match=re.escape(f"model.safetensors: {message}")):
        load_model(folder / "model.safetensors", config=folder)
    cnn = tmp_path / "cnn.safetensors"
    save_file({**DigitsCNN().state_dict(), "head.bias": torch.zeros(10, dtype=torch.int32)}, str(cnn))
    with pytest.raises(ValueError, match=re.escape("cnn.safetensors: weights ['head.bias (int32)'] are not floating")):
        load_model(cnn, architecture="digits-cnn", label_names=list("0123456789"))


def test_float16_weights_load_with_a_note(tiny_bert_dir, tmp_path):
    folder = _variant(tiny_bert_dir, tmp_path / "half", lambda s: {k: v.half() for k, v in s.items()})
    model = load_model(folder)
    note = f"{folder}: 41 weight tensor(s) stored as float16 were loaded as float32"
    assert model.notes == (note,) and model.summary().notes == (note,)
    assert model.with_scope(ParamScope("last_layers", n_layers=1)).summary().notes == (note,)
    assert next(model.parameters()).dtype == torch.float32
    assert load_model(folder / "model.safetensors", config=folder).notes == (
        "model.safetensors: 41 weight tensor(s) stored as float16 were loaded as float32",)
    assert load_model(tiny_bert_dir).summary().notes == ()


def test_keys_transformers_declares_ignorable_still_load(tiny_bert_dir, tmp_path):
    legacy = _variant(tiny_bert_dir, tmp_path / "legacy",  # position_ids was a saved int64 buffer in old BERTs
                      lambda s: {**s, "bert.embeddings.position_ids": torch.arange(32)[None]})
    assert load_model(legacy).notes == ()
    from transformers import BartConfig, BartForSequenceClassification

    bart = tmp_path / "bart"  # encoder/decoder embeddings are tied to model.shared and not saved
    BartForSequenceClassification(BartConfig(
        vocab_size=20, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
        num_labels=3)).save_pretrained(bart)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_bert_dir / name, bart / name)
    model = load_model(bart)
    assert model.net.model.encoder.embed_tokens.weight is model.net.model.shared.weight
    bare = load_model(bart / "model.safetensors", config=bart)
    batch = _batch(model, ["good film"])
    torch.testing.assert_close(bare(batch), model(batch))


def test_folder_with_both_weight_formats_reads_the_safetensors(tiny_bert_dir, tmp_path):
    """A Hub snapshot holds model.safetensors and pytorch_model.bin: the safetensors copy is read, as
    from_pretrained would, and the pickle is never opened (here it holds other weights, which would show)."""
    folder = tmp_path / "both"
    shutil.copytree(tiny_bert_dir, folder)
    state = load_file(str(folder / "model.safetensors"))
    torch.save({k: v + 1 for k, v in state.items()}, folder / "pytorch_model.bin")
    model = load_model(folder)
    np.testing.assert_array_equal(model.net.classifier.weight.detach().numpy(), state["classifier.weight"].numpy())


def test_folder_with_a_single_file_beside_a_shard_index_is_refused(tiny_bert_dir, tmp_path):
    folder = tmp_path / "both"
    shutil.copytree(tiny_bert_dir, folder)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model.safetensors"}}))
    with pytest.raises(ValueError, match=re.escape(
            f"{folder}: holds 2 weight files for one config (model.safetensors, model.safetensors.index.json); "
            "keep the one you mean and delete the others")):
        load_model(folder)


def test_pickled_folder_conversion_command_works(tiny_bert_dir, tmp_path):
    folder = tmp_path / "trusted"
    shutil.copytree(tiny_bert_dir, folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save({**state, "args": argparse.Namespace(lr=0.1)}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError) as refused:
        load_model(folder)
    message = str(refused.value)
    assert message.startswith(f"{folder}: the weights need unpickling of arbitrary objects; convert them to "
                              "model.safetensors, only if you trust the files, with `python -c ")
    assert message.endswith("`, then delete pytorch_model.bin")
    command = re.search(r"`(python -c .*)`", message).group(1)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (folder / "pytorch_model.bin").unlink()
    converted, ref = load_model(folder), load_model(tiny_bert_dir)
    batch = _batch(ref, ["great acting"])
    torch.testing.assert_close(converted(batch), ref(batch))


def _zip_folder(archive, folders: dict[str, Path]):
    with zipfile.ZipFile(archive, "w") as z:
        for prefix, folder in folders.items():
            for f in folder.iterdir():
                z.write(f, f"{prefix}{f.name}")
    return archive


def test_zip_with_the_same_name_loads_its_own_weights(tiny_bert_dir, tmp_path):
    from tests.conftest import build_tiny_bert

    other = build_tiny_bert(tmp_path / "other", seed=1)
    torch.save(load_file(str(other / "model.safetensors")), other / "pytorch_model.bin")
    (other / "model.safetensors").unlink()
    first = load_model(_zip_folder(tmp_path / "ckpt.zip", {"tiny/": tiny_bert_dir}), extract_root=tmp_path / "x")
    second = load_model(_zip_folder(tmp_path / "ckpt.zip", {"tiny/": other}), extract_root=tmp_path / "x")
    batch = _batch(first, ["great acting"])
    torch.testing.assert_close(second(batch), load_model(other)(batch))
    assert first.content_hash != second.content_hash


def test_zip_with_two_checkpoints_is_refused_and_removed(tiny_bert_dir, tmp_path):
    archive = _zip_folder(tmp_path / "two.zip", {"a/": tiny_bert_dir, "b/": tiny_bert_dir})
    with pytest.raises(ValueError, match=re.escape(
            "two.zip: holds 2 checkpoints (two.zip/a, two.zip/b); zip one checkpoint folder per upload")):
        load_model(archive, extract_root=tmp_path / "x")
    assert list((tmp_path / "x").iterdir()) == []


def test_zip_with_two_weight_files_for_one_config_is_refused(tiny_bert_dir, tmp_path):
    folder = tmp_path / "both"
    shutil.copytree(tiny_bert_dir, folder)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model.safetensors"}}))
    with pytest.raises(ValueError, match=re.escape(
            "both.zip/tiny: holds 2 weight files for one config (model.safetensors, model.safetensors.index.json); "
            "keep the one you mean and delete the others")):
        load_model(_zip_folder(tmp_path / "both.zip", {"tiny/": folder}), extract_root=tmp_path / "x")
    assert list((tmp_path / "x").iterdir()) == []


def test_zip_of_a_refused_checkpoint_leaves_nothing_behind(tiny_bert_dir, tmp_path):
    folder = _variant(tiny_bert_dir, tmp_path / "deeper", num_hidden_layers=4)
    with pytest.raises(ValueError, match="weights do not match the architecture"):
        load_model(_zip_folder(tmp_path / "deeper.zip", {"deeper/": folder}), extract_root=tmp_path / "x")
    assert list((tmp_path / "x").iterdir()) == []


def test_zip_of_an_image_model_in_a_top_folder_loads(tmp_path):
    folder = save_image_model(DigitsCNN(), tmp_path / "cnn", architecture="digits-cnn", label_names=list("0123456789"))
    model = load_model(_zip_folder(tmp_path / "cnn.zip", {"cnn/": folder}), extract_root=tmp_path / "x")
    assert model.input_kind == "image" and model.content_hash == load_model(folder).content_hash


CAUSAL = ["causal-lm-next-token", "causal-lm-classifier"]


@pytest.mark.parametrize("config, saved_as, kinds", [
    ("GPT2Config", "GPT2LMHeadModel", CAUSAL),
    ("LlamaConfig", "LlamaForCausalLM", CAUSAL),
    ("GPT2Config", "GPT2ForSequenceClassification", ["sequence-classification"]),
    ("GPT2Config", None, ["sequence-classification", *CAUSAL]),  # no class named: every head the config has
    ("BertConfig", "BertForSequenceClassification", ["sequence-classification"]),
    ("BertConfig", None, ["sequence-classification"]),  # BERT's causal-LM head attends both ways: not a causal LM
    ("ViTConfig", "ViTForImageClassification", ["image-classification"]),
    ("PerceiverConfig", "PerceiverForImageClassificationFourier", ["image-classification"]),
    ("PerceiverConfig", "PerceiverForSequenceClassification", ["sequence-classification"]),
])
def test_the_registry_lists_the_adapters_of_a_checkpoint_default_first(config, saved_as, kinds):
    import transformers

    from analysis.adapters import checkpoint_adapters

    config = getattr(transformers, config)(architectures=[saved_as] if saved_as else None)
    assert checkpoint_adapters(config, "ckpt") == kinds


def test_a_checkpoint_no_adapter_reads_lists_the_adapters():
    from transformers import GPT2Config

    from analysis.adapters import ADAPTERS, checkpoint_adapters

    with pytest.raises(ValueError, match=re.escape(
            f"ckpt: no adapter reads a checkpoint saved as GPT2Model; the adapters are {sorted(ADAPTERS)}, and those "
            "for transformers checkpoints read decoder-only *ForCausalLM (GPT-2, GPT-NeoX, Llama, Qwen2 ...) "
            "(causal-lm-classifier, causal-lm-next-token); *ForImageClassification (ViT, ResNet, ConvNeXt ...) with "
            "preprocessor_config.json (image-classification); *ForSequenceClassification (sequence-classification); "
            "save the model with one of these heads")):
        checkpoint_adapters(GPT2Config(architectures=["GPT2Model"]), "ckpt")


def test_an_adapter_that_cannot_read_the_folder_is_refused_before_loading(tiny_bert_dir):
    with pytest.raises(ValueError, match=re.escape(
            f"{tiny_bert_dir}: adapter 'causal-lm-next-token' does not read a checkpoint saved as "
            "BertForSequenceClassification; use one of ['sequence-classification']")):
        load_model(tiny_bert_dir, adapter="causal-lm-next-token")
    with pytest.raises(ValueError, match=re.escape("adapter 'sequence-classification' takes no options, got 'top_k'")):
        load_model(tiny_bert_dir, options={"top_k": 3})
