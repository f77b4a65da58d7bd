"""The benchmark's plot: speedups against torchvision's eager module, as an SVG bar chart.

Plain SVG text, no plotting library: one panel per (layout, batch, dtype), one group of bars
per block (and the network), one bar per implementation; a dashed line marks 1.0x (the eager
module itself, which gets no bar). Training rows (mode "train") get panels of their own, one
per form, against that form's eager module.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fused_inception.bench.cases import EAGER as BASELINE
from fused_inception.bench.train import BASELINES as TRAIN_BASELINES

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
BAR_W, GAP, LEFT, RIGHT, PANEL_H, TOP, BOTTOM = 16, 14, 60, 20, 220, 40, 40


def _is_baseline(r: dict) -> bool:
    if r.get("mode") == "train":
        return r["impl"] == TRAIN_BASELINES[r["form"]]
    return r["impl"] == BASELINE


def _panels(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Rows other than the baselines, per (title prefix, layout, batch, dtype): training rows
    get a panel per form ("train paper: ..."), inference rows none ("")."""
    panels: dict[tuple, list[dict]] = {}
    for r in rows:
        if not _is_baseline(r):
            prefix = f"train {r['form']}: " if r.get("mode") == "train" else ""
            prefix = "144-crop evaluation: " if r.get("mode") == "multicrop" else prefix
            panels.setdefault((prefix, r["layout"], r["batch"], r["dtype"]), []).append(r)
    return panels


def _panel_svg(key: tuple, rows: list[dict], impls: list[str], y0: int, width: int) -> list[str]:
    prefix, layout, batch, dtype = key
    baseline = TRAIN_BASELINES[rows[0]["form"]] if prefix else BASELINE
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    speedup = {(r["block"], r["impl"]): r["speedup"] for r in rows}
    top = max(1.2, max(speedup.values()) * 1.15)
    plot_top, plot_bottom = y0 + TOP, y0 + TOP + PANEL_H

    def y(v: float) -> float:
        return plot_bottom - v / top * PANEL_H

    out = [
        f'<text x="{LEFT}" y="{y0 + 24}" font-size="14" font-weight="bold">'
        f"{escape(prefix + layout)} input, batch {batch}, {escape(dtype)}: speedup vs "
        f"{escape(baseline)}</text>",
        f'<line x1="{LEFT}" y1="{plot_top}" x2="{LEFT}" y2="{plot_bottom}" stroke="black"/>',
        f'<line x1="{LEFT}" y1="{plot_bottom}" x2="{width - RIGHT}" y2="{plot_bottom}" '
        'stroke="black"/>',
    ]
    step = 0.5 if top <= 4 else 1.0
    tick = 0.0
    while tick <= top:
        out.append(
            f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" font-size="10" text-anchor="end">'
            f"{tick:.1f}x</text>"
        )
        tick += step
    out.append(
        f'<line x1="{LEFT}" y1="{y(1.0):.1f}" x2="{width - RIGHT}" y2="{y(1.0):.1f}" '
        'stroke="gray" stroke-dasharray="4 3"/>'
    )
    group_w = len(impls) * BAR_W + GAP
    for g, block in enumerate(blocks):
        x0 = LEFT + GAP + g * group_w
        for i, impl in enumerate(impls):
            value = speedup.get((block, impl))
            if value is None:
                continue
            x = x0 + i * BAR_W
            out.append(
                f'<rect x="{x}" y="{y(value):.1f}" width="{BAR_W - 2}" '
                f'height="{plot_bottom - y(value):.1f}" fill="{COLORS[i % len(COLORS)]}">'
                f"<title>{escape(block)} {escape(impl)}: {value:.2f}x</title></rect>"
            )
            out.append(
                f'<text x="{x + BAR_W / 2 - 1:.1f}" y="{y(value) - 3:.1f}" font-size="8" '
                f'text-anchor="middle">{value:.2f}</text>'
            )
        out.append(
            f'<text x="{x0 + len(impls) * BAR_W / 2:.1f}" y="{plot_bottom + 16}" '
            f'font-size="12" text-anchor="middle">{escape(block)}</text>'
        )
    return out


def write_speedup_svg(rows: list[dict], path: str | Path) -> None:
    """Write the bar chart of `rows` (the benchmark's rows) to `path` as SVG."""
    panels = _panels(rows)
    if not panels:
        raise ValueError("no rows to plot besides the eager baseline")
    impls = list(dict.fromkeys(r["impl"] for r in rows if not _is_baseline(r)))
    groups = max(len({r["block"] for r in p}) for p in panels.values())
    width = LEFT + GAP + groups * (len(impls) * BAR_W + GAP) + RIGHT
    width = max(width, 480)
    legend_h = 18 * len(impls) + 10
    height = len(panels) * (TOP + PANEL_H + BOTTOM) + legend_h
    body = []
    for n, (key, panel_rows) in enumerate(panels.items()):
        body += _panel_svg(key, panel_rows, impls, n * (TOP + PANEL_H + BOTTOM), width)
    y_legend = len(panels) * (TOP + PANEL_H + BOTTOM)
    for i, impl in enumerate(impls):
        y = y_legend + 18 * i
        body.append(
            f'<rect x="{LEFT}" y="{y}" width="12" height="12" fill="{COLORS[i % len(COLORS)]}"/>'
        )
        body.append(f'<text x="{LEFT + 18}" y="{y + 10}" font-size="12">{escape(impl)}</text>')
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        *body,
        "</svg>",
    ]
    Path(path).write_text("\n".join(svg) + "\n")
