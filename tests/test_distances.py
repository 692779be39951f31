"""The distance term, tested as math: the stress is zero exactly for codes whose distances are
the rows' up to scale; encoded rows, rescaled, are at PCA's distances; and training with the
term gives embeddings that keep distances better."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from vae_core import ColumnTransformer, TableStatistics, TabularVAE, TrainConfig, infer_schema
from vae_core.nn import LadderVAEModule, VAEModule
from vae_core.objectives import ELBO, objective_for
from vae_core.objectives.distances import (
    PrincipalSubspace,
    WithDistanceStress,
    distance_stress,
    encoded_distance_scale,
    principal_directions,
    principal_projection,
    row_moments,
)
from vae_core.training import aim_at_principal_directions


def test_the_stress_is_zero_for_a_scaled_rotation_and_positive_for_a_projection():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(40, 5, generator=g, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    assert distance_stress(3.0 * rows @ rotation, rows) < 1e-12
    projected = distance_stress(rows[:, :2], rows)
    assert projected > 1e-3
    shuffled = distance_stress(rows[torch.randperm(40, generator=g)], rows)
    assert shuffled > projected  # the worse the distances are kept, the larger


def test_the_stress_of_too_few_or_identical_rows_is_zero_and_differentiable():
    codes = torch.randn(3, 2, requires_grad=True)
    for rows in (torch.zeros(3, 4), torch.ones(1, 4)):
        stress = distance_stress(codes[:len(rows)], rows)
        stress.backward()
        assert torch.isfinite(stress) and torch.isfinite(codes.grad).all()


def test_rescaled_encoded_rows_are_at_the_distances_pca_is_given():
    rng = np.random.default_rng(0)
    price, city = rng.normal(50, 10, 30), rng.choice(["a", "b", "c"], 30)
    flag = (np.arange(30) % 4 == 0).astype(float)  # p = 8/30: a flag, standardised by PCA
    table = pa.table({"price": price, "city": city, "flag": flag})
    schema = infer_schema(table.schema, {"flag": "binary"})
    transformer = ColumnTransformer.fit(schema, TableStatistics.of(schema, table),
                                        numeric_transform="standard")
    x = torch.from_numpy(transformer.transform(table).x)
    scale = encoded_distance_scale(transformer.feature_spans)
    # PCA's input: the standardised number, the category one-hot and the standardised flag.
    z = (price - price.mean()) / price.std(ddof=1)
    one_hot = (city[:, None] == np.array(["a", "b", "c"])[None, :]).astype(float)
    z_flag = (flag - flag.mean()) / flag.std(ddof=0)
    expected = torch.nn.functional.pdist(torch.from_numpy(np.column_stack([z, one_hot,
                                                                            z_flag])))
    # ddof of the fitted std aside (a factor ≤ √(30/29)), the distances are PCA's
    got = torch.nn.functional.pdist((x * scale).double())
    ratio = got[expected > 0] / expected[expected > 0]
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio.mean().item()), rtol=2e-2,
                               atol=0)
    assert abs(ratio.mean().item() - 1) < 0.05


@pytest.mark.parametrize("make", [
    lambda spans: VAEModule(spans, x_dim=6, latent_dim=2, hidden=(8,)),
    lambda spans: LadderVAEModule(spans, x_dim=6, latent_dim=3, top_latent_dim=2, hidden=(8,)),
])
def test_the_objective_adds_the_weighted_stress_of_the_embedding_to_the_loss(make):
    torch.manual_seed(0)
    spans = ColumnTransformer.fit(*_small_schema_and_stats()).feature_spans
    module = make(spans)
    x, c = torch.randn(16, 6), torch.zeros(16, 0)
    torch.manual_seed(1)
    plain = objective_for(TrainConfig())(module, x, c, 1.0).loss
    torch.manual_seed(1)
    weighted = objective_for(TrainConfig(distance_weight=10.0))(module, x, c, 1.0).loss
    stress = distance_stress(module.posterior(x, c).loc, x * encoded_distance_scale(spans))
    torch.testing.assert_close(weighted - plain, 10.0 * stress)


def _small_schema_and_stats():
    table = pa.table({"a": [1.0, 2.0, 3.5], "b": [0.5, -1.0, 2.0]})
    schema = infer_schema(table.schema)
    return schema, TableStatistics.of(schema, table)


def test_training_with_the_distance_term_keeps_held_out_distances_better(adult_train,
                                                                        adult_test):
    fit, held = adult_train.slice(0, 3000), adult_test.slice(0, 500)

    def held_out_stress(weight: float) -> float:
        vae = TabularVAE(epochs=4, seed=0, latent_dim=4, numeric_transform="standard",
                         distance_weight=weight).fit(fit)
        rows = torch.from_numpy(vae.transformer.transform(held).x)
        scale = encoded_distance_scale(vae.transformer.feature_spans)
        return distance_stress(torch.from_numpy(vae.embed(held)), rows * scale).item()

    assert held_out_stress(100.0) < 0.5 * held_out_stress(0.0)


def test_the_tracked_subspace_is_the_covariances_top_eigenvectors():
    g = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
    sd = torch.tensor([4.0, 3.0, 2.5] + [1.0] * 9)  # a clear gap after the top 3
    subspace = PrincipalSubspace(3)
    for _ in range(300):
        subspace.update(torch.randn(256, 12, generator=g) * sd @ rotation.T + 5.0)
    cosines = torch.linalg.svdvals(rotation[:, :3].T @ subspace.basis)  # principal angles
    assert cosines.min() > 0.99
    torch.testing.assert_close(subspace.basis.T @ subspace.basis, torch.eye(3), atol=1e-5,
                               rtol=0)


@pytest.mark.parametrize("rest_share", [0.0, 0.3, 1.0])
def test_the_target_distances_are_the_top_ones_plus_a_share_of_the_rest(rest_share):
    g = torch.Generator().manual_seed(1)
    subspace = PrincipalSubspace(2)
    subspace.update(torch.randn(64, 6, generator=g, dtype=torch.float64))
    rows = torch.randn(20, 6, generator=g, dtype=torch.float64)
    v = subspace.basis
    top = torch.nn.functional.pdist(rows @ v) ** 2
    rest = torch.nn.functional.pdist(rows - rows @ v @ v.T) ** 2
    got = torch.nn.functional.pdist(subspace.target(rows, rest_share)) ** 2
    torch.testing.assert_close(got, top + rest_share * rest)
    if rest_share == 1.0:  # all of it: the rows' own distances
        torch.testing.assert_close(got, torch.nn.functional.pdist(rows) ** 2)


def test_a_first_batch_too_small_for_the_directions_leaves_the_rows_distances():
    torch.manual_seed(0)
    spans = ColumnTransformer.fit(*_small_schema_and_stats()).feature_spans
    module = VAEModule(spans, x_dim=6, latent_dim=4, hidden=(8,))
    objective = objective_for(TrainConfig(distance_weight=1.0, distance_rest_share=0.0))
    x, c = torch.randn(3, 6), torch.zeros(3, 0)  # 3 rows: no 4 directions to find
    loss = objective(module, x, c, 1.0).loss
    assert torch.isfinite(loss) and objective._subspace.basis is None
    objective(module, torch.randn(32, 6), torch.zeros(32, 0), 1.0)
    assert objective._subspace.basis.shape == (6, 4)


def _rows_with_top_directions(n: int, width: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(width, width, generator=g, dtype=torch.float64))
    sd = torch.linspace(5.0, 0.5, width, dtype=torch.float64)  # distinct eigenvalues
    return torch.randn(n, width, generator=g, dtype=torch.float64) * sd @ rotation.T + 3.0


def test_row_moments_add_up_over_batches_and_hold_the_covariance():
    rows = _rows_with_top_directions(300, 5, seed=2)
    whole = row_moments([rows], 5)
    torch.testing.assert_close(row_moments(rows.split(64), 5), whole)
    assert whole[0, 0] == 300
    torch.testing.assert_close(whole[1:, 0] / 300, rows.mean(0))
    covariance = whole[1:, 1:] / 300 - torch.outer(whole[1:, 0], whole[1:, 0]) / 300**2
    torch.testing.assert_close(covariance, torch.cov(rows.T, correction=0))
    torch.testing.assert_close(row_moments([], 5), torch.zeros(6, 6, dtype=torch.float64))


def test_exact_directions_are_pcas_components_of_the_rescaled_rows():
    rows = _rows_with_top_directions(400, 7, seed=3)
    scale = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 0.7])
    got = principal_directions(row_moments([rows], 7), 3, scale).double()
    scaled = rows * scale.double()
    # PCA's components: the right singular vectors of the centred rows, largest first
    components = torch.linalg.svd(scaled - scaled.mean(0), full_matrices=False)[2][:3].T
    torch.testing.assert_close((got * components).sum(0).abs(), torch.ones(3, dtype=torch.float64),
                               atol=1e-5, rtol=0)  # each the same direction, up to its sign
    with pytest.raises(ValueError, match="no rows"):
        principal_directions(row_moments([], 7), 3, scale)


def test_fixed_directions_aim_the_stress_and_training_batches_do_not_move_them():
    torch.manual_seed(0)
    spans = ColumnTransformer.fit(*_small_schema_and_stats()).feature_spans
    module = VAEModule(spans, x_dim=6, latent_dim=2, hidden=(8,))
    scale = encoded_distance_scale(spans)
    rows = _rows_with_top_directions(200, 6, seed=4).float()
    plain = objective_for(TrainConfig())
    objective = objective_for(TrainConfig(distance_weight=5.0, distance_rest_share=0.0,
                                          distance_directions="exact"))
    assert isinstance(objective, WithDistanceStress)
    objective.fix_directions(module, row_moments([rows], 6))
    fixed = principal_directions(row_moments([rows], 6), 2, scale)
    module.train()
    x, c = torch.randn(32, 6), torch.zeros(32, 0)
    torch.manual_seed(1)
    base = plain(module, x, c, 1.0).loss
    torch.manual_seed(1)
    loss = objective(module, x, c, 1.0).loss
    stress = distance_stress(module.posterior(x, c).loc, (x * scale) @ fixed)
    torch.testing.assert_close(loss - base, 5.0 * stress)
    for _ in range(5):  # a tracked subspace would move towards these batches' directions
        objective(module, torch.randn(64, 6) * 10, torch.zeros(64, 0), 1.0)
    torch.testing.assert_close(objective._subspace.basis, fixed)


def test_an_exact_fit_takes_its_directions_from_every_row(monkeypatch):
    g = np.random.default_rng(0)
    table = pa.table({f"v{j}": g.normal(size=400) * (j + 1) for j in range(6)})
    seen = []
    fix = WithDistanceStress.fix_directions
    monkeypatch.setattr(WithDistanceStress, "fix_directions",
                        lambda self, module, moments: seen.append(moments) or fix(self, module,
                                                                                 moments))
    vae = TabularVAE(epochs=1, seed=0, latent_dim=2, numeric_transform="standard",
                     distance_weight=1.0, distance_rest_share=0.0,
                     distance_directions="exact").fit(table)
    (moments,) = seen  # once, before training
    assert moments[0, 0] == 400  # training and validation rows alike
    x = torch.from_numpy(vae.transformer.transform(table).x)
    torch.testing.assert_close(moments, row_moments([x], x.shape[1]))


def test_pcas_code_is_an_affine_map_at_the_stress_minimum_with_unit_mean_variance():
    rows = _rows_with_top_directions(400, 7, seed=5)
    scale = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 0.7])
    moments = row_moments([rows], 7)
    basis = principal_directions(moments, 3, scale)
    weight, bias = principal_projection(moments, basis, scale)
    codes = rows.float() @ weight.T + bias
    scaled = rows * scale.double()
    pca = (scaled - scaled.mean(0)) @ basis.double()  # PCA's scores along the directions
    torch.testing.assert_close(codes.double(), pca * (codes.double() / pca)[0, 0], atol=1e-4,
                               rtol=1e-4)  # one factor for every coordinate
    torch.testing.assert_close(codes.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(codes.var(0, correction=0).mean(), torch.tensor(1.0))
    assert distance_stress(codes, (rows * scale.double()).float() @ basis) < 1e-8


@pytest.mark.parametrize("encoder", ["linear", "mlp+linear"])
def test_a_posterior_mean_started_at_a_map_is_that_map_and_still_learns(encoder):
    torch.manual_seed(0)
    spans = ColumnTransformer.fit(*_small_schema_and_stats()).feature_spans
    module = VAEModule(spans, x_dim=6, c_dim=1, latent_dim=2, hidden=(8,), encoder=encoder)
    assert module.has_affine_mean
    weight, bias = torch.randn(2, 6), torch.randn(2)
    module.start_mean_at(weight, bias)
    x, c = torch.randn(32, 6), torch.randn(32, 1)  # the condition's column gets weight 0
    torch.testing.assert_close(module.posterior(x, c).loc, x @ weight.T + bias)
    module.start_mean_at(weight[:1], bias[:1])  # fewer directions than code dimensions
    torch.testing.assert_close(module.posterior(x, c).loc,
                               torch.cat([x @ weight[:1].T + bias[:1], torch.zeros(32, 1)], 1))
    ELBO()(module, x, c).loss.backward()
    mean_rows = module.posterior_head.weight.grad[:2]  # the MLP's share of the mean
    assert mean_rows.abs().sum() > 0
    if module.mean_skip is not None:
        assert module.mean_skip.weight.grad[:, :6].abs().sum() > 0


def test_only_a_posterior_mean_with_an_affine_part_can_start_at_a_map():
    spans = ColumnTransformer.fit(*_small_schema_and_stats()).feature_spans
    for module in (VAEModule(spans, x_dim=6, latent_dim=2, hidden=(8,)),
                   LadderVAEModule(spans, 6, 0, 2, 2, (8,))):
        assert not module.has_affine_mean
        with pytest.raises(ValueError, match="no affine part"):
            module.start_mean_at(torch.zeros(2, 6), torch.zeros(2))


@pytest.mark.parametrize("encoder, start", [("mlp+linear", True), ("mlp+linear", False),
                                            ("mlp", True)])
def test_an_exact_fit_starts_its_code_at_pcas_where_the_encoder_can_hold_it(encoder, start):
    torch.manual_seed(0)
    spans = ColumnTransformer.fit(*_small_schema_and_stats()).feature_spans
    module = VAEModule(spans, x_dim=6, latent_dim=2, hidden=(8,), encoder=encoder)
    objective = objective_for(TrainConfig(distance_weight=5.0, distance_rest_share=0.0,
                                          distance_directions="exact"))
    rows = _rows_with_top_directions(300, 6, seed=6).float()
    aim_at_principal_directions(module, objective, row_moments([rows], 6), start=start)
    basis = principal_directions(row_moments([rows], 6), 2, encoded_distance_scale(spans))
    stress = distance_stress(module.posterior(rows, torch.zeros(300, 0)).loc,
                             (rows * encoded_distance_scale(spans)) @ basis)
    assert (stress < 1e-8) == (encoder == "mlp+linear" and start)  # else a random code's
