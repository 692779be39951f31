"""TabularVAE: the user-facing model (fit on a table, embed, score, sample, save, load).

Composes the schema, the statistics pass, the ColumnTransformer and the torch VAEModule,
in the spirit of scvi-tools' model/module split: this class knows about tables, the
module only about tensors.

    vae = TabularVAE(latent_dim=8, epochs=40, columns={"income": "condition"})
    vae = TabularVAE(preset="anomaly")         # the measured setting for a job (presets)
    vae.fit("train.parquet")                   # latent_layers=2: hierarchical (ladder) VAE
    z = vae.embed(table)                       # posterior means, [rows, embedding_dim]
    s = vae.score(table)                       # elbo, log_px, percentile, is_anomaly, ...
    synthetic = vae.sample(1000, conditions={"income": ">50K"}, seed=0)
    vae.save("model/"); vae = TabularVAE.load("model/")
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from vae_core import evaluation
from vae_core.artifact import read_model_folder, write_model_folder
from vae_core.calibration import Calibration
from vae_core.conditions import condition_rows, split_conditions
from vae_core.config import (
    ModelConfig,
    TrainConfig,
    changed_fields,
    check_compatible,
    split_options,
)
from vae_core.constrained_sampling import sample_constrained
from vae_core.data.schema import infer_schema
from vae_core.data.statistics import TableStatistics
from vae_core.data.tables import TableLike, as_table
from vae_core.data.transform import ColumnTransformer, EncodedTable
from vae_core.errors import DataError, ModelFormatError
from vae_core.nn import LatentVariableModule, build_module
from vae_core.presets import PresetChoice, TableShape, apply_preset, check_preset
from vae_core.row_streams import blockwise, segment_noise
from vae_core.score_table import score_table
from vae_core.training import EpochReport, fit_module, holdout_mask

INFERENCE_BATCH_ROWS = 8192
CALIBRATION_ROWS = 20_000  # quantiles up to the 99.9th are stable with this many rows
SAMPLE_CHUNK_ROWS = 65536  # rows decoded back to Arrow at once
NOISE_BLOCK_ROWS = 256  # IWAE noise is drawn per block of rows (see row_streams)
SAMPLE_BLOCK_ROWS = 1024  # generated rows likewise


class TabularVAE:
    def __init__(self, model_config: ModelConfig | None = None,
                 train_config: TrainConfig | None = None, preset: str | None = None,
                 **options) -> None:
        """Options are any field of ModelConfig or TrainConfig, e.g. ``latent_dim=16``.

        ``preset`` ("synthesis", "anomaly", "embedding"; vae_core.presets) fills, at
        ``fit``, every key the caller did not set: the options given here, and the fields
        of ``model_config`` / ``train_config`` that differ from their defaults.
        """
        model_opts, train_opts = split_options(options)
        self.model_config = ModelConfig.from_dict({**(model_config or ModelConfig()).to_dict(),
                                                   **model_opts})
        self.train_config = TrainConfig.from_dict({**(train_config or TrainConfig()).to_dict(),
                                                   **train_opts})
        check_compatible(self.model_config, self.train_config)
        self.preset_name = check_preset(preset)
        # The configs before any preset, and the keys the caller set: a second fit
        # resolves the preset again, for that table's shape.
        self._chosen = (self.model_config, self.train_config)
        self._set_keys = (frozenset(options) | changed_fields(model_config)
                          | changed_fields(train_config))
        self.preset: PresetChoice | None = None
        self.transformer: ColumnTransformer | None = None
        self.module: LatentVariableModule | None = None
        self.calibration: Calibration | None = None
        self.history: list[EpochReport] = []

    @classmethod
    def from_parts(cls, transformer: ColumnTransformer, module: LatentVariableModule,
                   model_config: ModelConfig, train_config: TrainConfig,
                   calibration: Calibration | None = None,
                   history: list[EpochReport] | None = None,
                   preset: PresetChoice | None = None) -> TabularVAE:
        """Assemble a model trained elsewhere (e.g. by a Ray Train worker); ``preset``: the
        choice the configs were resolved with (already applied to them)."""
        vae = cls(model_config, train_config)
        vae.transformer, vae.module = transformer, module
        vae.calibration, vae.history = calibration, list(history or [])
        vae.preset, vae.preset_name = preset, preset.name if preset else None
        return vae

    def _apply_preset(self, shape: TableShape) -> None:
        """Resolve the preset for this table's shape over the configs the caller chose."""
        self.model_config, self.train_config, self.preset = apply_preset(
            self.preset_name, shape, *self._chosen, self._set_keys)

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, data: TableLike, progress: Callable[[EpochReport], None] | None = None,
            device: str | torch.device = "cpu") -> TabularVAE:
        """Fit on a table, DataFrame, records or Parquet path; calibrates on held-out rows.

        ``device="cuda"`` trains on a GPU; the saved model still loads on a CPU-only machine.
        """
        table = as_table(data)
        if table.num_rows == 0:
            raise DataError("the table is empty: no rows to fit on")
        schema = infer_schema(table.schema, self.model_config.columns)
        stats = TableStatistics.of(schema, table)
        if self.preset_name:
            self._apply_preset(TableShape.of(schema, stats))
        self.transformer = ColumnTransformer.for_model(schema, stats, self.model_config)
        enc = self.transformer.transform(table)
        cfg = self.train_config
        is_val = holdout_mask(enc.x, cfg.validation_fraction if table.num_rows >= 20 else 0.0,
                              cfg.seed)
        val, train = np.flatnonzero(is_val), np.flatnonzero(~is_val)
        n_val = len(val)
        torch.manual_seed(cfg.seed)
        self.module = build_module(self.transformer, self.model_config).to(device)
        self.history = fit_module(self.module, enc.x[train], enc.c[train], enc.x[val],
                                  enc.c[val], cfg, progress)
        held_out = (val if n_val else train)[:CALIBRATION_ROWS]  # hash-chosen: no order bias
        self.calibrate(EncodedTable(enc.x[held_out], enc.c[held_out], enc.unseen[held_out]))
        return self

    def calibrate(self, data: TableLike | EncodedTable, threshold_quantile: float = 0.99) -> None:
        """Set the anomaly threshold from rows believed normal (held-out rows after fit)."""
        enc = data if isinstance(data, EncodedTable) else self._encode(data)
        log_px, _, _ = self._importance(enc, self.train_config.iwae_samples,
                                        [(len(enc.x), 0)])
        self.calibration = Calibration.fit(-log_px, threshold_quantile)

    # -- inference -------------------------------------------------------------------------
    def _require_fitted(self) -> tuple[ColumnTransformer, LatentVariableModule]:
        if self.transformer is None or self.module is None:
            raise RuntimeError("the model is not fitted: call fit() or TabularVAE.load()")
        return self.transformer, self.module

    def _encode(self, data: TableLike) -> EncodedTable:
        transformer, _ = self._require_fitted()
        table = as_table(data)
        if table.num_rows == 0:
            raise DataError("the table is empty: no rows to process")
        return transformer.transform(table)

    @property
    def embedding_dim(self) -> int:
        return self._require_fitted()[1].embedding_dim

    @property
    def device(self) -> torch.device:
        return next(self._require_fitted()[1].parameters()).device

    def to(self, device: str | torch.device) -> TabularVAE:
        self._require_fitted()[1].to(device)
        return self

    def _batches(self, enc: EncodedTable):
        for start in range(0, len(enc.x), INFERENCE_BATCH_ROWS):
            end = start + INFERENCE_BATCH_ROWS
            yield (torch.from_numpy(enc.x[start:end]).to(self.device),
                   torch.from_numpy(enc.c[start:end]).to(self.device))

    @torch.inference_mode()
    def embed(self, data: TableLike, return_std: bool = False, all_layers: bool = False
              ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Posterior means μ(x) as float32 [rows, embedding_dim] (and σ(x) with ``return_std``).

        The embedding is the posterior of the latent layer furthest from the data: z for a
        VAE, the top layer z₂ for the hierarchical one. ``all_layers`` concatenates every
        layer's, top first (hierarchical: z₂ then z₁ given z₂'s mean).
        """
        _, module = self._require_fitted()
        mus, sigmas = [], []
        for x, c in self._batches(self._encode(data)):
            layers = module.layer_posteriors(x, c) if all_layers else [module.posterior(x, c)]
            mus.append(torch.cat([q.loc for q in layers], -1).float().cpu().numpy())
            sigmas.append(torch.cat([q.scale for q in layers], -1).float().cpu().numpy())
        mu = np.concatenate(mus)
        return (mu, np.concatenate(sigmas)) if return_std else mu

    @torch.inference_mode()
    def reconstruct(self, data: TableLike) -> pa.Table:
        """Each row passed through the model: decoded at its posterior mean, every column at
        its most likely value (numbers: the decoder's mean). Same schema as ``sample``."""
        transformer, module = self._require_fitted()
        enc = self._encode(data)
        parts = []
        for x, c in self._batches(enc):
            rebuilt = module.generate(module.posterior_code(x, c), c, None, most_likely=True)
            parts.append(transformer.inverse(rebuilt.double().cpu().numpy(),
                                             c.double().cpu().numpy(), generated=True))
        return pa.concat_tables(parts)

    @torch.inference_mode()
    def _importance(self, enc: EncodedTable, k: int, segments: Sequence[tuple[int, ...]]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(log p̂(x) by IWAE, ELBO by the mean log-weight, per-column −log p(x_col|z))."""
        _, module = self._require_fitted()
        if sum(seg[0] for seg in segments) != len(enc.x):
            raise ValueError(f"segments cover {sum(seg[0] for seg in segments)} rows, the table "
                             f"has {len(enc.x)}")
        log_px, elbo, nll = [], [], []
        offset, pending = 0, []

        def forward() -> None:
            nonlocal offset
            eps = torch.cat(pending, dim=1)
            end = offset + eps.shape[1]
            x = torch.from_numpy(enc.x[offset:end]).to(self.device)
            c = torch.from_numpy(enc.c[offset:end]).to(self.device)
            log_w, column_ll = module.importance_weights(x, c, k, eps=eps)
            log_px.append((torch.logsumexp(log_w, 0) - math.log(k)).double().cpu().numpy())
            elbo.append(log_w.mean(0).double().cpu().numpy())
            nll.append((-column_ll).float().cpu().numpy())
            offset, pending[:] = end, []

        noise = segment_noise(segments, k, module.noise_dim, self.device, _rows_per_pass(k),
                              NOISE_BLOCK_ROWS)
        for piece in noise:  # merge small segments into one forward pass
            if pending and sum(p.shape[1] for p in pending) + piece.shape[1] > _rows_per_pass(k):
                forward()
            pending.append(piece)
        if pending:
            forward()
        return np.concatenate(log_px), np.concatenate(elbo), np.concatenate(nll)

    def score(self, data: TableLike, iwae_samples: int | None = None, seed: int = 0,
              top_k: int = 3, per_column: bool = False,
              segments: Sequence[tuple[int, ...]] | None = None) -> pa.Table:
        """Per-row anomaly scores, as an Arrow table (id columns first when the input has them):

        * ``elbo``: the evidence lower bound (K-sample mean of log-weights, β = 1);
        * ``log_px``: the IWAE estimate of log p(x) with K = ``iwae_samples`` (≥ ``elbo``);
        * ``score`` = −log_px (higher = more anomalous); ``percentile`` of that score among
          the held-out calibration rows; ``is_anomaly`` = score above the calibrated threshold;
        * ``top_columns``: the ``top_k`` columns with the largest −log p(x_col|z);
        * ``unseen_categories``: how many columns hold a category never seen in training;
        * with ``per_column``, ``nll_<column>`` for every modelled column.
        Deterministic for a given ``seed``. ``segments``, a list of (rows, seed) covering the
        table, scores concatenated requests in one pass: each segment's rows get exactly the
        result that scoring them alone with their seed would give. A segment (rows, seed,
        start) continues a longer table: its rows score as rows start..start+rows of that
        table scored with that seed would (batch jobs score a file in pieces this way).
        """
        transformer, _ = self._require_fitted()
        table = as_table(data)
        enc = self._encode(table)
        k = iwae_samples or self.train_config.iwae_samples
        log_px, elbo, nll = self._importance(enc, k, segments or [(len(enc.x), seed)])
        return score_table(transformer, table, log_px, elbo, nll, enc.unseen,
                           self.calibration, top_k, per_column)

    def sample(self, n: int, conditions: TableLike | Mapping | None = None,
               seed: int | None = None, start: int = 0,
               max_draws: int | None = None) -> pa.Table:
        """n synthetic rows with the training table's columns and dtypes.

        ``conditions``: a mapping applied to every row, ``{column: value | [values] |
        {">=": low, "<": high}}`` for any modelled column (vae_core.conditions; columns
        that are not declared conditions are met by truncation and rejection, see
        vae_core.constrained_sampling); or, for a CVAE, a table of n rows of its condition
        columns (or one row, repeated). Without it a conditional model draws conditions
        from their training marginals. Id and ignored columns come back null.
        ``max_draws`` bounds the rows such conditions may draw (a server's budget).
        The rows are rows start..start+n of the seed's stream, so that
        ``sample(a + b, seed=s)`` equals ``sample(a, seed=s)`` followed by
        ``sample(b, seed=s, start=a)`` (with the matching condition rows): batch jobs
        generate in chunks on many workers and get what one call would give.
        """
        transformer, module = self._require_fitted()
        if n < 0 or start < 0:
            raise ValueError("n and start must be ≥ 0")
        seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else seed
        if isinstance(conditions, Mapping) and not conditions:
            conditions = None
        if isinstance(conditions, Mapping):
            fixed, constraints = split_conditions(transformer, conditions)
            if constraints or len(fixed) < len(transformer.schema.conditions):
                return sample_constrained(module, transformer, constraints, fixed, n, seed,
                                          start, self.device, max_draws)
            conditions = fixed
        given = condition_rows(transformer, n, conditions)
        used = 0

        @torch.inference_mode()
        def draw(block_seed: int, block_rows: int, wanted: slice) -> tuple[np.ndarray, ...]:
            nonlocal used
            if given is None:
                c = transformer.draw_conditions(block_rows, np.random.default_rng(block_seed))
            else:  # rows outside `wanted` only fill the block's shape; their draws are dropped
                c = np.zeros((block_rows, transformer.c_dim))
                c[wanted] = given[used:used + wanted.stop - wanted.start]
                used += wanted.stop - wanted.start
            gen = torch.Generator(device=self.device).manual_seed(block_seed)
            cb = torch.from_numpy(c).float().to(self.device)
            x = module.sample(block_rows, cb, gen, self.device)[wanted]
            return x.double().cpu().numpy(), c[wanted]

        parts, xs, cs = [], [], []

        def decode() -> None:  # Arrow columns are built SAMPLE_CHUNK_ROWS at a time
            parts.append(transformer.inverse(np.concatenate(xs), np.concatenate(cs),
                                             generated=True))
            xs.clear()
            cs.clear()

        for x, c in blockwise(seed, start, n, SAMPLE_BLOCK_ROWS, draw):
            xs.append(x)
            cs.append(c)
            if sum(map(len, xs)) >= SAMPLE_CHUNK_ROWS:
                decode()
        if xs:
            decode()
        if not parts:
            return transformer.inverse(np.zeros((0, transformer.x_dim)),
                                       np.zeros((0, transformer.c_dim)))
        return pa.concat_tables(parts)

    def evaluate(self, real: TableLike, synthetic: TableLike | None = None,
                 holdout: TableLike | None = None, target: str | None = None,
                 seed: int = 0) -> evaluation.EvaluationReport:
        """How good ``synthetic`` rows (default: as many as ``real`` has, sampled with
        ``seed``) are against ``real`` ones: see vae_core.evaluation."""
        transformer, _ = self._require_fitted()
        real = as_table(real)
        synthetic = self.sample(real.num_rows, seed=seed) if synthetic is None else \
            as_table(synthetic)
        return evaluation.evaluate(real, synthetic, transformer.schema,
                                   None if holdout is None else as_table(holdout), target, seed)

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        transformer, module = self._require_fitted()
        meta = {
            "model_config": self.model_config.to_dict(),
            "train_config": self.train_config.to_dict(),
            "transformer": transformer.to_dict(),
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "preset": self.preset.to_dict() if self.preset else None,
            "history": [h.to_dict() for h in self.history],
        }
        return write_model_folder(path, meta, module.state_dict())

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> TabularVAE:
        meta, state = read_model_folder(path, map_location=device)
        try:
            vae = cls(ModelConfig.from_dict(meta["model_config"]),
                      TrainConfig.from_dict(meta["train_config"]))
            vae.transformer = ColumnTransformer.from_dict(meta["transformer"])
            vae.module = build_module(vae.transformer, vae.model_config)
            vae.module.load_state_dict(state)
            vae.calibration = (Calibration.from_dict(meta["calibration"])
                               if meta.get("calibration") else None)
            vae.history = [EpochReport(**h) for h in meta.get("history", [])]
            if meta.get("preset"):
                vae.preset = PresetChoice.from_dict(meta["preset"])
                vae.preset_name = vae.preset.name
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ModelFormatError(f"{path}: inconsistent model folder ({e})", str(path)) from e
        vae.module.to(device).eval()
        return vae


def _rows_per_pass(k: int) -> int:
    """Rows per forward pass with k samples each: ~32 × 8192 noise draws held at once."""
    return max(1, INFERENCE_BATCH_ROWS * 32 // max(k, 32))
