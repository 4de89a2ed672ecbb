"""Small self-contained SVG charts for HTML reports (no JavaScript, no network).

Each function returns one <figure> holding one <svg> that parses as XML: bars, histograms, line
charts with step markers, heatmaps, reliability diagrams, box plots, grouped horizontal bars and
interval (forest) plots. Every string drawn comes through html.escape; values that are not
finite numbers are left out of the drawing (tables beside the charts carry them)."""
from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np

WIDTH, HEIGHT, PAD = 420, 220, 36
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d")
BETTER, WORSE, NEUTRAL, GRID, INK = "#2e7d32", "#c62828", "#6e7781", "#e1e4e8", "#24292f"
esc = html.escape


def bar_chart(title: str, values: dict[str, int | float], *, chart_id: str) -> str:
    labels = list(values)
    peak = max(values.values(), default=0) or 1
    slot = (WIDTH - 2 * PAD) / max(len(labels), 1)
    bars = []
    for i, label in enumerate(labels):
        h = (HEIGHT - 2 * PAD) * values[label] / peak
        x, y = PAD + i * slot + slot * 0.1, HEIGHT - PAD - h
        bars.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" height="{h:.1f}" fill="#4c78a8">'
                    f"<title>{esc(str(label))}: {values[label]:,}</title></rect>"
                    f'<text x="{x + slot * 0.4:.1f}" y="{HEIGHT - PAD + 14}" font-size="10" text-anchor="middle">'
                    f"{esc(str(label))[:14]}</text>"
                    f'<text x="{x + slot * 0.4:.1f}" y="{y - 3:.1f}" font-size="10" text-anchor="middle">{values[label]:,}</text>')
    return _figure(title, chart_id, "".join(bars))


def histogram(title: str, edges: list[float], counts: list[int], *, chart_id: str) -> str:
    peak = max(counts, default=0) or 1
    slot = (WIDTH - 2 * PAD) / max(len(counts), 1)
    bars = []
    for i, count in enumerate(counts):
        h = (HEIGHT - 2 * PAD) * count / peak
        bars.append(f'<rect class="bar" x="{PAD + i * slot:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{slot - 1:.1f}" '
                    f'height="{h:.1f}" fill="#f58518"><title>{edges[i]:g} to {edges[i + 1]:g}: {count:,}</title></rect>')
    axis = (f'<text x="{PAD}" y="{HEIGHT - PAD + 14}" font-size="10">{edges[0]:g}</text>'
            f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 14}" font-size="10" text-anchor="end">{edges[-1]:g}</text>')
    return _figure(title, chart_id, "".join(bars) + axis)


def line_chart(title: str, series: dict[str, Sequence[Sequence[float]]], *, chart_id: str, x_label: str = "",
               y_label: str = "", markers: dict[str, float] | None = None) -> str:
    """One line per series of (x, y) points; `markers` draws a labelled dashed vertical line at
    each x (e.g. the step where validation loss turned up)."""
    width, height, left, right, top, bottom = 640, 300, 60, 20, 34, 44
    clean = {name: [(float(x), float(y)) for x, y in points if _finite(x) and _finite(y)]
             for name, points in series.items()}
    marks = {name: float(x) for name, x in (markers or {}).items() if _finite(x)}
    xs = [x for points in clean.values() for x, _ in points] + list(marks.values())
    ys = [y for points in clean.values() for _, y in points]
    x_ticks, y_ticks = _ticks(xs), _ticks(ys)
    sx = _scale(x_ticks[0], x_ticks[-1], left, width - right)
    sy = _scale(y_ticks[0], y_ticks[-1], height - bottom, top)
    parts = [_x_axis(x_ticks, sx, top, height - bottom, x_label, width), _y_axis(y_ticks, sy, left, width - right,
                                                                                   y_label, top, height - bottom)]
    for i, (name, points) in enumerate(clean.items()):
        colour = PALETTE[i % len(PALETTE)]
        if points:
            path = " ".join(f"{'M' if j == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for j, (x, y) in enumerate(points))
            parts.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if len(points) <= 60:
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}">'
                      f"<title>{esc(name)}: step {x:g}, {y:.4g}</title></circle>" for x, y in points]
    for j, (name, x) in enumerate(marks.items()):
        parts.append(f'<line x1="{sx(x):.1f}" y1="{top}" x2="{sx(x):.1f}" y2="{height - bottom}" stroke="{NEUTRAL}" '
                     f'stroke-width="1.5" stroke-dasharray="5,4"><title>{esc(name)}</title></line>'
                     + _text(sx(x) + 4, top + 12 + 13 * j, name, fill=NEUTRAL))
    parts.append(_legend(list(clean), left, 14))
    return _svg_figure(title, chart_id, width, height, "".join(parts))


