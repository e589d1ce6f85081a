"""The study's statistics: wall-clock with disturbed epochs clipped, curves read at a point,
and the rule for calling a difference between two arms."""

from __future__ import annotations

import statistics

#: an epoch slower than this multiple of its run's median epoch counts as disturbed
CLIP_FACTOR = 1.2
#: seeds each arm needs before a difference can be called
MIN_SEEDS = 3


def clipped_seconds(points: list[tuple[float, float]]) -> dict[int, float]:
    """Cumulative training seconds with disturbed epochs clipped: ``points`` are
    ``(epoch, cumulative seconds)``; after the first interval (which holds the calibration
    pass and start-up), each interval's seconds per epoch are capped at ``CLIP_FACTOR``
    times the run's median (weighted by epochs). This removes slow-downs from other work on
    the shared 2-core machine (and restarts) without hiding a method's real cost."""
    points = sorted((int(e), float(t)) for e, t in points)
    intervals = list(zip(points, points[1:], strict=False))
    if not intervals:
        return dict(points)
    rates = []
    for (e0, t0), (e1, t1) in intervals:
        rates += [(t1 - t0) / (e1 - e0)] * (e1 - e0)
    cap = CLIP_FACTOR * statistics.median(rates)
    out = {points[0][0]: points[0][1]}
    for (e0, t0), (e1, t1) in intervals:
        out[e1] = out[e0] + min(t1 - t0, cap * (e1 - e0))
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def separated(a: list[float], b: list[float]) -> str:
    """The study's rule for calling a difference: with >= 3 seeds each, the means differ by
    more than the larger standard deviation AND every seed of one arm is above every seed of
    the other. Returns ``"A > B"``, ``"B > A"``, ``"not separated"`` or, with fewer seeds,
    ``"too few seeds"``."""
    if len(a) < MIN_SEEDS or len(b) < MIN_SEEDS:
        return "too few seeds"
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if abs(ma - mb) <= max(sa, sb):
        return "not separated"
    if min(a) > max(b):
        return "A > B"
    if min(b) > max(a):
        return "B > A"
    return "not separated"


def interpolate(rows: list[dict], x_key: str, x: float, y_key: str = "knn_top1") -> float | None:
    """``y_key`` linearly interpolated at ``x`` along ``x_key``; after the run's end its final
    value (a finished run keeps its features), before its first evaluation None."""
    points = sorted((r[x_key], r[y_key]) for r in rows)
    if not points or x < points[0][0]:
        return None
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def first_reaching(rows: list[dict], level: float) -> float | None:
    """The (interpolated) epoch at which kNN top-1 first reaches ``level``; None if never."""
    points = sorted((r["epoch"], r["knn_top1"]) for r in rows)
    if points and points[0][1] >= level:
        return points[0][0]
    for (e0, y0), (e1, y1) in zip(points, points[1:], strict=False):
        if y0 < level <= y1:
            return e0 + (e1 - e0) * (level - y0) / (y1 - y0)
    return None
