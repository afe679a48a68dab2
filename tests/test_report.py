"""Tests of llmbrain.report.Report."""

import matplotlib

matplotlib.use("Agg")

import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from llmbrain.report import Report


def _figure(color="#0072B2"):
    fig = Figure(figsize=(2, 1.5))
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [1, 0, 2], color=color, linewidth=4)
    ax.set_title("a figure")
    return fig


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.srcs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def _parse(html):
    parser = _Collector()
    parser.feed(html)
    return parser


@pytest.fixture
def report(tmp_path):
    png = tmp_path / "given.png"
    _figure("#D55E00").savefig(png)
    rep = Report("Networks & <pruning>")
    rep.add_heading("Maps")
    rep.add_text("First paragraph with <b>tags</b> & ampersands.\n\nSecond paragraph.")
    rep.add_figure(_figure(), caption="A <matplotlib> figure")
    rep.add_figure(png, caption="A saved PNG")
    rep.add_heading("Results", level=3)
    table = pd.DataFrame({"criterion": ["networks", "<script>alert(1)</script>"],
                          "perplexity": [21.123456, np.nan]})
    rep.add_table(table, caption="Perplexity at 30% sparsity", index=False)
    return rep


def test_save_writes_index_and_figures(report, tmp_path):
    out = tmp_path / "report"
    index = report.save(out)
    assert index == out / "index.html"
    html = index.read_text(encoding="utf-8")
    parsed = _parse(html)
    assert parsed.srcs == ["figures/figure-001.png", "figures/figure-002.png"]
    for src in parsed.srcs:
        data = (out / src).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 500
    assert parsed.tags.count("figure") == 2 and parsed.tags.count("table") == 1
    assert parsed.tags.count("h2") == 1 and parsed.tags.count("h3") == 1
    assert parsed.tags.count("p") == 2
    assert "<script" not in html.replace("<style>", "")  # no JavaScript, no injected tags
    assert "21.12" in html and "Perplexity at 30% sparsity" in html
    assert not [f for f in out.rglob("*.tmp")]  # temporary files were renamed away


def test_text_is_escaped(report):
    html = report.to_html()
    assert "<title>Networks &amp; &lt;pruning&gt;</title>" in html
    assert "&lt;b&gt;tags&lt;/b&gt; &amp; ampersands." in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "A &lt;matplotlib&gt; figure" in html
    assert "<b>" not in html


def test_paths_are_relative(report, tmp_path):
    html = report.to_html()
    assert str(tmp_path) not in html
    assert "file:" not in html
    assert all(not src.startswith(("/", "http")) for src in _parse(html).srcs)


def test_figure_is_captured_when_added(tmp_path):
    fig = _figure()
    rep = Report("snapshot").add_figure(fig)
    fig.axes[0].set_title("changed later")
    fig.set_size_inches(8, 8)
    rep.save(tmp_path / "r")
    saved = (tmp_path / "r" / "figures" / "figure-001.png").read_bytes()
    fresh = Report("x").add_figure(_figure())._blocks[0][1].png
    assert saved == fresh


def test_save_twice_overwrites(report, tmp_path):
    report.save(tmp_path / "r")
    report.add_text("Added later.")
    html = report.save(tmp_path / "r").read_text()
    assert "Added later." in html


def test_bad_inputs(tmp_path):
    rep = Report("t")
    with pytest.raises(TypeError, match="Figure"):
        rep.add_figure(42)
    with pytest.raises(FileNotFoundError):
        rep.add_figure(tmp_path / "missing.png")
    (tmp_path / "fig.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="PNG"):
        rep.add_figure(tmp_path / "fig.jpg")
    (tmp_path / "fake.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        rep.add_figure(tmp_path / "fake.png")
    with pytest.raises(TypeError, match="DataFrame"):
        rep.add_table([[1, 2]])
    with pytest.raises(ValueError, match="level"):
        rep.add_heading("x", level=1)
    with pytest.raises(TypeError, match="str"):
        Report(None)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        rep.save(tmp_path / "file")


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed")
def test_report_renders_in_headless_browser(report, tmp_path):
    index = report.save(tmp_path / "r")
    shot = tmp_path / "shot.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1000,1400", index.resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1400, 1000)
    # Not blank: the page shows text, the blue and vermillion figure lines, and the table.
    assert pixels.std() > 0.05
    blue = np.all(np.abs(pixels - np.array([0, 0x72, 0xB2]) / 255) < 0.08, axis=-1)
    vermillion = np.all(np.abs(pixels - np.array([0xD5, 0x5E, 0]) / 255) < 0.08, axis=-1)
    assert blue.sum() > 50 and vermillion.sum() > 50
