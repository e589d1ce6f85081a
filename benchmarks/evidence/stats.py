"""The study's statistics: wall-clock with disturbed epochs clipped, curves read at a point,
the rule for calling a difference between two arms, protocol 02's confidence intervals
of a mean difference (Welch's, and paired by seed) with its verdict rule, and protocol 05's
interval of a signed sum of independent means (the change of a difference between regimes)."""

from __future__ import annotations

import math
import statistics
from typing import NamedTuple

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


#: protocol 02's confidence level and its margin of agreement (kNN or linear points)
LEVEL = 0.95
AGREE_MARGIN = 1.0


class Interval(NamedTuple):
    """A mean difference A - B with its confidence interval and the t distribution's degrees
    of freedom; ``n`` is (n_A, n_B) for Welch's interval, (pairs, pairs) for the paired one,
    every sample's n for a signed sum of means (:func:`contrast_interval`)."""

    diff: float
    low: float
    high: float
    df: float
    n: tuple[int, ...]


def t_quantile(level: float, df: float) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` (possibly fractional)
    degrees of freedom: ``scipy.stats.t.ppf((1 + level) / 2, df)``."""
    from scipy.stats import t

    return float(t.ppf((1 + level) / 2, df))


def contrast_interval(
    terms: list[tuple[int, list[float]]], level: float = LEVEL
) -> Interval | None:
    """The confidence interval of ``sum(sign x mean(sample))`` over independent ``terms``
    (``(sign, sample)``, sign +1 or -1; each sample's variance its own): the standard error
    ``sqrt(sum var_i / n_i)`` and the Welch-Satterthwaite degrees of freedom
    ``(sum var_i / n_i)^2 / sum ((var_i / n_i)^2 / (n_i - 1))``. None with fewer than 2 values
    in a sample or no spread in any (no interval exists). Two terms (+a, -b) are Welch's
    interval; four (+E_R, -S_R, -E_R1, +S_R1) protocol 05's change of an advantage."""
    if any(len(x) < 2 for _, x in terms):
        return None
    v = [statistics.variance(x) / len(x) for _, x in terms]
    if sum(v) == 0:
        return None
    df = sum(v) ** 2 / sum(vi**2 / (len(x) - 1) for vi, (_, x) in zip(v, terms, strict=True))
    diff = sum(sign * statistics.fmean(x) for sign, x in terms)
    half = t_quantile(level, df) * math.sqrt(sum(v))
    return Interval(diff, diff - half, diff + half, df, tuple(len(x) for _, x in terms))


def welch_interval(a: list[float], b: list[float], level: float = LEVEL) -> Interval | None:
    """Welch's confidence interval of mean(a) - mean(b) (the two samples independent, their
    variances unequal), with the Welch-Satterthwaite degrees of freedom; None with fewer than
    2 values in an arm or no spread in either (no interval exists)."""
    return contrast_interval([(1, a), (-1, b)], level)


def change_interval(
    e: list[float], s: list[float], e1: list[float], s1: list[float], level: float = LEVEL
) -> Interval | None:
    """Protocol 05's change of the advantage between regimes, ``(mean(e) - mean(s)) -
    (mean(e1) - mean(s1))``, from four independent samples (:func:`contrast_interval`)."""
    return contrast_interval([(1, e), (-1, s), (-1, e1), (1, s1)], level)


def paired_interval(
    a: dict[int, float], b: dict[int, float], level: float = LEVEL
) -> Interval | None:
    """The paired confidence interval of the mean of a[s] - b[s] over the seeds ``s`` both
    have (same seed, same initial backbone), n - 1 degrees of freedom; None with fewer than 2
    pairs or identical differences."""
    seeds = sorted(a.keys() & b.keys())
    if len(seeds) < 2:
        return None
    d = [a[s] - b[s] for s in seeds]
    sd = statistics.stdev(d)
    if sd == 0:
        return None
    mean, half = statistics.fmean(d), t_quantile(level, len(d) - 1) * sd / math.sqrt(len(d))
    return Interval(mean, mean - half, mean + half, len(d) - 1, (len(d), len(d)))


def verdict(
    interval: Interval | None, a: str = "EffSSL", b: str = "SimCLR", margin: float = AGREE_MARGIN
) -> str:
    """Protocol 02's rule on the Welch interval of A - B, in its order: "<A> better" (or
    "<B> better") when it excludes 0; "agree" when it lies inside [-margin, +margin]; else
    "not shown either way" (also without an interval)."""
    if interval is not None and interval.low > 0:
        return f"{a} better"
    if interval is not None and interval.high < 0:
        return f"{b} better"
    if interval is not None and -margin <= interval.low and interval.high <= margin:
        return "agree"
    return "not shown either way"


def seeds_cell(values: dict[int, float]) -> str:
    """A table cell of every seed's value, ``0: 35.12, 1: ...``."""
    return ", ".join(f"{s}: {v:.2f}" for s, v in sorted(values.items())) or "none yet"


def mean_sd_cell(values: dict[int, float]) -> str:
    """A table cell of the mean, standard deviation and n of the seeds' values."""
    v = list(values.values())
    if len(v) < 2:
        return f"{v[0]:.2f} (n=1)" if v else "-"
    return f"{statistics.fmean(v):.2f} +- {statistics.stdev(v):.2f} (n={len(v)})"


def interval_cell(interval: Interval | None) -> str:
    """A table cell of a difference and its interval, ``+1.20 [-0.40, +2.80]``."""
    if interval is None:
        return "-"
    return f"{interval.diff:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]"
