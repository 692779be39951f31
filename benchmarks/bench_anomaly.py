"""Anomaly flags over a suite of tables: the anomaly preset vs the classical detectors.

    .venv/bin/python benchmarks/bench_anomaly.py --seeds 0,1,2,3,4 --out benchmarks/RESULTS.md

The protocol of ../shared/data/adbench-dev/README.md, on all 19 ADBench sets there and on
ODDS cardio (the table the earlier anomaly setting was chosen on). Per set and seed: a
stratified 60/40 split, standardised with the train split's mean and std; every detector
is fitted on the train split without labels (it holds the anomalies: the unsupervised
setting) and scores the test split; ROC-AUC and average precision against the labels.
The VAE is ``TabularVAE(preset="anomaly", seed=seed)`` and its score is the model's own
``score`` column (−log p̂(x), IWAE with the preset's K). The references, with library
defaults and measured in the same run: scikit-learn IsolationForest, PyOD KNN, ECOD, PCA
(n_components = the rank of the train split) and PyOD's VAE (reconstruction distance).
The headline is the mean over the 19 ADBench sets; cardio is reported apart.

Fits run ``--workers`` at a time (one torch thread each, the references in the same
process), so seconds compare detectors under the same load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_file import write_section  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SUITE = sorted(p.stem for p in (DATA / "adbench-dev").glob("*.parquet"))
CARDIO = "cardio (ODDS)"
OURS = "this VAE, anomaly preset"
REFERENCES = ("Isolation Forest", "KNN (PyOD)", "ECOD (PyOD)", "PCA (PyOD)", "VAE (PyOD)")


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    path = (DATA / "odds-cardio" / "cardio.parquet" if name == CARDIO
            else DATA / "adbench-dev" / f"{name}.parquet")
    table = pq.read_table(path)
    x = np.stack([table.column(n).to_numpy() for n in table.column_names if n != "label"], 1)
    return x.astype(np.float64), table.column("label").to_numpy()


def split(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    x, y = load(name)
    x_tr, x_te, _, y_te = train_test_split(x, y, test_size=0.4, stratify=y, random_state=seed)
    mean, std = x_tr.mean(0), x_tr.std(0)
    std[std == 0] = 1.0
    return (x_tr - mean) / std, (x_te - mean) / std, y_te


def detectors(seed: int, rank: int) -> dict:
    from pyod.models.ecod import ECOD
    from pyod.models.knn import KNN
    from pyod.models.pca import PCA
    from pyod.models.vae import VAE
    from sklearn.ensemble import IsolationForest

    class Forest:  # scikit-learn's: higher score_samples = more normal
        def fit(self, x):
            self.model = IsolationForest(random_state=seed).fit(x)
            return self

        def decision_function(self, x):
            return -self.model.score_samples(x)

    # PCA with every component would divide by a zero variance: n_components = rank.
    return dict(zip(REFERENCES, (Forest(), KNN(), ECOD(), PCA(n_components=rank),
                                 VAE(random_state=seed, verbose=0)), strict=True))


def run_one(name: str, seed: int, options: dict, references: bool) -> dict:
    """{detector: (ROC-AUC, AP, fit + score seconds)} on one split."""
    import torch
    from sklearn.metrics import average_precision_score, roc_auc_score

    from vae_core import TabularVAE

    torch.set_num_threads(1)
    x_tr, x_te, y_te = split(name, seed)
    columns = [f"f{i}" for i in range(x_tr.shape[1])]

    def table(x: np.ndarray) -> pa.Table:
        return pa.table({n: x[:, i] for i, n in enumerate(columns)})

    scores, seconds = {}, {}
    t0 = time.perf_counter()
    vae = TabularVAE(preset="anomaly", seed=seed, **options).fit(table(x_tr))
    scores[OURS] = vae.score(table(x_te), seed=seed).column("score").to_numpy()
    seconds[OURS] = time.perf_counter() - t0
    if references:
        for ref, detector in detectors(seed, int(np.linalg.matrix_rank(x_tr))).items():
            t0 = time.perf_counter()
            scores[ref] = detector.fit(x_tr).decision_function(x_te)
            seconds[ref] = time.perf_counter() - t0
    return {d: (float(roc_auc_score(y_te, s)), float(average_precision_score(y_te, s)),
                seconds[d]) for d, s in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--sets", default=",".join([*SUITE, CARDIO]),
                        help="comma-separated set names (default: the 19 and cardio)")
    parser.add_argument("--options", default="{}",
                        help="JSON: TabularVAE options over the preset (default: none)")
    parser.add_argument("--no-references", action="store_true",
                        help="only the VAE (to try a setting; RESULTS.md needs them)")
    parser.add_argument("--workers", type=int, default=2, help="fits at once")
    parser.add_argument("--out", type=Path, help="rewrite this bench's section of this file")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    sets, options = args.sets.split(","), json.loads(args.options)
    # Largest first, so that two workers finish together; spawn: a forked child of a
    # process that has run BLAS threads can hang.
    order = sorted(sets, key=lambda s: -load(s)[0].size)
    context = multiprocessing.get_context("spawn")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        futures = {(s, seed): pool.submit(run_one, s, seed, options, not args.no_references)
                   for s in order for seed in seeds}
        results = {s: [futures[(s, seed)].result() for seed in seeds] for s in order}
    for s in sets:
        print(s, json.dumps({d: round(float(np.mean([r[d][0] for r in results[s]])), 3)
                             for d in results[s][0]}), flush=True)
    summary = Summary({s: results[s] for s in sets}, seeds)
    print(summary.headline())
    if args.out:
        write_section(args.out, summary.render(args, time.perf_counter() - t0))


class Summary:
    """Per-set means, means over the suite and paired differences, from
    ``{set: [per seed {detector: (auc, ap, seconds)}]}``."""

    def __init__(self, results: dict[str, list[dict]], seeds: list[int]) -> None:
        self.results, self.seeds = results, seeds
        self.suite = [s for s in results if s != CARDIO]
        self.detectors = list(next(iter(results.values()))[0])

    def mean(self, s: str, d: str, i: int) -> float:
        return float(np.mean([r[d][i] for r in self.results[s]]))

    def suite_mean(self, d: str, i: int) -> float:
        return float(np.mean([self.mean(s, d, i) for s in self.suite]))

    def best_reference(self) -> str | None:
        refs = [d for d in self.detectors if d != OURS]
        return max(refs, key=lambda d: self.suite_mean(d, 0)) if refs else None

    def paired(self, other: str) -> list[float]:
        """Per seed: the suite's mean ROC-AUC of the preset minus ``other``'s."""
        return [float(np.mean([self.results[s][k][OURS][0] - self.results[s][k][other][0]
                               for s in self.suite])) for k in range(len(self.seeds))]

    def headline(self) -> str:
        line = f"mean ROC-AUC over {len(self.suite)} sets: " + ", ".join(
            f"{d} {self.suite_mean(d, 0):.4f}" for d in self.detectors)
        best = self.best_reference()
        if best:
            line += f"; preset − {best} per seed: " + ", ".join(
                f"{v:+.4f}" for v in self.paired(best))
        return line

    def render(self, args: argparse.Namespace, seconds: float) -> str:
        best = self.best_reference()
        head = ["", "## Anomaly flags: 19 ADBench tables and ODDS cardio (ROC-AUC, AP; higher "
                "is better)", "",
                f"Command: `.venv/bin/python benchmarks/bench_anomaly.py --seeds {args.seeds}"
                + (f" --options '{args.options}'" if args.options != "{}" else "")
                + f"` ({seconds / 60:.1f} min, {args.workers} fits at once). Protocol of "
                "`../shared/data/adbench-dev/README.md`: per seed a stratified 60/40 split, "
                "standardised on the train split, every detector fitted on the contaminated "
                "train split without labels and scoring the test split. This VAE: "
                "`TabularVAE(preset=\"anomaly\", seed=seed)`, score = its `score` column "
                "(−log p̂(x), IWAE); one fixed preset, no per-set choice. References: library "
                "defaults, PCA with n_components = the train split's rank, PyOD's VAE scores "
                "the reconstruction distance. Cells: ROC-AUC mean ± std over seeds, then AP.",
                ""]
        cols = " | ".join(self.detectors)
        lines = [f"| set (rows × columns, anomalies) | {cols} | VAE s | Isolation Forest s |",
                 "| --- | " + " | ".join("---" for _ in self.detectors) + " | --- | --- |"]
        for s in [*self.suite, *([CARDIO] if CARDIO in self.results else [])]:
            x, y = load(s)
            aucs = {d: self.mean(s, d, 0) for d in self.detectors}
            top = max(aucs.values())
            cells = []
            for d in self.detectors:
                auc = np.array([r[d][0] for r in self.results[s]])
                text = f"{auc.mean():.3f} ± {auc.std():.3f}, {self.mean(s, d, 1):.3f}"
                cells.append(f"**{text}**" if aucs[d] == top else text)
            forest = (f"{self.mean(s, 'Isolation Forest', 2):.1f}"
                      if "Isolation Forest" in self.detectors else "–")
            lines.append(f"| {s} ({x.shape[0]:,} × {x.shape[1]}, {y.mean():.1%}) | "
                         + " | ".join(cells) + f" | {self.mean(s, OURS, 2):.1f} | {forest} |")
        top = max(self.suite_mean(d, 0) for d in self.detectors)
        means = " | ".join((f"**{self.suite_mean(d, 0):.4f}**" if self.suite_mean(d, 0) == top
                            else f"{self.suite_mean(d, 0):.4f}") + f", {self.suite_mean(d, 1):.4f}"
                           for d in self.detectors)
        lines.append(f"| **mean over the {len(self.suite)} ADBench sets** | {means} | "
                     f"{sum(self.mean(s, OURS, 2) for s in self.suite):.0f} (sum) | "
                     + (f"{sum(self.mean(s, 'Isolation Forest', 2) for s in self.suite):.0f} "
                        "(sum) |" if "Isolation Forest" in self.detectors else "– |"))
        tail = [""]
        if best:
            diffs = self.paired(best)
            wins = sum(self.mean(s, OURS, 0) > self.mean(s, best, 0) for s in self.suite)
            tail += [f"Best reference by its mean over the suite: {best}. The preset's mean "
                     f"ROC-AUC minus it, per seed (same splits, so paired): "
                     + ", ".join(f"{v:+.4f}" for v in diffs)
                     + f"; mean {np.mean(diffs):+.4f}. The preset beats it on {wins} of "
                     f"{len(self.suite)} sets."]
        if "Isolation Forest" in self.detectors:
            ours, forest = (sum(self.mean(s, d, 2) for s in self.suite)
                            for d in (OURS, "Isolation Forest"))
            tail += ["", f"Fit + score time over the suite: the preset {ours:.0f} s, Isolation "
                     f"Forest {forest:.0f} s ({ours / forest:.0f}× as long; one torch thread, "
                     "campaign and InternetAds take two thirds of it)."]
        return "\n".join(head + lines + tail) + "\n"


if __name__ == "__main__":
    main()
