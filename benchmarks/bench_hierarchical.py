"""Hierarchical (ladder) VAE vs the one-layer VAE on Adult: held-out log-likelihood.

    .venv/bin/python benchmarks/bench_hierarchical.py --seeds 0,1,2 --epochs 40 --batch-size 256

Both models get the same budget: the same data (../shared/data/adult, train split to fit,
test split to measure), epochs, batch size, learning rate schedule, hidden layers and
bottom latent width; the ladder adds the top layer z₂ and its networks. Measured on the
test split: mean IWAE log p̂(x) (K = 256) and mean ELBO (nats per row, higher is better),
the KL of each latent layer, active units (dimensions whose posterior mean varies across
rows: Var_x E_q[z_d] > 0.01, Burda et al. 2016) and fit time. Same seeds for both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_file import write_section  # noqa: E402

from vae_core import TabularVAE  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "adult"
MODELS = {"VAE (1 layer, z 8)": {},
          "hierarchical VAE (z₂ 4 → z₁ 8)": {"latent_layers": 2, "top_latent_dim": 4}}
IWAE_K = 256


@torch.inference_mode()
def layer_statistics(vae: TabularVAE, table) -> dict:
    """Mean KL per layer and active units per layer, on held-out rows."""
    enc = vae.transformer.transform(table)
    x, c = torch.from_numpy(enc.x), torch.from_numpy(enc.c)
    _, kl = vae.module.elbo_terms(x, c, torch.Generator().manual_seed(0))
    layers = vae.module.layer_posteriors(x, c)
    if len(layers) == 1:
        means, kls = {"z": layers[0].loc}, {"z": kl.sum(-1).mean()}
    else:  # elbo_terms' KL columns are z₁'s then z₂'s
        d1 = vae.model_config.latent_dim
        means = {"z₁": layers[1].loc, "z₂": layers[0].loc}
        kls = {"z₁": kl[:, :d1].sum(-1).mean(), "z₂": kl[:, d1:].sum(-1).mean()}
    return {"kl": {k: float(v) for k, v in kls.items()},
            "active": {k: int((v.var(0) > 0.01).sum()) for k, v in means.items()}}


def measure(options: dict, seed: int, epochs: int, batch_size: int, train, test) -> dict:
    t0 = time.perf_counter()
    vae = TabularVAE(epochs=epochs, batch_size=batch_size, seed=seed, **options).fit(train)
    seconds = time.perf_counter() - t0
    scores = vae.score(test, iwae_samples=IWAE_K, seed=seed)
    params = sum(p.numel() for p in vae.module.parameters())
    return {"iwae": float(np.mean(scores.column("log_px").to_numpy())),
            "elbo": float(np.mean(scores.column("elbo").to_numpy())),
            "fit_s": seconds, "epochs_run": len(vae.history), "params": params,
            **layer_statistics(vae, test)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, help="rewrite this bench's section of this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, test = pq.read_table(DATA / "train.parquet"), pq.read_table(DATA / "test.parquet")
    results = {}
    for name, opts in MODELS.items():
        results[name] = [measure(opts, int(s), args.epochs, args.batch_size, train, test)
                         for s in args.seeds.split(",")]
        print(name, json.dumps(results[name]), flush=True)
    if args.out:
        write_section(args.out, render(results, args, train.num_rows, test.num_rows))


def render(results: dict, args: argparse.Namespace, n_train: int, n_test: int) -> str:
    lines = ["", "## Hierarchical VAE vs VAE (Adult, held-out log-likelihood, higher is better)",
             "", f"Command: `.venv/bin/python benchmarks/bench_hierarchical.py --seeds "
             f"{args.seeds} --epochs {args.epochs} --batch-size {args.batch_size}`. Fit on the "
             f"{n_train:,} train rows, measured on the {n_test:,} test rows; same epochs, "
             "batch, learning rate, early stopping, "
             f"hidden layers and seeds for both. IWAE with K = {IWAE_K}. Mean ± std over seeds; "
             "per-seed differences in the last line. Epochs run (early stopping): "
             + "; ".join(f"{name.split(' (')[0]} {[r['epochs_run'] for r in runs]}"
                         for name, runs in results.items()) + ".", "",
             "| model | IWAE log p̂(x) | ELBO | KL per layer | active units | parameters | fit s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, runs in results.items():
        iwae, elbo = np.array([r["iwae"] for r in runs]), np.array([r["elbo"] for r in runs])
        layers = runs[0]["kl"].keys()
        kl = ", ".join(f"{k} {np.mean([r['kl'][k] for r in runs]):.2f}" for k in layers)
        active = ", ".join(f"{k} {np.mean([r['active'][k] for r in runs]):.1f}" for k in layers)
        lines.append(f"| {name} | {iwae.mean():.3f} ± {iwae.std():.3f} | {elbo.mean():.3f} ± "
                     f"{elbo.std():.3f} | {kl} | {active} | {runs[0]['params']:,} | "
                     f"{np.mean([r['fit_s'] for r in runs]):.0f} |")
    flat, ladder = (np.array([r["iwae"] for r in runs]) for runs in results.values())
    lines += ["", "IWAE(hierarchical) − IWAE(VAE) per seed: "
              + ", ".join(f"{d:+.3f}" for d in ladder - flat) + " nats per row."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
