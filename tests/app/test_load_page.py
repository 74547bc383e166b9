"""AppTest: the app opens on the text demo with no configuration, and the Load page switches pairs."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "app.py"


def _app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=180)


def test_app_opens_on_the_text_demo(app_env):
    at = _app().run()
    assert not at.exception, at.exception
    assert at.subheader[-1].value == "Active model: text-demo"
    assert [m.value for m in at.metric][:2] == ["2", "22,713,986"]
    assert "rotten" in at.sidebar.caption[0].value and "fresh" in at.sidebar.caption[0].value


def test_switch_to_the_image_demo(app_env):
    at = _app().run()
    at.radio(key="model_source").set_value("Image demo").run()
    at.button(key="load_pair").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.subheader[-1].value == "Active model: image-demo"
    assert at.metric[0].value == "10"


def test_bad_local_path_shows_a_message_and_keeps_the_pair(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("NPEFF_ALLOWED_ROOTS", str(tmp_path))  # allowed, but nothing there
    at = _app().run()
    at.radio(key="model_source").set_value("Local path").run()
    at.text_input(key="model_path").input(str(tmp_path / "nope")).run()
    at.radio(key="data_source").set_value("Text demo").run()
    at.button(key="load_pair").click().run()
    assert not at.exception
    assert any("no such file or folder" in e.value for e in at.error)
    assert at.subheader[-1].value == "Active model: text-demo"
