"""The report's figure: one bar chart per task, side by side, each panel the same size (so the
image is as wide as the number of tasks says). Drawing only: `Evaluation.report` decides what
goes in a panel."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

DPI = 100
PANEL_PIXELS = (480, 400)  # width, height of one task's panel


@dataclass
class Bar:
    label: str  # "main" or the control's name
    value: float
    interval: Optional[tuple[float, float]] = None  # 95% interval of the value, if known


@dataclass
class Panel:
    title: str
    metric: str
    groups: dict[str, list[Bar]] = field(default_factory=dict)  # model -> its bars
    chance: Optional[float] = None


def draw(panels: Sequence[Panel], path: Path) -> None:
    """Write the PNG atomically; the panel titles go into its "Panels" text chunk."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from util.atomic import atomic_path

    n = len(panels)
    size = (PANEL_PIXELS[0] * n / DPI, PANEL_PIXELS[1] / DPI)
    fig, axes = plt.subplots(1, n, figsize=size, dpi=DPI, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        labels = list(dict.fromkeys(b.label for bars in panel.groups.values() for b in bars))
        width = 0.8 / max(len(labels), 1)
        x = np.arange(len(panel.groups))
        for j, label in enumerate(labels):
            heights, lower, upper = [], [], []
            for bars in panel.groups.values():
                bar = next((b for b in bars if b.label == label), None)
                value = np.nan if bar is None else bar.value
                lo, hi = (value, value) if bar is None or bar.interval is None else bar.interval
                heights.append(value)
                lower.append(value - lo)
                upper.append(hi - value)
            ax.bar(x + (j - (len(labels) - 1) / 2) * width, heights, width, label=label,
                   yerr=[lower, upper], capsize=3)
        if panel.chance is not None:
            ax.axhline(panel.chance, color="black", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(x, list(panel.groups), rotation=20, ha="right")
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.metric)
        if not panel.groups:
            ax.text(0.5, 0.5, "no metric computed", ha="center", va="center",
                    transform=ax.transAxes)
        elif labels:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI,
                    metadata={"Panels": " | ".join(p.title for p in panels)})
    plt.close(fig)
