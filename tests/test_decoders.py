"""The decoder options, tested as math: the autoregressive decoder is a normalised
distribution that reads only earlier columns; the per-column scale is one σ for all rows;
the trimmed loss leaves out exactly the worst rows; generated rows are encoded as data is."""

import itertools

import numpy as np
import pytest
import torch

from vae_core import TabularVAE
from vae_core.config import ModelConfig, TrainConfig
from vae_core.data.transform import Span
from vae_core.nn import ColumnLikelihood, VAEModule
from vae_core.objectives import ELBO

# Three small categorical columns: every encoded row can be enumerated.
WIDTHS = (2, 3, 2)
SPANS = [Span(f"k{i}", "categorical", sum(WIDTHS[:i]), w, sampleable=w)
         for i, w in enumerate(WIDTHS)]
X_DIM = sum(WIDTHS)


def every_row() -> torch.Tensor:
    rows = []
    for choice in itertools.product(*(range(w) for w in WIDTHS)):
        row = torch.zeros(X_DIM)
        for span, k in zip(SPANS, choice, strict=True):
            row[span.start + k] = 1.0
        rows.append(row)
    return torch.stack(rows)


def autoregressive_module(seed: int = 0) -> VAEModule:
    torch.manual_seed(seed)
    module = VAEModule(SPANS, x_dim=X_DIM, latent_dim=2, hidden=(16,), autoregressive=True)
    # The correction starts at zero (a factorised decoder); make it do something.
    for p in module.autoregression.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return module.eval()


def test_the_autoregressive_decoder_is_a_normalised_distribution_over_rows():
    module = autoregressive_module()
    x = every_row()
    z = torch.randn(1, 2).expand(len(x), -1)  # one code, every possible row
    with torch.no_grad():
        log_p = module.column_log_likelihood(x, z, torch.zeros(len(x), 0)).sum(-1)
    torch.testing.assert_close(log_p.exp().sum(), torch.tensor(1.0), rtol=1e-5, atol=1e-6)
    # ... and a different one from the factorised decoder's (the correction is used).
    module.autoregression = None
    with torch.no_grad():
        factorised = module.column_log_likelihood(x, z, torch.zeros(len(x), 0)).sum(-1)
    assert (factorised - log_p).abs().max() > 1e-2


def test_column_j_reads_only_the_columns_before_it():
    module = autoregressive_module()
    x = every_row()
    with torch.no_grad():
        base = module.autoregression(x)
        out_columns = module.likelihood.layout.output_columns
        for j, span in enumerate(SPANS):
            changed = x.clone()
            changed[:, span.start:span.start + span.width] = torch.rand(len(x), span.width)
            delta = (module.autoregression(changed) - base).abs().amax(0)
            assert (delta[out_columns <= j] == 0).all(), j  # itself and earlier: untouched
            if j + 1 < len(SPANS):
                assert delta[out_columns > j].max() > 0, j  # later columns do read it


def test_sampling_draws_from_the_distribution_it_scores():
    module = autoregressive_module(seed=1)
    z = torch.randn(1, 2)
    n = 40_000
    with torch.no_grad():
        draws = module.generate(z.expand(n, -1), torch.zeros(n, 0), torch.Generator()
                                .manual_seed(0))
        x = every_row()
        p = module.column_log_likelihood(x, z.expand(len(x), -1), torch.zeros(len(x), 0)
                                         ).sum(-1).exp()
    freq = (draws[:, None, :] == x[None, :, :]).all(-1).float().mean(0)
    np.testing.assert_allclose(freq.numpy(), p.numpy(), atol=4 * np.sqrt(0.25 / n))


def test_a_generated_row_encodes_back_to_what_the_model_drew(adult_train):
    vae = TabularVAE(epochs=2, seed=0, decoder="autoregressive").fit(adult_train.slice(0, 3000))
    with torch.no_grad():
        x = vae.module.sample(2000, torch.zeros(2000, 0), torch.Generator().manual_seed(0))
    table = vae.transformer.inverse(x.double().numpy(), np.zeros((2000, 0)), generated=True)
    again = vae.transformer.transform(table).x
    # Atoms come back as their exact interval; continuous values to float32 rounding (and
    # integer columns to their rounding: fnlwgt is an integer column without atoms).
    spans = {s.name: s for s in vae.transformer.feature_spans}
    fnlwgt = spans["fnlwgt"]
    other = np.ones(x.shape[1], bool)
    other[fnlwgt.start:fnlwgt.start + 2] = False
    np.testing.assert_allclose(again[:, other], x.numpy()[:, other], atol=1e-4)
    assert spans["age"].atoms and spans["education-num"].atoms  # ages, codes: atoms


