"""The public table: the results schema, the worst input of every cell, the side-by-side
index (HTML and Markdown), the detail pages, the CI step summary and `report --all`."""
from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from adamconf.evaluate import evaluate
from adamconf.loading import load_backend
from adamconf.publish import build_pages, run_backend
from adamconf.reports import html, index
from adamconf.reports.load import SCHEMA, ReportError, load_results
from adamconf.reports.schema import ANNOTATIONS, KEYWORDS, keywords_used, results_schema, validate
from adamconf.reports.svg import histogram, share_bar
from adamconf.reports.table import API, Impl, build, check_id, compared, number
from adamconf.runner import Runner, as_dict
from adamconf.spec import load_spec
from adamconf.spec.model import CLAUSE_AREAS
from adamconf.worst_case import load_cell, ulps

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_spec()
PUBLISHED = sorted((ROOT / "reports").glob("*/results.json"))
# a small plan that still has every kind of cell: numeric, trajectory, refusal, API, n/a
SMALL = dict(variants=["keras3", "tf1"], dtypes=["float16", "float32"],
             only=["dense", "trajectory", "no-gradients", "api-defaults", "bfloat16-frozen"])


def _jsonschema():
    return pytest.importorskip("jsonschema", reason="the schema tests need jsonschema: pip install -e '.[test]'")


def _cli(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adamconf", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd, env=env)


def _run(backend_ref: str, out: Path, variants=SMALL["variants"], dtypes=SMALL["dtypes"], only=SMALL["only"]) -> dict:
    runner = Runner(SPEC, load_backend(backend_ref), backend_ref, profile="ci", max_examples=4, out=out)
    record = as_dict(runner.run(variants, dtypes, only))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(record, indent=1))
    return record


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("fresh") / "numpy"
    return out, _run("numpy", out)


@pytest.fixture(scope="module")
def failing(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("failing") / "eps-inside-sqrt"
    return out, _run("adamconf.corpus.planted_bugs:EpsInsideSqrt", out, ["keras3"], ["float32"], ["fresh", "dense"])


# -- the schema ----------------------------------------------------------------------


def test_the_schema_tag_has_one_home():
    assert results_schema()["properties"]["schema"]["const"] == SCHEMA
    assert "adamconf-results" not in (ROOT / "reports" / "load.py").read_text().replace("adamconf-results file", "")


def test_the_builtin_checker_implements_every_keyword_the_schema_uses():
    assert keywords_used(results_schema()) - ANNOTATIONS <= KEYWORDS


def test_the_schema_is_a_valid_json_schema():
    js = _jsonschema()
    js.Draft202012Validator.check_schema(results_schema())


def test_the_schema_ships_with_the_package():
    code = "from adamconf.reports.schema import results_schema; print(results_schema()['title'])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0 and "adamconf results" in r.stdout


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.parent.name)
def test_every_published_results_file_validates(path):
    js = _jsonschema()
    record = json.loads(path.read_text())
    js.validate(record, results_schema())
    assert validate(record) == []


def test_fresh_runs_validate(fresh, failing):
    js = _jsonschema()
    for _, record in (fresh, failing):
        js.validate(record, results_schema())
        assert validate(record) == []


def _break(record: dict, how: str) -> dict:
    r = copy.deepcopy(record)
    if how == "missing key":
        del r["environment"]
    elif how == "list for a mapping":
        r["summary"] = []
    elif how == "mapping for a list":
        r["checks"][0]["histogram"] = {"0": 3}
    elif how == "unknown verdict":
        r["clauses"][0]["status"] = {"float32": "passed"}
    elif how == "unknown field":
        r["checks"][1]["worst"] = 1.0
    elif how == "negative count":
        r["checks"][0]["examples"] = -1
    elif how == "bad worst case":
        r["checks"][0]["worst_case"]["case"]["state"]["params"] = {"hex": []}
    return r


BREAKS = ["missing key", "list for a mapping", "mapping for a list", "unknown verdict", "unknown field",
          "negative count", "bad worst case"]


