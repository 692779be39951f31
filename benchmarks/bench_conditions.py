"""Conditions on any column, Adult: how close p(other column | condition) of generated rows
is to the real one, this VAE against TVAE with rejection sampling, same run.

    .venv/bin/python benchmarks/bench_conditions.py --tvae-epochs 300

Both fit on the Adult train split (../shared/data/adult). For each condition, 5,000 rows
that meet it: this VAE through ``sample(conditions=...)`` (truncated draws kept by
rejection, vae_core.constrained_sampling; no column is declared a condition), TVAE
(ctgan.TVAE, which has no conditions on arbitrary columns) by drawing 50,000 rows at a time
and keeping those that meet it. The reference is the real test split's conditional
distribution of the other column (numbers in deciles of the train split); the real train
split's distance to it is the floor that sampling noise and the split leave.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_file import write_section  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "adult"
ROWS = 5000
TVAE_DRAW = 50_000
TVAE_MAX_DRAWN = 2_000_000
CASES = [  # (conditions, the column whose conditional distribution is compared)
    ({"age": {">=": 30, "<": 40}}, "occupation"),
    ({"education": ["Masters", "Doctorate"]}, "income"),
    ({"age": {">=": 60}, "sex": "Female"}, "marital-status"),
    ({"hours-per-week": {">": 50}, "workclass": "Self-emp-not-inc"}, "occupation"),
]
CATEGORICAL = ["workclass", "education", "marital-status", "occupation", "relationship", "race",
               "sex", "native-country", "income"]


def meets(frame: pd.DataFrame, conditions: dict) -> np.ndarray:
    ok = np.ones(len(frame), bool)
    ops = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less}
    for column, wanted in conditions.items():
        values = frame[column].to_numpy()
        if isinstance(wanted, dict):
            for op, bound in wanted.items():
                ok &= ops[op](values, bound)
        else:
            ok &= np.isin(values, wanted if isinstance(wanted, list) else [wanted])
    return ok


def distribution(values: pd.Series, edges: np.ndarray | None) -> pd.Series:
    if edges is not None:
        values = pd.Series(np.searchsorted(edges, values.to_numpy(), side="right"))
    return values.value_counts(normalize=True)


def total_variation(a: pd.Series, b: pd.Series) -> float:
    return 0.5 * float(a.sub(b, fill_value=0).abs().sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tvae-epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    import torch
    from ctgan import TVAE

    from vae_core import TabularVAE

    train = pd.read_parquet(DATA / "train.parquet")
    test = pd.read_parquet(DATA / "test.parquet")
    t0 = time.perf_counter()
    vae = TabularVAE(preset="synthesis", seed=args.seed).fit(DATA / "train.parquet")
    ours_fit = time.perf_counter() - t0
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    tvae = TVAE(epochs=args.tvae_epochs)
    tvae.fit(train, discrete_columns=CATEGORICAL)
    tvae_fit = time.perf_counter() - t0

    rows = []
    for conditions, other in CASES:
        edges = (None if other in CATEGORICAL
                 else np.quantile(train[other], np.linspace(0.1, 0.9, 9)))
        truth = distribution(test[other][meets(test, conditions)], edges)
        floor = total_variation(distribution(train[other][meets(train, conditions)], edges),
                                truth)
        t0 = time.perf_counter()
        ours = vae.sample(ROWS, conditions=conditions, seed=args.seed).to_pandas()
        ours_s = time.perf_counter() - t0
        assert meets(ours, conditions).all(), conditions
        t0, kept, drawn = time.perf_counter(), [], 0
        while sum(map(len, kept)) < ROWS and drawn < TVAE_MAX_DRAWN:
            batch = tvae.sample(TVAE_DRAW)
            kept.append(batch[meets(batch, conditions)])
            drawn += TVAE_DRAW
        tvae_rows = pd.concat(kept).head(ROWS)
        tvae_s = time.perf_counter() - t0
        rows.append({"conditions": conditions, "other": other,
                     "share": float(meets(test, conditions).mean()),
                     "floor": floor,
                     "ours": total_variation(distribution(ours[other], edges), truth),
                     "ours_s": ours_s,
                     "tvae": (total_variation(distribution(tvae_rows[other], edges), truth)
                              if len(tvae_rows) else float("nan")),
                     "tvae_rows": len(tvae_rows), "tvae_drawn": drawn,
                     "tvae_s": tvae_s})
        print(rows[-1], flush=True)
    write_section(args.out, render(rows, args, ours_fit, tvae_fit))


def render(rows: list[dict], args: argparse.Namespace, ours_fit: float, tvae_fit: float) -> str:
    import ctgan
    import torch

    lines = ["", "## Conditions on any column: Adult", "",
             f"Command: `.venv/bin/python benchmarks/bench_conditions.py --tvae-epochs "
             f"{args.tvae_epochs} --seed {args.seed}`. {platform.machine()}, torch "
             f"{torch.__version__}, ctgan {ctgan.__version__}. This VAE: the synthesis preset, "
             "no column declared a condition, `sample(5000, conditions=...)` (truncated draws "
             "kept by rejection: exact draws from the model's p(x | conditions)). TVAE "
             f"({args.tvae_epochs} epochs): {TVAE_DRAW:,} rows drawn at a time, those meeting "
             "the conditions kept, until 5,000. Figure: total-variation distance between the "
             "other column's distribution in the generated rows and in the real test rows "
             "that meet the conditions (numbers in train deciles); lower is better. Floor: the "
             "real train rows' distance, what the split and sampling noise leave. "
             f"Fit seconds, same run: this VAE {ours_fit:.0f}, TVAE {tvae_fit:.0f}.", "",
             "| conditions | compared column | share of real rows | floor (real train) | "
             "this VAE | TVAE, rejection | TVAE rows drawn for them | sampling s: this VAE / "
             "TVAE |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        shown = ", ".join(f"{k} {v}" for k, v in r["conditions"].items()).replace("'", "")
        lines.append(f"| {shown} | {r['other']} | {r['share']:.3f} | {r['floor']:.3f} | "
                     f"{r['ours']:.3f} | {r['tvae']:.3f} | {r['tvae_drawn']:,} "
                     f"| {r['ours_s']:.1f} / "
                     f"{r['tvae_s']:.1f} |")
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in ("floor", "ours", "tvae")}
    lines += ["", f"Mean over the {len(rows)} conditions: floor {mean['floor']:.3f}, this VAE "
              f"{mean['ours']:.3f}, TVAE {mean['tvae']:.3f}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