def test_a_per_column_scale_is_one_sigma_for_every_row_and_it_is_learned():
    spans = [Span("a", "numeric", 0, 3), Span("b", "numeric", 3, 3)]
    module = VAEModule(spans, x_dim=6, latent_dim=2, hidden=(8,), decoder_scale="column")
    value = torch.randn(64, 2)
    x = torch.stack([value[:, 0], value[:, 0], torch.zeros(64), value[:, 1], value[:, 1],
                     torch.zeros(64)], -1)
    out = module.decode(module.posterior(x, torch.zeros(64, 0)).loc, torch.zeros(64, 0), x)
    scale = module.likelihood.distributions(out).numeric.value.scale
    torch.testing.assert_close(scale, scale[:1].expand_as(scale))
    ELBO()(module, x, torch.zeros(64, 0)).loss.backward()
    assert module.likelihood.numeric.column_scale.grad.abs().sum() > 0


def test_a_shared_scale_is_one_sigma_for_every_row_and_every_column():
    spans = [Span("a", "numeric", 0, 3), Span("b", "numeric", 3, 3)]
    module = VAEModule(spans, x_dim=6, latent_dim=2, hidden=(8,), decoder_scale="shared")
    assert module.likelihood.numeric.column_scale.shape == (1,)
    x = torch.randn(64, 6)
    x[:, [2, 5]] = 0.0
    x[:, 1], x[:, 4] = x[:, 0], x[:, 3]
    out = module.decode(module.posterior(x, torch.zeros(64, 0)).loc, torch.zeros(64, 0), x)
    scale = module.likelihood.distributions(out).numeric.value.scale
    torch.testing.assert_close(scale, scale[:1, :1].expand_as(scale))
    ELBO()(module, x, torch.zeros(64, 0)).loss.backward()
    assert module.likelihood.numeric.column_scale.grad.abs().sum() > 0


def test_a_linear_encoder_gives_a_posterior_affine_in_the_row():
    """μ(a·x₁ + (1 − a)·x₂) = a·μ(x₁) + (1 − a)·μ(x₂), and likewise log σ², for any a: the
    encoder is one affine map of [x, c]; the decoder keeps its hidden layers."""
    torch.manual_seed(0)
    spans = [Span("a", "numeric", 0, 3), Span("b", "numeric", 3, 3)]
    module = VAEModule(spans, x_dim=6, c_dim=1, latent_dim=2, hidden=(8,),
                       encoder="linear")
    x1, x2, c1, c2 = torch.randn(5, 6), torch.randn(5, 6), torch.randn(5, 1), torch.randn(5, 1)
    for a in (0.3, 2.0):
        mixed = module.posterior(a * x1 + (1 - a) * x2, a * c1 + (1 - a) * c2)
        q1, q2 = module.posterior(x1, c1), module.posterior(x2, c2)
        torch.testing.assert_close(mixed.loc, a * q1.loc + (1 - a) * q2.loc)
        torch.testing.assert_close(mixed.scale.log(),
                                   a * q1.scale.log() + (1 - a) * q2.scale.log())
    mlp_encoder = VAEModule(spans, x_dim=6, c_dim=1, latent_dim=2, hidden=(8,))
    half = mlp_encoder.posterior(0.5 * x1 + 0.5 * x2, 0.5 * c1 + 0.5 * c2).loc
    assert not torch.allclose(half, 0.5 * mlp_encoder.posterior(x1, c1).loc
                              + 0.5 * mlp_encoder.posterior(x2, c2).loc)
    assert any(isinstance(m, torch.nn.SiLU) for m in module.decoder.modules())


