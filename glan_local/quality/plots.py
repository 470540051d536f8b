"""Charts for the report, drawn with matplotlib's Agg backend (no display needed) and returned
as base64 PNG, so the report is one file that can be mailed or archived as is."""
from __future__ import annotations

import base64
import io
from collections import Counter
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

COLOR = "#3b6ea8"
# Long taxonomies: show the largest bars and say how many were left out, rather than a
# chart too tall to read.
MAX_BARS = 40


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _short(label: str, n: int = 48) -> str:
    label = str(label)
    return label if len(label) <= n else label[: n - 1] + "…"


def barh(counts: Counter, title: str, xlabel: str) -> str:
    items = counts.most_common(MAX_BARS)[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.28 * max(len(items), 1)))
    ax.barh([_short(k) for k, _ in items], [v for _, v in items], color=COLOR)
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v}", va="center", fontsize=8)
    more = len(counts) - len(items)
    ax.set_title(title + (f" (largest {len(items)}; {more} more)" if more > 0 else ""), fontsize=10)
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # counts: no 0.5 ticks
    ax.margins(x=0.12)
    return _png(fig)


def bars(labels: list[str], values: list[float], title: str, ylabel: str) -> str:
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    ax.bar([_short(x, 24) for x in labels], values, color=COLOR)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:g}", ha="center", va="bottom", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)
    return _png(fig)


def hists(series: list[tuple[str, list[float]]], xlabel: str, integer: bool = False) -> str:
    fig, axes = plt.subplots(1, len(series), figsize=(3.8 * len(series), 3.0), squeeze=False)
    for ax, (title, values) in zip(axes[0], series):
        if values:
            if integer:
                lo, hi = int(min(values)), int(max(values))
                ax.hist(values, bins=[x - 0.5 for x in range(lo, hi + 2)], color=COLOR, rwidth=0.85)
                ax.set_xticks(range(lo, hi + 1))
            else:
                ax.hist(values, bins=min(30, max(5, len(values) // 3)), color=COLOR)
            ax.axvline(sum(values) / len(values), color="#c0392b", linestyle="--", linewidth=1)
        ax.set_title(f"{title} (n={len(values)}" + (f", mean {sum(values) / len(values):.1f})" if values else ")"),
                     fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _png(fig)


def stacked(levels: list[str], by_reason: dict[str, list[int]], title: str,
            xlabel: str = "requests that failed every attempt", legend: Optional[str] = "last reason") -> str:
    levels = [_short(x) for x in levels]
    fig, ax = plt.subplots(figsize=(7.5, max(3.2, 0.9 + 0.28 * len(levels))))
    left = [0] * len(levels)
    for reason, counts in by_reason.items():
        ax.barh(levels, counts, left=left, label=_short(reason, 40))
        left = [a + b for a, b in zip(left, counts)]
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0, max(left + [1]) * 1.08)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title=legend, title_fontsize=8)
    return _png(fig)
