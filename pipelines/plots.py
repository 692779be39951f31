"""Figures logged with each training run (PNG through matplotlib's Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pyarrow as pa

from vae_core import TabularVAE


def loss_curves(vae: TabularVAE):
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h.epoch for h in vae.history]
    ax.plot(epochs, [-h.train_loss for h in vae.history], label="train −loss (β-weighted)")
    ax.plot(epochs, [h.val_elbo for h in vae.history], label="validation ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per row")
    ax.legend()
    return fig


def latent_view(vae: TabularVAE, rows: pa.Table):
    """The two principal directions of the posterior means (a 2-D view of the latent space)."""
    z = vae.embed(rows)
    z = z - z.mean(0)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    xy = z @ vt[:2].T
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(xy[:, 0], xy[:, 1], s=2, alpha=0.4)
    ax.set_title("posterior means, first two principal axes")
    return fig


def score_histogram(scores: np.ndarray, threshold: float):
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(scores, bins=60)
    ax.axvline(threshold, color="red", label=f"threshold {threshold:.1f}")
    ax.set_xlabel("anomaly score = −log p̂(x) (held-out rows)")
    ax.legend()
    return fig
