"""Static export of Plotly figures (PNG/SVG/PDF) through kaleido driving the system Chromium."""
from __future__ import annotations

import atexit
import threading
import warnings

import plotly.graph_objects as go

FORMATS = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}
_server_lock = threading.Lock()
_server_started = False


def _ensure_server() -> None:
    """Keep one Chromium running for all exports (about 0.25 s per figure instead of 3 s)."""
    global _server_started
    with _server_lock:
        if not _server_started:
            import kaleido

            kaleido.start_sync_server(silence_warnings=True)
            atexit.register(kaleido.stop_sync_server, silence_warnings=True)
            _server_started = True


def figure_bytes(fig: go.Figure, fmt: str, *, width: int = 900, height: int | None = None, scale: float = 2.0) -> bytes:
    """The figure as PNG, SVG or vector PDF bytes; the error says how to get Chromium if it is missing."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got '{fmt}'")
    _ensure_server()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fig.to_image(format=fmt, width=width, height=height or fig.layout.height or 500,
                                scale=scale if fmt == "png" else 1)
    except Exception as e:
        if "chrome" in str(e).lower() or "browser" in str(e).lower():
            raise RuntimeError("figure export needs Chromium: `apt-get install chromium` (or set BROWSER_PATH)") from e
        raise
