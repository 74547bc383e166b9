"""Image classifiers end to end: tiny random transformers ViT / ResNet / ConvNeXt folders and a torchvision
resnet18 state dict load with their preprocessing; per-example Fishers on RGB and grey batches match an
autograd loop; NPEFF fits and perturbs; PNG folders load as labelled datasets; RGB grids render."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from analysis.adapters.images import ImageModule, Preprocessing
from analysis.datasets import image_dataset, load_image_folder_dataset, make_batches, predict
from analysis.figures.components import example_grid
from analysis.fisher import compute_pefs
from analysis.loading import DatasetSpec, load_dataset_spec
from analysis.models import ParamScope, load_model
from analysis.npeff import fit_lrm_npeff
from analysis.perturb.api import perturb_component

LABELS = ["cat", "dog", "frog"]
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def _labelled(config_cls, **kwargs):
    return config_cls(num_labels=3, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)},
                      **kwargs)


def _save(net, processor, folder):
    net.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _vit(folder):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = _labelled(ViTConfig, image_size=16, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=24)
    return _save(ViTForImageClassification(config), ViTImageProcessor(size={"height": 16, "width": 16},
                                                                      image_mean=MEAN, image_std=STD), folder)


def _resnet(folder):
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    config = _labelled(ResNetConfig, num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                       layer_type="basic")
    return _save(ResNetForImageClassification(config), ConvNextImageProcessor(
        size={"shortest_edge": 16}, crop_pct=0.875, image_mean=MEAN, image_std=STD), folder)


def _convnext(folder):
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

    config = _labelled(ConvNextConfig, num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                       patch_size=2)
    return _save(ConvNextForImageClassification(config), ConvNextImageProcessor(
        size={"shortest_edge": 16}, crop_pct=0.875, image_mean=MEAN, image_std=STD), folder)


BUILDERS = {"vit": _vit, "resnet": _resnet, "convnext": _convnext}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def hf_model(request, tmp_path_factory):
    torch.manual_seed(0)
    return load_model(BUILDERS[request.param](tmp_path_factory.mktemp(request.param)))


def torchvision_available() -> bool:
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):  # RuntimeError: a torchvision built for another torch (CUDA vs CPU)
        return False
    return True


needs_torchvision = pytest.mark.skipif(not torchvision_available(),
                                       reason="torchvision cannot be imported with this torch build")


def rgb(n=6, h=12, w=14, seed=0):
    rng = np.random.default_rng(seed)
    return image_dataset(rng.random((n, 3, h, w)), rng.integers(0, 3, n), label_names=LABELS, name="rgb",
                         source="rgb")


def grey(n=5, h=12, w=14, seed=1):
    rng = np.random.default_rng(seed)
    return image_dataset(rng.random((n, h, w)), rng.integers(0, 3, n), label_names=LABELS, name="grey",
                         source="grey")


def loop_pefs(model, dataset):
    """Slow reference: A [n, C, M], one autograd.grad per example and class on a batch of one."""
    names = model.param_names_in_scope()
    params = [p for n, p in model.named_parameters() if n in names]
    A = []
    for i in range(len(dataset)):
        batch = next(make_batches(model, dataset.subset([i]), batch_size=1))
        logp = model(batch)[0].log_softmax(-1)
        A.append(torch.stack([logp[y].exp().sqrt() * torch.cat(
            [g.flatten() for g in torch.autograd.grad(logp[y], params, retain_graph=True)])
            for y in range(len(logp))]).detach().numpy())
    return np.stack(A)


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_hf_folders_load_with_their_preprocessing(hf_model):
    adapter = hf_model.adapter
    assert adapter.kind == "image-classification" and hf_model.label_names == LABELS
    assert hf_model.input_kind == "image"
    settings = adapter.settings()["preprocessing"]
    assert settings["mean"] == pytest.approx(MEAN) and settings["std"] == pytest.approx(STD)
    assert settings["size"] == (16, 16) or settings["crop"] == (16, 16)
    x = adapter.preprocessing.apply(torch.as_tensor(rgb().images))
    assert x.shape == (6, 3, 16, 16)


@pytest.mark.parametrize("make", [rgb, grey])
def test_hf_pefs_match_the_autograd_loop(hf_model, make):
    dataset = make()
    A = loop_pefs(hf_model, dataset)
    lrm = compute_pefs(hf_model, make_batches(hf_model, dataset, batch_size=4), kind="lrm", device="cpu")
    assert_close(lrm.dense(), A)
    diag = compute_pefs(hf_model, make_batches(hf_model, dataset, batch_size=4), kind="diag", device="cpu")
    assert_close(diag.dense(), (A ** 2).sum(axis=1))


def test_hf_predictions_do_not_depend_on_the_batch(hf_model):
    dataset = rgb()
    together = predict(hf_model, dataset, batch_size=6, device="cpu")
    alone = np.concatenate([predict(hf_model, dataset.subset([i]), batch_size=1, device="cpu")
                            for i in range(len(dataset))])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_normalization_is_inside_the_logits(tmp_path):
    model = load_model(_vit(tmp_path / "vit"))
    pixels = torch.as_tensor(rgb(n=2, h=16, w=16).images)
    expected = model.net(pixel_values=(pixels - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None])
    torch.testing.assert_close(model({"pixels": pixels}), expected.logits)


def test_lrm_npeff_fit_and_perturbation_on_tiny_vit(tmp_path):
    model = load_model(_vit(tmp_path / "vit"), scope=ParamScope("last_layers", n_layers=1))
    dataset = rgb(n=16, seed=3)
    pefs = compute_pefs(model, make_batches(model, dataset, batch_size=8), kind="lrm", n_values_per_example=200,
                        device="cpu")
    decomposition = fit_lrm_npeff(pefs, 2, n_iters=5, n_iters_g_only=2, device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = perturb_component(model, dataset, decomposition, 0, magnitude=1.0, max_sim=0.5, top_n=3,
                               baseline_n=6, batch_size=4, device="cpu")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert len(result.examples) == 9 and np.isfinite(result.kl_ratio)


def test_an_image_folder_without_preprocessor_config_is_refused(tmp_path):
    folder = _vit(tmp_path / "vit")
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ValueError, match=r"vit: no preprocessor_config.json; save the model's image processor next "
                                         r"to the weights with image_processor.save_pretrained\(folder\)"):
        load_model(folder)


def test_an_image_processor_with_custom_code_is_refused(tmp_path):
    folder = _vit(tmp_path / "vit")
    path = folder / "preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "auto_map": {"AutoImageProcessor": "x.Y"}}))
    with pytest.raises(ValueError, match="needs custom code"):
        load_model(folder)


def test_preprocessing_resizes_shortest_edge_and_crops():
    prep = Preprocessing(mean=(0.0,) * 3, std=(1.0,) * 3, shortest_edge=18, crop=(16, 16))
    assert prep.apply(torch.rand(2, 3, 12, 24)).shape == (2, 3, 16, 16)  # 12x24 -> 18x36 -> centre 16x16
    assert prep.apply(torch.rand(2, 12, 24)).shape == (2, 3, 16, 16)  # grey repeated to 3 channels


def test_an_unknown_torchvision_architecture_lists_the_known_ones(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match=r"torchvision architecture must be one of \['convnext_tiny', "
                                         r"'efficientnet_b0', 'mobilenet_v3_small', 'resnet18', 'resnet50', "
                                         r"'vit_b_16'\], got 'resnet7'"):
        load_model(path, architecture="torchvision:resnet7", label_names=LABELS)


@needs_torchvision
def test_torchvision_resnet18_loads_strictly_and_matches_the_loop(tmp_path):
    import torchvision

    net = torchvision.models.get_model("resnet18", weights=None, num_classes=3).eval()
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    model = load_model(path, architecture="torchvision:resnet18", label_names=LABELS,
                       scope=ParamScope("last_layers", n_layers=1))
    assert model.adapter.kind == "torchvision"
    for dataset in (rgb(h=16, w=16), grey(h=16, w=16)):
        A = loop_pefs(model, dataset)
        assert_close(compute_pefs(model, make_batches(model, dataset, batch_size=4), kind="lrm",
                                  device="cpu").dense(), A)
    save_file({k: v.contiguous() for k, v in net.state_dict().items() if k != "fc.bias"}, str(path))
    with pytest.raises(ValueError, match=r"weights do not match the architecture \(missing \['fc.bias'\]\)"):
        load_model(path, architecture="torchvision:resnet18", label_names=LABELS)


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def png_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "pets"
    for label, n in (("cat", 2), ("dog", 3)):
        for i in range(n):
            _png(root / label / f"{i}.png", rng.integers(0, 256, (10, 12, 3), dtype=np.uint8))
    _png(root / "dog" / "big.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))  # resized to 10x12
    return root


def test_a_png_folder_loads_with_labels_from_the_class_folders(png_folder):
    dataset = load_image_folder_dataset(png_folder, LABELS)
    assert dataset.images.shape == (6, 3, 10, 12) and dataset.name == "pets"
    np.testing.assert_array_equal(dataset.labels, [0, 0, 1, 1, 1, 1])
    first = np.asarray(Image.open(png_folder / "cat" / "0.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(dataset.images[0], first.transpose(2, 0, 1))
    assert load_image_folder_dataset(png_folder, LABELS, size=(8, 8)).images.shape == (6, 3, 8, 8)
    assert load_dataset_spec(DatasetSpec(source=str(png_folder), label_names=tuple(LABELS))).digest() == \
        dataset.digest()


def test_a_grey_png_folder_gives_grey_images(tmp_path):
    _png(tmp_path / "g" / "frog" / "a.png", np.full((6, 7), 255, np.uint8))
    dataset = load_image_folder_dataset(tmp_path / "g", LABELS)
    assert dataset.images.shape == (1, 6, 7) and dataset.labels.tolist() == [2] and dataset.images.max() == 1


def test_an_unknown_class_folder_is_refused(png_folder):
    _png(png_folder / "horse" / "0.png", np.zeros((10, 12, 3), np.uint8))
    with pytest.raises(ValueError, match=r"^pets: subfolder 'horse' is not one of the model's classes "
                                         r"\['cat', 'dog', 'frog'\]; name each subfolder after a class$"):
        load_image_folder_dataset(png_folder, LABELS)


def test_a_non_image_file_is_refused(png_folder):
    (png_folder / "cat" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"^pets/cat/notes.txt: not a PNG or JPEG file; a class folder holds only "
                                         r"\.png, \.jpg and \.jpeg files$"):
        load_image_folder_dataset(png_folder, LABELS)
    (png_folder / "cat" / "notes.txt").unlink()
    (png_folder / "cat" / "fake.png").write_text("not a png")
    with pytest.raises(ValueError, match=r"^pets/cat/fake.png: could not be read as a PNG or JPEG image"):
        load_image_folder_dataset(png_folder, LABELS)


def test_a_link_out_of_the_folder_is_refused(png_folder, tmp_path):
    _png(tmp_path / "outside.png", np.zeros((10, 12, 3), np.uint8))
    (png_folder / "cat" / "link.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(ValueError, match=r"^pets/cat/link.png: is not a plain file"):
        load_image_folder_dataset(png_folder, LABELS)


def test_example_grid_renders_rgb_images(png_folder):
    dataset = load_image_folder_dataset(png_folder, LABELS)
    images = ImageModule(LABELS).display_images(dataset)
    assert images.shape == (6, 10, 12, 3)
    fig = example_grid(images, [f"#{i}" for i in range(6)], n_cols=4)
    assert [t.type for t in fig.data] == ["image"] * 6
    np.testing.assert_allclose(np.asarray(fig.data[0].z), np.round(images[0] * 255))


def test_a_bare_state_dict_with_an_image_config_loads(tmp_path):
    folder = _vit(tmp_path / "vit")
    reference = load_model(folder)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in reference.net.state_dict().items()}, str(path))
    model = load_model(path, config=str(folder / "config.json"))
    assert model.adapter.kind == "image-classification"
    np.testing.assert_allclose(predict(model, rgb(), device="cpu"), predict(reference, rgb(), device="cpu"))
