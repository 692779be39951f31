"""A two-layer hierarchical VAE with ladder-style inference, as a torch module.

Names follow the math:
    generative   p(z₂) = N(0, I)
                 p(z₁ | z₂) = N(μ_p(z₂), diag σ_p²(z₂))        the conditional prior
                 p(x | z₁, z₂, c) = Π_columns p(x_col | ·)      the same heads as VAEModule
    inference    one bottom-up pass  h₁ = f₁(x, c),  h₂ = f₂(h₁)
                 q(z₂ | x) = N(μ₂(h₂), diag σ₂²(h₂))
                 q(z₁ | x, z₂) = N(μ₁(h₁, z₂), diag σ₁²(h₁, z₂))   top-down: the bottom-up
                 features of x merged with the sampled z₂
    elbo         E_q[log p(x|z₁,z₂)] − KL(q(z₂|x) ‖ p(z₂)) − E_q(z₂)[KL(q(z₁|x,z₂) ‖ p(z₁|z₂))]
    iwae_K       log (1/K) Σ_k p(x|z₁ₖ,z₂ₖ) p(z₁ₖ|z₂ₖ) p(z₂ₖ) / (q(z₁ₖ|x,z₂ₖ) q(z₂ₖ|x))

Two choices differ from the original Ladder VAE (Sønderby et al. 2016), both measured on
Adult (benchmarks/RESULTS.md): its precision-weighted q(z₁|x,z₂) (bottom-up evidence times
p(z₁|z₂)) and a decoder reading z₁ only left z₁ nearly unused and lost ~1 nat per row to
the one-layer VAE. Merging h₁ with z₂ by a network (the top-down inference of Kingma et al.
2016 and NVAE) and letting the decoder read both layers (as BIVA and NVAE do) won.

Embeddings are read from the top layer, q(z₂ | x): the more abstract code (or from both
layers, ``layer_posteriors``). The importance noise of one sample is [ε₂, ε₁] (top first),
noise_dim = d₂ + d₁, so the row-keyed noise streams of the model class (exact scores in
pieces, merged requests) apply unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from vae_core.data.transform import Span
from vae_core.nn.blocks import gaussian_head, mlp, standard_normal
from vae_core.nn.latent import LatentVariableModule
from vae_core.nn.likelihood import ColumnLikelihood


class LadderVAEModule(LatentVariableModule):
    """z₂ → z₁ → x, with bottom-up then top-down inference."""

    def __init__(self, spans: list[Span], x_dim: int, c_dim: int = 0, latent_dim: int = 8,
                 top_latent_dim: int = 4, hidden: tuple[int, ...] = (256, 256),
                 min_scale: float = 0.01, autoregressive: bool = False,
                 decoder_scale: str = "row") -> None:
        super().__init__()
        self.x_dim, self.c_dim = x_dim, c_dim
        self.latent_dim, self.top_latent_dim = latent_dim, top_latent_dim
        self.noise_dim = top_latent_dim + latent_dim
        self.embedding_dim = top_latent_dim
        width = hidden[-1]
        self.likelihood = ColumnLikelihood(spans, min_scale, decoder_scale)
        # inference: bottom-up, then top-down for z₁
        self.encoder = mlp([x_dim + c_dim, *hidden])
        self.top_encoder = mlp([width, width])
        self.top_posterior_head = nn.Linear(width, 2 * top_latent_dim)
        self.top_down_net = nn.Sequential(mlp([width + top_latent_dim, width]),
                                          nn.Linear(width, 2 * latent_dim))
        # generative
        self.conditional_prior_net = nn.Sequential(mlp([top_latent_dim, width]),
                                                   nn.Linear(width, 2 * latent_dim))
        self._build_decoder(latent_dim + top_latent_dim + c_dim, hidden, autoregressive)

    # -- the pieces ----------------------------------------------------------------------
    def bottom_up(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, Normal]:
        """(h₁, q(z₂ | x)) from one pass over the row."""
        h1 = self.encoder(torch.cat([x, c], -1))
        return h1, gaussian_head(self.top_posterior_head(self.top_encoder(h1)))

    def posterior(self, x: torch.Tensor, c: torch.Tensor) -> Normal:
        """q(z₂ | x, c), the top layer: what embeddings are read from."""
        return self.bottom_up(x, c)[1]

    def top_down_posterior(self, h1: torch.Tensor, z2: torch.Tensor) -> Normal:
        """q(z₁ | x, z₂) from the bottom-up features h₁ [rows, ·] and z₂ [..., rows, d₂]."""
        return gaussian_head(self.top_down_net(torch.cat([h1.expand(*z2.shape[:-1], -1), z2],
                                                         -1)))

    def layer_posteriors(self, x: torch.Tensor, c: torch.Tensor) -> list[Normal]:
        """[q(z₂ | x), q(z₁ | x, z₂ = E q(z₂|x))]: top layer first, z₁ at z₂'s mean."""
        h1, q2 = self.bottom_up(x, c)
        return [q2, self.top_down_posterior(h1, q2.loc)]

    def posterior_code(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """[z₁, z₂] at the posterior means (z₁'s given z₂'s), what the decoder reads."""
        q2, q1 = self.layer_posteriors(x, c)
        return torch.cat([q1.loc, q2.loc], -1)

    def top_prior(self, like: torch.Tensor) -> Normal:
        """p(z₂) = N(0, I), with ``like``'s leading shape."""
        return standard_normal(like, self.top_latent_dim)

    def conditional_prior(self, z2: torch.Tensor) -> Normal:
        """p(z₁ | z₂)."""
        return gaussian_head(self.conditional_prior_net(z2))

    def _latents(self, h1: torch.Tensor, q2: Normal, eps: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, Normal, Normal]:
        """z₂ ~ q(z₂|x), then z₁ ~ q(z₁|x,z₂), from noise [..., d₂ + d₁]; also returns
        p(z₁|z₂) and q(z₁|x,z₂)."""
        e2, e1 = eps.split([self.top_latent_dim, self.latent_dim], -1)
        z2 = q2.loc + q2.scale * e2
        q1 = self.top_down_posterior(h1, z2)
        return z2, q1.loc + q1.scale * e1, self.conditional_prior(z2), q1

    # -- bounds ----------------------------------------------------------------------------
    def elbo_terms(self, x: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row, per-column log p(x_col | z₁, z₂) and per-row, per-dimension KL [rows, d₁ + d₂]
        (z₁'s given the sampled z₂, then z₂'s), with one sample of (z₂, z₁) ~ q."""
        h1, q2 = self.bottom_up(x, c)
        eps = torch.randn((len(x), self.noise_dim), generator=generator, device=x.device)
        z2, z1, p1, q1 = self._latents(h1, q2, eps)
        kl = torch.cat([kl_divergence(q1, p1), kl_divergence(q2, self.top_prior(z2))], -1)
        return self.column_log_likelihood(x, torch.cat([z1, z2], -1), c), kl

    def importance_weights(self, x: torch.Tensor, c: torch.Tensor, k: int,
                           samples_per_pass: int = 32, generator: torch.Generator | None = None,
                           eps: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """log w_k = log p(x|z₁,z₂) + log p(z₁|z₂) + log p(z₂) − log q(z₁|x,z₂) − log q(z₂|x)
        for k samples: [k, rows]; and log p(x_col | z₁, z₂) per column averaged over them.
        ``eps`` [k, rows, d₂ + d₁] fixes the noise, as in VAEModule.importance_weights."""
        h1, q2 = self.bottom_up(x, c)
        log_w, column_sum = [], 0.0
        for start in range(0, k, samples_per_pass):
            n = min(samples_per_pass, k - start)
            z2, z1, p1, q1 = self._latents(h1, q2, self._noise(eps, start, n, len(x), generator,
                                                               x.device))
            log_px_z = self.column_log_likelihood(x, torch.cat([z1, z2], -1), c)  # [n, rows, cols]
            column_sum = column_sum + log_px_z.sum(0)
            log_w.append(log_px_z.sum(-1)
                         + (p1.log_prob(z1) - q1.log_prob(z1)).sum(-1)
                         + (self.top_prior(z2).log_prob(z2) - q2.log_prob(z2)).sum(-1))
        return torch.cat(log_w), column_sum / k

    def prior_code(self, n: int, generator: torch.Generator | None,
                   device: torch.device | str) -> torch.Tensor:
        """Top-down: z₂ ~ p(z₂), z₁ ~ p(z₁ | z₂); the decoder reads [z₁, z₂]."""
        z2 = torch.randn((n, self.top_latent_dim), generator=generator, device=device)
        p1 = self.conditional_prior(z2)
        z1 = p1.loc + p1.scale * torch.randn(p1.loc.shape, generator=generator, device=device)
        return torch.cat([z1, z2], -1)
