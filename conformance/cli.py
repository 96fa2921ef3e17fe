"""The `adamconf` command: spec, ref, check, replay, report, diff and selftest.

Exit codes: 0 all good, 1 a check failed, 2 a usage or configuration error (the
message names the problem and the fix).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from adamconf.reference.state import DTYPES

DEFAULT_OUT = "adamconf-out"


def _write(path: Path, text: str) -> None:
    """Write via a temporary file of a unique name, so an interrupted or concurrent writer
    leaves no half-written file and two writers never share a temporary."""
    import os
    import tempfile
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes it private; a report is for everyone
    os.replace(tmp, path)


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check a backend against the spec and the exact reference")
    p.add_argument("--backend", required=True, help="module:attr, or a registered name (numpy)")
    p.add_argument("--variant", action="append", help="spec variant id (repeat); default: every variant")
    p.add_argument("--dtype", action="append", help=f"dtype (repeat); default: {', '.join(DTYPES)}")
    p.add_argument("--check", action="append", help="run only these checks (repeat); default: all")
    p.add_argument("--profile", default="ci", help="ci (derandomized, the gate), dev or thorough "
                   "(hypothesis profiles adamconf-ci, adamconf-dev, adamconf-thorough)")
    p.add_argument("--seed", type=int, help="hypothesis seed (dev and thorough profiles)")
    p.add_argument("--max-examples", type=int, help="override the profile's example budget per check")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds one backend step may take (default 10)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder for results.json, junit.xml, report.md and failing cases (default {DEFAULT_OUT})")
    p.add_argument("--findings", action="append", default=[], metavar="FILE",
                   help="a known-deviation file of your own, in the backend findings format (repeat); "
                   "used in addition to the backend's own")
    p.add_argument("-j", "--jobs", default="1", help="worker processes running cells side by side (a number, or auto "
                   "for one per core); default 1")
    p.add_argument("--in-process", action="store_true",
                   help="run the backend in this process (for debugging); by default it runs in an isolated worker, "
                   "so a crash or hang becomes a verdict")
    p.add_argument("--quiet", action="store_true", help="no per-check progress lines")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failing check")
    _add_exact_order(p)


def _add_exact_order(p: argparse.ArgumentParser) -> None:
    from adamconf.exact_mode import ORDER_NAMES
    p.add_argument("--exact-order", metavar="NAME",
                   help=f"exact mode: demand bit-for-bit equality with one op order emulated in the target format "
                   f"({', '.join(ORDER_NAMES)}), every element judged; checks it cannot emulate are unsupported")


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="run one saved case again (a failing case, or a cell's worst input)")
    p.add_argument("case", help="a case file written by 'adamconf check' (DIR/cases/*.json), or a results.json with --cell")
    p.add_argument("--cell", help="with a results.json: the cell (VARIANT-DTYPE-CHECK) whose worst input to replay")
    p.add_argument("--backend", required=True, help="module:attr, or a registered name")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds the backend step may take (default 10)")
    p.add_argument("--in-process", action="store_true", help="run the backend in this process (for debugging)")
    _add_exact_order(p)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="render a results.json (Markdown, JUnit XML, HTML pages, a CI step summary); "
                       "--all: fresh runs of every installed bundled backend and the side-by-side index",
                       description="Exits 2 when a results file does not match the results schema.")
    p.add_argument("results", nargs="?", help="path to results.json")
    p.add_argument("--format", choices=("md", "junit", "html", "summary"), default="md",
                   help="md: the report; junit; html: pages written to --out; summary: a CI step summary")
    p.add_argument("--all", action="store_true", help="run 'adamconf check --profile ci' for every bundled backend that "
                   "is installed into OUT/NAME, then build OUT/index.html and OUT/index.md side by side")
    p.add_argument("--no-run", action="store_true", help="with --all: only rebuild the pages from the results in OUT")
    p.add_argument("--backend", action="append", help="with --all: only these bundled backends (repeat)")
    p.add_argument("--jobs", type=int, default=1, help="with --all: how many backends run at once (default 1)")
    p.add_argument("--out", help="--all: the folder of the published reports (default reports); "
                   "--format html: the folder for the pages (default: the folder of results.json)")


def _add_diff(sub: argparse._SubParsersAction) -> None:
    from adamconf.diff_problems import PROBLEMS

    p = sub.add_parser("diff", help="where two implementations part, by how much, and why",
                       description="Exits 0 when the gap is explained (or rounding), 1 when part is unexplained.")
    p.add_argument("a", help="side A: a variant (exact, by the reference) or BACKEND:VARIANT (numpy:keras3, tensorflow:tf1, my_mod:Backend:keras3)")
    p.add_argument("b", help="side B, the same forms")
    p.add_argument("--dtype", default="float32", help=f"one of {', '.join(DTYPES)} (default float32)")
    p.add_argument("--steps", type=int, default=100, help="steps of the closed loop (default 100)")
    p.add_argument("--problem", default="quadratic", help=f"one of {', '.join(PROBLEMS)} (default quadratic)")
    p.add_argument("--hyper", action="append", default=[], metavar="K=V",
                   help="a hyperparameter for both sides, by canonical name or either API's spelling (repeat)")
    p.add_argument("--defaults", default="each", choices=("each", "explicit"),
                   help="each: every side its own documented defaults (default); explicit: both the same values")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page with a plot of the gap")


def _add_selftest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("selftest", help="run the bundled planted-bug corpus through this install's gate (ci profile)",
                       description="Exits 0 when every planted bug fails at least --target ci cells and every correct "
                       "op order passes every cell, 1 otherwise, 2 on a usage error.")
    p.add_argument("--target", type=int, default=3, help="ci cells each planted bug must fail (default 3)")
    p.add_argument("--full", action="store_true", help="count every failing cell of every bug (slower); "
                   "by default counting stops at the target")
    p.add_argument("--only", action="append", metavar="NAME", help="run only these corpus backends (repeat)")
    p.add_argument("-j", "--jobs", default="1", help="corpus backends run side by side, each in its own worker "
                   "(a number, or auto for one per core); default 1")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds one backend step may take (default 10)")
    p.add_argument("--out", help="folder for selftest.json and selftest.md")
    p.add_argument("--quiet", action="store_true", help="no line per corpus backend")


def run_selftest(args: argparse.Namespace) -> int:
    import time

    from adamconf import selftest
    from adamconf.spec import load_spec

    try:
        jobs = _jobs(args.jobs)
        if args.target < 1:
            raise ValueError(f"--target must be at least 1, got {args.target}")
        if not (0 < args.timeout < float("inf")):
            raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
        rows = selftest.corpus_refs(args.only)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as e:
        print(f"adamconf selftest: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    tallies = selftest.run_all(load_spec(), rows, target=None if args.full else args.target, jobs=jobs,
                               timeout=args.timeout, log=(lambda s: None) if args.quiet else (lambda s: print(s, flush=True)))
    rec = selftest.record(tallies, args.target, args.full, time.perf_counter() - t0)
    text = selftest.markdown(rec)
    print("\n" + text)
    if args.out:
        _write(Path(args.out) / "selftest.json", json.dumps(rec, indent=1))
        _write(Path(args.out) / "selftest.md", text)
        print(f"wrote {Path(args.out) / 'selftest.json'} and {Path(args.out) / 'selftest.md'}")
    return 0 if rec["passed"] else 1


def run_diff(args: argparse.Namespace) -> int:
    from adamconf.diff import DiffError, diff, parse_hyper, parse_side
    from adamconf.diff_report import as_dict, render_html, render_text
    from adamconf.spec import load_spec

    spec = load_spec()
    try:
        a, b = parse_side(args.a, spec), parse_side(args.b, spec)
        given = parse_hyper(args.hyper, [a.variant, b.variant])
        result = diff(spec, a, b, dtype=args.dtype, steps=args.steps, problem=args.problem, hyper=given,
                      defaults=args.defaults)
    except (DiffError, ValueError) as e:
        print(f"adamconf diff: {e}", file=sys.stderr)
        return 2
    print(json.dumps(as_dict(result), indent=1) if args.json else render_text(result))
    if args.html:
        _write(Path(args.html), render_html(result))
    return 1 if result.residual_kind == "unexplained" else 0


def run_check(args: argparse.Namespace) -> int:
    from adamconf import profiles
    from adamconf.exact_mode import check_order
    from adamconf.findings import FindingsError
    from adamconf.loading import ConfigError
    from adamconf.outdir import OutDir, OutDirError
    from adamconf.runner import Interrupted, Runner
    from adamconf.spec import load_spec

    spec = load_spec()
    outdir = OutDir(Path(args.out))
    pool = None
    try:
        variants, dtypes, only = _selection(args, spec)
        check_order(args.exact_order)
        jobs = _jobs(args.jobs)
        if args.seed is not None and profiles.settings_for(args.profile).derandomize:
            raise ValueError(f"the {args.profile} profile is derandomized, so --seed has no effect: "
                             "use it with --profile dev or thorough")
        profiles.profile_name(args.profile)
        outdir.open()
        backend, pool = _backend(args, outdir, jobs)
        runner = Runner(spec, backend, args.backend, profile=args.profile, seed=args.seed, timeout=args.timeout,
                        out=outdir.path, max_examples=args.max_examples, findings_files=args.findings,
                        cases_dir=outdir.cases, executor=pool, exact_order=args.exact_order,
                        log=(lambda s: None) if args.quiet else (lambda s: print(s, flush=True)))
        cells = runner.plan(variants, dtypes, only)
        if not any(c.variant in backend.variants and (c.dtype == "api" or c.dtype in backend.dtypes) for c in cells):
            raise ValueError(f"nothing to judge: the backend declares {_declared(backend)}, and the selection "
                             f"({', '.join(variants)} in {', '.join(dtypes)}) holds none of it. "
                             "Select variants and dtypes the backend declares.")
    except FindingsError as e:
        return _refuse(f"a findings file is invalid: {e}", outdir, pool)
    except (ConfigError, OutDirError, ValueError) as e:
        return _refuse(str(e), outdir, pool)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result, status = runner.run(variants, dtypes, only, fail_fast=args.fail_fast), None
    except Interrupted as e:
        result, status = e.result, e.status
    finally:
        signal.signal(signal.SIGTERM, previous)
        if pool is not None:
            pool.close()
    try:
        record = _commit(result, outdir)
    finally:
        outdir.close()
    if status is not None:
        print(f"adamconf check: interrupted; {len(result.checks)} of {len(cells)} checks were judged and written "
              f"to {outdir.path / 'results.json'} (marked interrupted)", file=sys.stderr)
        return status
    _print_summary(record)
    _append_step_summary(record)
    print(f"\nwrote {outdir.path / 'results.json'}, {outdir.path / 'junit.xml'}, {outdir.path / 'report.md'}")
    if result.judged == 0:
        print(f"adamconf check: nothing was judged: the backend declares {_declared(backend)}; every selected cell "
              "is unsupported, not applicable or uncovered. Select variants and dtypes the backend declares.",
              file=sys.stderr)
        return 2
    return 1 if result.failed else 0


def _backend(args: argparse.Namespace, outdir: object, jobs: int) -> tuple[object, object]:
    """The backend (in this process) or its declarations and a pool of isolated workers."""
    from adamconf.loading import ConfigError, load_backend
    from adamconf.worker import Pool, WorkerError
    if args.in_process:
        if jobs > 1:
            raise ValueError("-j/--jobs needs isolated workers; drop --in-process")
        return load_backend(args.backend), None
    pool = Pool(dict(backend=args.backend, profile=args.profile, seed=args.seed, timeout=args.timeout,
                     max_examples=args.max_examples, findings_files=list(args.findings),
                     out=_str(outdir.path), cases_dir=_str(outdir.cases),
                     exact_order=getattr(args, "exact_order", None)), jobs)  # type: ignore[attr-defined]
    try:
        return pool.start(), pool
    except WorkerError as e:
        pool.shutdown()
        raise ConfigError(f"backend {args.backend!r} could not be loaded: {e}") from None


def _str(path: object) -> str | None:
    return None if path is None else str(path)


def _jobs(value: str) -> int:
    if value == "auto":
        import os
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"-j/--jobs takes a number of workers of at least 1, or auto; got {value!r}")
    return n


def _terminate(signum: int, frame: object) -> None:
    from adamconf.runner import Terminated
    raise Terminated()


def _refuse(message: str, outdir: object, pool: object) -> int:
    if pool is not None:
        pool.shutdown()  # type: ignore[attr-defined]
    outdir.close()  # type: ignore[attr-defined]
    print(f"adamconf check: {message}", file=sys.stderr)
    return 2


def _commit(result: object, outdir: object) -> dict:
    """Write results.json, junit.xml and report.md with this run's cases, all at once."""
    from adamconf.reports import run_files
    from adamconf.runner import as_dict
    record = as_dict(result)  # type: ignore[arg-type]
    outdir.commit(run_files(record))  # type: ignore[attr-defined]
    return record


