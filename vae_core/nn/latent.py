"""What every VAE variant offers the model class and the objectives, whatever its latents.

A variant defines the abstract methods — ``posterior`` (the distribution embeddings are
read from), ``elbo_terms`` (one-sample reconstruction and per-dimension KL),
``importance_weights`` and ``sample`` — and sets ``noise_dim`` (standard-normal draws per
importance sample) and ``embedding_dim``. The decoder, the bounds built on those methods
and the row generation are then the same for all:

    elbo        E_q[log p(x|z,c)] − KL(q ‖ p)                       (one z sample)
    iwae_K      log (1/K) Σ_k p(x, z_k | c) / q(z_k | x, c),  z_k ~ q (K samples)

The decoder reads what ``posterior_code`` gives (the latents, all layers it conditions on)
and c; with ``autoregressive``, column j's parameters also read columns < j of the row
(vae_core.nn.autoregressive). The training losses live in vae_core.objectives.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import nn
from torch.distributions import Normal

from vae_core.nn.autoregressive import ColumnAutoregression
from vae_core.nn.blocks import mlp
from vae_core.nn.likelihood import ColumnLikelihood


class LatentVariableModule(nn.Module, ABC):
    noise_dim: int
    embedding_dim: int
    x_dim: int
    likelihood: ColumnLikelihood

    def _build_decoder(self, code_dim: int, hidden: tuple[int, ...],
                       autoregressive: bool) -> None:
        """p(x | code, c): an MLP from [code, c], the likelihood head, the MADE correction."""
        self.decoder = mlp([code_dim, *reversed(hidden)])
        self.likelihood_head = nn.Linear(hidden[0], self.likelihood.out_dim)
        layout = self.likelihood.layout
        self.autoregression = (ColumnAutoregression(layout.input_columns, layout.output_columns,
                                                    hidden[0])
                               if autoregressive and len(layout.spans) > 1 else None)

    # -- what a variant defines ------------------------------------------------------------
    @abstractmethod
    def posterior(self, x: torch.Tensor, c: torch.Tensor) -> Normal:
        """The posterior embeddings are read from."""

    @abstractmethod
    def elbo_terms(self, x: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x_col | z) per row and column with one z ~ q, KL per row and dimension)."""

    @abstractmethod
    def importance_weights(self, x: torch.Tensor, c: torch.Tensor, k: int,
                           samples_per_pass: int = 32, generator: torch.Generator | None = None,
                           eps: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log w [k, rows], log p(x_col | z) per column averaged over the k samples)."""

    @abstractmethod
    def sample(self, n: int, c: torch.Tensor, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """n encoded rows drawn from the model, z from the prior."""

    # -- the decoder -----------------------------------------------------------------------
    def _factorised(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        c = c.expand(*z.shape[:-1], -1)
        return self.likelihood_head(self.decoder(torch.cat([z, c], -1))).float()

    def decode(self, z: torch.Tensor, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Raw parameters of p(x_j | z, c[, x_<j]) for every column j of the rows x, z what
        the decoder reads (may carry sample dims). An autoregressive decoder reads x's
        earlier columns; a factorised one ignores x."""
        out = self._factorised(z, c)
        if self.autoregression is not None:
            out = out + self.autoregression(x).float()
        return out

    def column_log_likelihood(self, x: torch.Tensor, z: torch.Tensor, c: torch.Tensor
                              ) -> torch.Tensor:
        """log p(x_col | z, c[, earlier columns]) per column: [..., rows, columns]."""
        return self.likelihood.log_prob(x, self.decode(z, c, x))

    def generate(self, z: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None,
                 most_likely: bool = False) -> torch.Tensor:
        """Encoded rows x ~ p(x | z, c) (or each column's most likely value): in one pass, or
        column by column (autoregressive)."""
        out = self._factorised(z, c)
        if self.autoregression is None:
            return self.likelihood.sample(out, generator, most_likely)
        x = torch.zeros(*out.shape[:-1], self.x_dim, device=out.device)
        for j, span in enumerate(self.likelihood.spans):  # column j sees columns < j drawn
            x[..., span.start:span.start + span.width] = self.likelihood.sample_column(
                out + self.autoregression(x).float(), j, generator, most_likely)
        return x

    # -- bounds ----------------------------------------------------------------------------
    def layer_posteriors(self, x: torch.Tensor, c: torch.Tensor) -> list[Normal]:
        """The posterior of every latent layer, top layer first."""
        return [self.posterior(x, c)]

    def posterior_code(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """What the decoder reads, at the posterior means (for reconstructions)."""
        return self.posterior(x, c).loc

    def elbo(self, x: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        log_px_z, kl = self.elbo_terms(x, c, generator)
        return log_px_z.sum(-1) - kl.sum(-1)

    def iwae(self, x: torch.Tensor, c: torch.Tensor, k: int, samples_per_pass: int = 32,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """The importance-weighted bound log p̂(x) with k samples per row (≥ ELBO in expectation)."""
        log_w, _ = self.importance_weights(x, c, k, samples_per_pass, generator)
        return torch.logsumexp(log_w, dim=0) - math.log(k)

    def _noise(self, eps: torch.Tensor | None, start: int, n: int, rows: int,
               generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """Samples start..start+n of the importance noise ε: [n, rows, noise_dim]."""
        if eps is not None:
            return eps[start:start + n]
        return torch.randn((n, rows, self.noise_dim), generator=generator, device=device)
