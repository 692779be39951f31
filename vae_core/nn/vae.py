"""The VAE as a pure torch module: one stochastic layer.

Names follow the math:
    posterior   q(z | x, c) = N(μ(x, c), diag σ²(x, c))
    prior       p(z)        = N(0, I)
    likelihood  p(x | z, c) = Π_columns p(x_col | z, c)       (vae_core.nn.likelihood)
    elbo        E_q[log p(x|z,c)] − KL(q ‖ p)
    iwae_K      log (1/K) Σ_k p(x|z_k,c) p(z_k) / q(z_k|x,c)

Only inference and the bounds live here; the training losses (ELBO with free bits and
trimming, β-TCVAE, the distance term) are in vae_core.objectives.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from vae_core.config import ENCODERS
from vae_core.data.transform import Span
from vae_core.nn.blocks import gaussian_head, mlp, standard_normal
from vae_core.nn.latent import LatentVariableModule
from vae_core.nn.likelihood import ColumnLikelihood


class VAEModule(LatentVariableModule):
    """q(z|x,c), p(z) = N(0, I), p(x|z,c). ``encoder``: "mlp", q's parameters from an MLP;
    "linear", affine in [x, c] (μ = W·[x, c] + b), as probabilistic PCA's posterior mean
    is; "mlp+linear", the MLP's μ plus an affine map of [x, c] (a skip path), which
    ``start_mean_at`` can start at a projection such as PCA's."""

    def __init__(self, spans: list[Span], x_dim: int, c_dim: int = 0, latent_dim: int = 8,
                 hidden: tuple[int, ...] = (256, 256), min_scale: float = 0.01,
                 autoregressive: bool = False, decoder_scale: str = "row",
                 encoder: str = "mlp") -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder '{encoder}' is not one of {', '.join(ENCODERS)}")
        self.x_dim, self.c_dim, self.latent_dim = x_dim, c_dim, latent_dim
        self.noise_dim = self.embedding_dim = latent_dim
        self.likelihood = ColumnLikelihood(spans, min_scale, decoder_scale)
        # A linear encoder makes (μ, log σ²) affine in [x, c]: the decoder stays an MLP.
        linear = encoder == "linear"
        self.encoder = nn.Identity() if linear else mlp([x_dim + c_dim, *hidden])
        self.posterior_head = nn.Linear(x_dim + c_dim if linear else hidden[-1], 2 * latent_dim)
        self.mean_skip = (nn.Linear(x_dim + c_dim, latent_dim) if encoder == "mlp+linear"
                          else None)
        if self.mean_skip is not None:  # the MLP alone until a start says otherwise
            nn.init.zeros_(self.mean_skip.weight)
            nn.init.zeros_(self.mean_skip.bias)
        self._build_decoder(latent_dim + c_dim, hidden, autoregressive)

    def posterior(self, x: torch.Tensor, c: torch.Tensor) -> Normal:
        """q(z | x, c)."""
        xc = torch.cat([x, c], -1)
        h = self.posterior_head(self.encoder(xc))
        if self.mean_skip is None:
            return gaussian_head(h)
        mu, logvar = h.float().chunk(2, -1)
        # in float32 under autocast too: started at PCA's code, the map must give it to
        # float32 precision, or the stress (weighted 10 000) starts off its minimum
        with torch.autocast(x.device.type, enabled=False):
            skip = self.mean_skip(xc.float())
        return gaussian_head(torch.cat([mu + skip, logvar], -1))

    @property
    def has_affine_mean(self) -> bool:
        """Whether q's mean holds an affine map of [x, c] (all of it, or beside the MLP's
        share) that start_mean_at can set."""
        return self.mean_skip is not None or isinstance(self.encoder, nn.Identity)

    @torch.no_grad()
    def start_mean_at(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Start q's mean at μ(x) = weight·x + bias (weight: [k ≤ latent_dim, x_dim]; the
        condition's columns and the code's dimensions past k get 0: a table narrower than
        the code has fewer principal directions than it has dimensions): the affine part
        takes the map, the MLP's share of μ starts at 0, and training moves both from
        there."""
        if not self.has_affine_mean:
            return super().start_mean_at(weight, bias)
        d, k = self.latent_dim, len(weight)
        full = torch.zeros(d, self.x_dim + self.c_dim, dtype=weight.dtype, device=weight.device)
        full[:k, :self.x_dim] = weight
        full_bias = torch.zeros(d, dtype=bias.dtype, device=bias.device)
        full_bias[:k] = bias
        # the head's first d outputs are μ: the linear encoder's map, or the MLP's share
        self.posterior_head.weight[:d].zero_()
        self.posterior_head.bias[:d].zero_()
        affine = self.mean_skip if self.mean_skip is not None else self.posterior_head
        affine.weight[:d].copy_(full)
        affine.bias[:d].copy_(full_bias)

    def prior(self, like: torch.Tensor) -> Normal:
        """p(z) = N(0, I), with ``like``'s leading shape."""
        return standard_normal(like, self.latent_dim)

    def posterior_sample(self, x: torch.Tensor, c: torch.Tensor,
                         generator: torch.Generator | None = None) -> tuple[Normal, torch.Tensor]:
        """(q(z | x, c), one reparameterised z ~ q)."""
        q = self.posterior(x, c)
        return q, q.loc + q.scale * torch.randn(q.loc.shape, generator=generator, device=x.device)

    def elbo_terms(self, x: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row, per-column log p(x_col | z) with z ~ q (one sample) and per-row, per-dim KL."""
        q, z = self.posterior_sample(x, c, generator)
        return self.column_log_likelihood(x, z, c), kl_divergence(q, self.prior(z))

    def importance_weights(self, x: torch.Tensor, c: torch.Tensor, k: int,
                           samples_per_pass: int = 32, generator: torch.Generator | None = None,
                           eps: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """log w_k = log p(x|z_k,c) + log p(z_k) − log q(z_k|x,c) for k samples z_k ~ q: [k, rows];
        and log p(x_col | z) per column averaged over the same samples: [rows, columns].

        z_k = μ + σ·ε_k with ε drawn from ``generator``, or taken from ``eps`` [k, rows, d]
        when the caller must fix each row's noise (so that a row's score does not depend on
        which other rows share its batch). Samples go ``samples_per_pass`` at a time to bound
        memory.
        """
        q = self.posterior(x, c)
        log_w, column_sum = [], 0.0
        for start in range(0, k, samples_per_pass):
            n = min(samples_per_pass, k - start)
            z = q.loc + q.scale * self._noise(eps, start, n, len(x), generator, x.device)
            log_px_z = self.column_log_likelihood(x, z, c)  # [n, rows, columns]
            column_sum = column_sum + log_px_z.sum(0)
            log_w.append(log_px_z.sum(-1) + self.prior(z).log_prob(z).sum(-1)
                         - q.log_prob(z).sum(-1))
        return torch.cat(log_w), column_sum / k

    def prior_code(self, n: int, generator: torch.Generator | None,
                   device: torch.device | str) -> torch.Tensor:
        """z ~ p(z)."""
        return torch.randn((n, self.latent_dim), generator=generator, device=device)
