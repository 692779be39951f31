"""The math of the bounds, tested as math.

On a linear-Gaussian model log p(x) is known in closed form, so the estimators can be
checked against the truth: ELBO ≤ IWAE_K ≤ log p(x), IWAE non-decreasing in K, and all
three equal when q is the exact posterior. The estimator code under test is the real
VAEModule's (``elbo``, ``importance_weights``, ``iwae``); only the encoder and the
likelihood are swapped for linear-Gaussian ones.
"""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from vae_core.data.transform import Span
from vae_core.nn import ColumnLikelihood, VAEModule
from vae_core.nn.heads import interval_log_prob
from vae_core.objectives import ELBO

D, LATENT, NOISE = 3, 2, 0.5


def numeric_rows(n: int) -> torch.Tensor:
    """Encoded rows of one continuous column: [z_low = z_high = value, missing = 0]."""
    value = torch.randn(n, 1)
    return torch.cat([value, value, torch.zeros(n, 1)], -1)


class LinearGaussianVAE(VAEModule):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, NOISE² I); q(z|x) = N(Ax + a, diag s²)."""

    def __init__(self, W, b, A, a, s):
        super().__init__([Span("x", "numeric", 0, 3)], x_dim=3, latent_dim=LATENT, hidden=(4,))
        self.W, self.b, self.A, self.a, self.s = W, b, A, a, s

    def posterior(self, x, c):
        return Normal(x @ self.A.T + self.a, self.s.expand(*x.shape[:-1], LATENT))

    def column_log_likelihood(self, x, z, c):
        mean = z @ self.W.T + self.b
        return Normal(mean, NOISE).log_prob(x).sum(-1, keepdim=True)

    def exact_log_px(self, x):
        cov = self.W @ self.W.T + NOISE**2 * torch.eye(D, dtype=x.dtype)
        return MultivariateNormal(self.b, cov).log_prob(x)

    def exact_posterior(self):
        """q = p(z|x): Σ = (I + WᵀW/σ²)⁻¹, μ = Σ Wᵀ (x − b)/σ²."""
        prec = torch.eye(LATENT, dtype=self.W.dtype) + self.W.T @ self.W / NOISE**2
        cov = torch.linalg.inv(prec)
        return cov @ self.W.T / NOISE**2, cov


@pytest.fixture
def model():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(D, LATENT, generator=g, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    # A deliberately poor encoder, so that the bounds are strict.
    A = 0.3 * torch.randn(LATENT, D, generator=g, dtype=torch.float64)
    return LinearGaussianVAE(W, b, A, torch.zeros(LATENT, dtype=torch.float64),
                             torch.full((LATENT,), 0.7, dtype=torch.float64))


def _data(model, n, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, LATENT, generator=g, dtype=torch.float64)
    return z @ model.W.T + model.b + NOISE * torch.randn(n, D, generator=g, dtype=torch.float64)


def test_kl_matches_closed_form():
    module = VAEModule([Span("x", "numeric", 0, 3)], x_dim=3, latent_dim=4, hidden=(8,))
    x, c = torch.randn(16, 3), torch.zeros(16, 0)
    q = module.posterior(x, c)
    mu, var = q.loc, q.scale**2
    closed = 0.5 * (mu**2 + var - 1 - var.log())
    _, kl = module.elbo_terms(x, c)
    torch.testing.assert_close(kl, closed, rtol=1e-5, atol=1e-6)
    assert (kl >= 0).all()


def test_elbo_le_iwae_le_log_px_and_iwae_grows_with_k(model):
    x, c = _data(model, 400, seed=1), torch.zeros(400, 0, dtype=torch.float64)
    truth = model.exact_log_px(x).mean()
    g = torch.Generator().manual_seed(2)
    repeats = 20
    elbo = torch.stack([model.elbo(x, c, g).mean() for _ in range(repeats)])
    ks, means, ses = [1, 4, 16, 64], [], []
    for k in ks:
        est = torch.stack([model.iwae(x, c, k, generator=g).mean() for _ in range(repeats)])
        means.append(est.mean())
        ses.append(est.std() / math.sqrt(repeats))
    # Margins of 4 standard errors: the ordering must hold beyond sampling noise.
    assert elbo.mean() < means[1] - 4 * ses[1]
    for i in range(len(ks) - 1):
        assert means[i] < means[i + 1] + 4 * (ses[i] + ses[i + 1]), ks[i]
    assert means[-1] < truth + 4 * ses[-1]
    assert means[-1] - means[0] > 0.05  # the gain with K is real, not rounding
    # IWAE_1 is an unbiased estimate of the ELBO.
    assert abs(float(means[0] - elbo.mean())) < 4 * float(ses[0] + elbo.std() / math.sqrt(repeats))


def test_bounds_are_tight_at_the_exact_posterior(model):
    # Orthogonal columns make WᵀW ∝ I, so p(z|x) is diagonal and q can equal it exactly.
    q, _ = torch.linalg.qr(model.W)
    model.W = 1.5 * q
    gain, cov = model.exact_posterior()
    model.A, model.a, model.s = gain, -(gain @ model.b), cov.diagonal().sqrt()
    x, c = _data(model, 50, seed=3), torch.zeros(50, 0, dtype=torch.float64)
    truth = model.exact_log_px(x)
    torch.testing.assert_close(model.iwae(x, c, 8), truth, rtol=0, atol=1e-8)
    log_w, _ = model.importance_weights(x, c, 8)
    torch.testing.assert_close(log_w.mean(0), truth, rtol=0, atol=1e-8)  # ELBO = log p(x)


def test_free_bits_floor_changes_the_loss_not_the_reported_kl():
    module = VAEModule([Span("x", "numeric", 0, 3)], x_dim=3, latent_dim=4, hidden=(8,))
    x, c = numeric_rows(32), torch.zeros(32, 0)
    torch.manual_seed(0)
    plain = ELBO(free_bits=0.0)(module, x, c, kl_weight=1.0)
    torch.manual_seed(0)
    floored = ELBO(free_bits=5.0)(module, x, c, kl_weight=1.0)
    assert floored.kl == plain.kl
    assert floored.loss >= plain.loss + 4 * 5.0 - plain.kl - 1e-4  # 4 dims × 5 nats floor


def test_interval_probability_is_the_normal_cdf_difference_even_far_in_the_tails():
    lows = torch.tensor([-1.0, 0.3, 8.0, -30.0, -9.0, 2.0])
    highs = torch.tensor([1.0, 0.30001, 9.0, -29.0, -8.5, 40.0])
    d = Normal(torch.zeros(6), torch.ones(6))
    got = interval_log_prob(d, lows, highs)
    # float64 closed form; in the far tails via log Φ(b) + log(1 − Φ(a)/Φ(b)).
    lo64, hi64 = lows.double(), highs.double()
    flip = lo64 > 0
    a, b = torch.where(flip, -hi64, lo64), torch.where(flip, -lo64, hi64)
    want = torch.special.log_ndtr(b) + torch.log1p(-torch.exp(torch.special.log_ndtr(a)
                                                              - torch.special.log_ndtr(b)))
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(got).all()  # Φ(9) − Φ(8) underflows when computed directly


def test_an_atom_scores_its_interval_probability_spread_over_it_and_they_sum_to_one():
    """An atom's score is P(interval) / width: the density of the value dequantised
    uniformly over its interval. Times the widths, five atoms tiling the line sum to 1."""
    likelihood = ColumnLikelihood([Span("n", "numeric", 0, 3)], min_scale=0.01)
    edges = torch.tensor([-7.0, -1.2, -0.1, 0.4, 2.5, 7.0])  # five atoms tiling ~all of z
    x = torch.stack([edges[:-1], edges[1:], torch.zeros(5)], -1)
    out = torch.tensor([0.3, 0.2, -4.0]).expand(5, 3)  # mean 0.3, a scale, a missing logit
    lp = likelihood.log_prob(x, out)[:, 0]
    d = likelihood.distributions(out[:1]).numeric.value  # N(m, s) of z
    p_missing = torch.sigmoid(torch.tensor(-4.0))
    width = edges[1:] - edges[:-1]
    torch.testing.assert_close((lp.exp() * width).sum(), 1 - p_missing, rtol=1e-5, atol=1e-6)
    want = (torch.special.ndtr((edges[1:] - 0.3) / d.scale[0, 0])
            - torch.special.ndtr((edges[:-1] - 0.3) / d.scale[0, 0]))
    torch.testing.assert_close(lp.exp() * width, want * (1 - p_missing), rtol=1e-4, atol=1e-6)
    # A point (low = high) gets the density instead.
    point = torch.tensor([[0.5, 0.5, 0.0]])
    want_density = d.log_prob(torch.tensor([[0.5]]))[0, 0] + torch.log(1 - p_missing)
    torch.testing.assert_close(likelihood.log_prob(point, out[:1])[0, 0], want_density)
