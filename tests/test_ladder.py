"""The hierarchical (ladder) VAE: its bounds tested as math, then through the model class.

On a two-layer linear-Gaussian model, z₂ ~ N(0, I), z₁ | z₂ ~ N(B z₂ + b₁, s₁² I),
x | z₁ ~ N(W z₁ + b, σ² I), log p(x) is known in closed form. With W and B of orthogonal,
equal-norm columns the exact posterior has the ladder's form: p(z₂ | x) is diagonal, and
p(z₁ | x, z₂) is diagonal too (the product of p(z₁ | z₂) with the likelihood read as a
Gaussian in z₁). So the real estimator code (``elbo``, ``importance_weights``, ``iwae``) can
be checked against the truth: strict ELBO < IWAE ≤ log p(x) for a poor encoder, and
equality at the exact posterior. Only the networks are swapped for linear maps.
"""

import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from vae_core import ModelConfig, TabularVAE, TrainConfig
from vae_core.data.transform import Span
from vae_core.nn import LadderVAEModule
from vae_core.objectives import ELBO, TrainingModule

D, L1, L2 = 4, 3, 2
NOISE, S1 = 0.5, 0.6
F64 = torch.float64


def product(a: Normal, b: Normal) -> Normal:
    """The normalised product of two diagonal Gaussians: precisions add."""
    pa, pb = a.scale.pow(-2), b.scale.pow(-2)
    var = 1 / (pa + pb)
    return Normal(var * (a.loc * pa + b.loc * pb), var.sqrt())


class LinearGaussianLadder(LadderVAEModule):
    """The two-layer linear-Gaussian model; its "networks" are linear maps of x (h₁ = x).

    q(z₂|x) = N(A₂x + a₂, s₂²); q(z₁|x,z₂) = exact: N(A₁x + a₁, s₁²)·p(z₁|z₂) normalised,
    or, for a poor encoder, N(A₁x + a₁ + 0.5·z₂Rᵀ, s₁²) ignoring the prior.
    """

    def __init__(self, W, b, B, b1, evidence, top, exact):
        super().__init__([Span("x", "numeric", 0, 3)], x_dim=3, latent_dim=L1,
                         top_latent_dim=L2, hidden=(4,))
        self.W, self.b, self.B, self.b1 = W, b, B, b1
        self.evidence, self.top, self.exact = evidence, top, exact  # (A, a, s): N(x Aᵀ + a, s²)

    def bottom_up(self, x, c):
        A2, a2, s2 = self.top
        return x, Normal(x @ A2.T + a2, s2.expand(*x.shape[:-1], L2))

    def top_down_posterior(self, x, z2):
        A1, a1, s1 = self.evidence
        mean = (x @ A1.T + a1).expand(*z2.shape[:-1], L1)
        if self.exact:
            return product(Normal(mean, s1.expand_as(mean)), self.conditional_prior(z2))
        return Normal(mean + 0.5 * z2 @ self.B.T, s1.expand_as(mean))

    def conditional_prior(self, z2):
        return Normal(z2 @ self.B.T + self.b1, torch.full_like(z2[..., :1], S1).expand(
            *z2.shape[:-1], L1))

    def column_log_likelihood(self, x, z, c):
        z1 = z[..., :L1]  # the decoder is handed [z₁, z₂]; this model reads z₁ only
        return Normal(z1 @ self.W.T + self.b, NOISE).log_prob(x).sum(-1, keepdim=True)

    def data_covariance(self):
        return (self.W @ (self.B @ self.B.T + S1**2 * torch.eye(L1, dtype=F64)) @ self.W.T
                + NOISE**2 * torch.eye(D, dtype=F64))

    def exact_log_px(self, x):
        return MultivariateNormal(self.W @ self.b1 + self.b, self.data_covariance()).log_prob(x)

    def sample_data(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        z2 = torch.randn(n, L2, generator=g, dtype=F64)
        z1 = z2 @ self.B.T + self.b1 + S1 * torch.randn(n, L1, generator=g, dtype=F64)
        return z1 @ self.W.T + self.b + NOISE * torch.randn(n, D, generator=g, dtype=F64)


def _orthogonal(rows, cols, scale, g):
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=g, dtype=F64))
    return scale * q


