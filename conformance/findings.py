"""Known deviations of a backend from its pages, kept as data.

A backend may name a TOML file of findings (attribute `findings`, a path). Each entry
says which checks fail on which variants and dtypes, why, and where the evidence is:

    [[finding]]
    id = "dtensor-ema-frozen"
    variants = ["keras-dtensor"]
    checks = ["ema"]
    dtypes = []                  # empty: every dtype (API checks use "api")
    strict = true                # a matched check that passes is reported as stale
    summary = "one line: what the implementation does instead"
    evidence = "test, source file, or command that shows it"

A failing check that a finding matches is reported as `deviation`, with the finding's
id and summary, and does not fail the run; the report lists every finding. A strict
finding whose checks all pass makes that check fail with a message asking to remove or
narrow the finding, so the file cannot silently go out of date.
"""
from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class FindingsError(ValueError):
    """A findings file that cannot be read; the message names the file and the field."""


@dataclass(frozen=True)
class Finding:
    id: str
    variants: tuple[str, ...]
    checks: tuple[str, ...]
    dtypes: tuple[str, ...]
    strict: bool
    summary: str
    evidence: str
    clauses: tuple[str, ...] = ()

    def matches(self, variant: str, dtype: str, check: str) -> bool:
        return (variant in self.variants and check in self.checks
                and (not self.dtypes or dtype in self.dtypes))


_FIELDS = {"id": str, "variants": list, "checks": list, "dtypes": list, "strict": bool,
           "summary": str, "evidence": str, "clauses": list}
_REQUIRED = ("id", "variants", "checks", "summary", "evidence")


def load(path: str | Path) -> list[Finding]:
    """Read and validate one findings file."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FindingsError(f"{p}: findings file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FindingsError(f"{p}: not valid TOML ({e}); fix the file or remove the backend's `findings`") from None
    out: list[Finding] = []
    seen: set[str] = set()
    for i, raw in enumerate(data.get("finding", [])):
        where = f"{p}: finding #{i + 1}"
        _check_fields(raw, where)
        if raw["id"] in seen:
            raise FindingsError(f"{where}: duplicate id {raw['id']!r}")
        seen.add(raw["id"])
        out.append(Finding(raw["id"], tuple(raw["variants"]), tuple(raw["checks"]), tuple(raw.get("dtypes", [])),
                           bool(raw.get("strict", True)), raw["summary"].strip(), raw["evidence"].strip(),
                           tuple(raw.get("clauses", []))))
    return out


def _check_fields(raw: Any, where: str) -> None:
    if not isinstance(raw, dict):
        raise FindingsError(f"{where}: expected a table")
    for k in _REQUIRED:
        if k not in raw:
            raise FindingsError(f"{where}: missing field {k!r}")
    for k, v in raw.items():
        if k not in _FIELDS:
            raise FindingsError(f"{where}: unknown field {k!r}; expected one of {', '.join(_FIELDS)}")
        if not isinstance(v, _FIELDS[k]):
            raise FindingsError(f"{where}: field {k!r} must be a {_FIELDS[k].__name__}")
        if isinstance(v, list) and not all(isinstance(x, str) for x in v):
            raise FindingsError(f"{where}: field {k!r} must list strings")


def validate(findings: Iterable[Finding], variants: Iterable[str], checks: Iterable[str],
             clauses: Iterable[str]) -> None:
    """Every name a finding uses must exist, so a typo cannot hide a failure."""
    vs, cs, cls = set(variants), set(checks), set(clauses)
    for f in findings:
        for name, have, pool in (("variant", f.variants, vs), ("check", f.checks, cs), ("clause", f.clauses, cls)):
            bad = sorted(set(have) - pool)
            if bad:
                raise FindingsError(f"finding {f.id!r}: unknown {name} {', '.join(bad)}")


def for_backend(backend: Any) -> list[Finding]:
    """The findings a backend declares (none when it names no file)."""
    path = getattr(backend, "findings", None)
    return load(path) if path else []
