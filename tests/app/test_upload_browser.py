"""Browser: a tiny GPT-2 folder and a tiny ViT folder, zipped in the test, are uploaded through the Load page's
file uploader, paired with a dataset, computed (PEFs + fit on the Compute page) and browsed on the Components
page; screenshots go to tests/artifacts/."""
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.app.conftest import ARTIFACTS, streamlit_app
from tests.tiny_models import build_tiny_gpt2, reviews_csv

VIT_CLASSES = ("cat", "dog", "bird")
LONG = 300_000  # ms: loading, a background compute job, the first render of a page on 2 busy cores


def build_tiny_vit(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer ViT classifier (3 classes, 16×16 RGB) with its image processor saved beside it."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=3,
                       id2label=dict(enumerate(VIT_CLASSES)), label2id={c: i for i, c in enumerate(VIT_CLASSES)})
    folder.mkdir(parents=True, exist_ok=True)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder


def image_folder(folder: Path, per_class: int = 8) -> Path:
    """PNGs in one subfolder per class, each class a different dominant colour."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(VIT_CLASSES):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, (16, 16, 3), dtype=np.uint8)
            pixels[..., c] += 150
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    return folder


def zipped(folder: Path) -> Path:
    return Path(shutil.make_archive(str(folder), "zip", root_dir=folder.parent, base_dir=folder.name))


@pytest.fixture(scope="module")
def upload_root(tmp_path_factory) -> Path:
    """The folder this file's tests write their models and datasets under (one subfolder each)."""
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def upload_url(demo_workspace, upload_root):
    """`streamlit run app.py` that may read upload_root (and its workspace), one for this file's tests."""
    with streamlit_app({"NPEFF_WORKSPACE": str(demo_workspace),
                        "NPEFF_ALLOWED_ROOTS": f"{upload_root}{os.pathsep}{demo_workspace}"}) as url:
        yield url


@pytest.fixture
def files(upload_root, request) -> Path:
    """This test's folder under upload_root."""
    folder = upload_root / request.node.name
    folder.mkdir()
    return folder


@pytest.fixture
def browser_page(page, upload_url):
    page.goto(upload_url)
    page.get_by_text("Active model:").first.wait_for(timeout=LONG)
    return page


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def _type(page, label: str, text: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(text)
    box.press("Enter")
    page.wait_for_timeout(1500)


def _upload_model(page, archive: Path) -> None:
    page.get_by_test_id("stRadio").nth(0).get_by_text("Upload", exact=True).click()
    page.locator("input[type=file]").first.set_input_files(str(archive))
    page.get_by_text(archive.name).first.wait_for(timeout=60_000)


def _local_dataset(page, path: Path) -> None:
    page.get_by_test_id("stRadio").nth(1).get_by_text("Local path", exact=True).click()
    _type(page, "CSV, JSONL, Parquet, .npz of images, or a folder of images with one subfolder per class", str(path))


def _load(page, name: str) -> None:
    page.get_by_role("button", name="Load", exact=True).click()
    page.get_by_text(f"Active model: {name}").first.wait_for(timeout=LONG)


def _compute_and_browse(page, prefix: str) -> None:
    """Fit 3 components on the Compute page (a background job), open the Components page, then perturb
    component 0 on the Perturb page."""
    page.get_by_role("link", name="Compute").click()
    page.get_by_role("button", name="Compute", exact=True).wait_for(timeout=LONG)
    _type(page, "Components", "3")
    _type(page, "Iterations", "30")
    page.get_by_role("button", name="Compute", exact=True).click()
    page.get_by_text(re.compile(r"^Decomposition \w+: 3 components")).first.wait_for(timeout=LONG)
    _shot(page, f"{prefix}_compute.png")
    page.get_by_role("link", name="Components").click()
    try:
        page.get_by_role("heading", name="Component 0").first.wait_for(timeout=LONG)
        page.get_by_text("Top coefficient").first.wait_for(timeout=LONG)
        _shot(page, f"{prefix}_components.png")
        page.get_by_role("tab", name="Statistics").click()
        page.locator(".js-plotly-plot:visible").first.wait_for(timeout=LONG)  # coefficient histogram ...
    finally:
        _shot(page, f"{prefix}_components_statistics.png")
    page.get_by_role("link", name="Perturb").click()
    page.get_by_role("button", name="Perturb", exact=True).click()
    page.get_by_text("KL ratio", exact=True).first.wait_for(timeout=LONG)
    page.get_by_text(re.compile(r"prediction\(s\) flipped")).first.wait_for(timeout=LONG)
    _shot(page, f"{prefix}_perturb.png")


@pytest.mark.browser
@pytest.mark.slow
def test_uploaded_gpt2_as_a_classifier_goes_end_to_end(browser_page, files):
    page = browser_page
    archive = zipped(build_tiny_gpt2(files / "tiny-gpt2"))
    csv = reviews_csv(files / "reviews.csv")
    _upload_model(page, archive)
    page.get_by_test_id("stSelectbox").filter(has_text="Adapter").click()
    page.get_by_role("option", name="Causal LM as a classifier (prompt + label words)").click()
    page.wait_for_timeout(1500)
    _type(page, "Prompt template", "{text} Answer:")
    _type(page, "Label words", "good, bad")
    page.get_by_text("Label word → token").first.wait_for(timeout=60_000)
    _local_dataset(page, csv)
    page.get_by_text("Annotation columns", exact=False).first.wait_for(timeout=60_000)
    _shot(page, "upload_gpt2_load.png")
    _load(page, "tiny-gpt2")
    page.get_by_text("Label word → token").first.wait_for()
    _shot(page, "upload_gpt2_loaded.png")
    _compute_and_browse(page, "upload_gpt2")


@pytest.mark.browser
@pytest.mark.slow
def test_uploaded_vit_with_an_image_folder_goes_end_to_end(browser_page, files):
    page = browser_page
    archive = zipped(build_tiny_vit(files / "tiny-vit"))
    images = image_folder(files / "shapes")
    _upload_model(page, archive)
    _local_dataset(page, images)
    page.get_by_text("Images are resized").first.wait_for(timeout=60_000)
    _load(page, "tiny-vit")
    page.get_by_text("cat, dog, bird").first.wait_for(timeout=60_000)
    _shot(page, "upload_vit_loaded.png")
    _compute_and_browse(page, "upload_vit")
