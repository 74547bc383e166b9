"""Model loading: HF folders, zips, bare state dicts, refusal of unsafe inputs, parameter scopes."""
import json
import os
import shutil
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from analysis.image_models import DigitsCNN
from analysis.models import ClassifierModel, ParamScope, load_model, save_image_model
from tests.conftest import TINY_LABELS


def _batch(model, texts):
    return dict(model.tokenizer(texts, padding=True, return_tensors="pt"))


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
    model = ClassifierModel(DigitsCNN(), input_kind="image", label_names=list("0123456789"), name="cnn",
                            content_hash="x", scope=ParamScope("last_layers", n_layers=2))
    assert model.param_names_in_scope() == ["net.conv2.weight", "net.conv2.bias", "net.head.weight", "net.head.bias"]


def test_missing_path():
    with pytest.raises(ValueError, match="nowhere: no such file or folder"):
        load_model("nowhere")
