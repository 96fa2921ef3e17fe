"""Closed-loop problems for `adamconf diff`: where the gradients come from.

A problem gives the starting parameters and, at every step, the gradients at a side's
own current parameters, so two implementations that part early also see different
gradients afterwards, as they would in training. Everything is computed in float64
from fixed data (a seeded generator), then cast to the run's dtype by the caller; the
same parameters therefore always give the same gradients, whichever side holds them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Params = list[np.ndarray]


@dataclass(frozen=True)
class Problem:
    """Starting parameters and a gradient function, both in float64."""

    name: str
    description: str
    init: Callable[[], Params]
    grad: Callable[[Params, int], Params]   # (params, step index from 0) -> gradients


def _rng(tag: int) -> np.random.Generator:
    return np.random.default_rng(20260 + tag)


def _quadratic(n: int = 16) -> Problem:
    """0.5 * sum(a_i (x_i - c_i)^2) with curvatures spread over three decades, from x = 0.

    Starting at 0 makes the parameters after step one equal to minus the first update,
    so a gap in ulps of the parameters is a gap in ulps of the update."""
    rng = _rng(1)
    a = np.logspace(-2, 1, n)
    c = rng.uniform(-1.0, 1.0, n)
    return Problem("quadratic", f"0.5*sum(a*(x-c)^2), {n} elements, curvatures 1e-2..1e1, from x = 0",
                   lambda: [np.zeros(n)], lambda ps, t: [a * (ps[0] - c)])


def _rosenbrock(pairs: int = 4) -> Problem:
    """Sum of 2-D Rosenbrock valleys, each started at the classic (-1.2, 1)."""
    def init() -> Params:
        return [np.tile([-1.2, 1.0], pairs)]

    def grad(ps: Params, t: int) -> Params:
        x = ps[0].reshape(pairs, 2)
        g = np.empty_like(x)
        g[:, 0] = -2.0 * (1.0 - x[:, 0]) - 400.0 * x[:, 0] * (x[:, 1] - x[:, 0] ** 2)
        g[:, 1] = 200.0 * (x[:, 1] - x[:, 0] ** 2)
        return [g.reshape(-1)]
    return Problem("rosenbrock", f"{pairs} Rosenbrock valleys (1-x)^2 + 100(y-x^2)^2 from (-1.2, 1)", init, grad)


def _mlp(inputs: int = 4, hidden: int = 8, samples: int = 32) -> Problem:
    """A tanh MLP with one hidden layer fitting fixed data by mean squared error."""
    rng = _rng(3)
    X = rng.normal(size=(samples, inputs))
    y = np.sin(X @ rng.normal(size=inputs))[:, None]
    w1 = rng.normal(scale=1.0 / np.sqrt(inputs), size=(inputs, hidden))
    w2 = rng.normal(scale=1.0 / np.sqrt(hidden), size=(hidden, 1))

    def init() -> Params:
        return [w1.copy(), np.zeros(hidden), w2.copy(), np.zeros(1)]

    def grad(ps: Params, t: int) -> Params:
        W1, b1, W2, b2 = ps
        h = np.tanh(X @ W1 + b1)
        err = (h @ W2 + b2 - y) * (2.0 / samples)
        dh = (err @ W2.T) * (1.0 - h * h)
        return [X.T @ dh, dh.sum(0), h.T @ err, err.sum(0)]
    n = inputs * hidden + hidden + hidden + 1
    return Problem("mlp", f"tanh MLP {inputs}-{hidden}-1 on {samples} fixed samples, MSE, {n} parameters", init, grad)


def _fixed(n: int = 16, steps: int = 1000) -> Problem:
    """Gradients that do not depend on the parameters: the same inputs on both sides at
    every step. Magnitudes span 1e-6..1 so that epsilon matters for some elements."""
    rng = _rng(4)
    scale = np.logspace(-6, 0, n)
    table = rng.normal(size=(steps, n)) * scale + 0.3 * scale

    def grad(ps: Params, t: int) -> Params:
        return [table[t % steps].copy()]
    return Problem("fixed", f"fixed gradients, {n} elements, magnitudes 1e-6..1, from x = 0",
                   lambda: [np.zeros(n)], grad)


PROBLEMS: dict[str, Callable[[], Problem]] = {
    "quadratic": _quadratic,
    "rosenbrock": _rosenbrock,
    "mlp": _mlp,
    "fixed": _fixed,
}


def get_problem(name: str) -> Problem:
    try:
        return PROBLEMS[name]()
    except KeyError:
        raise ValueError(f"unknown problem {name!r}; use one of {', '.join(PROBLEMS)}") from None
