"""Summaries of timings (median, min, max) and their formatting. Pure functions."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """A sample of durations in milliseconds."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary | None:
        """``None`` for an empty sample."""
        data = sorted(values)
        if not data:
            return None
        return cls(statistics.median(data), data[0], data[-1], len(data))

    def ratio(self, anchor: Summary | None) -> float | None:
        """This median over the anchor's median (``None`` without an anchor)."""
        if anchor is None or anchor.median <= 0:
            return None
        return self.median / anchor.median

    def to_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.count}


def ns_to_ms(values: Iterable[int]) -> list[float]:
    """Nanosecond durations as milliseconds."""
    return [v / 1e6 for v in values]


def fmt_ms(value: float | None) -> str:
    """``12.3`` (one decimal below 100 ms, none above); ``-`` for nothing."""
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def fmt_summary(summary: Summary | None) -> str:
    """``12.3 (11.0-15.2)``: the median with min-max."""
    if summary is None:
        return "-"
    return f"{fmt_ms(summary.median)} ({fmt_ms(summary.low)}-{fmt_ms(summary.high)})"


def fmt_ratio(value: float | None) -> str:
    """``1.23x``; ``-`` for nothing."""
    if value is None:
        return "-"
    return f"{value:.2f}x"


def fmt_bytes(value: float | None) -> str:
    """``1.23 MB`` (decimal megabytes, as the targets are written)."""
    if value is None:
        return "-"
    return f"{value / 1e6:.2f} MB"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