def _append_step_summary(record: dict) -> None:
    """On GitHub Actions, add the run's summary to the job's page."""
    import os
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        from adamconf.reports.index import step_summary
        from adamconf.spec.model import CLAUSE_AREAS
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as f:
            f.write(step_summary(record, CLAUSE_AREAS) + "\n")


def _selection(args: argparse.Namespace, spec: object) -> tuple[list[str], list[str], list[str] | None]:
    """The variants, dtypes and checks asked for, de-duplicated and validated (ValueError)."""
    from adamconf.api_checks import API_CHECKS
    from adamconf.checks import CHECKS
    known = list(spec.variants)  # type: ignore[attr-defined]
    variants = list(dict.fromkeys(args.variant or known))
    dtypes = list(dict.fromkeys(args.dtype or DTYPES))
    only = list(dict.fromkeys(args.check)) if args.check else None
    for what, got, pool in (("variant", variants, known), ("dtype", dtypes, DTYPES),
                            ("check", only or [], list(CHECKS) + list(API_CHECKS))):
        bad = [x for x in got if x not in pool]
        if bad:
            raise ValueError(f"unknown {what}(s) {', '.join(bad)}; known: {', '.join(pool)}")
    if args.max_examples is not None and args.max_examples < 1:
        raise ValueError(f"--max-examples must be at least 1, got {args.max_examples}")
    if not (0 < args.timeout < float("inf")):
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    return variants, dtypes, only