def _model(exact: bool) -> LinearGaussianLadder:
    g = torch.Generator().manual_seed(0)
    w, beta = 1.3, 1.1
    W, B = _orthogonal(D, L1, w, g), _orthogonal(L1, L2, beta, g)
    b, b1 = torch.randn(D, generator=g, dtype=F64), torch.randn(L1, generator=g, dtype=F64)
    if not exact:  # a deliberately poor encoder, so that the bounds are strict
        return LinearGaussianLadder(W, b, B, b1,
                                    (0.3 * torch.randn(L1, D, generator=g, dtype=F64),
                                     torch.zeros(L1, dtype=F64), torch.full((L1,), 0.8, dtype=F64)),
                                    (0.3 * torch.randn(L2, D, generator=g, dtype=F64),
                                     torch.zeros(L2, dtype=F64), torch.full((L2,), 0.7, dtype=F64)),
                                    exact=False)
    # The likelihood as a function of z₁: N(z₁; Wᵀ(x − b)/w², σ²/w²), since WᵀW = w² I.
    evidence = (W.T / w**2, -(W.T @ b) / w**2, torch.full((L1,), NOISE / w, dtype=F64))
    # p(z₂ | x) for x | z₂ ~ N(M z₂ + W b₁ + b, C), M = W B: Σ = (I + Mᵀ C⁻¹ M)⁻¹ (diagonal
    # here), μ = Σ Mᵀ C⁻¹ (x − W b₁ − b).
    model = LinearGaussianLadder(W, b, B, b1, evidence, None, exact=True)
    C_inv = torch.linalg.inv(S1**2 * W @ W.T + NOISE**2 * torch.eye(D, dtype=F64))
    M = W @ B
    cov = torch.linalg.inv(torch.eye(L2, dtype=F64) + M.T @ C_inv @ M)
    assert torch.allclose(cov, torch.diag(cov.diagonal()))
    gain = cov @ M.T @ C_inv
    model.top = (gain, -(gain @ (W @ b1 + b)), cov.diagonal().sqrt())
    return model


