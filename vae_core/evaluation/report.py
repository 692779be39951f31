"""One evaluation of synthetic rows against real ones, and its report on disk.

``evaluate`` measures fidelity (column shapes, pair trends), detection (classifier
two-sample ROC-AUC), privacy (DCR against a real holdout) and, given a target column,
utility (TSTR beside TRTR). ``EvaluationReport.write(folder)`` leaves ``report.json``,
``report.html`` (one self-contained page: figures inlined) and the figures as PNG.

Which rows play which part: ``real`` is the reference (the rows the model was trained on,
or rows like them). ``holdout`` should be real rows the model never saw; without one, a
seeded half of ``real`` is held out and the other half is the reference for DCR and TRTR
(then TSTR tests on rows the generator may have seen, which flatters it).
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from vae_core.data.schema import TableSchema
from vae_core.evaluation.columns import Column, check_columns, modelled_columns, values
from vae_core.evaluation.detection import detection_auc
from vae_core.evaluation.fidelity import column_shapes, pair_trends
from vae_core.evaluation.privacy import dcr
from vae_core.evaluation.utility import train_test_score

MAX_FIGURE_COLUMNS = 24  # marginal plots: the columns with the worst shapes


@dataclass
class EvaluationReport:
    summary: dict[str, float | int | str | None]
    column_shapes: dict[str, float]
    pair_trends: list[dict] = field(default_factory=list)  # {"columns": [a, b], "score": s}

    def to_dict(self) -> dict:
        return asdict(self)

    def summary_line(self) -> str:
        s = self.summary
        line = (f"column shapes {s['column_shapes']:.3f}, pair trends {s['pair_trends']:.3f}, "
                f"detection ROC-AUC {s['detection_roc_auc']:.3f}, median DCR "
                f"{s['dcr_synthetic_median']:.4f} (holdout {s['dcr_holdout_median']:.4f}), "
                f"exact copies {100 * s['exact_copies_synthetic']:.2f}%")
        if s.get("target"):
            line += f", TSTR {s['tstr']:.3f} (TRTR {s['trtr']:.3f}, {s['utility_metric']})"
        return line

    def write(self, folder: str | Path, real: pa.Table, synthetic: pa.Table,
              schema: TableSchema) -> Path:
        """report.json, report.html and plots/*.png in ``folder``; returns the page's path."""
        folder = Path(folder)
        (folder / "plots").mkdir(parents=True, exist_ok=True)
        (folder / "report.json").write_text(json.dumps(self.to_dict(), indent=2))
        figures = {"marginals.png": _marginals(self, real, synthetic, schema),
                   "pair_trends.png": _pair_heatmap(self)}
        for name, png in figures.items():
            (folder / "plots" / name).write_bytes(png)
        page = folder / "report.html"
        page.write_text(_html(self, figures))
        return page


def evaluate(real: pa.Table, synthetic: pa.Table, schema: TableSchema,
             holdout: pa.Table | None = None, target: str | None = None,
             seed: int = 0) -> EvaluationReport:
    columns = modelled_columns(schema)
    check_columns(real, schema, "the real rows")
    check_columns(synthetic, schema, "the synthetic rows")
    if target is not None and target not in {c.name for c in columns}:
        raise ValueError(f"target '{target}' is not a modelled column (the model's columns: "
                         f"{', '.join(c.name for c in columns)})")
    if holdout is None:
        if real.num_rows < 2:
            raise ValueError("the real rows: at least 2 are needed to hold half out")
        order = np.random.default_rng(seed).permutation(real.num_rows)
        half = real.num_rows // 2
        reference, holdout = real.take(np.sort(order[half:])), real.take(np.sort(order[:half]))
    else:
        check_columns(holdout, schema, "the holdout rows")
        reference = real
    shapes = column_shapes(real, synthetic, columns)
    trends = pair_trends(real, synthetic, columns, seed)
    summary: dict = {
        "rows_real": real.num_rows, "rows_synthetic": synthetic.num_rows,
        "rows_holdout": holdout.num_rows,
        "column_shapes": float(np.mean(list(shapes.values()))),
        "pair_trends": float(np.mean(list(trends.values()))) if trends else None,
        "detection_roc_auc": detection_auc(real, synthetic, columns, seed),
        **dcr(synthetic, holdout, reference, columns, seed),
        "target": target,
    }
    if target is not None:
        column = next(c for c in columns if c.name == target)
        summary |= {"utility_metric": "r2" if column.numeric else "roc_auc",
                    "tstr": train_test_score(synthetic, holdout, columns, column, seed),
                    "trtr": train_test_score(reference, holdout, columns, column, seed)}
    return EvaluationReport(summary, shapes, [{"columns": list(k), "score": v}
                                              for k, v in trends.items()])


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _marginals(report: EvaluationReport, real: pa.Table, synthetic: pa.Table,
               schema: TableSchema) -> bytes:
    worst = sorted(report.column_shapes, key=report.column_shapes.get)[:MAX_FIGURE_COLUMNS]
    columns = [c for c in modelled_columns(schema) if c.name in worst]
    return _png(marginals_figure(real, synthetic, columns, report.column_shapes))


def marginals_figure(real: pa.Table, synthetic: pa.Table, columns: list[Column],
                     shapes: dict[str, float] | None = None):
    """Real against synthetic, one panel per column (four a row): histograms of numbers,
    bars of the 12 most frequent real levels; ``shapes`` (column shape scores) in titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(columns))
    rows = -(-len(columns) // cols)
    figure, axes = plt.subplots(rows, cols, squeeze=False, figsize=(4 * cols, 2.8 * rows))
    for ax, c in zip(axes.flat, columns, strict=False):
        a, b = values(real, c), values(synthetic, c)
        if c.numeric:
            a, b = a[~np.isnan(a)], b[~np.isnan(b)]
            bins = np.histogram_bin_edges(np.concatenate([a, b]), bins=30)
            ax.hist(a, bins, density=True, alpha=0.5, label="real")
            ax.hist(b, bins, density=True, alpha=0.5, label="synthetic")
        else:
            levels, counts = np.unique(a, return_counts=True)
            top = levels[np.argsort(-counts)][:12]
            x = np.arange(len(top))
            ax.bar(x - 0.2, [np.mean(a == v) for v in top], 0.4, label="real")
            ax.bar(x + 0.2, [np.mean(b == v) for v in top], 0.4, label="synthetic")
            ax.set_xticks(x, [str(v)[:12] for v in top], rotation=60, fontsize=7)
        title = c.name if shapes is None else f"{c.name} ({shapes[c.name]:.3f})"
        ax.set_title(title, fontsize=9)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def _pair_heatmap(report: EvaluationReport) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report.column_shapes)[:40]
    index = {n: i for i, n in enumerate(names)}
    gap = np.full((len(names), len(names)), np.nan)
    for pair in report.pair_trends:
        a, b = pair["columns"]
        if a in index and b in index:
            gap[index[a], index[b]] = gap[index[b], index[a]] = 1 - pair["score"]
    figure, ax = plt.subplots(figsize=(1 + 0.3 * len(names), 0.8 + 0.3 * len(names)))
    image = ax.imshow(gap, cmap="Reds", vmin=0)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title("1 − pair trend score (0 = the pair's relation kept)", fontsize=9)
    figure.colorbar(image, ax=ax, shrink=0.7)
    return _png(figure)


def _html(report: EvaluationReport, figures: dict[str, bytes]) -> str:
    def rows(items) -> str:
        return "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>"
                       for k, v in items)

    images = "".join(f'<h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" '
                     f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                     for name, png in figures.items())
    worst = sorted(report.pair_trends, key=lambda p: p["score"])[:20]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Synthetic data report"
            "</title><style>body{font-family:sans-serif;margin:2em}td{padding:2px 12px}"
            "</style></head><body><h1>Synthetic data report</h1>"
            f"<p>{html.escape(report.summary_line())}</p>"
            f"<h2>Summary</h2><table>{rows(report.summary.items())}</table>"
            f"<h2>Column shapes</h2><table>{rows(report.column_shapes.items())}</table>"
            "<h2>Pair trends: the 20 worst pairs</h2><table>"
            f"{rows((' × '.join(p['columns']), p['score']) for p in worst)}</table>"
            f"{images}</body></html>")


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))
