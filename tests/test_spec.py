"""Tests of the specification data, its strict loader and the `spec` subcommands."""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from adamconf.spec import Argument, Clause, Spec, SpecError, Tolerance, Variant, commands, load_spec, model
from adamconf.spec.loader import PACKAGE_ROOT, SEEDS

ALL_VARIANTS = {"tf1", "tf1-compat", "keras-v2", "keras-legacy", "keras-dtensor", "keras3",
                "tf-keras", "torch", "optax"}
SEEDS_DIR = Path(os.environ.get("ADAMCONF_SEEDS", "/work/shared/seeds"))
# The project's notes on the implementations; the spec must not copy them either.
FACTS_FILE = SEEDS_DIR.parent / "ADAM-FACTS.md"


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec()


# --------------------------------------------------------------------------- content

def test_all_variants_load(spec):
    assert set(spec.variants) == ALL_VARIANTS
    for vid, v in spec.variants.items():
        assert isinstance(v, Variant) and v.id == vid
        assert all(isinstance(a, Argument) for a in v.arguments)
        assert isinstance(v.features, frozenset)


def test_default_spec_is_cached(spec):
    assert load_spec() is spec


def test_spec_mappings_are_read_only(spec):
    with pytest.raises(TypeError):
        spec.variants["x"] = spec.variants["tf1"]  # type: ignore[index]


def test_clause_count_and_shape(spec):
    assert len(spec.clauses) >= 70
    for cid, c in spec.clauses.items():
        assert isinstance(c, Clause) and c.id == cid
        assert c.kind in model.CLAUSE_KINDS
        assert "\n" not in c.text and c.text.strip() == c.text


def test_every_clause_names_known_variants(spec):
    for c in spec.clauses.values():
        assert c.variants, c.id
        for vid in c.variants:
            assert vid in spec.variants, (c.id, vid)


def test_numeric_clauses_have_a_family_with_tolerance(spec):
    numeric = [c for c in spec.clauses.values() if c.kind == "numeric"]
    assert numeric
    for c in numeric:
        assert c.family in spec.tolerances, c.id
        assert isinstance(spec.tolerances[c.family], Tolerance)
    for c in spec.clauses.values():
        if c.kind != "numeric":
            assert c.family is None, c.id


def test_tolerance_constants(spec):
    expected = {"step": 8, "amsgrad": 8, "sparse": 8, "clip": 16, "schedule": 8, "ema": 8,
                "trajectory": 8}
    assert {f: t.k for f, t in spec.tolerances.items()} == expected


def test_every_seed_page_is_cited(spec):
    cited = Counter(c.seed for c in spec.clauses.values() if c.seed)
    for seed, api in SEEDS.items():
        assert cited[seed] >= 1, f"no clause cites {seed} ({api})"
    for c in spec.clauses.values():
        if c.seed:
            assert c.page == SEEDS[c.seed]
        else:
            assert c.page  # source-derived clauses carry the API of their variant


def test_every_variant_has_clauses(spec):
    for vid in spec.variants:
        assert spec.clauses_for(vid), vid


def test_page_variants_point_at_their_seed(spec):
    for v in spec.variants.values():
        if v.page is not None:
            assert SEEDS[v.page] == v.api
    assert spec.variant("keras3").page is None
    assert spec.variant("torch").family == "foreign"


def test_documented_defaults(spec):
    assert spec.variant("tf1").default("epsilon") == 1e-8
    assert spec.variant("tf1-compat").default("epsilon") == 1e-8
    for vid in ("keras-v2", "keras-legacy", "keras-dtensor", "tf-keras", "keras3"):
        v = spec.variant(vid)
        assert v.default("epsilon") == 1e-7, vid
        assert v.default("learning_rate") == 0.001, vid
        assert v.default("beta_1") == 0.9 and v.default("beta_2") == 0.999, vid
        assert v.argument("beta_1").name == "beta_1"
        assert v.argument("use_locking") is None
    tf1 = spec.variant("tf1")
    assert tf1.argument("beta_1").name == "beta1"
    assert tf1.argument("beta_2").name == "beta2"
    assert tf1.default("use_locking") is False
    assert spec.variant("keras3").default("name") == "adam"
    assert spec.variant("keras-legacy").default("name") == "Adam"


def test_absent_default_is_none_and_required_is_marked(spec):
    assert spec.variant("keras3").default("weight_decay", fallback="x") is None
    lr = spec.variant("optax").argument("learning_rate")
    assert lr.required and lr.default is None
    assert spec.variant("torch").argument("beta_1").name == "betas[0]"


