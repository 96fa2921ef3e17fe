"""pytest plugin: `pytest --adam-backend=B` runs the same checks as `adamconf check`.

Each (variant, dtype, check) becomes one test item named after the clauses it
covers; a failure shows the minimal example and the replay command.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: Any) -> None:
    g = parser.getgroup("adamconf", "Adam conformance checks")
    g.addoption("--adam-backend", help="backend to check: module:attr or a registered name")
    g.addoption("--adam-variant", action="append", help="spec variant (repeat); default every variant")
    g.addoption("--adam-dtype", action="append", help="dtype (repeat); default all four")
    g.addoption("--adam-profile", default="ci", help="hypothesis profile: ci, dev or thorough")
    g.addoption("--adam-out", default=None, help="folder for failing cases (default: pytest's tmp dir)")


class AdamCheckItem(pytest.Item):
    def __init__(self, *, runner: Any, check: Any, variant: Any, dtype: str, clauses: list[str], **kw: Any) -> None:
        super().__init__(**kw)
        self.runner, self.check, self.variant, self.dtype, self.clauses = runner, check, variant, dtype, clauses

    def runtest(self) -> None:
        run = self.runner.run_check(self.check, self.variant, self.dtype)
        if run.status == "unsupported":
            pytest.skip(run.message)
        if run.status != "pass":
            raise CheckFailure(run, self.clauses)

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, CheckFailure):
            run, clauses = excinfo.value.args
            lines = [f"clauses: {', '.join(clauses) or '-'}", run.message]
            if run.example:
                lines += ["minimal example:", run.example]
            if run.replay:
                lines.append(f"replay: {run.replay}")
            return "\n".join(lines)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int, str]:
        return self.path, 0, f"adamconf {self.name}"


class CheckFailure(Exception):
    pass


def pytest_collection_modifyitems(session: Any, config: Any, items: list) -> None:
    spec_ref = config.getoption("--adam-backend")
    if not spec_ref:
        return
    from adamconf.checks import CHECKS, check_for
    from adamconf.loading import ConfigError, load_backend
    from adamconf.runner import Runner
    from adamconf.reference.state import DTYPES
    from adamconf.spec import load_spec

    try:
        backend = load_backend(spec_ref)
    except ConfigError as e:
        raise pytest.UsageError(str(e)) from None
    spec = load_spec()
    variants = config.getoption("--adam-variant") or list(spec.variants)
    unknown = [v for v in variants if v not in spec.variants]
    if unknown:
        raise pytest.UsageError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(spec.variants)}")
    dtypes = config.getoption("--adam-dtype") or list(DTYPES)
    out = config.getoption("--adam-out")
    out_path = Path(out) if out else Path(tempfile.mkdtemp(prefix="adamconf-"))
    runner = Runner(spec, backend, spec_ref, profile=config.getoption("--adam-profile"), out=out_path)
    for vid in variants:
        variant = spec.variant(vid)
        for dtype in dtypes:
            for chk in CHECKS.values():
                if not chk.applies_to(variant, dtype):
                    continue
                clauses = [c.id for c in spec.clauses_for(vid) if check_for(c) is chk]
                items.append(AdamCheckItem.from_parent(session, name=f"adam[{vid}-{dtype}-{chk.name}]", runner=runner,
                                                       check=chk, variant=variant, dtype=dtype, clauses=clauses))
