"""Isolated backends: each runs in a worker process, so its misbehaviour becomes a verdict.

The harness never imports the backend. A worker (`python -m adamconf.worker`) loads it by
its reference, reports what it declares, and runs whole cells (hypothesis, reference and
backend together, so a cell costs no per-step traffic) on request. Every call into the
backend is announced to the harness before it starts and when it ends; the harness kills
the worker when a call overruns its timeout (`HUNG`), and records a worker that exits,
dies by a signal or raises any BaseException as `crashed: ...`. The cell gets that
verdict, a fresh worker takes over, and the run goes on. Several workers give `-j N`.

Messages (pickled over two pipes of their own, so nothing the backend prints can get in
the way), worker to harness: ("ready", declarations) | ("load-error", text) |
("call", what, timeout) | ("end",) | ("result", value) | ("crashed", text).
Harness to worker: the config dict once, then ("cell", Cell) | ("replay", StepInput, k).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

# How long a worker may take to import its backend and say what it declares.
START_LIMIT = 120.0
POLL = 0.05


class WorkerError(Exception):
    """The worker could not be started: the backend does not load (a usage error)."""


class WorkerFailed(Exception):
    """The worker hung or died while running a request; the message is the verdict."""


@dataclass
class Declared:
    """What a backend declares about itself, read in its worker (the harness never
    imports the backend). It stands in for the backend wherever only declarations are
    needed: the plan, unsupported cells, findings, flush-to-zero and version stamps."""

    name: str
    variants: tuple[str, ...]
    dtypes: tuple[str, ...]
    features: tuple[str, ...]
    flushes_denormals: tuple[str, ...]
    findings: str | None
    backend_versions: dict[str, str]

    def versions(self) -> dict[str, str]:
        return dict(self.backend_versions)


def crash_text(exitcode: int | None, during: str) -> str:
    """`crashed: exit 0`, `crashed: SIGSEGV`, ... with what the worker was doing."""
    if exitcode is None:
        what = "crashed"
    elif exitcode < 0:
        try:
            what = f"crashed: {signal.Signals(-exitcode).name}"
        except ValueError:
            what = f"crashed: signal {-exitcode}"
    else:
        what = f"crashed: exit {exitcode}"
    return f"{what} (the worker process ended {during}; a fresh worker took over)"


class Worker:
    """One worker process, seen from the harness."""

    def __init__(self, config: dict[str, Any]) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adamconf.worker", str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL, stdout=2)  # its prints go to stderr
        os.close(to_child_r)
        os.close(from_child_w)
        self.send_conn = Connection(to_child_w, readable=False)
        self.recv_conn = Connection(from_child_r, writable=False)
        self.send_conn.send(config)
        self.declared: Declared | None = None
        self.in_call: tuple[str, float, float] | None = None   # what, started, timeout
        self.busy_with: Any = None

    def start(self) -> Declared:
        """Wait for the worker to load its backend and report its declarations."""
        t0 = time.monotonic()
        while True:
            if not self.recv_conn.poll(POLL):
                if self.proc.poll() is not None:
                    raise WorkerError(crash_text(self.proc.returncode, "while loading the backend"))
                if time.monotonic() - t0 > START_LIMIT:
                    self.kill()
                    raise WorkerError(f"the backend did not load within {START_LIMIT:g} s (an import or hook hangs?)")
                continue
            try:
                kind, *rest = self.recv_conn.recv()
            except (EOFError, OSError):
                self.proc.wait()
                raise WorkerError(crash_text(self.proc.returncode, "while loading the backend")) from None
            if kind == "ready":
                self.declared = Declared(**rest[0])
                return self.declared
            if kind in ("load-error", "crashed"):
                self.kill()
                raise WorkerError(rest[0] if kind == "load-error" else f"loading it ended the worker: {rest[0]}")

    def submit(self, request: tuple) -> None:
        self.busy_with = request
        self.send_conn.send(request)

    def pump(self) -> tuple[bool, Any]:
        """Handle what the worker has said; (True, value) once its request is done.
        Raises WorkerFailed when it hung or died."""
        while self.recv_conn.poll(0):
            try:
                kind, *rest = self.recv_conn.recv()
            except (EOFError, OSError):
                break
            if kind == "call":
                self.in_call = (rest[0], time.monotonic(), rest[1])
            elif kind == "end":
                self.in_call = None
            elif kind == "result":
                self.busy_with = None
                return True, rest[0]
            elif kind == "crashed":
                self.kill()
                raise WorkerFailed(f"crashed: {rest[0]} (a fresh worker took over)")
        if self.in_call is not None:
            what, started, limit = self.in_call
            if time.monotonic() - started > limit:
                self.kill()
                raise WorkerFailed(f"HUNG: the backend did not return from {what} within {limit:g} s; "
                                   "its worker was killed and a fresh one took over")
        if self.proc.poll() is not None:
            during = f"during {self.in_call[0]}" if self.in_call else "between backend calls"
            raise WorkerFailed(crash_text(self.proc.returncode, during))
        return False, None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for c in (self.send_conn, self.recv_conn):
            with contextlib.suppress(OSError):
                c.close()

    def close(self) -> None:
        """End an idle worker politely (EOF on its input), then make sure it is gone."""
        with contextlib.suppress(OSError):
            self.send_conn.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.kill()


class Pool:
    """N workers running cells; a worker that hangs or dies is replaced."""

    def __init__(self, config: dict[str, Any], jobs: int = 1) -> None:
        self.config, self.jobs = config, max(1, jobs)
        self.workers: list[Worker] = []
        self.declared: Declared | None = None

    def start(self) -> Declared:
        """Start the first worker and return the backend's declarations (WorkerError if it will not load)."""
        w = Worker(self.config)
        self.declared = w.start()
        self.workers.append(w)
        return self.declared

    def _fresh(self) -> Worker:
        w = Worker(self.config)
        w.start()
        return w

    def map(self, requests: Iterable[Any], on_failure: Callable[[Any, str], Any],
            on_done: Callable[[int, Any], None] | None = None,
            settled: Callable[[Any], Any] | None = None) -> list[Any]:
        """Run ("cell", Cell)-style requests across the workers; results in request order.
        `on_failure(request, text)` turns a hung or crashed worker into that request's result;
        `settled(request)`, asked just before a request is sent, may give its result instead."""
        todo = list(enumerate(requests))
        todo.reverse()
        results: dict[int, Any] = {}
        running: dict[Worker, int] = {}
        total = len(todo)
        try:
            while todo or running:
                while todo and len(running) < self.jobs:
                    idle = [w for w in self.workers if w not in running]
                    if not idle:
                        try:
                            idle = [self._fresh()]
                        except WorkerError as e:
                            i, req = todo.pop()
                            results[i] = on_failure(req, f"crashed: the worker could not be restarted: {e}")
                            if on_done:
                                on_done(i, results[i])
                            continue
                        self.workers.append(idle[0])
                    i, req = todo.pop()
                    known = settled(req) if settled else None
                    if known is not None:
                        results[i] = known
                        if on_done:
                            on_done(i, known)
                        continue
                    idle[0].submit(req)
                    running[idle[0]] = i
                if not running:
                    continue
                wait([w.recv_conn for w in running], timeout=POLL)
                for w, i in list(running.items()):
                    try:
                        done, value = w.pump()
                    except WorkerFailed as e:
                        value, done = on_failure(w.busy_with, str(e)), True
                        w.kill()
                        self.workers.remove(w)
                    if done:
                        del running[w]
                        results[i] = value
                        if on_done:
                            on_done(i, value)
        except BaseException:
            self.shutdown()
            raise
        assert len(results) == total
        return [results[i] for i in range(total)]

    def request(self, req: Any) -> Any:
        """One request on one worker (raises WorkerFailed when it hangs or dies)."""
        box: list[Any] = []

        def failed(_: Any, text: str) -> None:
            raise WorkerFailed(text)
        box.extend(self.map([req], failed))
        return box[0]

    def shutdown(self) -> None:
        for w in self.workers:
            w.kill()
        self.workers.clear()

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self.workers.clear()


