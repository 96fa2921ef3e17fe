"""`adamconf selftest`: the verdict logic, the scores, and the command on a small corpus slice."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adamconf.selftest import Tally, corpus_refs, markdown, record, scores, verdict

ROOT = Path(__file__).resolve().parents[1]


def _bug(name: str, area: str, failed: int, passed: int = 2) -> Tally:
    return Tally(name, "bug", area, f"{name} doc", failed=[f"keras3-float32-dense-{i}" for i in range(failed)],
                 passed=["keras3-float16-clip-combined"] * passed, cells=failed + passed)


def test_verdict_needs_every_bug_at_the_target_and_every_correct_order_clean():
    good = [_bug("A", "clip", 3), Tally("Order", "correct", "", "", passed=["x"], cells=1)]
    assert verdict(good, 3) == (True, [])
    ok, why = verdict([_bug("A", "clip", 2)] + good[1:], 3)
    assert not ok and "A caught in 2 ci cells, fewer than 3" in why[0]
    bad_order = Tally("Order", "correct", "", "", failed=["keras3-float32-dense"], passed=["x"], cells=2)
    ok, why = verdict([good[0], bad_order], 3)
    assert not ok and "correct op order Order failed 1 cells" in why[0]
    never_judged = Tally("Order", "correct", "", "")
    assert not verdict([good[0], never_judged], 3)[0]
    assert not verdict([Tally("B", "bug", "x", "", load_error="no module")], 3)[0]


def test_scores_per_check_and_per_area():
    by_check, by_area = scores([_bug("A", "clip", 3), _bug("B", "clip", 0), _bug("C", "ema", 1)], 3)
    assert (by_check["dense-0"].caught, by_check["dense-0"].seen) == (2, 2)
    assert (by_check["clip-combined"].caught, by_check["clip-combined"].seen) == (0, 3)
    assert (by_area["clip"].caught, by_area["clip"].seen, by_area["ema"].caught) == (1, 2, 0)
    text = markdown(record([_bug("A", "clip", 3)], 3, False, 1.0))
    assert "# adamconf selftest: PASS" in text and "| clip | 1/1 (100%) | 3 |" in text


def test_the_corpus_ships_in_the_package_with_sixty_bugs():
    rows = corpus_refs()
    assert sum(r[1] == "bug" for r in rows) >= 60 and sum(r[1] == "correct" for r in rows) == 4
    assert all(r[0].startswith("adamconf.corpus.") and r[3] for r in rows)
    with pytest.raises(ValueError, match="unknown corpus backend"):
        corpus_refs(["NoSuchBug"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adamconf", "selftest", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("args,needle", [(["--target", "0"], "--target must be at least 1"),
                                         (["--only", "NoSuchBug"], "unknown corpus backend"),
                                         (["-j", "0"], "-j/--jobs takes a number")])
def test_bad_input_exits_2(args, needle):
    r = _cli(*args)
    assert r.returncode == 2 and needle in r.stderr, r.stderr


def test_a_slice_of_the_corpus_passes_and_is_recorded(tmp_path):
    r = _cli("--only", "EpsInsideSqrt", "--only", "DecayIgnored", "-j", "2", "--out", str(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rec = json.loads((tmp_path / "selftest.json").read_text())
    assert rec["passed"] and [b["name"] for b in rec["backends"]] == ["EpsInsideSqrt", "DecayIgnored"]
    assert all(b["catches"] >= 3 for b in rec["backends"])
    assert "adamconf selftest: PASS" in (tmp_path / "selftest.md").read_text()
