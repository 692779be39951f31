"""Reproducible speed figures for vae_core, each next to its reference from the same run.

    make bench            # or: .venv/bin/python benchmarks/run.py --out benchmarks/RESULTS.md

* fit: TabularVAE.fit (shuffling, KL warm-up, clipping, validation, early stopping) vs a
  bare PyTorch loop over the *same* VAEModule on preloaded tensors, same batch size.
* transform: Arrow table → float32 matrix, rows/s (vectorised; no per-row Python).
* scoring: ELBO forward vs IWAE (K = 16) in process, rows/s.

Rows are resampled from the bundled Adult train split. One torch thread throughout.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from results_file import write_section

from vae_core import TabularVAE
from vae_core.datasets import load_adult
from vae_core.nn import VAEModule, build_module
from vae_core.objectives import ELBO


def resampled_adult(rows: int, seed: int = 0) -> pa.Table:
    t = load_adult("train")
    return t.take(np.random.default_rng(seed).integers(0, t.num_rows, rows))


def plain_loop(module: VAEModule, x: torch.Tensor, c: torch.Tensor, epochs: int,
               batch_size: int) -> float:
    """The reference: what a hand-written script would do. Returns rows/s."""
    opt = torch.optim.Adam(module.parameters(), lr=2e-3)
    elbo = ELBO()
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for start in range(0, len(x), batch_size):
            idx = perm[start:start + batch_size]
            loss = elbo(module, x[idx], c[idx]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return epochs * len(x) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = resampled_adult(args.rows)

    vae = TabularVAE(epochs=args.epochs, validation_fraction=0.0, early_stopping_patience=0,
                     seed=0)
    t0 = time.perf_counter()
    vae.fit(table)
    fit_wall = time.perf_counter() - t0
    fit_rps = np.mean([r.rows_per_second for r in vae.history])

    t0 = time.perf_counter()
    enc = vae.transformer.transform(table)
    transform_rps = args.rows / (time.perf_counter() - t0)

    module = build_module(vae.transformer, vae.model_config)
    x, c = torch.from_numpy(enc.x), torch.from_numpy(enc.c)
    plain_rps = plain_loop(module, x, c, args.epochs, vae.train_config.batch_size)

    rows = table.slice(0, 50_000)
    xs, cs = torch.from_numpy(enc.x[:50_000]), torch.from_numpy(enc.c[:50_000])
    with torch.inference_mode():
        t0 = time.perf_counter()
        for start in range(0, len(xs), 8192):
            vae.module.elbo(xs[start:start + 8192], cs[start:start + 8192])
        elbo_rps = len(xs) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    vae.score(rows)
    score_rps = rows.num_rows / (time.perf_counter() - t0)

    cfg = vae.model_config
    lines = [
        f"## vae_core speed (Adult resampled, default model: "
        f"{'-'.join(map(str, cfg.hidden))} MLPs, latent {cfg.latent_dim}, batch "
        f"{vae.train_config.batch_size})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch thread, "
        f"Python {platform.python_version()}, torch {torch.__version__}, pyarrow {pa.__version__}.",
        f"Command: `.venv/bin/python benchmarks/run.py --rows {args.rows} --epochs {args.epochs}`"
        " (what `make bench` runs).",
        "",
        "| what | this project | reference (same run) | ratio |",
        "| --- | --- | --- | --- |",
        f"| training, rows/s per epoch | TabularVAE.fit: {fit_rps:,.0f} | bare torch loop, same "
        f"module, preloaded tensors: {plain_rps:,.0f} | {fit_rps / plain_rps:.2f} |",
        f"| fit wall time incl. statistics, transform, calibration | {fit_wall:.1f} s "
        f"for {args.epochs} epochs × {args.rows:,} rows | — | — |",
        f"| Arrow → tensor transform, rows/s | {transform_rps:,.0f} | — | — |",
        f"| scoring (IWAE K=16 + ELBO + per-column), rows/s | TabularVAE.score: {score_rps:,.0f} "
        f"| one ELBO forward pass (K=1): {elbo_rps:,.0f} | {score_rps / elbo_rps:.2f} |",
        "",
        "Scoring draws K = 16 posterior samples per row, so ≈ 1/16 of one forward pass is the "
        "expected cost; a lower K (`iwae_samples`) trades estimate quality for speed.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_section(args.out, text)


if __name__ == "__main__":
    main()
