"""The report's figures, rendered with matplotlib (Agg) to PNG files at build time.

- ulp_vs_x: the largest ULP error against the input value (the bands of harness.profile), one
  curve per framework or per API, on a symmetric-log x axis and a log1p-scaled ULP axis;
- status_heatmap: the share of graded rows that fail, per framework and case category.

PNG metadata carries no version or date, so an unchanged run renders byte-identical files.
"""
from __future__ import annotations

import os

import numpy as np

#: PNG metadata: nothing that changes between identical builds
_META = {"Software": None}
_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
            "#7f7f7f", "#bcbd22"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7, "svg.hashsalt": "xentc"})
    return plt


def _steps(profile: dict) -> tuple[np.ndarray, np.ndarray]:
    """Step coordinates of one profile: each band drawn from its lowest to its highest x."""
    xs, ys = [], []
    for lo, hi, u in zip(profile["x_lo"], profile["x_hi"], profile["max_ulp"]):
        v = np.nan if u is None else u
        xs += [lo, hi]
        ys += [v, v]
    return np.asarray(xs, np.float64), np.asarray(ys, np.float64)


def ulp_vs_x(path: str, title: str, curves: list[tuple[str, dict]], xlabel: str = "logit x",
             tol: float | None = None) -> str:
    """One figure: for each (label, profile), the largest ULP error per band of x. Returns path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 2.9), dpi=90)
    for i, (label, prof) in enumerate(curves):
        x, y = _steps(prof)
        ax.plot(x, y, drawstyle="default", lw=1.1, color=_COLOURS[i % len(_COLOURS)], label=label,
                alpha=0.9)
    lo = min((min(p["x_lo"]) for _, p in curves), default=-1.0)
    linthresh = 1e-3 if lo < 0 else 1e-4
    ax.set_xscale("symlog", linthresh=linthresh)
    ax.set_yscale("symlog", linthresh=1.0)
    if tol is not None:
        ax.axhline(tol, color="#444", lw=0.7, ls="--", label=f"tolerance {tol:g} ulp")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("max ULP error")
    ax.set_title(title)
    ax.grid(True, which="major", lw=0.3, alpha=0.5)
    ax.legend(loc="upper left", ncol=2, frameon=False)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, metadata=_META)
    plt.close(fig)
    return path


def status_heatmap(path: str, rows: list[str], cols: list[str], share: np.ndarray, counts: np.ndarray,
                   title: str) -> str:
    """rows x cols: the share (0..1, nan where nothing was graded) of failing rows, annotated with
    the percentage and the number of graded rows."""
    plt = _pyplot()
    h = 0.9 + 0.28 * len(rows)
    fig, ax = plt.subplots(figsize=(1.6 + 0.95 * len(cols), h), dpi=90)
    masked = np.ma.masked_invalid(share)
    cmap = plt.get_cmap("RdYlGn_r").with_extremes(bad="#eeeeee")
    ax.imshow(masked, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if counts[i, j]:
                ax.text(j, i, f"{100 * share[i, j]:.0f}%\n{int(counts[i, j])}", ha="center", va="center",
                        fontsize=6, color="black")
    ax.set_title(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, metadata=_META)
    plt.close(fig)
    return path
