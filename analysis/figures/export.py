"""Static export of Plotly figures (PNG/SVG/PDF) through kaleido driving the system Chromium.

Chromium titles every PDF after kaleido's page ("Kaleido-fier"), and the PDF asks viewers to show that title;
with_pdf_title replaces it by an incremental update (PDF 1.7 §7.5.6): a new version of the Info dictionary,
an xref section for it and a trailer pointing back to the previous one, appended to the unchanged file.
"""
from __future__ import annotations

import atexit
import os
import re
import threading
import time
import warnings

import plotly.graph_objects as go

FORMATS = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}
NO_CHROMIUM = "figure export needs Chromium: `apt-get install chromium` (or set BROWSER_PATH)"
UNTITLED = "NPEFF Explorer figure"  # the PDF title of a figure without a title
CHROMIUM_STOPPED = ("figure export: Chromium stopped or did not start (kaleido's export server ended); check that "
                    "`chromium --headless --no-sandbox --dump-dom about:blank` runs here, then export again")
EXPORT_TIMEOUT_S = 120  # a figure takes ~0.25 s; a live Chromium that stopped answering gets this long
_TAGS = re.compile(r"<[^>]+>")  # Plotly titles may hold <b>, <br>, <sup> ...
_server_lock = threading.Lock()
_server_started = False
_stopped = False  # the last export found Chromium stopped (a download's failure reaches no page: pages say it)


def _check_chromium() -> None:
    """Raise the how-to-install error when kaleido would find no Chromium: its export server then dies in its own
    thread and every export waits for it forever."""
    from choreographer.browsers.chromium import Chromium

    path = os.environ.get("BROWSER_PATH")
    if path is not None and not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(f"figure export: BROWSER_PATH={path!r} is not an executable file; point it at Chromium "
                           "or unset it (Debian: `apt-get install chromium`)")
    if path is None and Chromium.find_browser(skip_local=False) is None:
        raise RuntimeError(NO_CHROMIUM)


def _ensure_server() -> None:
    """Keep one Chromium running for all exports (about 0.25 s per figure instead of 3 s)."""
    global _server_started
    with _server_lock:
        if not _server_started:
            import kaleido

            _check_chromium()

            kaleido.start_sync_server(silence_warnings=True)
            atexit.register(kaleido.stop_sync_server, silence_warnings=True)
            _server_started = True


def export_problem() -> tuple[str, bool] | None:
    """Why figure export fails here, and whether it cannot run at all (no Chromium) rather than failed last time
    (Chromium stopped); None when it works. Pages show it beside their export buttons: a download's own error
    reaches the browser as Streamlit's generic failure, if at all."""
    try:
        _check_chromium()
    except RuntimeError as e:
        return str(e), True
    return (CHROMIUM_STOPPED, False) if _stopped else None


def _server_alive() -> bool:
    """Whether kaleido's export thread still runs: it ends when Chromium fails to start or dies, and every call
    queued after that waits forever."""
    from kaleido._sync_server import GlobalKaleidoServer

    thread = getattr(GlobalKaleidoServer(), "_thread", None)  # kaleido 1.5's singleton; no thread: nothing to check
    return thread is None or thread.is_alive()


def _restart_server_next_time() -> None:
    """Close the ended export server, so that the next export starts Chromium again."""
    global _server_started
    import kaleido

    with _server_lock:
        kaleido.stop_sync_server(silence_warnings=True)  # its thread has ended: the close returns at once
        _server_started = False


def _to_image(fig: go.Figure, **options) -> bytes:
    """fig.to_image(**options) through the export server, or CHROMIUM_STOPPED as soon as the server has ended (the
    call itself would wait forever), or a timeout error after EXPORT_TIMEOUT_S."""
    global _stopped
    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outcome["data"] = fig.to_image(**options)
        except Exception as e:  # handed to the caller's thread
            missing = "chrome" in str(e).lower() or "browser" in str(e).lower()
            outcome["error"] = RuntimeError(NO_CHROMIUM) if missing else e
            outcome["cause"] = e

    worker = threading.Thread(target=call, daemon=True, name="figure-export")
    worker.start()
    deadline = time.monotonic() + EXPORT_TIMEOUT_S
    while worker.is_alive():
        worker.join(0.2)
        if worker.is_alive() and not _server_alive():
            _restart_server_next_time()
            _stopped = True
            raise RuntimeError(CHROMIUM_STOPPED)
        if worker.is_alive() and time.monotonic() > deadline:
            raise RuntimeError(f"figure export: Chromium gave no image in {EXPORT_TIMEOUT_S} s; export again, or "
                               "restart the app if it keeps happening")
    if "error" in outcome:
        raise outcome["error"] from outcome["cause"]
    _stopped = False
    return outcome["data"]


def figure_title(fig: go.Figure) -> str:
    """The figure's title as plain text (tags dropped, line breaks as spaces), else UNTITLED."""
    text = _TAGS.sub(" ", fig.layout.title.text or "")
    return " ".join(text.split()) or UNTITLED


def _pdf_text(text: str) -> bytes:
    """A PDF text string holding any text: UTF-16BE with its byte-order mark, as hex (<FEFF...>)."""
    return b"<" + ("\ufeff" + text).encode("utf-16-be").hex().upper().encode() + b">"


def with_pdf_title(pdf: bytes, title: str) -> bytes:
    """The PDF with /Title set to `title`: its Info dictionary rewritten by an appended incremental update."""
    trailer = re.match(rb"trailer\s*<<(.*?)>>\s*startxref\s*(\d+)\s*%%EOF\s*$", pdf[pdf.rfind(b"trailer"):], re.S)
    info = trailer and re.search(rb"/Info\s+(\d+)\s+(\d+)\s+R", trailer[1])
    if info is None:
        raise ValueError("pdf: no trailer with an /Info reference at its end; cannot set the title of this file")
    number, generation = int(info[1]), int(info[2])
    old = re.findall(rb"(?<!\d)%d\s+%d\s+obj\s*<<(.*?)>>\s*endobj" % (number, generation), pdf, re.S)
    kept = re.sub(rb"/Title\s*(\((?:\\.|[^\\)])*\)|<[0-9A-Fa-f\s]*>)", b"", old[-1] if old else b"").strip()
    body = b"%d %d obj\n<</Title %s\n%s>>\nendobj\n" % (number, generation, _pdf_text(title), kept)
    head = pdf if pdf.endswith(b"\n") else pdf + b"\n"
    start, xref = len(head), len(head) + len(body)  # byte offsets of the new Info object and xref section
    fields = re.sub(rb"/Prev\s+\d+", b"", trailer[1]).strip()
    tail = (b"xref\n%d 1\n%010d %05d n \ntrailer\n<<%s\n/Prev %s>>\nstartxref\n%d\n%%%%EOF\n"
            % (number, start, generation, fields, trailer[2], xref))
    return head + body + tail


def figure_bytes(fig: go.Figure, fmt: str, *, width: int = 900, height: int | None = None, scale: float = 2.0,
                 title: str | None = None) -> bytes:
    """The figure as PNG, SVG or vector PDF bytes (a PDF titled `title`, default the figure's title); the error
    says how to get Chromium if it is missing, and comes at once when Chromium stopped."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got '{fmt}'")
    _ensure_server()
    data = _to_image(fig, format=fmt, width=width, height=height or fig.layout.height or 500,
                     scale=scale if fmt == "png" else 1)
    return with_pdf_title(data, title or figure_title(fig)) if fmt == "pdf" else data
