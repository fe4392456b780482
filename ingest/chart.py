"""The run-duration chart as SVG: p50/p95/p99 per bucket over time, from plain data (no request, no I/O).

``buckets`` are the Analyst API's duration buckets: dicts with ``bucket`` (its start, a UTC
datetime) and the quantiles by label (``p50``, ``p95``, ``p99``; None where a bucket has none).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from xml.sax.saxutils import escape

from reads.durations import BUCKETS

_SERIES = (("p50", "#2b83ba"), ("p95", "#fdae61"), ("p99", "#d7191c"))
_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 840, 340, 70, 40, 40, 50


def y_axis(largest_s: float) -> tuple[str, float, list[float]]:
    """(unit, seconds per unit, ticks in units): 3 to 5 round steps covering ``largest_s``."""
    largest_s = largest_s if largest_s > 0 else 1.0  # no data, or only instant runs: a 1 s scale
    unit, factor = next((u, f) for u, f, at_least in (("h", 3600.0, 7200), ("m", 60.0, 120), ("s", 1.0, 1), ("ms", 0.001, 0))
                        if largest_s >= at_least)
    largest = largest_s / factor
    power = 10 ** math.floor(math.log10(largest / 4))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= largest / 4)
    return unit, factor, [round(step * i, 9) for i in range(math.ceil(largest / step - 1e-9) + 1)]


def x_ticks(since: datetime, until: datetime, bucket: str) -> list[datetime]:
    """At most 7 ticks on whole hours (1h) or days (1d), at round multiples since the epoch."""
    size = BUCKETS[bucket][1]
    multiples = (1, 2, 3, 6, 12, 24, 48, 72, 168, 336, 720) if bucket == "1h" else (1, 2, 7, 14, 28, 91, 182, 364)
    span = (until - since) / size
    every = next((m for m in multiples if span / m <= 6), multiples[-1] * math.ceil(span / multiples[-1] / 6))
    step_s = every * size.total_seconds()
    first = math.ceil(since.timestamp() / step_s) * step_s
    ticks, t = [], first
    while t <= until.timestamp():
        ticks.append(datetime.fromtimestamp(t, timezone.utc))
        t += step_s
    return ticks


def render_svg(title: str, bucket: str, since: datetime, until: datetime, buckets: list[dict]) -> str:
    """p50/p95/p99 per bucket as lines over time; a gap in the data is a gap in the line."""
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    span = max((until - since).total_seconds(), 1.0)
    step = BUCKETS[bucket][1]
    unit, factor, levels = y_axis(max((b[n] for b in buckets for n, _ in _SERIES if b.get(n) is not None), default=0.0))
    top = levels[-1] * factor

    def x(t: datetime) -> float:
        return _LEFT + plot_w * min(max((t - since).total_seconds() / span, 0.0), 1.0)

    def y(v: float) -> float:
        return _TOP + plot_h * (1 - v / top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}: run duration per {bucket}</title>",
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        # Cut so the heading stays clear of the legend on the same line.
        f'<text x="{_LEFT}" y="20" font-size="13" font-weight="bold">{escape(title[:40] + "…" * (len(title) > 40))}'
        f' — run duration per {bucket} (UTC)</text>',
    ]
    for level in levels:  # y grid and labels
        v = level * factor
        out.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{_LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{level:g}{unit}</text>')
    time_format = "%m-%d %H:%M" if bucket == "1h" else "%Y-%m-%d"
    for t in x_ticks(since, until, bucket):  # x labels
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM + 4}" stroke="#333"/>')
        out.append(f'<text x="{x(t):.1f}" y="{_H - _BOTTOM + 18}" text-anchor="middle">{t.strftime(time_format)}</text>')
    out.append(f'<line x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{_H - _BOTTOM}" stroke="#333"/>')
    out.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM}" stroke="#333"/>')
    out.append(f'<text x="16" y="{_TOP + plot_h / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 16 {_TOP + plot_h / 2:.1f})">duration</text>')
    if not buckets:
        out.append(f'<text x="{_LEFT + plot_w / 2:.1f}" y="{_TOP + plot_h / 2:.1f}" text-anchor="middle" '
                   'fill="#888">no runs in this range</text>')
    for name, colour in _SERIES:
        commands, previous = [], None
        for b in buckets:
            if b.get(name) is None:
                previous = None
                continue
            # Buckets are consecutive or the line breaks: a missing hour is not a straight trend.
            move = previous is None or b["bucket"] - previous > step
            commands.append(f'{"M" if move else "L"}{x(b["bucket"] + step / 2):.1f},{y(b[name]):.1f}')
            previous = b["bucket"]
        out.append(f'<path id="series-{name}" d="{" ".join(commands)}" fill="none" stroke="{colour}" '
                   'stroke-width="2" stroke-linejoin="round"/>')
        if len(buckets) <= 60:
            out.extend(f'<circle cx="{x(b["bucket"] + step / 2):.1f}" cy="{y(b[name]):.1f}" r="2.5" fill="{colour}"/>'
                       for b in buckets if b.get(name) is not None)
    for i, (name, colour) in enumerate(_SERIES):  # legend
        lx = _W - _RIGHT - 70 * (len(_SERIES) - i)
        out.append(f'<line x1="{lx}" x2="{lx + 18}" y1="16" y2="16" stroke="{colour}" stroke-width="3"/>')
        out.append(f'<text x="{lx + 22}" y="20">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
