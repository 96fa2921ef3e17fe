"""The JSON Schema of results.json, and a small checker for the part of JSON Schema it uses.

The schema (results.schema.json beside this module) is the one description of the
format; anyone can validate against it with a JSON Schema library. The package checks
it itself so the core needs no such library (jsonschema brings four more packages,
one of them compiled): `validate` implements exactly the keywords in `KEYWORDS`, and
the tests check that the schema uses no others and that jsonschema agrees.
"""
from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

# Keywords `validate` implements; annotations are accepted and ignored.
KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "items", "enum", "const",
                      "minimum", "maximum", "minItems", "maxItems", "anyOf", "$ref"})
ANNOTATIONS = frozenset({"$schema", "title", "description", "$defs"})

_TYPES = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "integer": lambda x: isinstance(x, int) and not isinstance(x, bool),
    "number": lambda x: isinstance(x, int | float) and not isinstance(x, bool),
}


@cache
def results_schema() -> dict[str, Any]:
    """The committed JSON Schema of results.json."""
    return json.loads(resources.files("adamconf.reports").joinpath("results.schema.json").read_text())


def _short(x: Any) -> str:
    s = json.dumps(x)
    return s if len(s) <= 60 else s[:57] + "..."


def _where(path: tuple[str | int, ...]) -> str:
    out = "$"
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _errors(x: Any, sch: dict[str, Any], root: dict[str, Any], path: tuple[str | int, ...]) -> list[str]:
    if "$ref" in sch:
        ref = sch["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local references are supported, not {ref!r}")
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        return _errors(x, target, root, path)
    at = _where(path)
    if "type" in sch:
        types = [sch["type"]] if isinstance(sch["type"], str) else sch["type"]
        if not any(_TYPES[t](x) for t in types):
            return [f"at {at}: {_short(x)} is not of type {' or '.join(repr(t) for t in types)}"]
    if "const" in sch and x != sch["const"]:
        return [f"at {at}: {_short(x)} was expected to be {_short(sch['const'])}"]
    if "enum" in sch and x not in sch["enum"]:
        return [f"at {at}: {_short(x)} is not one of {_short(sch['enum'])}"]
    if "anyOf" in sch:
        each = [_errors(x, s, root, path) for s in sch["anyOf"]]
        if all(each):
            # the alternative that got furthest into the value says the most
            return max(each, key=lambda e: (max(m.count(".") + m.count("[") for m in e), -len(e)))
    out: list[str] = []
    if isinstance(x, int | float) and not isinstance(x, bool) and "minimum" in sch and x < sch["minimum"]:
        out.append(f"at {at}: {x} is less than the minimum of {sch['minimum']}")
    if isinstance(x, int | float) and not isinstance(x, bool) and "maximum" in sch and x > sch["maximum"]:
        out.append(f"at {at}: {x} is more than the maximum of {sch['maximum']}")
    if isinstance(x, list):
        if len(x) < sch.get("minItems", 0):
            out.append(f"at {at}: {_short(x)} has fewer than {sch['minItems']} items")
        if "maxItems" in sch and len(x) > sch["maxItems"]:
            out.append(f"at {at}: {_short(x)} has more than {sch['maxItems']} items")
        if "items" in sch:
            for i, v in enumerate(x):
                out += _errors(v, sch["items"], root, path + (i,))
    if isinstance(x, dict):
        out += [f"at {at}: {k!r} is a required property" for k in sch.get("required", ()) if k not in x]
        props = sch.get("properties", {})
        extra = sch.get("additionalProperties", True)
        for k, v in x.items():
            if k in props:
                out += _errors(v, props[k], root, path + (k,))
            elif extra is False:
                out.append(f"at {at}: additional property {k!r} is not allowed")
            elif isinstance(extra, dict):
                out += _errors(v, extra, root, path + (k,))
    return out


def validate(record: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """Every way `record` breaks the schema (the results schema by default), as
    messages that name the place (`$.checks[3].histogram`); empty when it conforms."""
    sch = results_schema() if schema is None else schema
    return _errors(record, sch, sch, ())


def keywords_used(schema: dict[str, Any]) -> set[str]:
    """Every keyword a schema uses at a schema position (for the test that `validate`
    covers the committed schema)."""
    found: set[str] = set()

    def walk(s: Any) -> None:
        if not isinstance(s, dict):
            return
        found.update(s)
        for k in ("properties", "$defs"):
            for sub in s.get(k, {}).values():
                walk(sub)
        for k in ("items", "additionalProperties"):
            walk(s.get(k))
        for sub in s.get("anyOf", ()):
            walk(sub)

    walk(schema)
    return found
