"""The ELBO training loss: −(E_q log p(x|z) − kl_weight · KL), a batch mean.

``free_bits`` (nats per latent dimension, batch-averaged, Kingma et al. 2016) stops the
optimiser from pushing a dimension's KL below that floor, against posterior collapse. It
changes the loss only; the reported KL is the true one.

``trim_fraction`` leaves the rows with the worst loss out of the mean (a trimmed likelihood
estimator): rows the model finds least likely, anomalies in the training data among them,
then do not pull the model towards them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vae_core.nn.latent import LatentVariableModule
from vae_core.objectives.loss import LossOutput


@dataclass(frozen=True)
class ELBO:
    free_bits: float = 0.0
    trim_fraction: float = 0.0

    def __call__(self, module: LatentVariableModule, x: torch.Tensor, c: torch.Tensor,
                 kl_weight: float = 1.0) -> LossOutput:
        log_px_z, kl = module.elbo_terms(x, c)
        reconstruction_per_row = -log_px_z.sum(-1)
        kept = slice(None)
        if self.trim_fraction > 0:
            keep = max(1, round(len(x) * (1 - self.trim_fraction)))
            kept = torch.topk(reconstruction_per_row + kl_weight * kl.sum(-1), keep,
                              largest=False).indices
        reconstruction = reconstruction_per_row[kept].mean()
        kl_per_dim = kl[kept].mean(0)
        kl_penalty = (kl_per_dim.clamp(min=self.free_bits).sum() if self.free_bits > 0
                      else kl_per_dim.sum())
        return LossOutput(reconstruction + kl_weight * kl_penalty, reconstruction.detach(),
                          kl_per_dim.sum().detach())