@pytest.mark.parametrize("how", BREAKS)
def test_invalid_results_are_rejected_by_both_checkers_and_by_report(fresh, tmp_path, how):
    js = _jsonschema()
    bad = _break(fresh[1], how)
    errors = validate(bad)
    assert errors, how
    with pytest.raises(js.ValidationError):
        js.validate(bad, results_schema())
    p = tmp_path / "results.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(ReportError, match="does not match the results schema"):
        load_results(p)
    r = _cli("report", str(p))
    assert r.returncode == 2 and "does not match the results schema: at $" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_schema_messages_name_the_place(fresh):
    assert validate(_break(fresh[1], "missing key")) == ["at $: 'environment' is a required property"]
    assert validate(_break(fresh[1], "list for a mapping")) == ["at $.summary: [] is not of type 'object'"]
    msg = validate(_break(fresh[1], "mapping for a list"))[0]
    assert msg.startswith("at $.checks[0].histogram:") and "'array'" in msg


# -- the worst input of every cell -----------------------------------------------------


def test_ulps_count_units_in_the_last_place():
    assert ulps(1.0 + 2.0 ** -23, 1, "float32") == 1.0
    assert ulps(1.0, 1.0 + 2.0 ** -24, "float32") == 0.5          # below 1 the spacing halves, above it doubles
    assert ulps(2.0 ** -149, 0, "float32") == 1.0                 # the subnormal spacing at zero
    assert ulps(3.0, 3, "float16") == 0.0
    assert ulps(math.inf, 1, "float16") == math.inf


def test_every_compared_cell_keeps_its_worst_input_and_it_replays(fresh):
    out, record = fresh
    backend = load_backend("numpy")
    kept = 0
    for run in record["checks"]:
        wc = run.get("worst_case")
        if run["dtype"] == API or run["check"] == "no-gradients" or run["status"] == "not applicable":
            assert wc is None, check_id(run)
            continue
        if run["status"] == "unsupported":
            continue
        assert wc is not None and number(wc["ratio"]) == number(run["worst_ratio"]), check_id(run)
        assert wc["replay"] == (f"adamconf replay {out / 'results.json'} --cell {check_id(run)} --backend numpy")
        inp, _, check = load_cell(out / "results.json", check_id(run))
        again = evaluate(backend, SPEC.variant(inp.variant), inp, run["k"], 10.0)
        assert check == run["check"] and again.ok
        assert again.worst == pytest.approx(number(run["worst_ratio"]), rel=1e-12), check_id(run)
        kept += 1
    assert kept >= 6


def test_the_worst_element_is_described_in_hex_and_decimal(fresh):
    run = next(r for r in fresh[1]["checks"] if r["check"] == "dense" and r["dtype"] == "float32"
               and number(r["worst_ratio"]) > 0)
    wc = run["worst_case"]
    assert wc["field"] in ("params", "m", "v") and wc["variable"] is not None and wc["element"] is not None
    obs = float.fromhex(wc["observed"]["hex"])
    assert np.float32(wc["observed"]["decimal"]) == np.float32(obs)
    assert float(wc["exact"]["decimal"]) == pytest.approx(float.fromhex(wc["exact"]["nearest"]["hex"]))
    assert number(wc["ulps"]) >= 0
    case = wc["case"]
    arr = case["state"][wc["field"]][wc["variable"]]
    assert len(arr["hex"]) > wc["element"]


def test_trajectories_keep_the_worst_error_per_step(fresh):
    runs = [r for r in fresh[1]["checks"] if r["check"] == "trajectory" and r["status"] == "pass"]
    assert runs
    for r in runs:
        steps = [s for s, _ in r["by_step"]]
        assert steps == sorted(steps) and steps[0] == 1 and len(steps) >= 2
        assert max(number(x) for _, x in r["by_step"]) == number(r["worst_ratio"])
    assert all(r["by_step"] is None for r in fresh[1]["checks"] if r["check"] != "trajectory")


