"""Small self-contained SVG charts for HTML reports (no JavaScript, no network)."""
from __future__ import annotations

import html

WIDTH, HEIGHT, PAD = 420, 220, 36


def bar_chart(title: str, values: dict[str, int | float], *, chart_id: str) -> str:
    labels = list(values)
    peak = max(values.values(), default=0) or 1
    slot = (WIDTH - 2 * PAD) / max(len(labels), 1)
    bars = []
    for i, label in enumerate(labels):
        h = (HEIGHT - 2 * PAD) * values[label] / peak
        x, y = PAD + i * slot + slot * 0.1, HEIGHT - PAD - h
        bars.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" height="{h:.1f}" fill="#4c78a8">'
                    f"<title>{html.escape(str(label))}: {values[label]:,}</title></rect>"
                    f'<text x="{x + slot * 0.4:.1f}" y="{HEIGHT - PAD + 14}" font-size="10" text-anchor="middle">'
                    f"{html.escape(str(label))[:14]}</text>"
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


def _figure(title: str, chart_id: str, body: str) -> str:
    axis = f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#444"/>'
    return (f'<figure id="{html.escape(chart_id)}"><figcaption>{html.escape(title)}</figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
            f'aria-label="{html.escape(title)}">{axis}{body}</svg></figure>')
