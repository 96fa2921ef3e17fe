"""Reading a results.json with a clear error for anything that is not one."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The one home of the results format tag; bump it when a field changes meaning.
SCHEMA = "adamconf-results/2"
REQUIRED = ("backend", "profile", "examples", "environment", "variants", "dtypes", "checks", "clauses", "summary")


class ReportError(ValueError):
    pass


def load_results(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"no results file at {p}; run 'adamconf check --out DIR' first") from None
    except IsADirectoryError:
        raise ReportError(f"{p} is a folder; give its results.json") from None
    except UnicodeDecodeError as e:
        raise ReportError(f"{p} is not UTF-8 text ({e}); it is not a results file") from None
    except OSError as e:
        raise ReportError(f"{p} cannot be read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{p} is not valid JSON ({e}); it may be truncated: re-run 'adamconf check' to write it again") from None
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise ReportError(f"{p} is not an adamconf results file (schema {d.get('schema') if isinstance(d, dict) else None!r}, expected {SCHEMA!r})")
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise ReportError(f"{p} lacks {', '.join(missing)}; re-run 'adamconf check' to write it again")
    return d
