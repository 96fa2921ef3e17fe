"""Load and strictly validate the specification (the TOML files beside this module).

Layout of a spec folder (the package folder by default):

    variants/<id>.toml        one documented or implemented Adam API (spec.model.Variant)
    clauses/<page-id>.toml    the testable promises of one seeded API page
    clauses/implementations.toml   promises read from implementation source
    tolerances.toml           the constant K of each numeric clause family

Anything the loader does not expect is an error: unknown or missing keys, values
outside the closed vocabularies of spec.model, duplicate ids, clauses naming unknown
variants, numeric clauses without a family that has a tolerance, and seed files not
in the list below. Every error is a SpecError whose message starts with the file
(relative to the folder holding the spec) and names the field.

TOML has no null: an [[arguments]] table without `default` means the default is None,
and `required = true` marks an argument with no default at all (optax's learning_rate).
"""
from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import model
from .model import Argument, Clause, Spec, Tolerance, Variant

__all__ = ["SEEDS", "SpecError", "load_spec", "PACKAGE_ROOT"]

PACKAGE_ROOT = Path(__file__).resolve().parent

# The seeded API pages (see the shared seeds README): file name -> API name.
SEEDS: dict[str, str] = {
    "000_b03956badc924c92.txt": "tf.keras.dtensor.experimental.optimizers.Adam",
    "001_aa0bf2b6007f6e0b.txt": "tf.keras.optimizers.Adam",
    "002_d7b5f8a9ea0bb352.txt": "tf.keras.optimizers.legacy.Adam",
    "003_735b367838597d31.txt": "tf.train.AdamOptimizer",
    "004_7e42c6a0d8460789.txt": "tf.compat.v1.train.AdamOptimizer",
}

IMPLEMENTATIONS = "implementations"  # stem of the clause file for source-derived clauses

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_CLAUSE_ID_RE = re.compile(r"^([a-z0-9][a-z0-9-]*)\.([a-z]+)\.([a-z0-9][a-z0-9-]*)$")


class SpecError(ValueError):
    """A spec file is malformed. `path` is the file, `field` the offending key (or None)."""

    def __init__(self, path: str, field: str | None, message: str):
        self.path = path
        self.field = field
        where = f"{path}: field '{field}': " if field else f"{path}: "
        super().__init__(where + message)


# --------------------------------------------------------------------------- helpers