def _declared(backend: object) -> str:
    return ", ".join(f"{a} = {getattr(backend, a, None)!r}" for a in ("name", "variants", "dtypes", "features"))


def _print_summary(record: dict) -> None:
    from adamconf.verdicts import VERDICTS
    heads = {"known deviation": "known", "unsupported": "unsup", "not applicable": "n/a", "uncovered": "uncov"}
    print(f"\n{'variant':14s} " + " ".join(f"{heads.get(v, v):>6s}" for v in VERDICTS)
          + "   (clause x dtype cells; API clauses count once)")
    for vid, row in record["summary"].items():
        print(f"{vid:14s} " + " ".join(f"{row.get(v, 0):6d}" for v in VERDICTS))
    for f in record.get("findings", []):
        if f["observed_in"]:
            print(f"known deviation {f['id']}: {f['summary']} ({len(f['observed_in'])} checks)")
    for c in record["checks"]:
        if c["status"] not in ("fail", "error"):
            continue
        clauses = sorted({x["clause"] for x in record["clauses"] if x["variant"] == c["variant"] and c["check"] in x["checks"]})
        print(f"\n{c['status'].upper()} {c['variant']} {c['dtype']} check {c['check']} (clauses: {', '.join(clauses) or '-'})")
        print(f"  {c['message']}")
        if c.get("example"):
            print("  minimal example:\n    " + c["example"].replace("\n", "\n    "))
        if c.get("replay"):
            print(f"  replay: {c['replay']}")