def test_variant_table_values(spec):
    v = spec.variant
    assert (v("tf1").formula, v("tf1").beta_powers) == ("epsilon-hat", "accumulated")
    assert v("torch").formula == v("optax").formula == "algorithm-1"
    assert v("keras-legacy").allowed_kwargs == ("clipnorm", "clipvalue", "global_clipnorm", "lr", "decay")
    assert v("keras3").unknown_kwarg_error == "ValueError"
    assert v("torch").hyper_dtype == "float64" and v("torch").lr_dtype == "float64"
    assert v("keras3").lr_dtype == "float32" and v("keras3").hyper_dtype == "param"
    assert v("keras-legacy").has("global_clipnorm") and not v("keras-v2").has("global_clipnorm")
    assert v("tf1-compat").features == v("tf1").features | {"callable_hyper"}


def test_dtensor_doc_disagreement_is_recorded(spec):
    assert "keras-dtensor.docs.signature-vs-table" in spec.clauses
    v = spec.variant("keras-dtensor")
    assert v.argument("mesh") is not None and v.argument("gradients_clip_option") is not None
    assert "Args table" in v.notes


# --------------------------------------------------------------------------- own words

def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def test_no_twelve_word_run_from_a_seed_page_or_the_facts(spec):
    if not SEEDS_DIR.is_dir():
        pytest.skip(f"seed pages not found at {SEEDS_DIR} (set ADAMCONF_SEEDS)")
    seed_grams: set[tuple[str, ...]] = set()
    for name in SEEDS:
        seed_grams |= _ngrams(_tokens((SEEDS_DIR / name).read_text(encoding="utf-8")), 12)
    assert seed_grams
    if FACTS_FILE.is_file():
        seed_grams |= _ngrams(_tokens(FACTS_FILE.read_text(encoding="utf-8")), 12)
    texts = {f"clause {c.id}": c.text for c in spec.clauses.values()}
    for v in spec.variants.values():
        texts[f"notes of {v.id}"] = v.notes
        for a in v.arguments:
            texts[f"doc of {v.id}.{a.name}"] = a.doc
    for t in spec.tolerances.values():
        texts[f"why of {t.family}"] = t.why
    copied = {where: " ".join(sorted(_ngrams(_tokens(text), 12) & seed_grams)[0])
              for where, text in texts.items() if _ngrams(_tokens(text), 12) & seed_grams}
    assert not copied, copied


def test_twelve_word_check_catches_a_copy():
    if not SEEDS_DIR.is_dir():
        pytest.skip("seed pages not found")
    page = _tokens((SEEDS_DIR / "003_735b367838597d31.txt").read_text(encoding="utf-8"))
    seed_grams = _ngrams(page, 12)
    assert _ngrams(page[100:113], 12) & seed_grams


# --------------------------------------------------------------------------- broken files