class _File:
    """One TOML file being validated: knows its display name and raises SpecError."""

    def __init__(self, path: Path, root: Path):
        self.path = path
        try:
            self.name = path.relative_to(root.parent).as_posix()
        except ValueError:  # pragma: no cover - root is always an ancestor
            self.name = path.as_posix()

    def error(self, field: str | None, message: str) -> SpecError:
        return SpecError(self.name, field, message)

    def load(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as fh:
                return tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise self.error(None, f"TOML syntax error: {exc}") from None
        except OSError as exc:
            raise self.error(None, f"cannot read: {exc}") from None

    def keys(self, table: dict[str, Any], where: str, required: tuple[str, ...],
             optional: tuple[str, ...]) -> None:
        """Reject unknown keys and report the first missing required key."""
        allowed = set(required) | set(optional)
        for key in table:
            if key not in allowed:
                raise self.error(_join(where, key),
                                 f"unknown key; expected one of {', '.join(sorted(allowed))}")
        for key in required:
            if key not in table:
                raise self.error(_join(where, key), "missing required key")

    def string(self, table: dict[str, Any], key: str, where: str = "", *,
               one_line: bool = True) -> str:
        value = table[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(_join(where, key), f"expected a non-empty string, got {value!r}")
        value = value.strip()
        if one_line and "\n" in value:
            raise self.error(_join(where, key), "must be a single line")
        return value

    def choice(self, table: dict[str, Any], key: str, vocabulary: tuple[str, ...],
               where: str = "") -> str:
        value = table[key]
        if not isinstance(value, str) or value not in vocabulary:
            raise self.error(_join(where, key),
                             f"{value!r} is not one of {', '.join(vocabulary)}")
        return value

    def string_list(self, table: dict[str, Any], key: str, where: str = "", *,
                    vocabulary: tuple[str, ...] | None = None,
                    allow_empty: bool = True) -> tuple[str, ...]:
        value = table[key]
        field = _join(where, key)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(field, f"expected a list of non-empty strings, got {value!r}")
        if not value and not allow_empty:
            raise self.error(field, "must not be empty")
        seen: set[str] = set()
        for item in value:
            if vocabulary is not None and item not in vocabulary:
                raise self.error(field, f"{item!r} is not one of {', '.join(vocabulary)}")
            if item in seen:
                raise self.error(field, f"{item!r} is listed twice")
            seen.add(item)
        return tuple(value)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# --------------------------------------------------------------------------- variants

_VARIANT_REQUIRED = (
    "id", "api", "family", "era", "source", "lr_alias", "formula", "beta_powers",
    "hyper_dtype", "lr_dtype", "one_minus_beta", "amsgrad", "clip_policy", "weight_decay",
    "sparse", "features", "slots", "weights_order", "arguments",
)
_VARIANT_OPTIONAL = ("page", "unknown_kwarg_error", "notes", "allowed_kwargs", "zero_epsilon", "eps_dtype", "ema_first_step",
                     "power_dtype", "aux_dtype", "ema_one_minus", "sparse_clip", "compute_dtype",
                     "global_norm_overflow")
_CHOICES = {
    "family": model.FAMILIES,
    "lr_alias": model.LR_ALIAS,
    "formula": model.FORMULAS,
    "beta_powers": model.BETA_POWERS,
    "hyper_dtype": model.HYPER_DTYPES,
    "lr_dtype": model.LR_DTYPES,
    "one_minus_beta": model.ONE_MINUS_BETA,
    "amsgrad": model.AMSGRAD_FORMS,
    "clip_policy": model.CLIP_POLICIES,
    "weight_decay": model.WEIGHT_DECAY_FORMS,
    "sparse": model.SPARSE_FORMS,
    "weights_order": model.WEIGHTS_ORDERS,
}
_CLIP_FEATURES = ("clipnorm", "clipvalue", "global_clipnorm")


def _load_variant(f: _File) -> Variant:
    data = f.load()
    f.keys(data, "", _VARIANT_REQUIRED, _VARIANT_OPTIONAL)
    vid = f.string(data, "id")
    if not _ID_RE.match(vid):
        raise f.error("id", f"{vid!r} must be lower-case letters, digits and dashes")
    if vid != f.path.stem:
        raise f.error("id", f"{vid!r} does not match the file name {f.path.stem!r}")
    api = f.string(data, "api")
    page = None
    if "page" in data:
        page = f.string(data, "page")
        if page not in SEEDS:
            raise f.error("page", f"{page!r} is not a known seed file; known: {', '.join(SEEDS)}")
        if SEEDS[page] != api:
            raise f.error("api", f"{api!r} differs from the API of seed {page} ({SEEDS[page]})")
    choices = {key: f.choice(data, key, vocab) for key, vocab in _CHOICES.items()}
    kwarg_error = None
    if "unknown_kwarg_error" in data:
        kwarg_error = f.choice(data, "unknown_kwarg_error", model.KWARG_ERRORS)
    features = frozenset(f.string_list(data, "features", vocabulary=model.FEATURES))
    slots = f.string_list(data, "slots")
    allowed_kwargs = f.string_list(data, "allowed_kwargs") if "allowed_kwargs" in data else ()
    notes = f.string(data, "notes", one_line=False) if "notes" in data else ""
    arguments = _load_arguments(f, data["arguments"])

    # Cross-field consistency: the forms and the feature set must tell the same story.
    if (choices["amsgrad"] != "none") != ("amsgrad" in features):
        raise f.error("amsgrad", f"{choices['amsgrad']!r} disagrees with features "
                                 "(the 'amsgrad' feature must be listed exactly when the form is not 'none')")
    if (choices["weight_decay"] != "none") != ("weight_decay" in features):
        raise f.error("weight_decay", f"{choices['weight_decay']!r} disagrees with features "
                                      "(the 'weight_decay' feature must be listed exactly when the form is not 'none')")
    if (choices["sparse"] != "unsupported") != ("sparse" in features):
        raise f.error("sparse", f"{choices['sparse']!r} disagrees with features "
                                "(the 'sparse' feature must be listed exactly when sparse is supported)")
    if (choices["clip_policy"] != "none") != any(c in features for c in _CLIP_FEATURES):
        raise f.error("clip_policy", f"{choices['clip_policy']!r} disagrees with features "
                                     "(clip features must be listed exactly when the policy is not 'none')")
    if choices["lr_alias"] in ("alias", "ignored") and "lr" not in allowed_kwargs:
        raise f.error("allowed_kwargs", f"lr_alias {choices['lr_alias']!r} needs 'lr' among allowed_kwargs")
    if choices["lr_alias"] in ("none", "error") and "lr" in allowed_kwargs:
        raise f.error("allowed_kwargs", f"'lr' is allowed but lr_alias is {choices['lr_alias']!r}")

    return Variant(
        id=vid, api=api, family=choices["family"], era=f.string(data, "era"), page=page,
        source=f.string(data, "source"), arguments=arguments, lr_alias=choices["lr_alias"],
        unknown_kwarg_error=kwarg_error, formula=choices["formula"],
        beta_powers=choices["beta_powers"], hyper_dtype=choices["hyper_dtype"],
        one_minus_beta=choices["one_minus_beta"], amsgrad=choices["amsgrad"],
        clip_policy=choices["clip_policy"], weight_decay=choices["weight_decay"],
        sparse=choices["sparse"], features=features, slots=slots,
        weights_order=choices["weights_order"], notes=notes, lr_dtype=choices["lr_dtype"],
        allowed_kwargs=allowed_kwargs,
        zero_epsilon=_choice(f, data, "zero_epsilon", model.ZERO_EPSILON, "kept"),
        eps_dtype=_choice(f, data, "eps_dtype", model.HYPER_DTYPES, data.get("hyper_dtype", "")),
        ema_first_step=_choice(f, data, "ema_first_step", model.EMA_FIRST_STEP, "average"),
        power_dtype=_choice(f, data, "power_dtype", model.POWER_DTYPES, data.get("hyper_dtype", "")),
        aux_dtype=_choice(f, data, "aux_dtype", model.HYPER_DTYPES, "param"),
        ema_one_minus=_choice(f, data, "ema_one_minus", model.ONE_MINUS_BETA, "in-dtype"),
        sparse_clip=_choice(f, data, "sparse_clip", model.SPARSE_CLIP, "summed"),
        global_norm_overflow=_choice(f, data, "global_norm_overflow", model.NORM_OVERFLOW, "zero"),
        compute_dtype=_choice(f, data, "compute_dtype", model.COMPUTE_DTYPES, "param"),
    )


def _load_arguments(f: _File, tables: Any) -> tuple[Argument, ...]:
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise f.error("arguments", "expected an array of tables ([[arguments]])")
    out: list[Argument] = []
    names: set[str] = set()
    canonicals: set[str] = set()
    for i, table in enumerate(tables):
        where = f"arguments[{i}]"
        f.keys(table, where, ("name", "canonical"), ("default", "doc", "required"))
        name = f.string(table, "name", where)
        canonical = f.choice(table, "canonical", model.CANONICAL_ARGS, where)
        if name in names:
            raise f.error(_join(where, "name"), f"argument {name!r} is listed twice")
        if canonical in canonicals:
            raise f.error(_join(where, "canonical"), f"canonical name {canonical!r} is used twice")
        names.add(name)
        canonicals.add(canonical)
        required = table.get("required", False)
        if not isinstance(required, bool):
            raise f.error(_join(where, "required"), f"expected true or false, got {required!r}")
        default = table.get("default")  # absent key = None (TOML has no null)
        if "default" in table:
            if required:
                raise f.error(_join(where, "default"), "a required argument has no default")
            if not isinstance(default, (bool, int, float, str)):
                raise f.error(_join(where, "default"),
                              f"expected a number, boolean or string, got {default!r}")
        doc = f.string(table, "doc", where) if "doc" in table else ""
        out.append(Argument(name=name, canonical=canonical, default=default, doc=doc,
                            required=required))
    return tuple(out)


# --------------------------------------------------------------------------- tolerances

def _load_tolerances(f: _File) -> dict[str, Tolerance]:
    data = f.load()
    f.keys(data, "", ("tolerance",), ())
    tables = data["tolerance"]
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise f.error("tolerance", "expected an array of tables ([[tolerance]])")
    out: dict[str, Tolerance] = {}
    for i, table in enumerate(tables):
        where = f"tolerance[{i}]"
        f.keys(table, where, ("family", "k", "why"), ())
        family = f.choice(table, "family", model.TOLERANCE_FAMILIES, where)
        if family in out:
            raise f.error(_join(where, "family"), f"duplicate tolerance family {family!r}")
        k = table["k"]
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not k > 0:
            raise f.error(_join(where, "k"), f"expected a positive number, got {k!r}")
        out[family] = Tolerance(family=family, k=float(k), why=f.string(table, "why", where))
    return out


# --------------------------------------------------------------------------- clauses

def _load_clause_file(f: _File, variants: dict[str, Variant],
                      tolerances: dict[str, Tolerance]) -> list[Clause]:
    data = f.load()
    stem = f.path.stem
    implementations = stem == IMPLEMENTATIONS
    if implementations:
        f.keys(data, "", ("clause",), ("page",))
        seed = None
        file_page = f.string(data, "page") if "page" in data else None
    else:
        f.keys(data, "", ("page", "seed", "clause"), ())
        seed = f.string(data, "seed")
        if seed not in SEEDS:
            raise f.error("seed", f"{seed!r} is not a known seed file; known: {', '.join(SEEDS)}")
        file_page = f.string(data, "page")
        if file_page != SEEDS[seed]:
            raise f.error("page", f"{file_page!r} is not the API of seed {seed} ({SEEDS[seed]})")
        owner = variants.get(stem)
        if owner is None or owner.page != seed:
            raise f.error("seed", f"clause file {stem!r} must be named after the variant whose "
                                  f"page is {seed}")
    tables = data["clause"]
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise f.error("clause", "expected an array of tables ([[clause]])")

    out: list[Clause] = []
    for i, table in enumerate(tables):
        where = f"clause[{i}]"
        f.keys(table, where, ("id", "variants", "section", "text", "kind"), ("family",))
        cid = f.string(table, "id", where)
        match = _CLAUSE_ID_RE.match(cid)
        if not match:
            raise f.error(_join(where, "id"),
                          f"{cid!r} is not of the form <page-id>.<area>.<promise> (lower case)")
        prefix, area, _ = match.groups()
        if area not in model.CLAUSE_AREAS:
            raise f.error(_join(where, "id"),
                          f"area {area!r} of {cid!r} is not one of {', '.join(model.CLAUSE_AREAS)}")
        if implementations:
            if prefix not in variants:
                raise f.error(_join(where, "id"),
                              f"{cid!r} must start with a known variant id")
        elif prefix != stem:
            raise f.error(_join(where, "id"), f"{cid!r} must start with {stem + '.'!r}")
        vids = f.string_list(table, "variants", where, allow_empty=False)
        for vid in vids:
            if vid not in variants:
                raise f.error(_join(where, "variants"),
                              f"clause {cid!r} names unknown variant {vid!r}; known: "
                              f"{', '.join(sorted(variants))}")
        kind = f.choice(table, "kind", model.CLAUSE_KINDS, where)
        family = None
        if kind == "numeric":
            if "family" not in table:
                raise f.error(_join(where, "family"), f"numeric clause {cid!r} needs a family")
            family = f.choice(table, "family", model.TOLERANCE_FAMILIES, where)
            if family not in tolerances:
                raise f.error(_join(where, "family"),
                              f"family {family!r} of {cid!r} has no tolerance in tolerances.toml")
        elif "family" in table:
            raise f.error(_join(where, "family"), f"only numeric clauses take a family ({cid!r} is {kind})")
        page = file_page if not implementations else (file_page or variants[prefix].api)
        out.append(Clause(id=cid, variants=vids, page=page, seed=seed,
                          section=f.string(table, "section", where),
                          text=f.string(table, "text", where), kind=kind, family=family))
    return out


# --------------------------------------------------------------------------- entry point

def _load(root: Path) -> Spec:
    root = root.resolve()
    if not root.is_dir():
        raise SpecError(str(root), None, "spec folder does not exist")
    vdir, cdir = root / "variants", root / "clauses"
    for d in (vdir, cdir):
        if not d.is_dir():
            raise SpecError(_File(d, root).name, None, "folder is missing")

    variants: dict[str, Variant] = {}
    for path in sorted(vdir.glob("*.toml")):
        f = _File(path, root)
        variant = _load_variant(f)
        if variant.id in variants:  # pragma: no cover - ids equal file stems
            raise f.error("id", f"duplicate variant id {variant.id!r}")
        variants[variant.id] = variant
    if not variants:
        raise SpecError(_File(vdir, root).name, None, "no variant files (*.toml)")

    tol_path = root / "tolerances.toml"
    if not tol_path.is_file():
        raise SpecError(_File(tol_path, root).name, None, "file is missing")
    tolerances = _load_tolerances(_File(tol_path, root))

    clauses: dict[str, Clause] = {}
    origin: dict[str, str] = {}
    for path in sorted(cdir.glob("*.toml")):
        f = _File(path, root)
        for i, clause in enumerate(_load_clause_file(f, variants, tolerances)):
            if clause.id in clauses:
                raise f.error(f"clause[{i}].id",
                              f"duplicate clause id {clause.id!r} (first in {origin[clause.id]})")
            clauses[clause.id] = clause
            origin[clause.id] = f.name
    if not clauses:
        raise SpecError(_File(cdir, root).name, None, "no clause files (*.toml)")

    return Spec(variants=MappingProxyType(variants), clauses=MappingProxyType(clauses),
                tolerances=MappingProxyType(tolerances))


@functools.lru_cache(maxsize=1)
def _load_default() -> Spec:
    return _load(PACKAGE_ROOT)


def load_spec(root: Path | str | None = None) -> Spec:
    """The validated spec. With no root, the package's own spec, loaded once and cached."""
    if root is None:
        return _load_default()
    return _load(Path(root))


def _choice(f, data, key: str, choices: tuple[str, ...], default: str) -> str:
    """An optional closed-vocabulary field."""
    val = data.get(key, default)
    if val not in choices:
        raise f.error(key, f"{val!r} is not one of {', '.join(choices)}")
    return val