# -- the worker process ---------------------------------------------------------------------

def _serve(recv: Connection, send: Connection) -> None:
    config = recv.recv()
    from adamconf import evaluate

    def guard(fn: Callable[[], Any], timeout: float, what: str = "step") -> Any:
        send.send(("call", what, timeout))
        try:
            return fn()
        finally:
            send.send(("end",))
    evaluate.set_guard(guard)

    try:
        backend, declared = _load(config["backend"], guard)
    except Exception as e:  # noqa: BLE001 - reported to the harness as a usage error
        send.send(("load-error", str(e)))
        return
    send.send(("ready", declared))

    from pathlib import Path

    from adamconf.runner import Runner
    from adamconf.spec import load_spec
    runner = Runner(load_spec(), backend, config["backend"], profile=config["profile"], seed=config["seed"],
                    timeout=config["timeout"], out=Path(config["out"]) if config["out"] else None,
                    max_examples=config["max_examples"], findings_files=config["findings_files"],
                    cases_dir=Path(config["cases_dir"]) if config["cases_dir"] else None,
                    statistics=config.get("statistics", False), exact_order=config.get("exact_order"),
                    shrink=config.get("shrink", True))
    while True:
        try:
            req = recv.recv()
        except EOFError:
            return
        send.send(("result", _handle(runner, req)))


