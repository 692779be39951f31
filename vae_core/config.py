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


def _one_of(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key} '{value}' is not one of {', '.join(choices)}")


def _field(default, help: str):
    """A field with its help text (read by the CLI's flag builder, with the default)."""
    return field(default=default, metadata={"help": help})


DECODERS = ("factorized", "autoregressive")
NUMERIC_TRANSFORMS = ("quantile", "standard", "pooled")
DECODER_SCALES = ("row", "column", "shared")
ZERO_ONE_COLUMNS = ("numeric", "binary")
ENCODERS = ("mlp", "linear", "mlp+linear")


@dataclass(frozen=True)
class ModelConfig:
    """The model's shape. Each field's ``help`` is also the help of its ``vae train`` flag."""

    latent_dim: int = _field(8, "dimensions of the latent code z (with latent_layers 2: "
                             "z₁'s, the layer next to the data)")
    hidden: tuple[int, ...] = _field((128, 128), "hidden layer widths of encoder and "
                                     "decoder, units per layer, e.g. 128,128")
    encoder: str = _field("mlp", "mlp: q(z|x)'s mean and log-variance from the hidden "
                          "layers; linear: affine in the encoded row, the decoder still an MLP "
                          "(a projection keeps a tight group of rows tight, as PCA does: the "
                          "embedding preset's choice below d = 8); mlp+linear: the MLP's mean "
                          "plus an affine map of the row, which a fit with exact stress "
                          "directions starts at PCA's projection; linear and mlp+linear: "
                          "latent_layers 1 only")
    latent_layers: int = _field(1, "1: VAE; 2: hierarchical VAE z₂ → z₁ → x with ladder "
                                "inference, embeddings then from the top layer")
    top_latent_dim: int = _field(4, "dimensions of the top layer z₂ (latent_layers 2 only)")
    decoder: str = _field("factorized", "factorized: columns independent given z; "
                          "autoregressive: column j also reads the columns before it (sharper "
                          "relations in generated rows, one decoder pass per column to sample)")
    min_scale: float = _field(0.01, "floor of the decoder's Gaussian σ, in normalised units")
    decoder_scale: str = _field("row", "σ of numeric columns: row (a decoder output per row), "
                                "column (one learned σ per column), shared (one σ for every "
                                "numeric column, as in probabilistic PCA: embeddings)")
    max_categories: int = _field(100, "categories kept per column; rarer ones share an "
                                 "'other' slot")
    max_knots: int = _field(512, "knots of the quantile→normal map per numeric column")
    zero_one_columns: str = _field("numeric", "float columns whose values are all 0 or 1 "
                                   "(one-hot, dummy columns): numeric (modelled as numbers) or "
                                   "binary (as flags, a Bernoulli head); integer columns and "
                                   "columns named in columns keep their kind")
    numeric_transform: str = _field("quantile", "quantile (quantile→normal with atoms: "
                                    "generation, embeddings), standard ((x − mean) / std: "
                                    "anomalies on contaminated data), pooled ((x − mean) / s, "
                                    "one s for all numeric columns in one unit)")
    columns: Mapping[str, str] = field(default_factory=dict, metadata={
        "help": "schema overrides, column name → kind"})

    def __post_init__(self) -> None:
        if self.latent_layers not in (1, 2):
            raise ValueError(f"latent_layers must be 1 or 2, not {self.latent_layers}")
        if self.latent_dim < 1 or self.top_latent_dim < 1:
            raise ValueError("latent_dim and top_latent_dim must be ≥ 1")
        _one_of("numeric_transform", self.numeric_transform, NUMERIC_TRANSFORMS)
        _one_of("decoder_scale", self.decoder_scale, DECODER_SCALES)
        _one_of("decoder", self.decoder, DECODERS)
        _one_of("zero_one_columns", self.zero_one_columns, ZERO_ONE_COLUMNS)
        _one_of("encoder", self.encoder, ENCODERS)
        if self.encoder != "mlp" and self.latent_layers != 1:
            raise ValueError(f"encoder '{self.encoder}' needs latent_layers 1 (the ladder's "
                             "top-down inference reads the hidden layers)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"], d["columns"] = list(self.hidden), dict(self.columns)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> ModelConfig:
        return _from_dict(cls, {**d, "columns": dict(d.get("columns", {}))}, "model")


OBJECTIVES = ("elbo", "tcvae")
DISTANCE_DIRECTIONS = ("tracked", "exact")