def run_replay(args: argparse.Namespace) -> int:
    from adamconf import cases
    from adamconf.checks import CHECKS
    from adamconf.exact_mode import check_order
    from adamconf.exact_mode import unsupported as exact_unsupported
    from adamconf.loading import ConfigError
    from adamconf.protocol import unsupported_reason
    from adamconf.spec import load_spec
    from adamconf.worst_case import exact_order_of_results, load_cell

    spec = load_spec()
    pool = None
    try:
        if not (0 < args.timeout < float("inf")):
            raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
        inp, clause, check = (load_cell(Path(args.case), args.cell) if args.cell
                               else cases.load(Path(args.case), spec))
        cases.validate(inp, spec, args.case)
        # a case replays the judgement it was recorded under, unless --exact-order says otherwise
        order = check_order(args.exact_order or (exact_order_of_results(Path(args.case)) if args.cell
                                                 else cases.exact_order_of(Path(args.case))))
        chk = CHECKS.get(check)
        if check and chk is None:
            raise cases.CaseError(f"{args.case} names check {check!r}, which this adamconf does not have")
        backend, pool = _replay_backend(args)
        reason = unsupported_reason(backend, inp.variant, inp.dtype, chk.features if chk else ())
        if not reason and order and (not chk or chk.kind != "raises"):
            reason = exact_unsupported(spec.variant(inp.variant), inp.dtype, chk.features if chk else frozenset(),
                                       tuple(getattr(backend, "flushes_denormals", ())))
        if reason:
            raise ValueError(f"unsupported: {reason}; `adamconf check` reports this cell as unsupported, "
                             "so there is nothing to replay")
    except (cases.CaseError, ConfigError, ValueError) as e:
        if pool is not None:
            pool.shutdown()
        print(f"adamconf replay: {e}", file=sys.stderr)
        return 2
    kind = chk.kind if chk else "step"
    order = order if kind != "raises" else None
    k = 0.0 if order else spec.tolerances[chk.family if chk else "step"].k
    mode = f", exact order {order} (bit for bit)" if order else ""
    print(f"case {args.case}: clause {clause or '-'}, check {check or '-'}, K = {k:g}{mode}")
    print(cases.describe(inp, limit=20))
    try:
        verdict, message, worst = _replay_one(backend, pool, spec, inp, k, kind, args.timeout, order)
    finally:
        if pool is not None:
            pool.close()
    if verdict == "invalid":
        print(f"adamconf replay: the case is not valid for {inp.variant}: {message}", file=sys.stderr)
        return 2
    if verdict == "pass":
        print("PASS: raised ValueError" if kind == "raises" else
              f"PASS: bit for bit equal to the order {order}" if order else f"PASS: worst error {worst:.3g} u*S (K = {k:g})")
        return 0
    print(f"FAIL: {message}")
    return 1


