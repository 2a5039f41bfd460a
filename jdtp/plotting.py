"""Figures written to files: matplotlib on its non-interactive backend, and saving a figure."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported: no display is needed or wanted

import matplotlib.pyplot as plt  # noqa: E402
from absl import logging  # noqa: E402


def save_figure(fig, path: str, dpi: int = 120) -> str:
    """Lay out, write (atomically, creating the folder) and close a figure; returns the path."""
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"  # the old figure stays whole until the new one is complete
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    logging.info("Wrote %s", path)
    return path
