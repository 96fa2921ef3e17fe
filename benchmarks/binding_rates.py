"""Binding rate per check from a results.json (adamconf.binding): pooled over every
cell's examples, and the lowest cell. Usage: python benchmarks/binding_rates.py RESULTS..."""
from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(paths: list[str]) -> None:
    bound: dict[str, float] = defaultdict(float)
    seen: dict[str, int] = defaultdict(int)
    low: dict[str, tuple[float, str]] = {}
    secs: dict[str, float] = defaultdict(float)
    for path in paths:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
        for c in rec["checks"]:
            secs[c["check"]] += c.get("seconds", 0.0)
            if c.get("binding") is None:
                continue
            n = c["binding_examples"]
            bound[c["check"]] += c["binding"] * n
            seen[c["check"]] += n
            cell = f"{c['variant']}/{c['dtype']}"
            if c["check"] not in low or c["binding"] < low[c["check"]][0]:
                low[c["check"]] = (c["binding"], cell)
    print(f"{'check':18s} {'binding':>8s} {'examples':>8s}  lowest cell              seconds")
    for chk in sorted(secs):
        if seen[chk]:
            lo, cell = low[chk]
            print(f"{chk:18s} {bound[chk] / seen[chk]:8.0%} {seen[chk]:8d}  {lo:4.0%} {cell:20s} {secs[chk]:6.1f}")
        else:
            print(f"{chk:18s} {'n/a':>8s} {'':8s}  {'':25s} {secs[chk]:6.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
