"""The report's pictures, drawn with matplotlib's Agg backend (files only, no display).

Floats only here: the amounts are converted for plotting; the tables keep the exact texts.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from reports.model import Report, canonical, max_drawdown

GAIN, LOSS, LINE, SHADE = "#2e7d32", "#c62828", "#1f4e79", "#f4b6b6"
DPI = 110


def _save(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _empty(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="grey")
    axes.set_xticks([])
    axes.set_yticks([])


def _date_ticks(axes: Axes, dates: list[str]) -> None:
    step = max(1, len(dates) // 12)
    axes.set_xticks(range(0, len(dates), step))
    axes.set_xticklabels(dates[::step], rotation=30, ha="right", fontsize=8)


def equity_curve(report: Report, path: Path) -> None:
    """Cumulative daily net P&L (base), from 0 before the first day; the maximum drawdown
    shaded below its peak's level from the peak until the curve is back there (or the end)."""
    days = report.based_days()
    figure, axes = plt.subplots(figsize=(9, 4))
    axes.set_title(f"{report.account_id}: cumulative net P&L ({report.base_currency})")
    if not days:
        _empty(axes, "no trading day closed in these dates")
        _save(figure, path)
        return
    dates = ["start", *(date for date, _ in days)]
    levels = [0.0]
    for _, pnl in days:
        levels.append(levels[-1] + float(pnl))
    x = list(range(len(levels)))
    axes.plot(x, levels, color=LINE, marker="o" if len(x) <= 60 else None, markersize=3)
    axes.margins(y=0.12)  # room for the trough's label
    axes.axhline(0, color="grey", linewidth=0.6)
    drawdown = max_drawdown(days)
    if drawdown.amount > Decimal(0):
        first = dates.index(drawdown.peak_date) if drawdown.peak_date else 0
        last = dates.index(drawdown.recovered_date) if drawdown.recovered_date else len(dates) - 1
        span = list(range(first, last + 1))
        peak = levels[first]
        axes.fill_between(
            span, [peak] * len(span), [levels[i] for i in span],
            where=[levels[i] <= peak for i in span], interpolate=True,
            color=SHADE, alpha=0.8, label=f"maximum drawdown {canonical(drawdown.amount)}",
        )  # fmt: skip
        trough = dates.index(drawdown.trough_date)
        axes.annotate(
            f"-{canonical(drawdown.amount)}", (trough, levels[trough]), textcoords="offset points",
            xytext=(0, -14), ha="center", color=LOSS, fontsize=8,
        )  # fmt: skip
        axes.legend(loc="best", fontsize=8)
    _date_ticks(axes, dates)
    axes.set_ylabel(report.base_currency)
    axes.grid(alpha=0.3)
    _save(figure, path)


def daily_bars(report: Report, path: Path) -> None:
    days = report.based_days()
    figure, axes = plt.subplots(figsize=(9, 3.5))
    axes.set_title(f"{report.account_id}: daily net P&L ({report.base_currency})")
    if not days:
        _empty(axes, "no trading day closed in these dates")
    else:
        values = [float(pnl) for _, pnl in days]
        axes.bar(range(len(values)), values, color=[GAIN if v >= 0 else LOSS for v in values])
        axes.axhline(0, color="grey", linewidth=0.6)
        _date_ticks(axes, [date for date, _ in days])
        axes.set_ylabel(report.base_currency)
        axes.grid(axis="y", alpha=0.3)
    _save(figure, path)


def attribution(report: Report, path: Path) -> None:
    lines = report.strategies
    figure, axes = plt.subplots(figsize=(9, 1.2 + 0.45 * max(len(lines), 2)))
    axes.set_title(f"{report.account_id}: net P&L per strategy ({report.base_currency})")
    if not lines:
        _empty(axes, "no strategy with a closed day in these dates")
    else:
        values = [float(line.net_pnl) for line in lines]
        names = [line.strategy_id for line in lines]
        axes.barh(names, values, color=[GAIN if v >= 0 else LOSS for v in values])
        axes.invert_yaxis()
        axes.axvline(0, color="grey", linewidth=0.6)
        for index, (line, share) in enumerate(zip(lines, report.shares(), strict=True)):
            label = f"{canonical(line.net_pnl)}" + (f" ({share}%)" if share else "")
            left = values[index] < 0  # beside the bar's end, outside it
            axes.text(
                values[index], index, f"{label} " if left else f" {label}", va="center",
                ha="right" if left else "left", fontsize=8,
            )  # fmt: skip
        axes.margins(x=0.25)
        axes.grid(axis="x", alpha=0.3)
    _save(figure, path)


def exposure(report: Report, path: Path) -> None:
    """Long and short per name, one panel per breakdown (each in its own units)."""
    figure, panels = plt.subplots(1, len(report.exposures), figsize=(9, 3.8), squeeze=False)
    handles: list[Any] = []
    labels: list[str] = []
    for axes, (title, lines) in zip(panels[0], report.exposures, strict=True):
        axes.set_title(title, fontsize=9)
        if not lines:
            _empty(axes, "no exposure")
            continue
        names = [line.name for line in lines]
        x = range(len(names))
        axes.bar(x, [float(line.long) for line in lines], width=0.6, color=GAIN, label="long")
        axes.bar(x, [float(line.short) for line in lines], width=0.6, color=LOSS, label="short")
        axes.scatter(x, [float(line.net) for line in lines], color="black", zorder=3, label="net")
        axes.set_xticks(list(x))
        axes.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        axes.set_xlim(-1, len(names))
        axes.axhline(0, color="grey", linewidth=0.6)
        axes.grid(axis="y", alpha=0.3)
        handles, labels = axes.get_legend_handles_labels()
    if labels:
        figure.legend(handles, labels, loc="upper right", ncol=3, fontsize=8)
    figure.suptitle(
        f"{report.account_id}: exposure, {report.exposure_as_of}", fontsize=10, x=0.02, ha="left"
    )
    _save(figure, path)


FIGURES = {
    "equity": equity_curve,
    "daily": daily_bars,
    "attribution": attribution,
    "exposure": exposure,
}


def draw(report: Report, folder: Path) -> dict[str, Path]:
    """Writes every PNG; returns them by name."""
    written = {}
    for name, draw_one in FIGURES.items():
        path = folder / f"{report.account_id}_{name}.png"
        draw_one(report, path)
        written[name] = path
    return written
