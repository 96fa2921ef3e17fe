"""The gate as pytest tests: one parametrized `test_adam` item per planned cell.

pytest collects this module only when `--adam-backend` is given (adamconf.pytest_plugin
adds it to the run and parametrizes it with the same plan `adamconf check` runs), so
items have a file path and stable ids, `test_adam[keras3-float32-dense]`, that `-k`,
node-id selection, `--junitxml` and pytest-xdist work with.
"""
from __future__ import annotations

import json
from typing import Any

import pytest

from adamconf.verdicts import BAD, KNOWN, PASS, UNSUPPORTED


def test_adam(adam_cell: Any, adam_runner: Any, request: Any) -> None:
    """Judge one cell; its verdict maps onto pytest's outcomes: pass, fail, xfail
    (a known deviation, with the finding's summary), skip (unsupported)."""
    from adamconf.pytest_plugin import show_statistics

    run = adam_runner.run_cell(adam_cell)
    show_statistics(request.node, run)
    request.node.user_properties.append(("adamconf", json.dumps(_record(run))))
    clauses = adam_runner.clauses_of(adam_cell)
    if run.status == UNSUPPORTED:
        pytest.skip(f"unsupported: {run.message}")
    if run.status == KNOWN:
        pytest.xfail(run.message)
    if run.status in BAD:
        lines = [f"{run.status.upper()} {adam_cell.id} (clauses: {', '.join(clauses) or '-'})", run.message]
        if run.example:
            lines += ["minimal example:", run.example]
        if run.replay:
            lines.append(f"replay: {run.replay}")
        pytest.fail("\n".join(lines), pytrace=False)
    assert run.status == PASS, run.status


def _record(run: Any) -> dict[str, Any]:
    import dataclasses
    import math
    d = dataclasses.asdict(run)
    return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
