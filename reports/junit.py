"""JUnit XML: one test case per (clause, dtype), so CI systems show clause ids."""
from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET


def _run_for(checks: dict[tuple[str, str, str], Any], vid: str, dtype: str, names: list[str], status: str) -> Any:
    """The check run behind a clause cell: the covering check whose verdict the cell took."""
    runs = [checks[(vid, dtype, n)] for n in names if (vid, dtype, n) in checks]
    return next((r for r in runs if r["status"] == status), runs[0] if runs else None)


def render(res: dict[str, Any]) -> str:
    checks = {(c["variant"], c["dtype"], c["check"]): c for c in res["checks"]}
    suites = ET.Element("testsuites", name=f"adamconf {res['backend']}")
    for vid in res["variants"]:
        rows = [c for c in res["clauses"] if c["variant"] == vid]
        suite = ET.SubElement(suites, "testsuite", name=f"{res['backend']}.{vid}")
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for c in rows:
            for dtype, status in c["status"].items():
                if status == "not applicable":
                    continue
                counts["tests"] += 1
                case = ET.SubElement(suite, "testcase", classname=f"{vid}.{dtype}", name=c["clause"])
                run = _run_for(checks, vid, dtype, c["checks"], status)
                msg = (run or {}).get("message", "")
                if status == "fail":
                    counts["failures"] += 1
                    f = ET.SubElement(case, "failure", message=(msg or "failed")[:500])
                    f.text = "\n".join(x for x in (msg, run and run.get("example"), run and run.get("replay")) if x)
                elif status == "error":
                    counts["errors"] += 1
                    ET.SubElement(case, "error", message=(msg or "error")[:500])
                elif status == "known deviation":
                    counts["skipped"] += 1
                    ET.SubElement(case, "skipped", message=f"known deviation: {msg[:480]}")
                elif status in ("unsupported", "uncovered"):
                    counts["skipped"] += 1
                    why = msg if status == "unsupported" else "no check covers this clause yet"
                    ET.SubElement(case, "skipped", message=f"{status}: {why}")
        for k, v in counts.items():
            suite.set(k, str(v))
    return ET.tostring(suites, encoding="unicode")