def _handle(runner: Any, req: tuple) -> Any:
    """One request; a harness-side exception becomes an `error` result, never a crash."""
    from adamconf.runner import CheckRun
    from adamconf.verdicts import ERROR
    try:
        if req[0] == "cell":
            return runner.run_cell(req[1])
        return replay_case(runner.backend, runner.spec, req[1], req[2], req[3], runner.timeout,
                           req[4] if len(req) > 4 else None)
    except Exception as e:  # noqa: BLE001 - reported as the harness's error, the worker lives on
        text = f"harness error in the worker: {type(e).__name__}: {e}"
        if req[0] == "cell":
            c = req[1]
            return CheckRun(c.check, c.variant, c.dtype, ERROR, message=text)
        return ("error", text, 0.0)


def _load(ref: str, guard: Callable[..., Any]) -> tuple[Any, dict[str, Any]]:
    """Load the backend and read its declarations, each hook under the guard."""
    from adamconf.loading import load_backend
    from adamconf.stamp import backend_versions
    backend = guard(lambda: load_backend(ref), START_LIMIT, "loading the backend")
    declared = dict(name=backend.name, variants=tuple(backend.variants), dtypes=tuple(backend.dtypes),
                    features=tuple(backend.features),
                    flushes_denormals=tuple(getattr(backend, "flushes_denormals", ())),
                    findings=getattr(backend, "findings", None),
                    backend_versions=guard(lambda: backend_versions(backend), START_LIMIT, "versions()"))
    return backend, declared


def replay_case(backend: Any, spec: Any, inp: Any, k: float, kind: str, timeout: float,
                exact_order: str | None = None) -> tuple[str, str, float]:
    """("pass" | "fail" | "invalid", message, worst ratio) for one saved case; with
    `exact_order`, judged bit for bit against that order."""
    from adamconf.evaluate import Invalid, evaluate, expect_raises
    from adamconf.exact_mode import evaluate_exact
    if kind == "raises":
        out = expect_raises(backend, inp, ValueError, timeout)
        return ("pass" if out.ok else "fail"), out.message, 0.0
    try:
        variant = spec.variant(inp.variant)
        out = (evaluate_exact(backend, variant, inp, exact_order, timeout) if exact_order
               else evaluate(backend, variant, inp, k, timeout))
    except Invalid as e:
        return "invalid", str(e), 0.0
    return ("pass" if out.ok else "fail"), out.message, out.worst


def main(argv: list[str]) -> int:
    # Ctrl-C is the harness's to handle: it stops the run and kills the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    recv = Connection(int(argv[0]), writable=False)
    send = Connection(int(argv[1]), readable=False)
    try:
        _serve(recv, send)
    except BaseException as e:  # noqa: BLE001 - anything at all the backend raises is a verdict
        from adamconf.runner import crash_message
        with contextlib.suppress(OSError):
            send.send(("crashed", crash_message(e).removeprefix("crashed: ")))
        os._exit(3)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
