"""Configuration of a model (its shape) and of a fit (how it is trained).

Plain dataclasses that round-trip through JSON; the job configs of ``pipelines`` are
built from the same fields, so a key means the same thing in a YAML file and in Python.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields


def _from_dict(cls, d: Mapping, what: str):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {what} key '{unknown[0]}' (known: {', '.join(sorted(names))})")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**kwargs)


DECODERS = ("factorized", "autoregressive")
NUMERIC_TRANSFORMS = ("quantile", "standard", "pooled")
DECODER_SCALES = ("row", "column", "shared")


@dataclass(frozen=True)
class ModelConfig:
    latent_dim: int = 8  # with latent_layers = 2: z₁'s, the layer next to the data
    hidden: tuple[int, ...] = (128, 128)
    # 1: VAE. 2: hierarchical VAE, z₂ → z₁ → x with ladder inference (vae_core.ladder);
    # embeddings are then the top layer's, top_latent_dim wide.
    latent_layers: int = 1
    top_latent_dim: int = 4
    # "factorized": columns independent given z. "autoregressive": column j also sees the
    # columns before it (vae_core.autoregressive): sharper relations between columns in
    # generated rows and scores, at one decoder pass per column when sampling.
    decoder: str = "factorized"
    min_scale: float = 0.01  # floor of the decoder's Gaussian σ, in normalised units
    # "row": σ of a numeric column is a decoder output, row by row. "column": one learned σ
    # per column (homoscedastic), so that no row is explained away by a wide Gaussian.
    # "shared": one σ for every numeric column, isotropic noise as in probabilistic PCA,
    # so the likelihood weighs an error in z the same in every column (embeddings).
    decoder_scale: str = "row"
    max_categories: int = 100  # per column; rarer categories share an "other" slot
    max_knots: int = 512  # of the quantile→normal map
    # "quantile": quantile→normal with atoms (exact marginals: for generation, embeddings).
    # "standard": (x − mean) / std, which keeps how far out a value lies (for anomaly
    # detection on contaminated data; vae_core.standard_map). "pooled": (x − mean) / s with
    # one s for every numeric column, for columns in one unit (pixels, sensor channels):
    # z keeps the table's own distances.
    numeric_transform: str = "quantile"
    columns: Mapping[str, str] = field(default_factory=dict)  # schema overrides

    def __post_init__(self) -> None:
        if self.latent_layers not in (1, 2):
            raise ValueError(f"latent_layers must be 1 or 2, not {self.latent_layers}")
        if self.latent_dim < 1 or self.top_latent_dim < 1:
            raise ValueError("latent_dim and top_latent_dim must be ≥ 1")
        if self.numeric_transform not in NUMERIC_TRANSFORMS:
            raise ValueError(f"numeric_transform '{self.numeric_transform}' is not one of "
                             f"{', '.join(NUMERIC_TRANSFORMS)}")
        if self.decoder_scale not in DECODER_SCALES:
            raise ValueError(f"decoder_scale '{self.decoder_scale}' is not one of "
                             f"{', '.join(DECODER_SCALES)}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder '{self.decoder}' is not one of {', '.join(DECODERS)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"], d["columns"] = list(self.hidden), dict(self.columns)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> ModelConfig:
        return _from_dict(cls, {**d, "columns": dict(d.get("columns", {}))}, "model")


OBJECTIVES = ("elbo", "tcvae")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    grad_clip: float = 10.0  # max global gradient norm; 0 disables
    beta: float = 1.0  # weight of the KL term (β-VAE when ≠ 1)
    kl_warmup_epochs: int = 5  # KL weight rises linearly from 0 to β over these epochs
    free_bits: float = 0.0  # nats per latent dimension (0 disables)
    # Share of each batch, the rows with the lowest ELBO, left out of the loss (a trimmed
    # likelihood): set it to the expected contamination when training an anomaly detector
    # on data that holds anomalies, so that the model does not learn them as normal.
    trim_fraction: float = 0.0
    # Weight of the distance stress (vae_core.distances) in the loss: > 0 makes distances in
    # the embedding follow distances between rows (README, "Settings for each job").
    distance_weight: float = 0.0
    validation_fraction: float = 0.1
    early_stopping_patience: int = 10  # epochs without validation objective gain; 0 disables
    seed: int = 0
    iwae_samples: int = 16  # K for log p(x) in scoring and calibration
    # "elbo": VAE / β-VAE. "tcvae": β-TCVAE, the KL split into index-code mutual information,
    # total correlation and dimension-wise KL, weighted by tc_alpha, tc_beta, tc_gamma (and
    # all three by the warm-up ramp and beta).
    objective: str = "elbo"
    tc_alpha: float = 1.0
    tc_beta: float = 2.0  # Chen et al. use 6 on images; 1.5–2 did best on our factor table
    tc_gamma: float = 1.0
    tc_estimator: str = "mss"  # of the aggregate posterior: "mss" (stratified) or "mws"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective '{self.objective}' is not one of "
                             f"{', '.join(OBJECTIVES)}")
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), not {self.trim_fraction}")
        if not 0.0 <= self.distance_weight < math.inf:
            raise ValueError(f"distance_weight must be a number ≥ 0, not {self.distance_weight}")
        if self.tc_estimator not in ("mws", "mss"):
            raise ValueError(f"tc_estimator '{self.tc_estimator}' is not mws or mss")

    @property
    def tc_weights(self) -> tuple[float, float, float] | None:
        return ((self.tc_alpha, self.tc_beta, self.tc_gamma) if self.objective == "tcvae"
                else None)

    def kl_weight(self, epoch: float) -> float:
        if self.kl_warmup_epochs <= 0:
            return self.beta
        return self.beta * min(1.0, epoch / self.kl_warmup_epochs)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainConfig:
        return _from_dict(cls, d, "training")


def check_compatible(model: ModelConfig, train: TrainConfig) -> None:
    """Combinations each config alone cannot rule out."""
    if train.objective == "tcvae" and train.trim_fraction > 0:
        raise ValueError("trim_fraction applies to the ELBO objective, not 'tcvae'")
    if train.objective == "tcvae" and model.latent_layers != 1:
        raise ValueError("objective 'tcvae' needs latent_layers = 1 (β-TCVAE's split of the KL "
                         "is defined for one layer with a factorised prior)")