def heatmap(title: str, matrix: Sequence[Sequence[float]], row_labels: Sequence[str], col_labels: Sequence[str], *,
            chart_id: str, row_title: str = "true", col_title: str = "predicted") -> str:
    """Counts in cells shaded by their share of the row, so errors on rare classes still show."""
    rows, cols = len(matrix), max((len(r) for r in matrix), default=0)
    cell = max(16.0, min(60.0, 420 / max(rows, cols, 1)))
    left = 26 + 6.5 * min(18, max((len(str(label)) for label in row_labels), default=1))
    bottom = 30 + 4.8 * min(18, max((len(str(label)) for label in col_labels), default=1))
    width, height = left + cell * cols + 20, 24 + cell * rows + bottom
    parts = []
    for r, row in enumerate(matrix):
        total = sum(v for v in row if _finite(v)) or 1
        y = 24 + r * cell
        parts.append(_text(left - 6, y + cell / 2 + 4, _short(row_labels[r]), anchor="end"))
        for c, value in enumerate(row):
            share = value / total if _finite(value) else 0
            x = left + c * cell
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell:.1f}" height="{cell:.1f}" fill="{PALETTE[0]}" '
                         f'fill-opacity="{max(share, 0.03):.3f}" stroke="#fff"><title>{esc(row_title)} '
                         f'{esc(str(row_labels[r]))}, {esc(col_title)} {esc(str(col_labels[c]))}: {_label(value)} '
                         f"({share:.0%} of the row)</title></rect>")
            if cell >= 22:
                parts.append(_text(x + cell / 2, y + cell / 2 + 4, _label(value), anchor="middle",
                                   fill="#fff" if share > 0.55 else INK))
    for c, label in enumerate(col_labels):
        x, y = left + c * cell + cell / 2, 24 + rows * cell + 12
        parts.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="11" text-anchor="end" fill="{INK}" '
                     f'transform="rotate(-40 {x:.1f} {y:.1f})">{esc(_short(label))}</text>')
    parts.append(_text(left + cell * cols / 2, height - 6, col_title, anchor="middle", weight="600"))
    parts.append(_text(6, 16, f"{row_title} \u2193", weight="600"))
    return _svg_figure(title, chart_id, width, height, "".join(parts))