@pytest.mark.parametrize("encoder", ["linear", "mlp+linear"])
def test_a_linear_encoder_model_round_trips(adult_train, tmp_path, encoder):
    vae = TabularVAE(epochs=1, seed=0, latent_dim=2, encoder=encoder
                     ).fit(adult_train.slice(0, 2000))
    loaded = TabularVAE.load(vae.save(tmp_path / "m"))
    rows = adult_train.slice(2000, 300)
    np.testing.assert_array_equal(loaded.embed(rows), vae.embed(rows))
    assert loaded.model_config.encoder == encoder


def test_a_pooled_shared_scale_model_round_trips(adult_train, tmp_path):
    vae = TabularVAE(epochs=2, seed=0, numeric_transform="pooled", decoder_scale="shared"
                     ).fit(adult_train.slice(0, 2000))
    loaded = TabularVAE.load(vae.save(tmp_path / "m"))
    rows = adult_train.slice(2000, 300)
    np.testing.assert_array_equal(loaded.embed(rows), vae.embed(rows))
    assert loaded.module.likelihood.numeric.column_scale.shape == (1,)
    stds = {e.qmap.std for e in loaded.transformer.encoders.values() if hasattr(e, "qmap")}
    assert len(stds) == 1  # one scale for every numeric column


def test_the_trimmed_loss_is_the_mean_over_the_best_rows():
    torch.manual_seed(0)
    spans = [Span("a", "numeric", 0, 3)]
    module = VAEModule(spans, x_dim=3, latent_dim=2, hidden=(8,))
    value = torch.cat([torch.randn(19), torch.tensor([40.0])])  # one row far out
    x = torch.stack([value, value, torch.zeros(20)], -1)
    c = torch.zeros(20, 0)
    torch.manual_seed(1)
    log_px_z, kl = module.elbo_terms(x, c)
    per_row = -log_px_z.sum(-1) + kl.sum(-1)
    torch.manual_seed(1)
    trimmed = ELBO(trim_fraction=0.1)(module, x, c, kl_weight=1.0)  # 2 of 20 rows left out
    kept = per_row.argsort()[:18]
    torch.testing.assert_close(trimmed.loss, per_row[kept].mean())
    assert 19 not in kept.tolist()  # the far-out row is among those left out
    torch.manual_seed(1)
    assert ELBO()(module, x, c, kl_weight=1.0).loss > trimmed.loss


# One column of each kind, the categorical ones of different widths (flat slots).
MIXED = [Span("n0", "numeric", 0, 3), Span("k0", "categorical", 3, 4, sampleable=3),
         Span("b0", "binary", 7, 2), Span("n1", "numeric", 9, 3),
         Span("k1", "categorical", 12, 2, sampleable=2)]


def test_categorical_columns_score_their_softmax_even_with_far_apart_logits():
    likelihood = ColumnLikelihood(MIXED, min_scale=0.01)
    torch.manual_seed(0)
    out = torch.randn(5, 40, likelihood.out_dim) * 3
    # The decoder output is in group order: 3 units per numeric column, 2 per binary one,
    # then each categorical column's slots.
    first = 3 * 2 + 2 * 1
    k0, k1 = torch.arange(first, first + 4), torch.arange(first + 4, first + 6)
    out[..., k0] += 1e4  # a per-row max over all slots would underflow k1's exp() to 0
    x = torch.zeros(40, 14)
    x[:, 0] = x[:, 1] = x[:, 9] = x[:, 10] = 0.5
    slot0, slot1 = torch.randint(0, 4, (40,)), torch.randint(0, 2, (40,))
    x[torch.arange(40), 3 + slot0] = x[torch.arange(40), 12 + slot1] = 1.0
    lp = likelihood.log_prob(x, out)  # [5, 40, columns in span order]
    want0 = torch.log_softmax(out[..., k0].double(), -1).gather(-1, slot0.expand(5, -1)[..., None])
    want1 = torch.log_softmax(out[..., k1].double(), -1).gather(-1, slot1.expand(5, -1)[..., None])
    torch.testing.assert_close(lp[..., 1].double(), want0[..., 0], rtol=0, atol=1e-3)
    torch.testing.assert_close(lp[..., 4].double(), want1[..., 0], rtol=0, atol=1e-4)
    assert torch.isfinite(lp).all()


