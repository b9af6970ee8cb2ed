"""PNG figures of the 2-D demo: weight contours w(x_t, y~, y, t) and class-coloured samples.

matplotlib is imported lazily (Agg backend), so training never needs it.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

CLASS_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                "tab:pink", "tab:gray", "tab:olive", "tab:cyan")


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def scatter_by_class(path: str, points: np.ndarray, labels: np.ndarray, title: str = "",
                     panels: Sequence[tuple[str, np.ndarray, np.ndarray]] | None = None,
                     limit: float = 4.5) -> None:
  """Scatter plots coloured by class; `panels` = [(title, points, labels), ...] side by side."""
  plt = _pyplot()
  panels = list(panels) if panels else [(title, points, labels)]
  fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
  for ax, (name, pts, lab) in zip(axes[0], panels):
    for c in np.unique(lab):
      sel = lab == c
      ax.scatter(pts[sel, 0], pts[sel, 1], s=2, alpha=0.5, color=CLASS_COLORS[int(c) % 10],
                 label=str(int(c)))
    ax.set_title(name, fontsize=9)
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def weight_contours(path: str, weight_fns: Sequence[tuple[str, Callable]], sigmas: Sequence[float],
                    noisy_label: int, num_classes: int, limit: float = 4.5,
                    resolution: int = 80) -> None:
  """Contours of w(x_t, y~ = noisy_label, y, sigma) over a grid of x_t.

  One row per (weight source, sigma), one column per clean label y.
  `weight_fns` = [(name, fn)] with fn(x (N, 2), sigma (N,), noisy (N,)) -> (N, C).
  """
  plt = _pyplot()
  grid = np.linspace(-limit, limit, resolution)
  xx, yy = np.meshgrid(grid, grid)
  points = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
  rows = [(name, fn, s) for name, fn in weight_fns for s in sigmas]
  fig, axes = plt.subplots(len(rows), num_classes, figsize=(2.2 * num_classes, 2.1 * len(rows)),
                           squeeze=False)
  levels = np.linspace(0, 1, 11)
  for r, (name, fn, s) in enumerate(rows):
    w = np.asarray(fn(points, np.full(len(points), s, np.float32),
                      np.full(len(points), noisy_label, np.int32)))
    for c in range(num_classes):
      ax = axes[r, c]
      cs = ax.contourf(xx, yy, w[:, c].reshape(xx.shape), levels=levels, cmap="viridis")
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(f"y = {c}", fontsize=9)
      if c == 0:
        ax.set_ylabel(f"{name}\nsigma={s:g}", fontsize=8)
  fig.suptitle(f"w(x_t, y~={noisy_label}, y, t) = p_t(y | y~, x_t)", fontsize=10)
  fig.colorbar(cs, ax=axes.ravel().tolist(), shrink=0.6)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