def reliability_diagram(title: str, bins: Sequence[dict], *, chart_id: str) -> str:
    """Accuracy per confidence bin as bars, the bin's mean confidence as a dot, and the diagonal
    a perfectly calibrated model would follow."""
    size, left, top, bottom = 300, 52, 30, 44
    width, height = left + size + 20, top + size + bottom
    sx, sy = _scale(0, 1, left, left + size), _scale(0, 1, top + size, top)
    ticks = [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    parts = [_x_axis(ticks, sx, top, top + size, "confidence", width),
             _y_axis(ticks, sy, left, left + size, "accuracy", top, top + size),
             f'<line x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(1):.1f}" y2="{sy(1):.1f}" stroke="{NEUTRAL}" '
             f'stroke-dasharray="4,4"><title>perfect calibration</title></line>']
    for b in bins:
        if not b.get("count") or not _finite(b.get("accuracy")):
            continue
        x0, x1, acc = sx(b["low"]), sx(b["high"]), b["accuracy"]
        tip = (f"confidence {b['low']:.2f} to {b['high']:.2f}: {b['count']:,} examples, accuracy {acc:.3f}, "
               f"mean confidence {b['confidence']:.3f}")
        parts.append(f'<rect x="{x0 + 1:.1f}" y="{sy(acc):.1f}" width="{max(x1 - x0 - 2, 1):.1f}" '
                     f'height="{sy(0) - sy(acc):.1f}" fill="{PALETTE[0]}" fill-opacity="0.8">'
                     f"<title>{esc(tip)}</title></rect>")
        if _finite(b.get("confidence")):
            parts.append(f'<circle cx="{(x0 + x1) / 2:.1f}" cy="{sy(b["confidence"]):.1f}" r="3.5" fill="{PALETTE[1]}">'
                         f"<title>{esc(tip)}</title></circle>")
    parts.append(_legend(["accuracy", "mean confidence"], left, 14))
    return _svg_figure(title, chart_id, width, height, "".join(parts))


def box_plot(title: str, samples: dict[str, Sequence[float]], *, chart_id: str, value_label: str = "",
             category_label: str = "") -> str:
    """One box per category: quartiles, median, whiskers to the furthest sample within 1.5 IQR,
    and the samples beyond drawn as dots."""
    width, height, left, right, top, bottom = 640, 300, 60, 20, 20, 48
    clean = {name: np.asarray([v for v in values if _finite(v)], dtype=float) for name, values in samples.items()}
    y_ticks = _ticks([0.0] + [float(v) for values in clean.values() for v in values])
    sy = _scale(y_ticks[0], y_ticks[-1], height - bottom, top)
    slot = (width - left - right) / max(len(clean), 1)
    parts = [_y_axis(y_ticks, sy, left, width - right, value_label, top, height - bottom)]
    for i, (name, values) in enumerate(clean.items()):
        mid = left + slot * (i + 0.5)
        parts.append(_text(mid, height - bottom + 16, name, anchor="middle"))
        if not values.size:
            parts.append(_text(mid, sy(y_ticks[0]) - 6, "no samples", anchor="middle", fill=NEUTRAL))
            continue
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        reach = 1.5 * (q3 - q1)
        inside = values[(values >= q1 - reach) & (values <= q3 + reach)]
        low, high = float(inside.min()), float(inside.max())
        half = min(slot * 0.3, 40)
        tip = esc(f"{name}: median {median:.3g}, quartiles {q1:.3g} to {q3:.3g}, {values.size} samples")
        parts.append(f'<line x1="{mid:.1f}" y1="{sy(low):.1f}" x2="{mid:.1f}" y2="{sy(high):.1f}" stroke="{INK}"/>'
                     + "".join(f'<line x1="{mid - half / 2:.1f}" y1="{sy(v):.1f}" x2="{mid + half / 2:.1f}" '
                               f'y2="{sy(v):.1f}" stroke="{INK}"/>' for v in (low, high))
                     + f'<rect x="{mid - half:.1f}" y="{sy(q3):.1f}" width="{2 * half:.1f}" '
                       f'height="{max(sy(q1) - sy(q3), 1):.1f}" fill="{PALETTE[i % len(PALETTE)]}" fill-opacity="0.7" '
                       f'stroke="{INK}"><title>{tip}</title></rect>'
                     + f'<line x1="{mid - half:.1f}" y1="{sy(median):.1f}" x2="{mid + half:.1f}" y2="{sy(median):.1f}" '
                       f'stroke="{INK}" stroke-width="2"/>')
        parts += [f'<circle cx="{mid:.1f}" cy="{sy(v):.1f}" r="2.5" fill="none" stroke="{WORSE}"><title>{v:.4g}</title>'
                  f"</circle>" for v in values[(values < q1 - reach) | (values > q3 + reach)]]
    parts.append(_text(left + (width - left - right) / 2, height - 8, category_label, anchor="middle", weight="600"))
    return _svg_figure(title, chart_id, width, height, "".join(parts))


def grouped_bars(title: str, rows: dict[str, dict[str, float | None]], *, chart_id: str, value_label: str = "") -> str:
    """Horizontal bars: one band per row, one bar per series inside it (legend when several);
    a missing value is written as n/a."""
    names = list(dict.fromkeys(s for values in rows.values() for s in values))
    bar, gap = 14, 10
    band = bar * max(len(names), 1) + gap
    left = 16 + 6.5 * min(24, max((len(str(r)) for r in rows), default=1))
    width, right, top = 640, 64, 30 if len(names) > 1 else 10  # room for the legend
    height = top + band * max(len(rows), 1) + 40
    values = [float(v) for r in rows.values() for v in r.values() if _finite(v)]
    x_ticks = _ticks([0.0] + values)
    sx = _scale(x_ticks[0], x_ticks[-1], left, width - right)
    parts = [_x_axis(x_ticks, sx, top, height - 40, value_label, width)]
    for i, (row, series) in enumerate(rows.items()):
        y0 = top + i * band + gap / 2
        parts.append(_text(left - 6, y0 + bar * len(names) / 2 + 4, _short(row, 24), anchor="end"))
        for j, name in enumerate(names):
            value, y = series.get(name), y0 + j * bar
            if not _finite(value):
                parts.append(_text(sx(0) + 4, y + bar - 3, "n/a", fill=NEUTRAL, size=10))
                continue
            x0, x1 = sorted((sx(0), sx(value)))
            parts.append(f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0, 0.5):.1f}" height="{bar - 2}" '
                         f'fill="{PALETTE[j % len(PALETTE)]}"><title>{esc(str(row))}, {esc(name)}: {value:.4g}</title>'
                         f"</rect>" + _text(x1 + 4, y + bar - 3, f"{value:.3g}", size=10))
    parts.append(f'<line x1="{sx(0):.1f}" y1="{top}" x2="{sx(0):.1f}" y2="{height - 40}" stroke="{INK}"/>')
    if len(names) > 1:
        parts.append(_legend(names, left, 14))
    return _svg_figure(title, chart_id, width, height, "".join(parts))