@pytest.mark.parametrize("scale", ["row", "column", "shared"])
def test_drawing_one_column_draws_it_as_the_full_draw_does_and_nothing_else(scale):
    likelihood = ColumnLikelihood(MIXED, min_scale=0.01, scale=scale)
    numeric = likelihood.numeric
    if numeric.column_scale is not None:  # a different σ per numeric column
        numeric.column_scale.data = torch.linspace(-2.0, 1.0, len(numeric.column_scale))
    torch.manual_seed(0)
    out = torch.randn(1, likelihood.out_dim).expand(20_000, -1)
    gen = torch.Generator().manual_seed(0)
    full = likelihood.sample(out, gen)
    assert full.shape == (20_000, 14)
    for j, span in enumerate(MIXED):
        one = likelihood.sample_column(out, j, gen)
        assert one.shape == (20_000, span.width), span.name  # that column's slots, no others
        slots = slice(span.start, span.start + span.width)
        mean, std = one.mean(0), one.std(0)
        torch.testing.assert_close(mean, full[:, slots].mean(0), rtol=0, atol=0.03)
        torch.testing.assert_close(std, full[:, slots].std(0), rtol=0.05, atol=0.01)
        most_likely = likelihood.sample_column(out[:1], j, None, most_likely=True)
        assert torch.equal(most_likely,
                           likelihood.sample(out[:1], None, most_likely=True)[:, slots])


def test_a_span_of_the_wrong_width_is_refused_by_name():
    with pytest.raises(ValueError, match="numeric column 'a' spans 2 slots, not 3"):
        ColumnLikelihood([Span("a", "numeric", 0, 2)], min_scale=0.01)


@pytest.mark.parametrize("make, words", [
    (lambda: ModelConfig(decoder="deep"), "decoder 'deep' is not one of"),
    (lambda: ModelConfig(numeric_transform="log"), "numeric_transform 'log' is not one of"),
    (lambda: ModelConfig(encoder="deep"), "encoder 'deep' is not one of mlp, linear"),
    (lambda: ModelConfig(encoder="linear", latent_layers=2), "encoder 'linear' needs"),
    (lambda: ModelConfig(encoder="mlp+linear", latent_layers=2),
     r"encoder 'mlp\+linear' needs"),
    (lambda: ModelConfig(decoder_scale="cell"),
     "decoder_scale 'cell' is not one of row, column, shared"),
    (lambda: TrainConfig(trim_fraction=0.6), r"trim_fraction must be in \[0, 0.5\)"),
    (lambda: TabularVAE(objective="tcvae", trim_fraction=0.1), "trim_fraction applies to"),
    (lambda: TrainConfig(distance_weight=-1.0), "distance_weight must be a number ≥ 0"),
    (lambda: TrainConfig(distance_weight=float("nan")), "distance_weight must be a number ≥ 0"),
    (lambda: TrainConfig(distance_rest_share=1.5), r"distance_rest_share must be in \[0, 1\]"),
    (lambda: TrainConfig(distance_directions="pca"),
     "distance_directions 'pca' is not one of tracked, exact"),
    (lambda: TrainConfig(distance_rest_share=float("nan")),
     r"distance_rest_share must be in \[0, 1\]"),
])
def test_bad_options_are_refused_by_name(make, words):
    with pytest.raises(ValueError, match=words):
        make()


def test_reconstructions_keep_the_columns_a_trained_model_knows(adult_train, adult_test):
    vae = TabularVAE(epochs=6, seed=0, batch_size=128).fit(adult_train.slice(0, 8000))
    rows = adult_test.slice(0, 1000)
    rebuilt = vae.reconstruct(rows)
    assert rebuilt.schema == rows.schema
    same = {c: np.mean(np.asarray(rebuilt.column(c)) == np.asarray(rows.column(c)))
            for c in ("sex", "relationship", "marital-status")}
    # Better than the most frequent value of each column in these rows.
    for c, share in same.items():
        majority = rows.column(c).value_counts().field("counts").to_numpy().max() / 1000
        assert share > majority + 0.05, (c, share, majority)