def _replay_backend(args: argparse.Namespace) -> tuple[object, object]:
    ns = argparse.Namespace(backend=args.backend, in_process=args.in_process, profile="ci", seed=None,
                            timeout=args.timeout, max_examples=None, findings=[])
    holder = argparse.Namespace(path=None, cases=None)
    return _backend(ns, holder, 1)


def _replay_one(backend: object, pool: object, spec: object, inp: object, k: float, kind: str,
                timeout: float, order: str | None = None) -> tuple[str, str, float]:
    """(verdict, message, worst) for one case, in the backend's worker unless in-process."""
    from adamconf.worker import WorkerFailed
    if pool is not None:
        try:
            return pool.request(("replay", inp, k, kind, order))  # type: ignore[attr-defined]
        except WorkerFailed as e:
            return "fail", str(e), float("inf")
    from adamconf.worker import replay_case
    return replay_case(backend, spec, inp, k, kind, timeout, order)


def run_report(args: argparse.Namespace) -> int:
    from adamconf.reports import html, index, junit, markdown
    from adamconf.reports.load import ReportError, load_results
    from adamconf.spec.model import CLAUSE_AREAS

    if args.all:
        return _report_all(args)
    if not args.results:
        print("adamconf report: give a results.json, or --all", file=sys.stderr)
        return 2
    try:
        res = load_results(args.results)
        if args.format == "html":
            dest = Path(args.out) if args.out else Path(args.results).parent
            pages = html.implementation_pages(res)
            for name, text in pages.items():
                _write(dest / name, text)
            text = f"wrote {dest / 'index.html'} and {len(pages) - 1} variant pages"
        elif args.format == "summary":
            text = index.step_summary(res, CLAUSE_AREAS)
        else:
            text = markdown.render(res) if args.format == "md" else junit.render(res)
    except ReportError as e:
        print(f"adamconf report: {e}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        print(f"adamconf report: {args.results} is not a well-formed results file ({type(e).__name__}: {e}); "
              "re-run 'adamconf check' to write it again", file=sys.stderr)
        return 2
    print(text)
    return 0