@pytest.fixture()
def spec_copy(tmp_path: Path) -> Path:
    root = tmp_path / "spec"
    root.mkdir()
    shutil.copytree(PACKAGE_ROOT / "variants", root / "variants")
    shutil.copytree(PACKAGE_ROOT / "clauses", root / "clauses")
    shutil.copy(PACKAGE_ROOT / "tolerances.toml", root / "tolerances.toml")
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _error(root: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(root)
    assert isinstance(info.value, ValueError)
    return info.value


def test_copy_of_spec_loads(spec_copy, spec):
    copy = load_spec(spec_copy)
    assert set(copy.clauses) == set(spec.clauses)


def test_bad_vocabulary_value(spec_copy):
    _edit(spec_copy / "variants/tf1.toml", 'formula = "epsilon-hat"', 'formula = "eps-hat"')
    err = _error(spec_copy)
    assert str(err).startswith("spec/variants/tf1.toml: field 'formula': 'eps-hat' is not one of")
    assert "epsilon-hat, algorithm-1" in str(err)
    assert (err.path, err.field) == ("spec/variants/tf1.toml", "formula")


def test_bad_feature_value(spec_copy):
    _edit(spec_copy / "variants/keras-v2.toml", '"decay", "callable_hyper"', '"decay", "callable"')
    err = _error(spec_copy)
    assert "spec/variants/keras-v2.toml" in str(err) and err.field == "features"


def test_missing_key(spec_copy):
    _edit(spec_copy / "variants/keras3.toml", 'weights_order = "iter-lr-interleaved"\n', "")
    err = _error(spec_copy)
    assert "spec/variants/keras3.toml" in str(err) and err.field == "weights_order"
    assert "missing" in str(err)


def test_unknown_key(spec_copy):
    _edit(spec_copy / "variants/torch.toml", 'sparse = "unsupported"', 'sparse = "unsupported"\ncolour = "red"')
    err = _error(spec_copy)
    assert "spec/variants/torch.toml" in str(err) and err.field == "colour"


def test_unknown_key_in_argument(spec_copy):
    _edit(spec_copy / "variants/optax.toml", 'required = true', 'required = true\nhint = "x"')
    err = _error(spec_copy)
    assert "spec/variants/optax.toml" in str(err) and err.field == "arguments[0].hint"


def test_unknown_canonical_argument(spec_copy):
    _edit(spec_copy / "variants/tf1.toml", 'canonical = "beta_1"', 'canonical = "beta1"')
    err = _error(spec_copy)
    assert err.field == "arguments[1].canonical" and "'beta1' is not one of" in str(err)


def test_toml_syntax_error(spec_copy):
    with open(spec_copy / "clauses/tf1.toml", "a", encoding="utf-8") as fh:
        fh.write('\n[[clause]]\nid = "tf1.update.unclosed\n')
    err = _error(spec_copy)
    assert str(err).startswith("spec/clauses/tf1.toml: TOML syntax error")


def test_duplicate_clause_id_in_one_file(spec_copy):
    path = spec_copy / "clauses/keras-v2.toml"
    text = path.read_text(encoding="utf-8")
    first = text[text.index("[[clause]]"):text.index("[[clause]]", text.index("[[clause]]") + 1)]
    path.write_text(text + "\n" + first, encoding="utf-8")
    err = _error(spec_copy)
    assert "spec/clauses/keras-v2.toml" in str(err) and err.field.endswith(".id")
    assert "duplicate clause id 'keras-v2.state.zero-init'" in str(err)


def test_duplicate_clause_id_across_files(spec_copy):
    _edit(spec_copy / "clauses/implementations.toml", 'id = "tf1.state.accumulated-beta-powers"',
          'id = "tf1.update.moments"')
    err = _error(spec_copy)
    # Files load in name order, so the second occurrence is the one in tf1.toml.
    assert str(err).startswith("spec/clauses/tf1.toml: field 'clause[1].id'")
    assert "duplicate clause id 'tf1.update.moments'" in str(err)
    assert "first in spec/clauses/implementations.toml" in str(err)


def test_duplicate_variant_argument(spec_copy):
    _edit(spec_copy / "variants/keras-v2.toml", 'name = "beta_2"\ncanonical = "beta_2"',
          'name = "beta_1"\ncanonical = "beta_2"')
    err = _error(spec_copy)
    assert "spec/variants/keras-v2.toml" in str(err) and err.field == "arguments[2].name"


def test_variant_id_must_match_file(spec_copy):
    _edit(spec_copy / "variants/tf1-compat.toml", 'id = "tf1-compat"', 'id = "tf1"')
    err = _error(spec_copy)
    assert "spec/variants/tf1-compat.toml" in str(err) and err.field == "id"


def test_clause_naming_unknown_variant(spec_copy):
    _edit(spec_copy / "clauses/tf1-compat.toml", 'variants = ["tf1-compat"]', 'variants = ["tf2"]')
    err = _error(spec_copy)
    assert "spec/clauses/tf1-compat.toml" in str(err) and err.field == "clause[0].variants"
    assert "unknown variant 'tf2'" in str(err)


def test_numeric_clause_without_family(spec_copy):
    _edit(spec_copy / "clauses/tf1.toml", 'kind = "numeric"\nfamily = "step"\n', 'kind = "numeric"\n')
    err = _error(spec_copy)
    assert "spec/clauses/tf1.toml" in str(err) and err.field == "clause[1].family"


def test_numeric_clause_with_unknown_family(spec_copy):
    _edit(spec_copy / "clauses/tf1.toml", 'family = "step"', 'family = "steps"')
    err = _error(spec_copy)
    assert err.field == "clause[1].family" and "'steps' is not one of" in str(err)


def test_family_without_tolerance(spec_copy):
    path = spec_copy / "tolerances.toml"
    text = path.read_text(encoding="utf-8")
    start = text.index('[[tolerance]]\nfamily = "ema"')
    end = text.index("[[tolerance]]", start + 1)
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    err = _error(spec_copy)
    assert "spec/clauses/" in str(err) and err.field.endswith(".family")
    assert "no tolerance" in str(err)


def test_unknown_seed_file(spec_copy):
    _edit(spec_copy / "clauses/keras-legacy.toml", 'seed = "002_d7b5f8a9ea0bb352.txt"',
          'seed = "002_0000000000000000.txt"')
    err = _error(spec_copy)
    assert "spec/clauses/keras-legacy.toml" in str(err) and err.field == "seed"


def test_variant_page_must_be_a_known_seed(spec_copy):
    _edit(spec_copy / "variants/keras-legacy.toml", 'page = "002_d7b5f8a9ea0bb352.txt"',
          'page = "999_missing.txt"')
    err = _error(spec_copy)
    assert "spec/variants/keras-legacy.toml" in str(err) and err.field == "page"


def test_clause_area_must_be_known(spec_copy):
    _edit(spec_copy / "clauses/tf1.toml", 'id = "tf1.state.zero-init"', 'id = "tf1.misc.zero-init"')
    err = _error(spec_copy)
    assert err.field == "clause[0].id" and "area 'misc'" in str(err)


def test_inconsistent_feature_and_form(spec_copy):
    _edit(spec_copy / "variants/torch.toml", 'amsgrad = "torch"', 'amsgrad = "none"')
    err = _error(spec_copy)
    assert "spec/variants/torch.toml" in str(err) and err.field == "amsgrad"


# --------------------------------------------------------------------------- commands

def _run(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="adamconf")
    sub = parser.add_subparsers(dest="command")
    commands.add_parser(sub)
    args = parser.parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    code = commands.run(args, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_list(spec):
    code, out, _ = _run("spec", "list")
    assert code == 0
    for vid in ALL_VARIANTS:
        assert vid in out
    assert f"{len(spec.clauses)} clauses" in out
    code, out, _ = _run("spec", "list", "--json")
    data = json.loads(out)
    assert data["totals"]["variants"] == 9
    assert data["totals"]["clauses"] == len(spec.clauses)
    assert sum(data["totals"]["by_kind"].values()) == len(spec.clauses)


def test_cli_show(spec):
    code, out, _ = _run("spec", "show", "tf1")
    assert code == 0 and "beta1" in out and "tf1.update.epsilon-hat" in out
    code, out, _ = _run("spec", "show", "keras3", "--json")
    data = json.loads(out)
    assert data["id"] == "keras3" and isinstance(data["features"], list)
    assert data["features"] == sorted(data["features"])
    assert {c["id"] for c in data["clauses"]} == {c.id for c in spec.clauses_for("keras3")}


def test_cli_show_unknown_variant():
    code, out, err = _run("spec", "show", "tf3")
    assert code == 2 and out == ""
    assert "unknown variant 'tf3'" in err and "keras-legacy" in err


def test_cli_diff_tf1_keras3():
    code, out, _ = _run("spec", "diff", "tf1", "keras3", "--json")
    assert code == 0
    rows = {r["field"]: r for r in json.loads(out)["rows"]}
    assert rows["argument.epsilon.default"]["a"] == 1e-8
    assert rows["argument.epsilon.default"]["b"] == 1e-7
    assert rows["beta_powers"]["a"] == "accumulated" and rows["beta_powers"]["b"] == "pow"
    assert "formula" not in rows  # both use the epsilon-hat form
    assert rows["argument.beta_1.name"]["a"] == "beta1"
    assert rows["unknown_kwarg_error"]["b"] == "ValueError"
    assert all(r["hint"] for r in rows.values())


def test_cli_diff_formula_family():
    code, out, _ = _run("spec", "diff", "keras-legacy", "torch", "--json")
    rows = {r["field"]: r for r in json.loads(out)["rows"]}
    assert rows["formula"]["a"] == "epsilon-hat" and rows["formula"]["b"] == "algorithm-1"
    assert "no constant" in rows["formula"]["hint"]


def test_cli_diff_same_variant_and_table():
    code, out, _ = _run("spec", "diff", "keras-v2", "keras-v2")
    assert code == 0 and "do not differ" in out
    code, out, _ = _run("spec", "diff", "tf1", "tf1-compat")
    assert code == 0 and "callable_hyper" in out and "why it matters" in out


def test_cli_diff_unknown_variant():
    code, _, err = _run("spec", "diff", "tf1", "jax")
    assert code == 2 and "unknown variant 'jax'" in err


def test_cli_reports_broken_spec(spec_copy):
    _edit(spec_copy / "variants/tf1.toml", 'formula = "epsilon-hat"', 'formula = "eps-hat"')
    code, out, err = _run("spec", "list", "--spec-root", str(spec_copy))
    assert code == 2 and "spec/variants/tf1.toml: field 'formula'" in err


def test_module_entry_point(capsys):
    assert commands.main(["list"]) == 0
    assert "tf1-compat" in capsys.readouterr().out
