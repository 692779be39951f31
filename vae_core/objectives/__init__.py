"""The training objectives, each configured once and then called as
``objective(module, x, c, kl_weight) -> LossOutput``:

    elbo       ELBO with free bits and trimming (VAE, β-VAE, CVAE, the ladder VAE)
    tcvae      β-TCVAE: the KL split into MI, TC and dimension-wise KL
    distances  the distance stress that makes embeddings keep distances between rows
    loss       LossOutput, and TrainingModule: what DDP wraps

    objective = objective_for(train_cfg, dataset_size)
    model = TrainingModule(module, objective)      # model(x, c, kl_weight).loss.backward()
"""

from __future__ import annotations

from vae_core.config import TrainConfig
from vae_core.objectives.distances import WithDistanceStress, row_moments
from vae_core.objectives.elbo import ELBO
from vae_core.objectives.loss import LossOutput, Objective, TrainingModule
from vae_core.objectives.tcvae import TCVAE, kl_decomposition


def objective_for(cfg: TrainConfig, dataset_size: int | None = None) -> Objective:
    """The loss TrainConfig asks for; ``dataset_size`` is β-TCVAE's N (the training rows)."""
    objective: Objective = (
        TCVAE(cfg.tc_weights, dataset_size, cfg.tc_estimator) if cfg.tc_weights is not None
        else ELBO(cfg.free_bits, cfg.trim_fraction))
    if cfg.distance_weight == 0:
        return objective
    return WithDistanceStress(objective, cfg.distance_weight, cfg.distance_rest_share)


__all__ = ["ELBO", "TCVAE", "LossOutput", "Objective", "TrainingModule", "WithDistanceStress",
           "kl_decomposition", "objective_for", "row_moments"]
