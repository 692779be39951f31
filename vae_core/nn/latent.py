"""What every VAE variant offers the model class and the objectives, whatever its latents.

A variant defines the abstract methods — ``posterior`` (the distribution embeddings are
read from), ``elbo_terms`` (one-sample reconstruction and per-dimension KL),
``importance_weights`` and ``prior_code`` — and sets ``noise_dim`` (standard-normal draws per
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
from collections.abc import Mapping

import torch
from torch import nn
from torch.distributions import Normal

from vae_core.nn.autoregressive import ColumnAutoregression
from vae_core.nn.blocks import mlp
from vae_core.nn.likelihood import ColumnLikelihood
from vae_core.nn.truncation import Restriction


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

    @property
    def has_affine_mean(self) -> bool:
        """Whether q's mean holds an affine map of the row (all of it, or beside an MLP's
        share) that ``start_mean_at`` can set (a variant with one says so)."""
        return False

    def start_mean_at(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Start q's mean at weight·x + bias (a variant with a linear mean defines it)."""
        raise ValueError(f"{type(self).__name__}'s posterior mean has no affine part to start "
                         "at a map (encoder linear or mlp+linear has one)")

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
    def prior_code(self, n: int, generator: torch.Generator | None,
                   device: torch.device | str) -> torch.Tensor:
        """n draws of what the decoder reads, from the prior."""

    @torch.no_grad()
    def sample(self, n: int, c: torch.Tensor, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """n encoded rows drawn from the model, z from the prior."""
        return self.generate(self.prior_code(n, generator, device), c, generator)

    @torch.no_grad()
    def sample_within(self, n: int, c: torch.Tensor, restrictions: Mapping[int, Restriction],
                      generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """n rows as ``sample`` draws them, restricted columns truncated, and their log w."""
        return self.generate_within(self.prior_code(n, generator, device), c, restrictions,
                                    generator)

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
        return self.generate_within(z, c, {}, generator, most_likely)[0]

    def generate_within(self, z: torch.Tensor, c: torch.Tensor,
                        restrictions: Mapping[int, Restriction],
                        generator: torch.Generator | None, most_likely: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``generate``, with column j (span index) of ``restrictions`` drawn from its
        distribution truncated to the allowed set A_j; also log w = Σ_j log P(x_j ∈ A_j | z,
        c, x_<j), the mass those sets had (vae_core.nn.truncation)."""
        out = self._factorised(z, c)
        log_w = out.new_zeros(out.shape[:-1])
        spans = self.likelihood.spans
        if self.autoregression is None:  # columns are independent given z: redraw the few
            x = self.likelihood.sample(out, generator, most_likely)
            for j, restriction in restrictions.items():
                slots, log_mass = self.likelihood.sample_column_within(out, j, restriction,
                                                                       generator)
                x[..., spans[j].start:spans[j].start + spans[j].width] = slots
                log_w = log_w + log_mass
            return x, log_w
        x = torch.zeros(*out.shape[:-1], self.x_dim, device=out.device)
        for j, span in enumerate(spans):  # column j sees columns < j drawn
            params = out + self.autoregression(x).float()
            if j in restrictions:
                slots, log_mass = self.likelihood.sample_column_within(
                    params, j, restrictions[j], generator)
                log_w = log_w + log_mass
            else:
                slots = self.likelihood.sample_column(params, j, generator, most_likely)
            x[..., span.start:span.start + span.width] = slots
        return x, log_w

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
