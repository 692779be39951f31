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


def marginals(real: pa.Table, synthetic: pa.Table, columns: list[str]):
    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.5), squeeze=False)
    for ax, name in zip(axes[0], columns, strict=True):
        r, s = real.column(name), synthetic.column(name)
        if pa.types.is_integer(r.type) or pa.types.is_floating(r.type):
            rv = r.drop_null().to_numpy().astype(float)
            sv = s.drop_null().to_numpy().astype(float)
            bins = np.histogram_bin_edges(np.concatenate([rv, sv]), bins=40)
            ax.hist(rv, bins, alpha=0.5, density=True, label="real")
            ax.hist(sv, bins, alpha=0.5, density=True, label="synthetic")
        else:
            levels = [v for v in r.value_counts().field("values").to_pylist()][:12]
            share = [[np.mean(np.asarray(col.to_pylist(), dtype=object) == v) for v in levels]
                     for col in (r, s)]
            pos = np.arange(len(levels))
            ax.bar(pos - 0.2, share[0], 0.4, label="real")
            ax.bar(pos + 0.2, share[1], 0.4, label="synthetic")
            ax.set_xticks(pos, [str(v)[:10] for v in levels], rotation=60, fontsize=7)
        ax.set_title(name)
    axes[0][0].legend()
    fig.tight_layout()
    return fig


def score_histogram(scores: np.ndarray, threshold: float):
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(scores, bins=60)
    ax.axvline(threshold, color="red", label=f"threshold {threshold:.1f}")
    ax.set_xlabel("anomaly score = −log p̂(x) (held-out rows)")
    ax.legend()
    return fig
