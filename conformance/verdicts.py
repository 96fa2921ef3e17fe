"""The one vocabulary of verdicts, for checks and for clause cells alike.

- `pass`: judged, and within the bound / as documented;
- `fail`: judged, and wrong;
- `error`: the harness could not judge (no valid example, a hook that broke);
- `known deviation`: a failure that a findings file explains, with evidence;
- `unsupported`: the backend does not declare this variant, dtype or feature;
- `not applicable`: the clause does not bind this variant or dtype;
- `uncovered`: no check in this run covers the clause.

Only the first four are judged; the gate passes when something was judged and nothing
judged is `fail` or `error`.
"""
from __future__ import annotations

from collections.abc import Iterable

PASS, FAIL, ERROR, KNOWN = "pass", "fail", "error", "known deviation"
UNSUPPORTED, NOT_APPLICABLE, UNCOVERED = "unsupported", "not applicable", "uncovered"

VERDICTS = (PASS, FAIL, ERROR, KNOWN, UNSUPPORTED, NOT_APPLICABLE, UNCOVERED)
JUDGED = frozenset({PASS, FAIL, ERROR, KNOWN})
BAD = frozenset({FAIL, ERROR})

# How several verdicts on one clause cell combine: the first present wins.
_PRECEDENCE = (ERROR, FAIL, KNOWN, PASS, UNSUPPORTED, NOT_APPLICABLE, UNCOVERED)


def combine(statuses: Iterable[str]) -> str:
    """The verdict of a cell judged by several checks (or of a check over many clauses)."""
    present = set(statuses)
    return next((s for s in _PRECEDENCE if s in present), UNCOVERED)