def interval_plot(title: str, intervals: Sequence[tuple[str, float, float, float]], *, chart_id: str,
                  x_label: str = "difference") -> str:
    """A forest plot: per row an estimate with its interval, against a zero line; intervals that
    exclude zero are coloured (green above, red below)."""
    rows = [(str(label), *map(float, numbers)) for label, *numbers in intervals if all(map(_finite, numbers))]
    left = 16 + 6.5 * min(30, max((len(r[0]) for r in rows), default=1))
    width, right, top, step = 720, 170, 14, 26
    height = top + step * max(len(rows), 1) + 40
    x_ticks = _ticks([0.0] + [v for r in rows for v in r[1:]])
    sx = _scale(x_ticks[0], x_ticks[-1], left, width - right)
    parts = [_x_axis(x_ticks, sx, top, height - 40, x_label, width - right + 100),
             f'<line x1="{sx(0):.1f}" y1="{top}" x2="{sx(0):.1f}" y2="{height - 40}" stroke="{INK}" '
             f'stroke-dasharray="3,3"/>']
    for i, (label, estimate, low, high) in enumerate(rows):
        y = top + step * (i + 0.5)
        colour = BETTER if low > 0 else WORSE if high < 0 else NEUTRAL
        summary = f"{_signed(estimate)} [{_signed(low)}, {_signed(high)}]"
        parts.append(_text(left - 8, y + 4, _short(label, 30), anchor="end")
                     + f'<line x1="{sx(low):.1f}" y1="{y:.1f}" x2="{sx(high):.1f}" y2="{y:.1f}" stroke="{colour}" '
                       f'stroke-width="2.5"/>'
                     + f'<circle cx="{sx(estimate):.1f}" cy="{y:.1f}" r="4.5" fill="{colour}">'
                       f"<title>{esc(label)}: {summary}</title></circle>"
                     + _text(width - right + 10, y + 4, summary, fill=colour))
    return _svg_figure(title, chart_id, width, height, "".join(parts))


def _figure(title: str, chart_id: str, body: str) -> str:
    axis = f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#444"/>'
    return _svg_figure(title, chart_id, WIDTH, HEIGHT, axis + body)


def _svg_figure(title: str, chart_id: str, width: float, height: float, body: str) -> str:
    return (f'<figure id="{esc(chart_id)}"><figcaption>{esc(title)}</figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{esc(title)}" '
            f'font-family="system-ui, sans-serif">{body}</svg></figure>')


def _finite(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


def _ticks(values: Sequence[float], count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering the values."""
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = (low - 1, high + 1) if low == 0 else (low - abs(low) * 0.1, high + abs(high) * 0.1)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _scale(low: float, high: float, start: float, end: float):
    span = (high - low) or 1.0
    return lambda value: start + (value - low) * (end - start) / span


def _x_axis(ticks, sx, top: float, bottom: float, label: str, width: float) -> str:
    parts = [f'<line x1="{sx(t):.1f}" y1="{top}" x2="{sx(t):.1f}" y2="{bottom}" stroke="{GRID}"/>'
             + _text(sx(t), bottom + 14, _label(t), anchor="middle", size=10) for t in ticks]
    parts.append(f'<line x1="{sx(ticks[0]):.1f}" y1="{bottom}" x2="{sx(ticks[-1]):.1f}" y2="{bottom}" stroke="{INK}"/>')
    if label:
        parts.append(_text((sx(ticks[0]) + sx(ticks[-1])) / 2, bottom + 30, label, anchor="middle", weight="600"))
    return "".join(parts)


def _y_axis(ticks, sy, left: float, right: float, label: str, top: float, bottom: float) -> str:
    parts = [f'<line x1="{left}" y1="{sy(t):.1f}" x2="{right}" y2="{sy(t):.1f}" stroke="{GRID}"/>'
             + _text(left - 6, sy(t) + 4, _label(t), anchor="end", size=10) for t in ticks]
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="{INK}"/>')
    if label:
        middle = (top + bottom) / 2
        parts.append(f'<text x="14" y="{middle:.1f}" font-size="11" font-weight="600" text-anchor="middle" '
                     f'fill="{INK}" transform="rotate(-90 14 {middle:.1f})">{esc(label)}</text>')
    return "".join(parts)


def _legend(names: Sequence[str], x: float, y: float) -> str:
    parts = []
    for i, name in enumerate(names):
        parts.append(f'<rect x="{x:.1f}" y="{y - 9}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
                     + _text(x + 14, y, name))
        x += 30 + 6.5 * len(_short(name))
    return "".join(parts)


def _text(x: float, y: float, text: str, *, anchor: str = "start", size: int = 11, fill: str = INK,
          weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}" '
            f'font-weight="{weight}">{esc(str(text))}</text>')


def _short(text, limit: int = 18) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _signed(value: float) -> str:
    return f"{value:+.3f}" if abs(value) < 10 else f"{value:+,.1f}"


def _label(value) -> str:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:.4g}" if _finite(value) else "n/a"
