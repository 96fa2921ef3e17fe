"""Reading a results.json with a clear error for anything that is not one (checked
against the committed schema, results.schema.json)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adamconf.reports.schema import results_schema, validate

# The results format tag. Its one home is the schema's `schema` const (results.schema.json):
# bump it there when a field changes meaning.
SCHEMA: str = results_schema()["properties"]["schema"]["const"]


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
    errors = validate(d)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ReportError(f"{p} does not match the results schema: {errors[0]}{more}; "
                          "re-run 'adamconf check' to write it again")
    return d
