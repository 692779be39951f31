"""The distance term, tested as math: the stress is zero exactly for codes whose distances are
the rows' up to scale; encoded rows, rescaled, are at PCA's distances; and training with the
term gives embeddings that keep distances better."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from vae_core import ColumnTransformer, TableStatistics, TabularVAE, TrainConfig, infer_schema
from vae_core.nn import LadderVAEModule, VAEModule
from vae_core.objectives import objective_for
from vae_core.objectives.distances import distance_stress, encoded_distance_scale


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