def test_bounds_are_tight_at_the_exact_posterior():
    model = _model(exact=True)
    x = model.sample_data(50, seed=3)
    c = torch.zeros(50, 0, dtype=F64)
    truth = model.exact_log_px(x)
    # Every importance weight equals p(x): log w = log p(x) whatever z was drawn.
    log_w, _ = model.importance_weights(x, c, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(log_w, truth.expand(8, -1), rtol=0, atol=1e-8)
    torch.testing.assert_close(model.iwae(x, c, 8), truth, rtol=0, atol=1e-8)
    # The analytic-KL ELBO (the training objective) is log p(x) in expectation.
    g = torch.Generator().manual_seed(2)
    elbo = torch.stack([model.elbo(x, c, g) for _ in range(400)])
    se = elbo.std(0).max() / math.sqrt(len(elbo))
    assert (elbo.mean(0) - truth).abs().max() < 4 * se + 1e-6


def test_elbo_lt_iwae_le_log_px_for_a_poor_encoder():
    model = _model(exact=False)
    x, c = model.sample_data(400, seed=1), torch.zeros(400, 0, dtype=F64)
    truth = model.exact_log_px(x).mean()
    g = torch.Generator().manual_seed(2)
    repeats = 20
    elbo = torch.stack([model.elbo(x, c, g).mean() for _ in range(repeats)])
    means, ses = [], []
    for k in (1, 4, 16, 64):
        est = torch.stack([model.iwae(x, c, k, generator=g).mean() for _ in range(repeats)])
        means.append(est.mean())
        ses.append(est.std() / math.sqrt(repeats))
    assert elbo.mean() < means[1] - 4 * ses[1]  # strictly, beyond sampling noise
    for i in range(len(means) - 1):
        assert means[i] < means[i + 1] + 4 * (ses[i] + ses[i + 1])
    assert means[-1] < truth + 4 * ses[-1]
    assert means[-1] - means[0] > 0.05
    # IWAE₁ (sampled KL of both layers) and the ELBO (analytic KLs) estimate the same bound.
    assert abs(float(means[0] - elbo.mean())) < 4 * float(ses[0] + elbo.std() / math.sqrt(repeats))


SPANS = [Span("n", "numeric", 0, 3), Span("k", "categorical", 3, 3, sampleable=3)]


def test_the_top_layer_kl_is_the_closed_form_and_every_weight_is_trained():
    torch.manual_seed(0)
    module = LadderVAEModule(SPANS, x_dim=6, latent_dim=3, top_latent_dim=2, hidden=(8,))
    value = torch.randn(16, 1)  # a continuous value: its interval is a point
    x = torch.cat([value, value, torch.zeros(16, 1),
                   torch.eye(3)[torch.randint(0, 3, (16,))]], -1)
    c = torch.zeros(16, 0)
    _, kl = module.elbo_terms(x, c)
    assert kl.shape == (16, 3 + 2) and (kl >= 0).all()
    q2 = module.posterior(x, c)
    closed = 0.5 * (q2.loc**2 + q2.variance - 1 - q2.variance.log())
    torch.testing.assert_close(kl[:, 3:], closed, rtol=1e-5, atol=1e-6)
    # DDP all-reduces what the wrapped forward() touches: the loss must reach every parameter.
    TrainingModule(module, ELBO())(x, c).loss.backward()
    untouched = [n for n, p in module.named_parameters() if p.grad is None or not p.grad.any()]
    assert untouched == []


def test_configs_reject_what_the_ladder_cannot_do():
    with pytest.raises(ValueError, match="latent_layers must be 1 or 2"):
        ModelConfig(latent_layers=3)
    with pytest.raises(ValueError, match="objective 'tcvae' needs latent_layers = 1"):
        TabularVAE(latent_layers=2, objective="tcvae")
    from pipelines.job_config import ConfigError, load_job_config

    with pytest.raises(ConfigError, match="needs latent_layers = 1"):
        load_job_config(None, {"data": "x.parquet", "latent_layers": 2, "objective": "tcvae"})
    assert TrainConfig().objective == "elbo"


def test_a_hierarchical_vae_fits_embeds_top_down_and_round_trips(adult_train, adult_test,
                                                                 tmp_path):
    from serving.service import ModelService

    vae = TabularVAE(latent_layers=2, latent_dim=6, top_latent_dim=3, epochs=2, seed=0,
                     columns={"income": "condition"})
    vae.fit(adult_train.slice(0, 3000))
    rows = adult_test.slice(0, 300)
    assert vae.embedding_dim == 3 and vae.embed(rows).shape == (300, 3)
    both = vae.embed(rows, all_layers=True)  # z₂ then z₁
    assert both.shape == (300, 3 + 6)
    np.testing.assert_array_equal(both[:, :3], vae.embed(rows))
    scores = vae.score(rows, seed=2)
    log_px, elbo = scores.column("log_px").to_numpy(), scores.column("elbo").to_numpy()
    assert np.isfinite(log_px).all() and log_px.mean() > elbo.mean()
    # Scored in pieces (as batch jobs and merged requests do) = scored at once.
    pieces = vae.score(rows, seed=2, segments=[(120, 2), (180, 2, 120)])
    assert pieces.column("log_px").equals(scores.column("log_px"))
    synthetic = vae.sample(200, seed=5)
    assert synthetic.schema.names == rows.schema.names and synthetic.num_rows == 200
    assert vae.sample(50, seed=5, start=150).equals(synthetic.slice(150))

    loaded = TabularVAE.load(vae.save(tmp_path / "ladder"))
    assert loaded.model_config.latent_layers == 2 and loaded.embedding_dim == 3
    assert loaded.score(rows, seed=2).equals(scores)
    assert loaded.sample(200, seed=5).equals(synthetic)
    service = ModelService(loaded, {"name": "ladder"})
    assert service.info()["embedding_dim"] == 3
    assert service.score(rows, seed=2).column("log_px").equals(scores.column("log_px"))
    embedded = service.embed(rows)
    assert embedded.column_names == ["z_0", "z_1", "z_2"]
    np.testing.assert_array_equal(embedded.column("z_2").to_numpy(), vae.embed(rows)[:, 2])
