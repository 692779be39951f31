"""The VAE as a pure torch module: inference q(z|x,c), generative p(x|z,c), the bounds.

Names follow the math:
    posterior   q(z | x, c) = N(μ(x, c), diag σ²(x, c))
    prior       p(z)        = N(0, I)
    likelihood  p(x | z, c) = Π_columns p(x_col | z, c), one head per column kind:
                numeric:     N(z_col; m, s) for a continuous value, or for an atom the
                             probability N(m, s) gives its interval [z_low, z_high]
                             (when present) × Bernoulli(missing)
                binary:      Bernoulli(value) (when present) × Bernoulli(missing)
                categorical: Categorical over the column's slots
    elbo        E_q[log p(x|z,c)] − KL(q ‖ p)                       (one z sample)
    iwae_K      log (1/K) Σ_k p(x, z_k | c) / q(z_k | x, c),  z_k ~ q (K samples)

``forward`` returns the *training* loss, so that under DistributedDataParallel every
gradient goes through ``DDP.forward`` and is all-reduced (calling a method on
``ddp.module`` instead trains each rank alone, silently). Inference uses the methods.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, Normal, kl_divergence

from vae_core.autoregressive import ColumnAutoregression
from vae_core.distances import distance_stress, encoded_distance_scale
from vae_core.transform import Span

LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0  # keeps exp() finite: PyOD#609-style NaNs
SLOTS = {"numeric": 3, "binary": 2}  # encoded slots per column (vae_core.transform)


class LossOutput(NamedTuple):
    loss: torch.Tensor  # scalar to minimise
    reconstruction: torch.Tensor  # mean over rows of −E_q[log p(x|z)]
    kl: torch.Tensor  # mean over rows of KL(q ‖ p), unweighted
    kl_terms: torch.Tensor | None = None  # β-TCVAE: [MI, TC, dimension-wise KL], batch means


def interval_log_prob(d: Normal, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """log P(low < X ≤ high) for X ~ d, accurate in both tails.

    Φ(b) − Φ(a) is computed as Φ(−a) − Φ(−b) when the interval lies above the mean, so that
    both terms are small and log Φ (``log_ndtr``) keeps their digits.
    """
    a, b = (low - d.loc) / d.scale, (high - d.loc) / d.scale
    upper = a > 0
    a, b = torch.where(upper, -b, a), torch.where(upper, -a, b)
    log_a, log_b = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    # log(Φ(b) − Φ(a)) = log Φ(b) + log(1 − e^(log Φ(a) − log Φ(b))); the clamp keeps an
    # interval of zero width (never an atom's) finite instead of −inf.
    return log_b + torch.log(-torch.expm1((log_a - log_b).clamp(max=-1e-12)))


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*layers)


class ColumnLikelihood(nn.Module):
    """Maps decoder output to per-column log-likelihoods of an encoded row.

    Column kinds are handled in vectorised groups (all numeric columns at once, all
    categorical slots side by side) rather than a Python loop over columns. Output
    columns are in span order.
    """

    def __init__(self, spans: list[Span], min_scale: float, scale: str = "row") -> None:
        """``scale``: "row", the numeric σ is a decoder output (heteroscedastic); "column",
        one learned σ per column for every row (homoscedastic: a row cannot be explained
        away by a wide Gaussian, which anomaly scores want)."""
        super().__init__()
        self.spans, self.min_scale = spans, min_scale
        for s in spans:
            if s.head in SLOTS and s.width != SLOTS[s.head]:
                raise ValueError(f"{s.head} column '{s.name}' spans {s.width} slots, "
                                 f"not {SLOTS[s.head]}")
        numeric = [s for s in spans if s.head == "numeric"]
        binary = [s for s in spans if s.head == "binary"]
        categorical = [s for s in spans if s.head == "categorical"]
        out, out_columns = 0, []
        column_of = {s.name: j for j, s in enumerate(spans)}

        def take(n: int, span: Span) -> list[int]:
            nonlocal out
            out += n
            out_columns.extend([column_of[span.name]] * n)
            return list(range(out - n, out))

        # Encoded numeric columns are [z_low, z_high, missing] (vae_core.transform).
        # Decoder output layout: per numeric column (mean, scale, missing-logit), per binary
        # column (logit, missing-logit), per categorical column its logits.
        self.register_buffer("num_x", torch.tensor([s.start for s in numeric], dtype=torch.long))
        # Each numeric column's atom intervals, padded with +inf, so that a sampled value is
        # encoded as the transformer encodes data: its atom's interval, or a point.
        most = max((len(s.atoms) for s in numeric), default=0)
        atoms = torch.full((len(numeric), most, 2), math.inf)
        for i, s in enumerate(numeric):
            if s.atoms:
                atoms[i, :len(s.atoms)] = torch.tensor(s.atoms)
        # Columns without nulls in training never get a null sample (their missing flag is 0).
        self.register_buffer("num_nullable", torch.tensor([float(s.nullable) for s in numeric]),
                             persistent=False)
        self.register_buffer("bin_nullable", torch.tensor([float(s.nullable) for s in binary]),
                             persistent=False)
        self.register_buffer("atom_low", atoms[..., 0].contiguous(), persistent=False)
        self.register_buffer("atom_high", atoms[..., 1].contiguous(), persistent=False)
        self.register_buffer("num_out", torch.tensor([take(3, s) for s in numeric],
                                                     dtype=torch.long).reshape(-1, 3))
        self.register_buffer("bin_x", torch.tensor([s.start for s in binary], dtype=torch.long))
        self.register_buffer("bin_out", torch.tensor([take(2, s) for s in binary],
                                                     dtype=torch.long).reshape(-1, 2))
        width = max((s.width for s in categorical), default=1)
        cat_x = torch.zeros(len(categorical), width, dtype=torch.long)
        cat_out = torch.zeros(len(categorical), width, dtype=torch.long)
        cat_pad = torch.ones(len(categorical), width, dtype=torch.bool)
        cat_sampleable = torch.zeros(len(categorical), width, dtype=torch.bool)
        cat_padded = torch.zeros(len(categorical), width, dtype=torch.long)  # into flat slots
        for i, s in enumerate(categorical):
            flat = sum(c.width for c in categorical[:i])
            cat_padded[i, :s.width] = torch.arange(flat, flat + s.width)
            cat_x[i, :s.width] = torch.arange(s.start, s.start + s.width)
            cat_out[i, :s.width] = torch.tensor(take(s.width, s))
            cat_pad[i, :s.width] = False
            cat_sampleable[i, :s.sampleable] = True
        self.register_buffer("cat_x", cat_x)
        self.register_buffer("cat_out", cat_out)
        self.register_buffer("cat_pad", cat_pad)
        self.register_buffer("cat_sampleable", cat_sampleable)
        self.register_buffer("cat_last", cat_sampleable.sum(-1) - 1, persistent=False)
        self.out_dim = out
        # For distance_weight: encoded rows times this are in PCA's units (vae_core.distances).
        self.register_buffer("distance_scale", encoded_distance_scale(spans), persistent=False)
        n_numeric = len(numeric)
        self.column_scale = (None if scale == "row" else
                             nn.Parameter(torch.zeros(n_numeric if scale == "column" else 1)))
        # The column of each decoder output unit and of each encoded input slot (in span
        # order), for the autoregressive decoder's masks.
        self.output_columns = torch.tensor(out_columns, dtype=torch.long)
        self.input_columns = torch.tensor([j for j, s in enumerate(spans) for _ in range(s.width)],
                                          dtype=torch.long)
        # Permutation from (numeric, binary, categorical) group order back to span order.
        group_order = numeric + binary + categorical
        self.register_buffer("to_span_order", torch.tensor(
            [group_order.index(s) for s in spans], dtype=torch.long))
        # One gather puts encoded slots / decoder outputs in group order, so that each
        # group is a slice: per-group gathers (and their scatter backward) of the padded
        # categorical block cost ~20 % of a training step on Adult.
        self.n_numeric, self.n_binary = len(numeric), len(binary)
        self.register_buffer("x_order", torch.tensor(
            [i for s in group_order for i in range(s.start, s.start + s.width)],
            dtype=torch.long), persistent=False)
        self.register_buffer("out_order", torch.cat(
            [self.num_out.flatten(), self.bin_out.flatten(), cat_out[~cat_pad]]), persistent=False)
        # Categorical slots, flat: the column of each, and that as a [slots, columns] 0/1
        # matrix, so that per-column sums over slots are one matrix product.
        segment = torch.repeat_interleave(torch.arange(len(categorical)),
                                          torch.tensor([s.width for s in categorical],
                                                       dtype=torch.long))
        self.register_buffer("cat_segment", segment, persistent=False)
        self.register_buffer("cat_membership", (segment[:, None] == torch.arange(
            len(categorical))).float(), persistent=False)
        self.register_buffer("cat_padded", cat_padded, persistent=False)
        # Each column's place in the (numeric, binary, categorical) groups, as slices (views,
        # nothing copied to the device), for drawing one column at a time.
        position = {s.name: i for g in (numeric, binary, categorical) for i, s in enumerate(g)}
        self.group_of = [tuple(slice(position[s.name], position[s.name] + 1) if s.head == head
                               else slice(0, 0) for head in ("numeric", "binary", "categorical"))
                         for s in spans]

    def _grouped(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decoder output split by group: numeric [..., n_num, 3] (mean, scale,
        missing-logit), binary [..., n_bin, 2] (logit, missing-logit), categorical logits
        [..., slots] (flat, column after column)."""
        grouped = out[..., self.out_order]
        n, b = 3 * self.n_numeric, 2 * self.n_binary
        return (grouped[..., :n].unflatten(-1, (self.n_numeric, 3)),
                grouped[..., n:n + b].unflatten(-1, (self.n_binary, 2)), grouped[..., n + b:])

    def _numeric_and_binary(self, num: torch.Tensor, bins: torch.Tensor,
                            numeric: slice = slice(None)
                            ) -> tuple[Normal, Bernoulli, Bernoulli, Bernoulli]:
        """The numeric and binary heads' distributions; ``numeric``: which numeric columns
        ``num`` holds (default: all)."""
        raw_scale = num[..., 1]
        if self.column_scale is not None:  # one σ per column, or one shared by all
            raw_scale = (self.column_scale if len(self.column_scale) == 1
                         else self.column_scale[numeric])
        scale = (nn.functional.softplus(raw_scale) + self.min_scale).expand_as(num[..., 0])
        # validate_args=False: the inputs are ours and checking them costs ~20 % per step.
        return (Normal(num[..., 0], scale, validate_args=False),
                Bernoulli(logits=num[..., 2], validate_args=False),
                Bernoulli(logits=bins[..., 0], validate_args=False),
                Bernoulli(logits=bins[..., 1], validate_args=False))

    def distributions(self, out: torch.Tensor) -> tuple[Normal, Bernoulli, Bernoulli, Bernoulli,
                                                         Categorical]:
        num, bins, cat_logits = self._grouped(out)
        logits = cat_logits[..., self.cat_padded].masked_fill(self.cat_pad, -math.inf)
        return (*self._numeric_and_binary(num, bins),
                Categorical(logits=logits, validate_args=False))

    def categorical_log_prob(self, x_cat: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p of each categorical column's one-hot value: [..., n_cat], from flat slots.

        A log-softmax within each column's slots, done on the flat slots: a padded
        [columns, widest] block would be ~3× larger on Adult (one 42-slot column)."""
        with torch.no_grad():  # a per-column shift keeps exp() finite; the value is exact
            shift = logits.new_full((*logits.shape[:-1], self.cat_membership.shape[1]),
                                    -math.inf).scatter_reduce(
                -1, self.cat_segment.expand(logits.shape), logits, "amax")
        shifted = logits - shift[..., self.cat_segment]
        return (x_cat * shifted) @ self.cat_membership - (shifted.exp() @ self.cat_membership).log()

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """log p(x_col | z) for every column: [..., n_columns]. ``out`` may carry sample dims."""
        num, bins, cat_logits = self._grouped(out)
        num_value, num_missing, bin_value, bin_missing = self._numeric_and_binary(num, bins)
        shape = out.shape[:-1]
        xg = x[..., self.x_order]
        n, b = 3 * self.n_numeric, 2 * self.n_binary
        low, high, xm = xg[..., :n].unflatten(-1, (self.n_numeric, 3)).expand(
            *shape, -1, -1).unbind(-1)
        # A point scores its density. An atom (high > low) scores the probability of its
        # interval spread evenly over it: the density of the value dequantised in z, so
        # that an atom's score and a continuous value's are both densities in z (rows are
        # comparable as anomaly scores). Minus log(width) is a constant of the data: the
        # gradient is the interval probability's, which no prediction can push above 1.
        atom = high > low
        width = torch.where(atom, high - low, torch.ones_like(low))
        lp_value = torch.where(atom, interval_log_prob(num_value, low, high) - width.log(),
                               num_value.log_prob(low))
        lp_num = lp_value * (1 - xm) + num_missing.log_prob(xm)
        bv, bm = xg[..., n:n + b].unflatten(-1, (self.n_binary, 2)).expand(
            *shape, -1, -1).unbind(-1)
        lp_bin = bin_value.log_prob(bv) * (1 - bm) + bin_missing.log_prob(bm)
        lp_cat = self.categorical_log_prob(xg[..., n + b:], cat_logits)
        return torch.cat([lp_num, lp_bin, lp_cat], dim=-1)[..., self.to_span_order]

    def encode_draws(self, value: torch.Tensor, columns: slice = slice(None)
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_low, z_high) of drawn values [..., columns] of the numeric ``columns`` (of the
        numeric group): the interval of the atom a draw falls in, else the draw itself (as
        vae_core.transform encodes the data)."""
        if self.atom_low.shape[1] == 0 or value.shape[-1] == 0:
            return value, value
        atom_low, atom_high = self.atom_low[columns], self.atom_high[columns]
        flat = value.reshape(-1, value.shape[-1]).T.contiguous()  # [columns, draws]
        i = torch.searchsorted(atom_high, flat).clamp(max=atom_high.shape[1] - 1)
        low, high = atom_low.gather(1, i), atom_high.gather(1, i)
        inside = (flat >= low) & (flat <= high)
        low, high = torch.where(inside, low, flat), torch.where(inside, high, flat)
        return low.T.reshape(value.shape), high.T.reshape(value.shape)

    def sample(self, out: torch.Tensor, x_dim: int, generator: torch.Generator | None,
               most_likely: bool = False, column: int | None = None) -> torch.Tensor:
        """Draw encoded rows from p(x|z) (categoricals only from their sampleable slots);
        with ``most_likely``, each column's most likely value instead (numbers: the mean).
        With ``column`` (its span index), only that column is drawn; the rest stay 0."""
        num, bins, cat_logits = self._grouped(out)
        numeric, binary, categorical = (self.group_of[column] if column is not None
                                        else (slice(None),) * 3)
        num_value, num_missing, bin_value, bin_missing = self._numeric_and_binary(
            num[..., numeric, :], bins[..., binary, :], numeric)
        x = torch.zeros(*out.shape[:-1], x_dim, device=out.device)

        def bernoulli(d: Bernoulli) -> torch.Tensor:
            return ((d.probs > 0.5).float() if most_likely
                    else torch.bernoulli(d.probs, generator=generator))

        value = num_value.loc
        if not most_likely:
            value = value + num_value.scale * torch.randn(value.shape, generator=generator,
                                                          device=out.device)
        num_x = self.num_x[numeric]
        x[..., num_x], x[..., num_x + 1] = self.encode_draws(value, numeric)
        x[..., num_x + 2] = bernoulli(num_missing) * self.num_nullable[numeric]
        bin_x = self.bin_x[binary]
        x[..., bin_x] = bernoulli(bin_value)
        x[..., bin_x + 1] = bernoulli(bin_missing) * self.bin_nullable[binary]
        cat_x = self.cat_x[categorical]
        if len(cat_x):
            sampleable = self.cat_sampleable[categorical]
            logits = cat_logits[..., self.cat_padded[categorical]].masked_fill(~sampleable,
                                                                               -math.inf)
            if most_likely:
                choice = logits.argmax(-1)
            else:  # inverse CDF: one uniform per cell (torch.multinomial is ~6× slower here)
                u = torch.rand(logits.shape[:-1], generator=generator, device=out.device)
                below = (logits.softmax(-1).cumsum(-1) < u.unsqueeze(-1)).sum(-1)
                choice = torch.minimum(below, self.cat_last[categorical])  # never a pad
            x.scatter_(-1, cat_x[torch.arange(len(cat_x), device=out.device), choice], 1.0)
        return x


class LatentVariableModule(nn.Module):
    """What every VAE variant offers the model class, whatever its latent structure.

    A subclass defines ``elbo_terms`` (one-sample reconstruction and per-dimension KL),
    ``importance_weights``, ``posterior`` (the distribution embeddings are read from) and
    ``sample``, and sets ``noise_dim`` (standard-normal draws per importance sample) and
    ``embedding_dim``. The bounds and the training loss are then the same for all.
    """

    noise_dim: int
    embedding_dim: int
    # set by subclasses: the decoder reads the latents (all layers it conditions on) and c
    likelihood: ColumnLikelihood
    decoder: nn.Module
    likelihood_head: nn.Linear
    autoregression: ColumnAutoregression | None  # set by _set_decoder_autoregression

    def _set_decoder_autoregression(self, enabled: bool, hidden: int) -> None:
        lk = self.likelihood
        self.autoregression = (ColumnAutoregression(lk.input_columns, lk.output_columns, hidden)
                               if enabled and len(lk.spans) > 1 else None)

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
            return self.likelihood.sample(out, self.x_dim, generator, most_likely)
        x = torch.zeros(*out.shape[:-1], self.x_dim, device=out.device)
        for j, span in enumerate(self.likelihood.spans):  # column j sees columns < j drawn
            draw = self.likelihood.sample(out + self.autoregression(x).float(), self.x_dim,
                                          generator, most_likely, column=j)
            x[..., span.start:span.start + span.width] = draw[..., span.start:
                                                             span.start + span.width]
        return x

    def elbo_terms(self, x: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def posterior(self, x: torch.Tensor, c: torch.Tensor) -> Normal:
        raise NotImplementedError

    def layer_posteriors(self, x: torch.Tensor, c: torch.Tensor) -> list[Normal]:
        """The posterior of every latent layer, top layer first."""
        return [self.posterior(x, c)]

    def posterior_code(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """What the decoder reads, at the posterior means (for reconstructions)."""
        return self.posterior(x, c).loc

    def importance_weights(self, x: torch.Tensor, c: torch.Tensor, k: int,
                           samples_per_pass: int = 32, generator: torch.Generator | None = None,
                           eps: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

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

    def forward(self, x: torch.Tensor, c: torch.Tensor, kl_weight: float = 1.0,
                free_bits: float = 0.0, tc_weights: tuple[float, float, float] | None = None,
                dataset_size: int | None = None, tc_estimator: str = "mws",
                trim_fraction: float = 0.0, distance_weight: float = 0.0) -> LossOutput:
        """Training loss: −(E_q log p(x|z) − kl_weight · KL), batch mean
        (+ distance_weight · the distance stress of the batch's posterior means).

        ``free_bits`` (nats per latent dimension, batch-averaged, Kingma et al. 2016) stops
        the optimiser from pushing a dimension's KL below that floor, against posterior
        collapse. It changes the loss only; reported KL is the true one.

        ``trim_fraction`` leaves the rows with the worst loss out of the mean (a trimmed
        likelihood estimator): rows the model finds least likely, anomalies in the
        training data among them, then do not pull the model towards them.

        ``tc_weights`` = (α, β, γ) makes it β-TCVAE (see VAEModule.kl_decomposition),
        ``dataset_size`` being the N of the aggregate posterior (default: the batch).

        ``distance_weight`` adds the stress between the batch's pairwise distances and those
        of its posterior means (vae_core.distances), so that the embedding keeps distances
        between rows. It changes the loss only; reported terms are the ELBO's.
        """
        out = (self.tcvae_loss(x, c, kl_weight, tc_weights, dataset_size or len(x), tc_estimator)
               if tc_weights is not None else
               self._elbo_loss(x, c, kl_weight, free_bits, trim_fraction))
        if distance_weight > 0:
            stress = distance_stress(self.posterior(x, c).loc, x * self.likelihood.distance_scale)
            out = out._replace(loss=out.loss + distance_weight * stress)
        return out

    def _elbo_loss(self, x: torch.Tensor, c: torch.Tensor, kl_weight: float, free_bits: float,
                   trim_fraction: float) -> LossOutput:
        log_px_z, kl = self.elbo_terms(x, c)
        reconstruction_per_row = -log_px_z.sum(-1)
        kept = slice(None)
        if trim_fraction > 0:
            keep = max(1, round(len(x) * (1 - trim_fraction)))
            kept = torch.topk(reconstruction_per_row + kl_weight * kl.sum(-1), keep,
                              largest=False).indices
        reconstruction = reconstruction_per_row[kept].mean()
        kl_per_dim = kl[kept].mean(0)
        kl_penalty = kl_per_dim.clamp(min=free_bits).sum() if free_bits > 0 else kl_per_dim.sum()
        return LossOutput(reconstruction + kl_weight * kl_penalty, reconstruction.detach(),
                          kl_per_dim.sum().detach())

    def tcvae_loss(self, x: torch.Tensor, c: torch.Tensor, kl_weight: float,
                   tc_weights: tuple[float, float, float], dataset_size: int, estimator: str
                   ) -> LossOutput:
        raise NotImplementedError(f"{type(self).__name__} has no β-TCVAE objective")


class VAEModule(LatentVariableModule):
    """One stochastic layer: q(z|x,c), p(z) = N(0, I), p(x|z,c)."""

    def __init__(self, spans: list[Span], x_dim: int, c_dim: int = 0, latent_dim: int = 8,
                 hidden: tuple[int, ...] = (256, 256), min_scale: float = 0.01,
                 autoregressive: bool = False, decoder_scale: str = "row") -> None:
        super().__init__()
        self.x_dim, self.c_dim, self.latent_dim = x_dim, c_dim, latent_dim
        self.noise_dim = self.embedding_dim = latent_dim
        self.likelihood = ColumnLikelihood(spans, min_scale, decoder_scale)
        self.encoder = mlp([x_dim + c_dim, *hidden])
        self.posterior_head = nn.Linear(hidden[-1], 2 * latent_dim)
        self.decoder = mlp([latent_dim + c_dim, *reversed(hidden)])
        self.likelihood_head = nn.Linear(hidden[0], self.likelihood.out_dim)
        self._set_decoder_autoregression(autoregressive, hidden[0])

    # -- the two halves ------------------------------------------------------------------
    def posterior(self, x: torch.Tensor, c: torch.Tensor) -> Normal:
        """q(z | x, c)."""
        # .float(): under bf16 autocast the densities must still be computed in float32.
        h = self.posterior_head(self.encoder(torch.cat([x, c], -1))).float()
        mu, logvar = h.chunk(2, -1)
        return Normal(mu, (0.5 * logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)).exp())

    def prior(self, like: torch.Tensor) -> Normal:
        zero = torch.zeros(*like.shape[:-1], self.latent_dim, device=like.device, dtype=like.dtype)
        return Normal(zero, torch.ones_like(zero))

    # -- bounds ----------------------------------------------------------------------------
    def _posterior_sample(self, x: torch.Tensor, c: torch.Tensor,
                          generator: torch.Generator | None = None) -> tuple[Normal, torch.Tensor]:
        q = self.posterior(x, c)
        return q, q.loc + q.scale * torch.randn(q.loc.shape, generator=generator, device=x.device)

    def elbo_terms(self, x: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row, per-column log p(x_col | z) with z ~ q (one sample) and per-row, per-dim KL."""
        q, z = self._posterior_sample(x, c, generator)
        return self.column_log_likelihood(x, z, c), kl_divergence(q, self.prior(z))

    def kl_decomposition(self, q: Normal, z: torch.Tensor, dataset_size: int,
                         estimator: str = "mws"
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """β-TCVAE's split of log q(z|x) − log p(z), per row (Chen et al. 2018):

            index-code MI  = log q(z|x) − log q(z)
            total corr.    = log q(z) − Σ_d log q(z_d)
            dim-wise KL    = Σ_d log q(z_d) − log p(z)

        The aggregate posterior q(z) = 1/N Σ_n q(z|x_n) and its marginals q(z_d) are
        estimated on the batch as Σ_j w_ij q(z_i | x_j). Minibatch-weighted sampling
        ("mws") uses w_ij = 1/(B·N): simple, but biased (its weights sum to 1/N). The
        stratified variant ("mss") gives the row's own x_i weight 1/N and each of the B − 1
        others (N − 1)/(N·(B − 1)), standing in for the rest of the data: weights sum to 1.
        Either way the three terms sum to the one-sample KL estimate exactly, so their
        expectation is KL(q(z|x) ‖ p(z)).
        """
        batch = z.shape[0]
        pairs = Normal(q.loc.unsqueeze(0), q.scale.unsqueeze(0)).log_prob(z.unsqueeze(1))
        log_w = self._log_pair_weights(batch, dataset_size, estimator, z)  # [i, j]
        log_qz = torch.logsumexp(pairs.sum(-1) + log_w, dim=1)
        log_qz_product = torch.logsumexp(pairs + log_w.unsqueeze(-1), dim=1).sum(-1)
        log_qz_x = q.log_prob(z).sum(-1)
        log_pz = self.prior(z).log_prob(z).sum(-1)
        return log_qz_x - log_qz, log_qz - log_qz_product, log_qz_product - log_pz

    @staticmethod
    def _log_pair_weights(batch: int, n: int, estimator: str, like: torch.Tensor
                          ) -> torch.Tensor:
        if estimator == "mws":
            return torch.full((batch, batch), -math.log(batch * n), device=like.device)
        if estimator != "mss":
            raise ValueError(f"unknown estimator '{estimator}' (mws or mss)")
        if batch < 2:
            return torch.zeros((batch, batch), device=like.device)
        others = math.log((n - 1) / (n * (batch - 1)))  # the other N − 1 rows, stood in for
        log_w = torch.full((batch, batch), others, device=like.device)
        return log_w.fill_diagonal_(-math.log(n))

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

    # -- training ----------------------------------------------------------------------------
    def tcvae_loss(self, x: torch.Tensor, c: torch.Tensor, kl_weight: float,
                   tc_weights: tuple[float, float, float], dataset_size: int, estimator: str
                   ) -> LossOutput:
        """β-TCVAE: the KL replaced by α·MI + β·TC + γ·dim-wise KL (see kl_decomposition)."""
        q, z = self._posterior_sample(x, c)
        reconstruction = -self.column_log_likelihood(x, z, c).sum(-1).mean()
        kl = kl_divergence(q, self.prior(z)).sum(-1).mean()
        terms = torch.stack([t.mean() for t in self.kl_decomposition(q, z, dataset_size,
                                                                     estimator)])
        penalty = (terms * terms.new_tensor(tc_weights)).sum()
        return LossOutput(reconstruction + kl_weight * penalty, reconstruction.detach(),
                          kl.detach(), terms.detach())

    @torch.no_grad()
    def sample(self, n: int, c: torch.Tensor, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        z = torch.randn((n, self.latent_dim), generator=generator, device=device)
        return self.generate(z, c, generator)