def test_a_failing_cell_keeps_its_worst_input_too(failing):
    out, record = failing
    bad = [r for r in record["checks"] if r["status"] == "fail" and r["worst_case"]]
    assert bad
    r = bad[0]
    assert number(r["worst_case"]["ratio"]) > r["k"]
    rc = _cli("replay", str(out / "results.json"), "--cell", check_id(r), "--backend",
              "adamconf.corpus.planted_bugs:EpsInsideSqrt")
    assert rc.returncode == 1 and "FAIL" in rc.stdout, rc.stdout + rc.stderr
    rc = _cli("replay", str(out / "results.json"), "--cell", check_id(r), "--backend", "adamconf.corpus.op_orders:KernelOrder")
    assert rc.returncode == 0 and "PASS" in rc.stdout


def test_replay_of_a_cell_says_what_is_wrong(fresh):
    out = fresh[0]
    r = _cli("replay", str(out / "results.json"), "--cell", "keras3-float32-nonsense", "--backend", "numpy")
    assert r.returncode == 2 and "has no cell 'keras3-float32-nonsense'" in r.stderr
    r = _cli("replay", str(out / "results.json"), "--cell", "keras3-api-api-defaults", "--backend", "numpy")
    assert r.returncode == 2 and "kept no input" in r.stderr


# -- the table -------------------------------------------------------------------------


def _twin(record: dict, name: str) -> dict:
    """The same results under another implementation's name, one clause cell failing."""
    r = copy.deepcopy(record)
    r["backend"] = name
    run = next(c for c in r["checks"] if c["check"] == "dense" and c["variant"] == "keras3" and c["dtype"] == "float32")
    run["status"], run["worst_ratio"], run["message"] = "fail", 123.0, "planted"
    for c in r["clauses"]:
        if c["variant"] == "keras3" and "dense" in c["checks"]:
            c["status"]["float32"] = "fail"
    return r


def test_the_table_puts_implementations_side_by_side(fresh):
    res = fresh[1]
    t = build([Impl("numpy", res, "numpy/"), Impl("other", _twin(res, "other"), "other/")], CLAUSE_AREAS)
    pairs = {(c["variant"], c["clause"]) for c in res["clauses"]}
    assert len(t.rows) == len(pairs)
    assert [(i.name, d) for i, d in t.columns()] == [(n, d) for n in ("numpy", "other") for d in SMALL["dtypes"]]
    runs = {(r["variant"], r["dtype"], r["check"]): r for r in res["checks"]}
    for row in t.rows:
        clause = next(c for c in res["clauses"] if (c["variant"], c["clause"]) == (row.variant, row.clause))
        for col, verdict in clause["status"].items():
            cell = row.cells[("numpy", col)]
            assert cell.verdict == verdict
            mine = [runs[(row.variant, col, n)] for n in clause["checks"] if (row.variant, col, n) in runs]
            measured = [number(r["worst_ratio"]) for r in mine if compared(r)]
            if measured and verdict == "pass":
                assert cell.ratio == max(measured) and cell.text == f"{max(measured):.2g}".replace("0e+00", "0")
            if cell.run is not None:
                assert cell.href == f"numpy/{row.variant}.html#{check_id(cell.run)}"
    moved = [r for r in t.rows if r.variant == "keras3" and ("other", "float32") in r.cells
             and r.cells[("other", "float32")].verdict == "fail"]
    assert moved and all(r.cells[("other", "float32")].text == "fail 1.2e+02" for r in moved)
    # rows come grouped: variant in the order run, then area in the spec's order
    order = [(SMALL["variants"].index(r.variant), CLAUSE_AREAS.index(r.area)) for r in t.rows]
    assert order == sorted(order)


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.svgs = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        self.svgs += tag == "svg"


def _parse(path: Path) -> _Anchors:
    p = _Anchors()
    p.feed(path.read_text())
    return p


