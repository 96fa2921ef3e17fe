"""Rendering result records (results.json) as Markdown, JUnit XML and HTML.

Everything here reads the JSON record only, so a report can be rebuilt from a saved
run without the backend or the reference.
"""
from __future__ import annotations

import json
from typing import Any


def run_files(record: dict[str, Any]) -> dict[str, str]:
    """The files of one run, by name, results.json last (the CLI and the pytest plugin)."""
    from adamconf.reports import junit, markdown
    return {"junit.xml": junit.render(record), "report.md": markdown.render(record),
            "results.json": json.dumps(record, indent=1)}
