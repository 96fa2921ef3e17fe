"""The gate's hypothesis profiles, registered with hypothesis itself.

`adamconf-ci` is the CI gate: derandomized with a fixed example budget, so every run and
every backend sees the same examples. `adamconf-dev` draws at random (pin it with a
seed), `adamconf-thorough` draws ten times as many. Because they are ordinary hypothesis
profiles, the pytest route honours `--hypothesis-profile adamconf-dev`,
`--hypothesis-seed` and `--hypothesis-show-statistics`.

Hypothesis also mixes into its draws numeric literals found in the source of "local"
modules (whatever is not installed: a backend author's own files included). That would
let an edit to a backend change the gate's examples, so `fixed_constants()` limits the
constant pool to hypothesis's built-in one while a check runs.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, settings

PREFIX = "adamconf-"
BUDGETS: dict[str, dict[str, Any]] = {
    "ci": dict(max_examples=12, derandomize=True),
    "dev": dict(max_examples=60, derandomize=False),
    "thorough": dict(max_examples=600, derandomize=False),
}
PROFILES = tuple(BUDGETS)

# No explain phase: it re-runs a failing case hundreds of times to annotate it, which
# the replay command makes unnecessary and which can take minutes.
_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)

for _name, _budget in BUDGETS.items():
    settings.register_profile(
        PREFIX + _name, database=None, deadline=None, verbosity=Verbosity.quiet, report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck), print_blob=False, phases=_PHASES, **_budget)


def profile_name(profile: str) -> str:
    """`ci` -> `adamconf-ci`; a full name passes through. ValueError for anything else."""
    short = profile.removeprefix(PREFIX)
    if short not in BUDGETS:
        raise ValueError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")
    return PREFIX + short


def settings_for(profile: str, max_examples: int | None = None) -> settings:
    """The registered profile, with the example budget overridden if asked."""
    base = settings.get_profile(profile_name(profile))
    return settings(base, max_examples=max_examples) if max_examples else base


def without_shrinking(base: settings) -> settings:
    """The same profile without the shrink phase: the same examples and verdicts, but a
    failure keeps the first failing example instead of the smallest."""
    return settings(base, phases=[p for p in base.phases if p is not Phase.shrink])


def budget(profile: str, max_examples: int | None = None) -> int:
    return settings_for(profile, max_examples).max_examples


@contextmanager
def fixed_constants() -> Iterator[None]:
    """Draw only hypothesis's global constants, never literals from local source files."""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - layout of a future hypothesis
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    if original is None:  # a hypothesis without local constants: nothing to pin
        yield
        return
    empty = providers.Constants()
    providers.CONSTANTS_CACHE.cache.clear()
    providers._get_local_constants = lambda: empty
    try:
        yield
    finally:
        providers._get_local_constants = original
        providers.CONSTANTS_CACHE.cache.clear()
