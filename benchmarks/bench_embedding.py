"""Embeddings: the VAE's posterior means vs PCA with the same number of dimensions.

    .venv/bin/python benchmarks/bench_embedding.py --dims 2,8,16

Two tables, each split into rows to fit on and held-out rows to measure on:

* Adult (../shared/data/adult, its train/test split), label ``income``, which neither
  method sees. PCA's input: numeric columns standardised on train, categorical columns
  one-hot over the train levels.
* scikit-learn's bundled digits (8×8 images as 64 integer columns), label the digit,
  stratified 70/30 split (seed 0). PCA's input: the raw pixel values.

For d = each of ``--dims``: the VAE (each recipe, ``latent_dim = d``) and PCA
(d components), both fitted on the fit rows without the label. Measured on the held-out
rows: balanced accuracy of a 10-nearest-neighbour classifier of the label (fitted on the
fit rows' embeddings), trustworthiness (n_neighbors = 10) of the embedding against PCA's
input space, and the reconstruction error in that space (mean squared error per row:
PCA's inverse transform; the VAE's decoder at the posterior mean, most likely values).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_file import write_section  # noqa: E402
from synthetic_metrics import CATEGORICAL, NUMERIC  # noqa: E402

from vae_core import TabularVAE  # noqa: E402

ADULT = ROOT.parent / "shared" / "data" / "adult"
# The defaults, and the README's setting for embeddings: one σ shared by every numeric
# column (isotropic noise, as in probabilistic PCA: the likelihood weighs an error the same
# in every column), a small KL weight, which keeps more of each row in the code, and one
# wide hidden layer (generalises better than two from a small table). Its per-table part
# (Task.setting) gives the VAE the units PCA is given.
# The distance-preserving setting adds the distance stress (vae_core.objectives.distances) to
# the loss, so that the embedding keeps the table's distances, not only its likelihood.
EMBEDDING = {"decoder_scale": "shared", "beta": 0.03, "hidden": [512]}
RECIPES = {"defaults": {}, "embedding setting": EMBEDDING,
           "distance-preserving": {**EMBEDDING, "distance_weight": 1000}}


class Task:
    """A table to embed: fit rows, held-out rows, labels, PCA's input space, and the
    per-table part of the embedding setting."""

    def __init__(self, name: str, fit: pd.DataFrame, held_out: pd.DataFrame, label: str,
                 space, setting: dict, why: str) -> None:
        self.name, self.fit, self.held_out, self.label = name, fit, held_out, label
        self.space = space  # DataFrame -> PCA's input matrix
        self.setting, self.why = setting, why  # the per-table setting, and its reason

    def features(self, frame: pd.DataFrame) -> pa.Table:
        return pa.Table.from_pandas(frame.drop(columns=[self.label]), preserve_index=False)


def adult() -> Task:
    train, test = (pd.read_parquet(ADULT / f"{s}.parquet") for s in ("train", "test"))
    categorical = [c for c in CATEGORICAL if c != "income"]
    mean, std = train[NUMERIC].mean(), train[NUMERIC].std()
    levels = {c: np.array(sorted(train[c].unique())) for c in categorical}

    def space(frame: pd.DataFrame) -> np.ndarray:
        numbers = ((frame[NUMERIC] - mean) / std).to_numpy(np.float64)
        one_hot = [(frame[c].to_numpy()[:, None] == levels[c][None, :]).astype(np.float64)
                   for c in categorical]
        return np.hstack([numbers, *one_hot])

    return Task("Adult", train, test, "income", space, {"numeric_transform": "standard"},
                "columns in different units, standardised as for PCA")


def digits() -> Task:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    frame = pd.DataFrame(data.data.astype(np.int64), columns=[f"p{i}" for i in range(64)])
    frame["digit"] = data.target.astype(str)
    fit, held_out = train_test_split(frame, test_size=0.3, stratify=frame["digit"],
                                     random_state=0)
    pixels = [f"p{i}" for i in range(64)]
    # 1 257 rows: 40 epochs are 200 optimiser steps.
    return Task("digits", fit.reset_index(drop=True), held_out.reset_index(drop=True), "digit",
                lambda f: f[pixels].to_numpy(np.float64),
                {"numeric_transform": "pooled", "epochs": 200},
                "pixels share one unit, and PCA sees raw pixels; 1 257 rows, so 200 epochs, "
                "cut short by early stopping")


def scores(task: Task, fit_codes: np.ndarray, held_codes: np.ndarray,
           reconstruction: np.ndarray) -> dict:
    from sklearn.manifold import trustworthiness
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=10).fit(fit_codes, task.fit[task.label])
    space = task.space(task.held_out)
    return {"knn_balanced_accuracy": float(balanced_accuracy_score(
                task.held_out[task.label], knn.predict(held_codes))),
            "trustworthiness": float(trustworthiness(space, held_codes, n_neighbors=10)),
            "reconstruction_mse": float(((space - reconstruction) ** 2).sum(1).mean())}


def pca(task: Task, d: int) -> dict:
    from sklearn.decomposition import PCA

    t0 = time.perf_counter()
    model = PCA(n_components=d, random_state=0).fit(task.space(task.fit))
    seconds = time.perf_counter() - t0
    held = model.transform(task.space(task.held_out))
    return {**scores(task, model.transform(task.space(task.fit)), held,
                     model.inverse_transform(held)), "fit_s": seconds}


@functools.cache
def task_named(name: str) -> Task:
    return globals()[name]()


def vae(task_name: str, d: int, seed: int, options: dict) -> dict:
    torch.set_num_threads(1)
    task = task_named(task_name)
    t0 = time.perf_counter()
    model = TabularVAE(latent_dim=d, seed=seed, **options).fit(task.features(task.fit))
    seconds = time.perf_counter() - t0
    held = task.features(task.held_out)
    rebuilt = model.reconstruct(held).to_pandas()
    return {**scores(task, model.embed(task.features(task.fit)), model.embed(held),
                     task.space(rebuilt)), "fit_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dims", default="2,8,16")
    parser.add_argument("--tasks", default="adult,digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipes", default=json.dumps(RECIPES),
                        help="JSON: {name: TabularVAE options}")
    parser.add_argument("--workers", type=int, default=2, help="VAE fits run at once")
    parser.add_argument("--out", type=Path, help="rewrite this bench's section of this file")
    args = parser.parse_args()
    recipes = json.loads(args.recipes)
    tasks = {name: task_named(name) for name in args.tasks.split(",")}
    dims = [int(d) for d in args.dims.split(",")]
    # The VAE fits are independent and single-threaded: two at a time, one per core of the
    # 2-core machine (fit seconds stay those of a lone fit, give or take memory bandwidth).
    # spawn: a forked child of a process that has run BLAS threads can hang.
    rows, context = [], multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=context) as pool:
        fits = {(name, d, method): pool.submit(
                    vae, name, d, args.seed,  # the defaults stay the defaults
                    options if method == "defaults" else {**options, **task.setting})
                for name, task in tasks.items() for d in dims
                for method, options in recipes.items()}
        for name, task in tasks.items():
            for d in dims:
                results = {"PCA": pca(task, d)} | {
                    method: fits[(name, d, method)].result() for method in recipes}
                for method, result in results.items():
                    rows.append({"task": task.name, "d": d, "method": method, **result})
                    print(json.dumps(rows[-1]), flush=True)
    if args.out:
        write_section(args.out, render(rows, args, recipes, list(tasks.values())))


def render(rows: list[dict], args: argparse.Namespace, recipes: dict, tasks: list[Task]
           ) -> str:
    lines = ["", "## Embeddings: posterior means vs PCA (held-out rows; higher is better but "
             "for reconstruction)", "",
             f"Command: `.venv/bin/python benchmarks/bench_embedding.py --dims {args.dims} "
             f"--tasks {args.tasks} --seed {args.seed}`. This VAE: "
             + "; ".join(f"{name} `{json.dumps(o)}`" for name, o in recipes.items())
             + " with, per table, "
             + " and ".join(f"{t.name} `{json.dumps(t.setting)}` ({t.why})" for t in tasks)
             + ", `latent_dim` = d. kNN: balanced accuracy of a 10-nearest-neighbour "
             "classifier of the label (income; the digit), which neither method sees. "
             "Trustworthiness (10 neighbours) and reconstruction error (squared error per "
             "row) in PCA's input space (Adult: standardised numbers + one-hot categories; "
             f"digits: pixels). Fit s: one torch thread, {args.workers} VAE fits at once. "
             "Bold: the best of the methods at that d.", "",
             "| table | d | method | kNN balanced accuracy | trustworthiness | "
             "reconstruction error | fit s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    best = {}
    for r in rows:  # the best of each measure per (table, d), to mark it
        key = (r["task"], r["d"])
        for m in ("knn_balanced_accuracy", "trustworthiness"):
            best[(*key, m)] = max(best.get((*key, m), -np.inf), r[m])
    for r in rows:
        cells = [f"**{r[m]:.3f}**" if r[m] == best[(r["task"], r["d"], m)] else f"{r[m]:.3f}"
                 for m in ("knn_balanced_accuracy", "trustworthiness")]
        lines.append(f"| {r['task']} | {r['d']} | {r['method']} | {cells[0]} | {cells[1]} | "
                     f"{r['reconstruction_mse']:.2f} | {r['fit_s']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