def _pages(tmp_path: Path, fresh) -> Path:
    out = tmp_path / "reports"
    (out / "numpy").mkdir(parents=True)
    (out / "numpy" / "results.json").write_text(json.dumps(fresh[1]))
    (out / "other").mkdir()
    (out / "other" / "results.json").write_text(json.dumps(_twin(fresh[1], "other")))
    r = _cli("report", "--all", "--no-run", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert re.search(r"index.md: \d+ rows x 4 columns \(numpy, other\)", r.stdout), r.stdout
    return out


def test_every_link_of_the_index_and_the_pages_resolves(tmp_path, fresh):
    out = _pages(tmp_path, fresh)
    pages = [out / "index.html", *sorted(out.glob("*/*.html"))]
    assert len(pages) == 1 + 2 * (1 + len(SMALL["variants"]))
    parsed = {p: _parse(p) for p in pages}
    for p, a in parsed.items():
        for href in a.hrefs:
            target, _, anchor = href.partition("#")
            dest = (p.parent / target).resolve() if target else p
            assert dest.exists(), f"{p.name}: {href}"
            if anchor:
                assert anchor in parsed[dest].ids, f"{p.name}: {href}"
    links = [h for h in parsed[out / "index.html"].hrefs if "#" in h and not h.startswith("#")]
    t = build([Impl("numpy", fresh[1]), Impl("other", _twin(fresh[1], "other"))])
    assert len(links) == sum(1 for r in t.rows for c in r.cells.values() if c.run is not None)


def test_detail_pages_draw_the_plots_and_show_the_worst_input(tmp_path, fresh):
    out = _pages(tmp_path, fresh)
    page = (out / "numpy" / "keras3.html").read_text()
    runs = [r for r in fresh[1]["checks"] if r["variant"] == "keras3"]
    drawn = [r for r in runs if r.get("histogram")]
    assert page.count("class=\"plot histogram\"") == len(drawn)
    assert page.count("class=\"plot share\"") == len(drawn)
    assert page.count("<title>worst err/(u*S) at each step") == sum(1 for r in runs if r.get("by_step")) > 0
    for r in runs:
        if r.get("worst_case"):
            wc = r["worst_case"]
            assert html.escape(wc["replay"]) in page
            assert wc["case"]["grads"][0] is None or wc["case"]["grads"][0]["hex"][0] in page
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")


def test_markdown_index_and_step_summary(tmp_path, fresh, failing):
    out = _pages(tmp_path, fresh)
    md = (out / "index.md").read_text()
    rows = {(c["variant"], c["clause"]) for c in fresh[1]["clauses"]}
    areas = "|".join(CLAUSE_AREAS)
    assert sum(1 for line in md.splitlines() if re.match(rf"\| ({areas}) \| [\w.-]+ \|", line)) == len(rows)
    assert "| keras3 | numpy float16 |" not in md and "numpy float16 | numpy float32" in md
    s = index.step_summary(failing[1], CLAUSE_AREAS)
    assert s.splitlines()[0] == f"## adamconf check: `{failing[1]['backend']}` FAILED"
    assert "### Failures" in s and "replay: `adamconf replay" in s and "<details>" in s
    ok = index.step_summary(fresh[1], CLAUSE_AREAS)
    assert "passed" in ok and "### Failures" not in ok
    assert re.search(r"\| keras3 \| pass [\d.e+-]+ \| pass [\d.e+-]+ \| pass \|", ok), ok


def test_check_appends_its_summary_for_github_actions(tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
    r = _cli("check", "--backend", "numpy", "--variant", "keras3", "--dtype", "float32", "--check", "dense",
             "--max-examples", "3", "--quiet", "--out", str(tmp_path / "out"), env=env)
    assert r.returncode == 0, r.stderr
    text = summary.read_text()
    assert text.startswith("earlier step\n## adamconf check: `numpy` passed")
    assert "| keras3 |" in text


def test_svg_histogram_marks_k_and_colours_the_bins_past_it():
    edges = [0.0, 0.01, 0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, math.inf]
    svg = histogram([5, 4, 3, 2, 1, 0, 0, 1, 2], edges, 8.0)
    bars = re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)" height="[\d.]+" fill="(#\w+)">', svg)
    assert [c for *_, c in bars] == ["#1f77b4"] * 7 + ["#d62728"] * 2
    kx = float(re.search(r'<line x1="([\d.]+)" x2="[\d.]+" y1="\d+" y2="\d+" stroke="#d62728"', svg).group(1))
    assert kx == pytest.approx(float(bars[7][0]) - 2, abs=0.1)     # K = 8 sits on the edge of the 8-16 bin
    svg = histogram([1] * 9, edges, 3.0)
    kx3 = float(re.search(r'<line x1="([\d.]+)" x2="[\d.]+" y1="\d+" y2="\d+" stroke="#d62728"', svg).group(1))
    assert float(bars[5][0]) < kx3 < float(bars[6][0])              # K = 3 halfway into 2-4
    assert "K = 3" in svg


def test_svg_share_bar_labels_each_share():
    svg = share_bar([("judged", 75), ("ill-conditioned", 25)], title="t")
    assert "judged: 75 (75.0%)" in svg and "ill-conditioned: 25 (25.0%)" in svg
    assert "nothing" not in share_bar([("judged", 0)]) and "<svg" in share_bar([("judged", 0)])


# -- report --all ----------------------------------------------------------------------

NOTHING = """
class Nothing:
    name = "nothing"
    variants = ()
    dtypes = ()
    features = ()

    def step(self, variant, dtype, hyper, state, grads):
        raise AssertionError("never called")
"""


def test_a_backend_that_judges_nothing_leaves_the_published_results(tmp_path, monkeypatch, fresh):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nothing_backend.py").write_text(NOTHING)
    out = tmp_path / "reports"
    name = "nothing_backend:Nothing"
    (out / name).mkdir(parents=True)
    (out / name / "results.json").write_text(json.dumps(fresh[1]))
    o = run_backend(name, out)
    assert o.code == 2 and "nothing to judge" in o.why
    assert json.loads((out / name / "results.json").read_text()) == fresh[1]
    assert not list(out.glob(".*"))
    pages = build_pages(out, SPEC, {name: "not re-run here: " + o.why})
    assert "not re-run here: adamconf check: nothing to judge" in pages.files[out / "index.html"]


def test_report_all_refuses_bad_options(tmp_path):
    r = _cli("report", "--all", "--backend", "nonsense", "--out", str(tmp_path))
    assert r.returncode == 2 and "unknown bundled backend(s) nonsense" in r.stderr
    r = _cli("report", "--all", "--no-run", "--out", str(tmp_path / "empty"))
    assert r.returncode == 2 and "no results" in r.stderr
    r = _cli("report")
    assert r.returncode == 2 and "give a results.json, or --all" in r.stderr


def test_a_finding_shows_in_the_index_with_its_summary(fresh):
    res = copy.deepcopy(fresh[1])
    run = next(c for c in res["checks"] if c["check"] == "dense" and c["variant"] == "tf1" and c["dtype"] == "float16")
    run["status"], run["finding"], run["worst_ratio"] = "known deviation", "planted-finding", 40.0
    for c in res["clauses"]:
        if c["variant"] == "tf1" and "dense" in c["checks"]:
            c["status"]["float16"] = "known deviation"
    res["findings"] = [{"id": "planted-finding", "variants": ["tf1"], "checks": ["dense"], "dtypes": ["float16"],
                        "clauses": [], "summary": "The planted kernel rounds the step twice.", "evidence": "this test",
                        "strict": True, "observed_in": ["tf1/float16/dense"]}]
    assert validate(res) == []
    t = build([Impl("numpy", res, "numpy/")], CLAUSE_AREAS)
    cells = [r.cells[("numpy", "float16")] for r in t.rows if r.variant == "tf1" and ("numpy", "float16") in r.cells
             and r.cells[("numpy", "float16")].verdict == "known deviation"]
    assert cells and all(c.text == "known dev. 40" and "The planted kernel rounds the step twice." in c.title
                         for c in cells)
    page = index.render_html(t)
    assert "class='known-deviation first' title=" in page and "<h1>Known deviations</h1>" in page


def test_report_writes_the_html_pages_of_one_run(tmp_path, fresh):
    r = _cli("report", str(fresh[0] / "results.json"), "--format", "html", "--out", str(tmp_path / "pages"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "pages").iterdir()) == sorted(
        ["index.html"] + [f"{v}.html" for v in SMALL["variants"]])
    r = _cli("report", str(fresh[0] / "results.json"), "--format", "summary")
    assert r.returncode == 0 and r.stdout.startswith("## adamconf check: `numpy` passed")