@dataclass(frozen=True)
class TrainConfig:
    """How a fit runs. Each field's ``help`` is also the help of its ``vae train`` flag."""

    epochs: int = _field(40, "passes over the training rows (at most: early stopping may "
                         "end sooner)")
    batch_size: int = _field(256, "rows per optimiser step")
    learning_rate: float = _field(2e-3, "AdamW step size at the start (cosine decay to 5 % "
                                  "of it over the epochs)")
    weight_decay: float = _field(0.0, "AdamW decoupled weight decay")
    grad_clip: float = _field(10.0, "max global gradient norm; 0 disables")
    beta: float = _field(1.0, "weight of the KL term (β-VAE when ≠ 1)")
    kl_warmup_epochs: int = _field(5, "epochs over which the KL weight rises linearly from 0 "
                                   "to beta")
    free_bits: float = _field(0.0, "nats per latent dimension below which KL is not "
                              "penalised; 0 disables")
    trim_fraction: float = _field(0.0, "share of each batch (the rows with the lowest ELBO) "
                                  "left out of the loss, in [0, 0.5): set it to the expected "
                                  "contamination for anomaly detection on data that holds "
                                  "anomalies")
    distance_weight: float = _field(0.0, "weight of the distance stress in the loss: > 0 "
                                    "makes distances in the embedding follow distances "
                                    "between rows")
    distance_rest_share: float = _field(1.0, "the stress's target: squared distance along "
                                        "the rows' top latent_dim principal directions "
                                        "(see distance_directions) plus this share of the "
                                        "rest, in [0, 1] (1: the rows' distances, 0: PCA's)")
    distance_directions: str = _field("tracked", "how the stress finds those directions "
                                      "(distance_rest_share < 1): tracked (block power "
                                      "iteration over the training batches) or exact (the "
                                      "eigenvectors of the covariance of the rows the fit "
                                      "trains and validates on, from one pass before "
                                      "training: a (width + 1)² float64 matrix per worker); "
                                      "ignored without a stress")
    validation_fraction: float = _field(0.1, "share of rows held out for validation, "
                                        "early stopping and calibration")
    early_stopping_patience: int = _field(10, "epochs without gain of the validation "
                                          "objective before stopping; 0 disables")
    seed: int = _field(0, "random seed of initialisation, split and shuffling")
    iwae_samples: int = _field(16, "K, importance samples per row for log p(x) in scoring "
                               "and calibration")
    objective: str = _field("elbo", "elbo (VAE / β-VAE) or tcvae (β-TCVAE: the KL split into "
                            "mutual information, total correlation and dimension-wise KL)")
    tc_alpha: float = _field(1.0, "tcvae: weight of the index-code mutual information")
    tc_beta: float = _field(2.0, "tcvae: weight of the total correlation (Chen et al. use 6 "
                            "on images; 1.5–2 did best on our factor table)")
    tc_gamma: float = _field(1.0, "tcvae: weight of the dimension-wise KL")
    tc_estimator: str = _field("mss", "tcvae: estimator of the aggregate posterior, mss "
                               "(stratified) or mws")

    def __post_init__(self) -> None:
        _one_of("objective", self.objective, OBJECTIVES)
        _one_of("distance_directions", self.distance_directions, DISTANCE_DIRECTIONS)
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), not {self.trim_fraction}")
        if not 0.0 <= self.distance_weight < math.inf:
            raise ValueError(f"distance_weight must be a number ≥ 0, not {self.distance_weight}")
        if not 0.0 <= self.distance_rest_share <= 1.0:
            raise ValueError("distance_rest_share must be in [0, 1], not "
                             f"{self.distance_rest_share}")
        if self.tc_estimator not in ("mws", "mss"):
            raise ValueError(f"tc_estimator '{self.tc_estimator}' is not mws or mss")

    @property
    def tc_weights(self) -> tuple[float, float, float] | None:
        return ((self.tc_alpha, self.tc_beta, self.tc_gamma) if self.objective == "tcvae"
                else None)

    @property
    def exact_directions(self) -> bool:
        """Whether the fit must hand the objective its rows' moments before training."""
        return (self.distance_weight > 0 and self.distance_rest_share < 1
                and self.distance_directions == "exact")

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


def split_options(options: Mapping) -> tuple[dict, dict]:
    """Keyword options (any ModelConfig or TrainConfig field) as (model keys, train keys)."""
    model_keys = {f.name for f in fields(ModelConfig)}
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(options) - model_keys - train_keys)
    if unknown:
        raise TypeError(f"unknown option '{unknown[0]}'")
    return ({k: v for k, v in options.items() if k in model_keys},
            {k: v for k, v in options.items() if k in train_keys})


def changed_fields(config: ModelConfig | TrainConfig | None) -> set[str]:
    """Fields of a config object that differ from their defaults: the keys it sets."""
    if config is None:
        return set()
    default = type(config)()
    return {f.name for f in fields(config) if getattr(config, f.name) != getattr(default, f.name)}