def _report_all(args: argparse.Namespace) -> int:
    import time

    from adamconf.loading import BUNDLED
    from adamconf.publish import build_pages, run_all
    from adamconf.reports.load import ReportError
    from adamconf.spec import load_spec

    t0 = time.perf_counter()
    out = Path(args.out or "reports")
    names = list(dict.fromkeys(args.backend or BUNDLED))
    unknown = [n for n in names if n not in BUNDLED]
    if unknown or args.jobs < 1:
        print(f"adamconf report: unknown bundled backend(s) {', '.join(unknown)}; bundled: {', '.join(BUNDLED)}"
              if unknown else f"adamconf report: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    outcomes = [] if args.no_run else run_all(out, names, jobs=args.jobs)
    notes = {o.name: f"not re-run here: {o.why}" for o in outcomes if o.code not in (0, 1)}
    try:
        pages = build_pages(out, load_spec(), notes)
    except ReportError as e:
        print(f"adamconf report: {e}", file=sys.stderr)
        return 2
    if not pages.implementations:
        print(f"adamconf report: no results in {out}: no bundled backend could be run here", file=sys.stderr)
        return 2
    for path, text in pages.files.items():
        _write(path, text)
    print(f"wrote {out / 'index.html'} and {out / 'index.md'}: {pages.rows} rows x {pages.columns} columns "
          f"({', '.join(pages.implementations)}), {len(pages.files)} files in {time.perf_counter() - t0:.0f} s")
    return 1 if any(o.code == 1 for o in outcomes) else 0


def main(argv: Sequence[str] | None = None) -> int:
    from adamconf.reference import commands as ref_commands
    from adamconf.spec import commands as spec_commands

    parser = argparse.ArgumentParser(prog="adamconf", description="Conformance checks for Adam as TensorFlow documents it.")
    sub = parser.add_subparsers(dest="command", required=True)
    spec_commands.add_parser(sub)
    ref_commands.add_parser(sub)
    _add_check(sub)
    _add_replay(sub)
    _add_report(sub)
    _add_diff(sub)
    _add_selftest(sub)
    args = parser.parse_args(argv)
    handlers = {"spec": spec_commands.run, "ref": ref_commands.run, "check": run_check,
                "replay": run_replay, "report": run_report, "diff": run_diff,
                "selftest": run_selftest}
    try:
        return handlers[args.command](args)
    except BrokenPipeError:   # output piped into head and the like: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
