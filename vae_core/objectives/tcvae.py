"""β-TCVAE (Chen et al. 2018): the KL split into three parts, each with its own weight.

Per row, log q(z|x) − log p(z) is

    index-code MI  = log q(z|x) − log q(z)
    total corr.    = log q(z) − Σ_d log q(z_d)
    dim-wise KL    = Σ_d log q(z_d) − log p(z)

and the loss replaces kl_weight · KL by kl_weight · (α·MI + β·TC + γ·dim-wise KL). It is
defined for one latent layer with the factorised prior p(z) = N(0, I) (VAEModule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Normal, kl_divergence

from vae_core.nn.vae import VAEModule
from vae_core.objectives.loss import LossOutput


def kl_decomposition(q: Normal, z: torch.Tensor, dataset_size: int, estimator: str = "mws"
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(MI, TC, dim-wise KL) per row, for z [rows, d] drawn from q(z|x) [rows, d].

    The aggregate posterior q(z) = 1/N Σ_n q(z|x_n) and its marginals q(z_d) are estimated
    on the batch as Σ_j w_ij q(z_i | x_j). Minibatch-weighted sampling ("mws") uses
    w_ij = 1/(B·N): simple, but biased (its weights sum to 1/N). The stratified variant
    ("mss") gives the row's own x_i weight 1/N and each of the B − 1 others
    (N − 1)/(N·(B − 1)), standing in for the rest of the data: weights sum to 1. Either way
    the three terms sum to the one-sample KL estimate exactly, so their expectation is
    KL(q(z|x) ‖ p(z)).
    """
    batch = z.shape[0]
    pairs = Normal(q.loc.unsqueeze(0), q.scale.unsqueeze(0)).log_prob(z.unsqueeze(1))
    log_w = _log_pair_weights(batch, dataset_size, estimator, z)  # [i, j]
    log_qz = torch.logsumexp(pairs.sum(-1) + log_w, dim=1)
    log_qz_product = torch.logsumexp(pairs + log_w.unsqueeze(-1), dim=1).sum(-1)
    log_qz_x = q.log_prob(z).sum(-1)
    log_pz = Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)
    return log_qz_x - log_qz, log_qz - log_qz_product, log_qz_product - log_pz


def _log_pair_weights(batch: int, n: int, estimator: str, like: torch.Tensor) -> torch.Tensor:
    if estimator == "mws":
        return torch.full((batch, batch), -math.log(batch * n), device=like.device)
    if estimator != "mss":
        raise ValueError(f"unknown estimator '{estimator}' (mws or mss)")
    if batch < 2:
        return torch.zeros((batch, batch), device=like.device)
    others = math.log((n - 1) / (n * (batch - 1)))  # the other N − 1 rows, stood in for
    log_w = torch.full((batch, batch), others, device=like.device)
    return log_w.fill_diagonal_(-math.log(n))


@dataclass(frozen=True)
class TCVAE:
    """``weights`` = (α, β, γ); ``dataset_size``: the N of the aggregate posterior (None:
    the batch's rows)."""

    weights: tuple[float, float, float]
    dataset_size: int | None = None
    estimator: str = "mss"

    def __call__(self, module: VAEModule, x: torch.Tensor, c: torch.Tensor,
                 kl_weight: float = 1.0) -> LossOutput:
        q, z = module.posterior_sample(x, c)
        reconstruction = -module.column_log_likelihood(x, z, c).sum(-1).mean()
        kl = kl_divergence(q, module.prior(z)).sum(-1).mean()
        terms = torch.stack([t.mean() for t in kl_decomposition(
            q, z, self.dataset_size or len(x), self.estimator)])
        penalty = (terms * terms.new_tensor(self.weights)).sum()
        return LossOutput(reconstruction + kl_weight * penalty, reconstruction.detach(),
                          kl.detach(), terms.detach())
