"""The HTML reports in a real browser: headless Chromium opens the index and a detail
page offline, with no console errors, no network requests and the plots drawn.

Needs Debian's `chromium` package (`apt-get install chromium`; .ci/run installs it).
Set ADAMCONF_SCREENSHOTS=DIR to keep screenshots of what the browser showed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adamconf.loading import load_backend
from adamconf.runner import Runner, as_dict
from adamconf.spec import load_spec
from tests import browser

ROOT = Path(__file__).resolve().parents[1]
EXE = browser.find()
pytestmark = pytest.mark.skipif(EXE is None, reason="headless Chromium is not installed: apt-get install chromium "
                                "(Debian's package; .ci/run installs it)")
COUNTS = {"svgs": "document.querySelectorAll('svg').length",
          "histograms": "document.querySelectorAll('svg.histogram').length",
          "drawn": "[...document.querySelectorAll('svg.histogram rect')].filter(r => r.getBBox().width > 0).length",
          "cells": "document.querySelectorAll('table.matrix td').length",
          "rows": "document.querySelectorAll('table.matrix th.clause').length",
          "sticky": "getComputedStyle(document.querySelector('table.matrix thead th')).position"}


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "reports"
    runner = Runner(load_spec(), load_backend("numpy"), "numpy", profile="ci", max_examples=3, out=out / "numpy")
    record = as_dict(runner.run(["keras3", "tf1"], ["float32", "bfloat16"],
                                ["dense", "trajectory", "no-gradients", "api-defaults"]))
    (out / "numpy").mkdir(parents=True, exist_ok=True)
    (out / "numpy" / "results.json").write_text(json.dumps(record))
    r = subprocess.run([sys.executable, "-m", "adamconf", "report", "--all", "--no-run", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def chrome():
    b = browser.Browser(EXE)
    yield b
    b.close()


def _clean(got: dict) -> None:
    errors = [c for c in got["console"] if c.get("type") in ("error", "assert", "warning")]
    errors += [e for e in got["log"] if e.get("level") in ("error", "warning")]
    assert not errors and not got["exceptions"], errors or got["exceptions"]
    assert not got["failed"], got["failed"]
    assert not got["requests"], f"the page asked the network for {got['requests']}"


def _shoot(chrome: browser.Browser, name: str) -> None:
    where = os.environ.get("ADAMCONF_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        chrome.screenshot(Path(where) / name)


def test_index_opens_offline_with_every_cell(chrome, pages):
    got = chrome.load(pages / "index.html", COUNTS)
    _clean(got)
    v = got["values"]
    res = json.loads((pages / "numpy" / "results.json").read_text())
    pairs = {(c["variant"], c["clause"]) for c in res["clauses"]}
    assert v["rows"] == len(pairs) and v["cells"] > v["rows"] and v["sticky"] == "sticky"
    _shoot(chrome, "index.png")


def test_detail_page_draws_its_plots(chrome, pages):
    got = chrome.load(pages / "numpy" / "keras3.html", COUNTS)
    _clean(got)
    v = got["values"]
    res = json.loads((pages / "numpy" / "results.json").read_text())
    drawn = [r for r in res["checks"] if r["variant"] == "keras3" and r.get("histogram")]
    assert v["histograms"] == len(drawn) > 0 and v["drawn"] > 0
    assert v["svgs"] >= 2 * len(drawn) + 1          # histogram and share bar per check, a trajectory plot
    _shoot(chrome, "detail.png")


@pytest.mark.parametrize("page", ["index.html", "numpy/keras3.html", "tensorflow/keras3.html"])
def test_published_pages_open_offline(chrome, page):
    path = ROOT / "reports" / page
    if not path.exists():
        pytest.skip(f"{page} is not published")
    got = chrome.load(path, COUNTS)
    _clean(got)
    assert got["values"]["svgs" if "/" in page else "cells"] > 0
