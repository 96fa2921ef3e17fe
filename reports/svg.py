"""Plain inline SVG charts: no scripts, no fonts or styles fetched from anywhere.

`line_chart` plots a few series over a shared x axis (the gap per step of `adamconf
diff --html`, the error per step of a trajectory check); `histogram` draws the
distribution of err/(u*S) with the bound K marked; `share_bar` splits one total into
named shares (elements judged versus ill-conditioned).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        return [10.0 ** e for e in range(math.floor(lo), math.ceil(hi) + 1)]
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / 4 or 1))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= 6:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _label(x: float) -> str:
    return f"{x:g}"


def line_chart(series: Sequence[tuple[str, Sequence[float], Sequence[float]]], *, title: str = "",
               x_label: str = "", y_label: str = "", log_y: bool = False,
               width: int = 720, height: int = 320) -> str:
    """An SVG element plotting each (name, xs, ys) as a line. On a log axis points at or
    below zero are left out (the line breaks there)."""
    left, right, top, bottom = 70, 160, 30, 45
    pw, ph = width - left - right, height - top - bottom
    pts = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys)
           if math.isfinite(y) and (y > 0 or not log_y)]
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'),
           f'<title>{escape(title)}</title>',
           f'<text x="{left}" y="18" font-size="13">{escape(title)}</text>']
    if not pts:
        out.append(f'<text x="{left + 10}" y="{top + ph / 2}">nothing to plot (every value is zero)</text></svg>')
        return "\n".join(out)
    f = (lambda y: math.log10(y)) if log_y else (lambda y: y)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(f(p[1]) for p in pts), max(f(p[1]) for p in pts)
    if log_y:
        y0, y1 = math.floor(y0), math.ceil(y1)
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    if x1 == x0:
        x1 = x0 + 1
    sx = lambda x: left + (x - x0) / (x1 - x0) * pw
    sy = lambda y: top + ph - (f(y) - y0) / (y1 - y0) * ph
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    for t in _ticks(y0, y1, log_y):
        if not (y0 <= f(t) <= y1):
            continue
        y = sy(t)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_label(t)}</text>')
    for t in _ticks(x0, x1, False):
        x = sx(t)
        out.append(f'<text x="{x:.1f}" y="{top + ph + 15}" text-anchor="middle">{_label(t)}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text transform="translate(14,{top + ph / 2}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>')
    for k, (name, xs, ys) in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for x, y in zip(xs, ys):
            if not math.isfinite(y) or (log_y and y <= 0):
                runs.append([])
                continue
            runs[-1].append(f"{sx(x):.1f},{sy(y):.1f}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
            elif run:
                out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(run)}"/>')
        ly = top + 14 + 16 * k
        out.append(f'<line x1="{left + pw + 10}" x2="{left + pw + 28}" y1="{ly - 4}" y2="{ly - 4}" '
                   f'stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{left + pw + 32}" y="{ly}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _bin_label(lo: float, hi: float) -> str:
    if lo == 0:
        return f"<{hi:g}"
    return f">={lo:g}" if math.isinf(hi) else f"{lo:g}-{hi:g}"


def histogram(counts: Sequence[int], edges: Sequence[float], k: float, *, title: str = "",
              x_label: str = "err/(u*S)", width: int = 460, height: int = 200) -> str:
    """Bars of `counts` over the bins between `edges` (equal widths, labelled by range),
    with the bound K marked: bars at or past K are drawn red. The bins may be uneven
    (0, 0.01, 0.1, ... inf); K is placed within its bin by linear interpolation."""
    left, right, top, bottom = 46, 12, 36, 46
    pw, ph = width - left - right, height - top - bottom
    n = len(counts)
    bw = pw / max(n, 1)
    peak = max(counts, default=0) or 1
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10" class="plot histogram">'),
           f'<title>{escape(title)}</title>',
           f'<text x="{left}" y="14" font-size="12">{escape(title)}</text>',
           f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#999"/>']
    for i, c in enumerate(counts):
        lo, hi = edges[i], edges[i + 1]
        x = left + i * bw
        h = ph * c / peak
        color = PALETTE[1] if lo >= k else PALETTE[0]
        out.append(f'<rect x="{x + 2:.1f}" y="{top + ph - h:.1f}" width="{bw - 4:.1f}" height="{h:.1f}" fill="{color}">'
                   f'<title>{_bin_label(lo, hi)}: {c}</title></rect>')
        out.append(f'<text x="{x + bw / 2:.1f}" y="{top + ph - h - 3:.1f}" text-anchor="middle">{c}</text>')
        out.append(f'<text x="{x + bw / 2:.1f}" y="{top + ph + 13}" text-anchor="middle">{_bin_label(lo, hi)}</text>')
    for i in range(n):
        lo, hi = edges[i], edges[i + 1]
        if lo <= k < hi or (i == n - 1 and k >= hi):
            frac = 0.0 if math.isinf(hi) else (k - lo) / (hi - lo)
            kx = left + (i + min(frac, 1.0)) * bw
            out.append(f'<line x1="{kx:.1f}" x2="{kx:.1f}" y1="{top - 4}" y2="{top + ph}" stroke="{PALETTE[1]}" '
                       'stroke-dasharray="4 3" stroke-width="1.5"/>')
            out.append(f'<text x="{kx + 3:.1f}" y="{top + 4}" fill="{PALETTE[1]}">K = {k:g}</text>')
            break
    out.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">{escape(x_label)} '
               '(elements judged per bin)</text>')
    out.append("</svg>")
    return "\n".join(out)


def share_bar(parts: Sequence[tuple[str, int]], *, title: str = "", width: int = 460, height: int = 46) -> str:
    """One horizontal bar split into named shares (e.g. elements judged versus
    ill-conditioned), each labelled with its count and percentage."""
    total = sum(n for _, n in parts)
    left, bar_h, top = 4, 14, 18
    pw = width - 2 * left
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10" class="plot share">'),
           f'<title>{escape(title)}</title>',
           f'<text x="{left}" y="12" font-size="11">{escape(title)}</text>']
    x = float(left)
    colors = (PALETTE[2], "#bbbbbb", PALETTE[1], PALETTE[3])
    legend = []
    for k, (name, n) in enumerate(parts):
        w = pw * n / total if total else 0.0
        color = colors[k % len(colors)]
        share = f"{100 * n / total:.1f}%" if total else "-"
        if w > 0:
            out.append(f'<rect x="{x:.1f}" y="{top}" width="{w:.1f}" height="{bar_h}" fill="{color}">'
                       f'<title>{escape(name)}: {n} ({share})</title></rect>')
        legend.append((color, f"{name}: {n} ({share})"))
        x += w
    if not total:
        out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{bar_h}" fill="none" stroke="#bbb"/>')
    lx = left
    for color, text in legend:
        out.append(f'<rect x="{lx}" y="{top + bar_h + 4}" width="8" height="8" fill="{color}"/>')
        out.append(f'<text x="{lx + 11}" y="{top + bar_h + 11}">{escape(text)}</text>')
        lx += 16 + 6 * len(text)
    out.append("</svg>")
    return "\n".join(out)
