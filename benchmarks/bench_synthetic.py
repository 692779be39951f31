"""Synthetic Adult records: this VAE vs SDV's TVAE (ctgan.TVAE), same split, same machine.

    .venv/bin/python benchmarks/bench_synthetic.py --tvae-epochs 300

Protocol (issue 6): fit on the Adult train split (../shared/data/adult), sample as many
rows as train, and measure (benchmarks/synthetic_metrics.py): SDMetrics' QualityReport
(overall, Column Shapes, Column Pair Trends); train-synthetic-test-real with a
HistGradientBoostingClassifier predicting ``income`` (ROC-AUC, macro-F1 on the real test
split); privacy: median distance to the closest train record (DCR) and the share of exact
copies of train rows; fit time and peak memory. Every method fits in a fresh process with
one torch thread (peak RSS is that process's). References in the same run: TVAE with
default settings but ``--tvae-epochs``; every column resampled independently (shows
what Column Shapes alone rewards); the real train rows themselves (the upper reference:
the real test rows' own DCR, and TSTR of a classifier trained on real rows).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import synthetic_metrics as metrics  # noqa: E402
from results_file import write_section  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "adult"
DCR_ROWS = 5000  # synthetic rows whose DCR is measured (all 26k train rows are searched)
# The synthesis preset (vae_core.presets: the autoregressive decoder), and the defaults.
RECIPES = {"synthesis preset": {"preset": "synthesis"}, "defaults": {}}


def _fit_ours(options: dict, n: int, seed: int) -> pd.DataFrame:
    from vae_core import TabularVAE

    vae = TabularVAE(seed=seed, **options).fit(DATA / "train.parquet")
    return vae.sample(n, seed=seed).to_pandas()


def _fit_tvae(epochs: int, n: int, seed: int) -> pd.DataFrame:
    import torch
    from ctgan import TVAE

    torch.manual_seed(seed)
    model = TVAE(epochs=epochs)
    model.fit(pd.read_parquet(DATA / "train.parquet"), discrete_columns=metrics.CATEGORICAL)
    return model.sample(n)


def _independent(n: int, seed: int) -> pd.DataFrame:
    train = pd.read_parquet(DATA / "train.parquet")
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: train[c].to_numpy()[rng.integers(0, len(train), n)]
                         for c in train.columns})


def _child(kind: str, arg, n: int, seed: int, out: str, queue) -> None:
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    synthetic = {"ours": _fit_ours, "tvae": _fit_tvae}[kind](arg, n, seed)
    seconds = time.perf_counter() - t0
    synthetic.to_parquet(out)
    queue.put({"fit_s": seconds,
               "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20})


def fit_in_child(kind: str, arg, n: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """Fit and sample in a fresh process: its own peak RSS, nothing shared with the rest."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as d:
        out = str(Path(d) / "synthetic.parquet")
        proc = ctx.Process(target=_child, args=(kind, arg, n, seed, out, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"{kind} failed (exit {proc.exitcode})")
        return pd.read_parquet(out), queue.get()


def measure(synthetic: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame) -> dict:
    dcr_rows = synthetic.sample(min(DCR_ROWS, len(synthetic)), random_state=0)
    return {**metrics.quality(train, synthetic), **metrics.tstr(synthetic, test),
            **metrics.dcr(dcr_rows, train), **metrics.detection(train, synthetic)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tvae-epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipes", default=json.dumps(RECIPES),
                        help="JSON: {name: TabularVAE options}")
    parser.add_argument("--skip-tvae", action="store_true", help="(for quick iterations)")
    parser.add_argument("--out", type=Path, help="rewrite this bench's section of this file")
    args = parser.parse_args()
    train, test = (pd.read_parquet(DATA / f"{s}.parquet") for s in ("train", "test"))
    recipes = json.loads(args.recipes)
    results = {}

    def record(name: str, synthetic: pd.DataFrame, cost: dict) -> None:
        results[name] = {**measure(synthetic, train, test), **cost}
        print(name, json.dumps(results[name]), flush=True)

    for name, options in recipes.items():
        record(f"this VAE, {name}", *fit_in_child("ours", options, len(train), args.seed))
    if not args.skip_tvae:
        record(f"TVAE ({args.tvae_epochs} epochs)",
               *fit_in_child("tvae", args.tvae_epochs, len(train), args.seed))
    record("each column resampled independently", _independent(len(train), args.seed), {})
    real = {**metrics.quality(train, test), **metrics.tstr(train, test),
            **metrics.dcr(test, train), **metrics.detection(train, test)}
    results["real rows (test split scored against train)"] = real
    print("real", json.dumps(real), flush=True)
    if args.out:
        write_section(args.out, render(results, args, recipes))


def render(results: dict, args: argparse.Namespace, recipes: dict) -> str:
    import ctgan
    import sdmetrics
    import torch

    lines = ["", "## Synthetic records: Adult (fit on train, sample as many rows as train)", "",
             f"Command: `.venv/bin/python benchmarks/bench_synthetic.py --tvae-epochs "
             f"{args.tvae_epochs} --seed {args.seed}`; this VAE: "
             + "; ".join(f"{name} `{json.dumps(o)}`" for name, o in recipes.items())
             + f". {platform.machine()}, one torch "
             f"thread per fit, torch {torch.__version__}, ctgan {ctgan.__version__}, sdmetrics "
             f"{sdmetrics.__version__}. Quality: SDMetrics QualityReport. TSTR: "
             "HistGradientBoostingClassifier trained on the rows, tested on the real test "
             "split. DCR: median Euclidean distance to the closest train row (numbers min-max "
             f"scaled, categories one-hot), over {DCR_ROWS} synthetic rows or the 6,513 real "
             "test rows; exact copies: share of rows equal to a train row. Detection: "
             "ROC-AUC of gradient-boosted trees telling the rows from train rows (balanced, "
             "≤ 20,000 each, stratified 5-fold; `vae evaluate`'s; 0.5 = indistinguishable). "
             "Fit time includes sampling; peak RSS of the fitting process.", "",
             "| rows from | quality | column shapes | column pair trends | detection ROC-AUC | "
             "TSTR ROC-AUC | TSTR macro-F1 | median DCR | exact copies | fit s | peak RSS GB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        cost = (f"{r['fit_s']:.0f} | {r['peak_rss_gb']:.2f}" if "fit_s" in r else "— | —")
        lines.append(f"| {name} | {r['quality']:.3f} | {r['shapes']:.3f} | {r['pairs']:.3f} | "
                     f"{r['detection']:.3f} | {r['roc_auc']:.3f} | {r['macro_f1']:.3f} | "
                     f"{r['median_dcr']:.3f} | "
                     f"{100 * r['exact_copies']:.2f} % | {cost} |")
    tvae = results.get(f"TVAE ({args.tvae_epochs} epochs)")
    if tvae:  # issue 6's goal: a fit in at most 1/5 of TVAE-300's time
        lines += ["", f"Fit time / TVAE ({args.tvae_epochs} epochs)'s, same run: " + ", ".join(
            f"{name} {results[f'this VAE, {name}']['fit_s'] / tvae['fit_s']:.2f}"
            for name in recipes) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
