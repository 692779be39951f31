"""β-TCVAE's KL decomposition, tested as math, and the objective through fit/save/load/serve.

MI + TC + dimension-wise KL must add up to the KL; each term must vanish where it should
(posterior = prior) and total correlation must show up exactly when the latent dimensions
of the aggregate posterior depend on each other.
"""

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vae_core import TabularVAE, TrainConfig
from vae_core.objectives import kl_decomposition


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_the_three_terms_sum_to_the_kl_within_sampling_error(estimator):
    torch.manual_seed(0)
    q = Normal(torch.randn(256, 4), torch.rand(256, 4) * 0.9 + 0.1)
    exact = kl_divergence(q, Normal(0.0, 1.0)).sum(-1).mean()
    sums = []
    for _ in range(200):
        z = q.rsample()
        mi, tc, dim_kl = kl_decomposition(q, z, dataset_size=10_000, estimator=estimator)
        per_row = mi + tc + dim_kl
        # per sample, the split is exact: the terms telescope to log q(z|x) − log p(z)
        torch.testing.assert_close(per_row, q.log_prob(z).sum(-1) - Normal(0.0, 1.0)
                                   .log_prob(z).sum(-1), rtol=1e-5, atol=1e-4)
        sums.append(per_row.mean())
    sums = torch.stack(sums)
    stderr = sums.std() / len(sums) ** 0.5
    assert abs(sums.mean() - exact) < 4 * stderr + 1e-3


def test_the_estimator_in_closed_form_when_the_posterior_is_the_prior():
    """q(z|x) = p(z) for every row: then q(z) = p(z), and minibatch-weighted sampling's
    log q̂(z) = log p(z) − log N exactly, so MI = log N, TC = (d−1)·log N and dim-wise
    KL = −d·log N: MWS's known bias, which cancels in the sum (here 0 = the KL)."""
    n, d = 5000, 3
    q = Normal(torch.zeros(64, d), torch.ones(64, d))
    mi, tc, dim_kl = kl_decomposition(q, q.sample(), dataset_size=n)
    log_n = torch.log(torch.tensor(float(n)))
    for term, expected in ((mi, log_n), (tc, (d - 1) * log_n), (dim_kl, -d * log_n)):
        torch.testing.assert_close(term, expected.expand(64), atol=1e-4, rtol=0)


def test_the_stratified_estimator_is_exact_when_the_posterior_is_the_prior():
    """With weights summing to one, q̂(z) = p(z) exactly, so every term vanishes."""
    q = Normal(torch.zeros(64, 3), torch.ones(64, 3))
    for term in kl_decomposition(q, q.sample(), dataset_size=5000, estimator="mss"):
        torch.testing.assert_close(term, torch.zeros(64), atol=1e-4, rtol=0)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_total_correlation_tracks_the_dependence_between_latent_dimensions(estimator):
    """Aggregate posteriors from the same means, once independent across the two dimensions
    and once tied (z₁ and z₂ share the mean): the tied one is a Gaussian with correlation
    ρ = 1/(1+σ²), whose TC is −½·log(1−ρ²). An estimator's bias is shared by the two, so
    the difference of the estimates must match the closed form."""
    torch.manual_seed(1)
    b, sigma = 2048, 0.05
    means = torch.randn(b, 2)
    independent = Normal(means, torch.full((b, 2), sigma))
    tied = Normal(means[:, :1].expand(-1, 2), torch.full((b, 2), sigma))
    tc = {name: kl_decomposition(q, q.sample(), b, estimator)[1].mean()
          for name, q in (("independent", independent), ("tied", tied))}
    rho = 1 / (1 + sigma**2)
    exact = -0.5 * torch.log(torch.tensor(1 - rho**2))
    assert abs((tc["tied"] - tc["independent"]) - exact) < 0.5, (tc, exact)


def test_objective_is_checked():
    with pytest.raises(ValueError, match="objective 'tc' is not one of elbo, tcvae"):
        TrainConfig(objective="tc")
    assert TrainConfig().tc_weights is None
    assert TrainConfig(objective="tcvae", tc_beta=4.0).tc_weights == (1.0, 4.0, 1.0)
    with pytest.raises(ValueError, match="tc_estimator 'x' is not mws or mss"):
        TrainConfig(tc_estimator="x")


def test_a_tcvae_fits_reports_its_terms_and_round_trips(adult_train, adult_test, tmp_path):
    from serving.service import ModelService

    vae = TabularVAE(epochs=2, seed=0, objective="tcvae", tc_beta=4.0, latent_dim=4)
    vae.fit(adult_train.slice(0, 3000))
    last = vae.history[-1]
    assert None not in (last.train_mi, last.train_tc, last.train_dim_kl)
    total = last.train_mi + last.train_tc + last.train_dim_kl
    assert abs(total - last.train_kl) < 0.1 * abs(last.train_kl) + 0.2  # MC vs closed form
    loaded = TabularVAE.load(vae.save(tmp_path / "tcvae"))
    assert loaded.train_config.objective == "tcvae" and loaded.train_config.tc_beta == 4.0
    rows = adult_test.slice(0, 50)
    assert loaded.score(rows, seed=2).equals(vae.score(rows, seed=2))
    served = ModelService(loaded, {"name": "tcvae"}).score(rows, seed=2)
    assert served.column("log_px").equals(vae.score(rows, seed=2).column("log_px"))
