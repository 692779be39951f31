"""TabularVAE on the bundled Adult table: fit, embed, score, sample, save/load, bad input."""

import itertools
import os
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from vae_core import DataError, ModelFormatError, SchemaError, TabularVAE, TrainConfig
from vae_core.data.transform import Span
from vae_core.nn import VAEModule
from vae_core.objectives import LossOutput
from vae_core.training import (
    EarlyStopping,
    EpochSums,
    ValidationSums,
    epoch_report,
    holdout_mask,
    step_terms,
    validation_means,
    validation_terms,
)


def with_column(t: pa.Table, name: str, values) -> pa.Table:
    field = t.schema.field(name)
    return t.set_column(t.schema.get_field_index(name), name, pa.array(values, field.type))


def test_fit_reports_progress_and_keeps_the_best_epoch(adult_cvae):
    reports = adult_cvae.progress_reports
    assert [r.epoch for r in reports] == list(range(1, len(reports) + 1))
    assert reports[-1].val_elbo > reports[0].val_elbo  # it learned something
    assert all(r.rows_per_second > 0 for r in reports)
    assert sum(r.best for r in reports) >= 1


def test_early_stopping_keeps_a_copy_not_a_view():
    module = torch.nn.Linear(2, 2)
    stopper = EarlyStopping(patience=2)
    stopper.update(1.0, module)
    with torch.no_grad():
        module.weight.add_(10.0)
    assert not torch.equal(stopper.best_state["weight"], module.weight)
    assert not stopper.update(0.5, module) and not stopper.should_stop
    stopper.update(0.4, module)
    assert stopper.should_stop


def test_the_validation_objective_is_the_beta_weighted_elbo():
    torch.manual_seed(0)
    module = VAEModule([Span("a", "numeric", 0, 3)], x_dim=3, latent_dim=2, hidden=(8,))
    value = torch.randn(50)
    x, c = torch.stack([value, value, torch.zeros(50)], -1), torch.zeros(50, 0)

    def terms(beta, trim=0.0):
        return validation_terms(module, x, c, torch.Generator().manual_seed(3), beta, trim)

    log_px_z, kl = module.elbo_terms(x, c, torch.Generator().manual_seed(3))
    elbo, objective, rows = terms(0.2)
    assert rows == 50
    np.testing.assert_allclose(elbo, float((log_px_z.sum(-1) - kl.sum(-1)).sum()), rtol=1e-5)
    np.testing.assert_allclose(objective - elbo, 0.8 * float(kl.sum()), rtol=1e-4)
    assert terms(1.0)[0] == terms(1.0)[1]  # β = 1: the objective is the ELBO
    per_row = log_px_z.sum(-1) - 0.2 * kl.sum(-1)
    _, trimmed, kept = terms(0.2, trim=0.1)  # the 5 lowest rows left out
    assert kept == 45
    np.testing.assert_allclose(trimmed, float(per_row.sort().values[5:].sum()), rtol=1e-5)


def test_early_stopping_keeps_the_epoch_best_by_the_objective(adult_train):
    rows = adult_train.slice(0, 3000)
    vae = TabularVAE(epochs=6, beta=0.05, kl_warmup_epochs=1, seed=0).fit(rows)
    objectives = [r.val_objective for r in vae.history]
    best = int(np.argmax(objectives))
    assert [r.epoch for r in vae.history if r.best][-1] == best + 1
    # The fit ends with that epoch's weights: its objective is recomputed exactly.
    enc = vae.transformer.transform(rows)
    val = holdout_mask(enc.x, vae.train_config.validation_fraction, vae.train_config.seed)
    _, again = validation_means(vae.module, enc.x[val], enc.c[val], beta=0.05)
    np.testing.assert_allclose(again, objectives[best], rtol=1e-5)
    # With β < 1 the ELBO is lower than the objective by (1 − β)·KL.
    assert all(r.val_elbo < r.val_objective for r in vae.history)


def test_sampled_rows_have_the_input_schema_and_known_categories(adult_cvae, adult_train):
    synthetic = adult_cvae.sample(2000, seed=1)
    assert synthetic.schema == adult_train.schema and synthetic.num_rows == 2000
    for name in adult_train.column_names:
        assert synthetic.column(name).null_count == 0, name
        if pa.types.is_string(adult_train.schema.field(name).type):
            known = set(adult_train.column(name).unique().to_pylist())
            assert set(synthetic.column(name).unique().to_pylist()) <= known, name
        else:  # inside the training range
            lo, hi = pc.min_max(adult_train.column(name)).values()
            assert pc.min(synthetic.column(name)).as_py() >= lo.as_py(), name
            assert pc.max(synthetic.column(name)).as_py() <= hi.as_py(), name


def test_sampling_is_deterministic_for_a_seed(adult_cvae):
    a, b = adult_cvae.sample(300, seed=7), adult_cvae.sample(300, seed=7)
    assert a.equals(b)
    assert not a.equals(adult_cvae.sample(300, seed=8))


def test_cvae_samples_honour_the_condition(adult_cvae, adult_train):
    rich = adult_cvae.sample(1000, conditions={"income": ">50K"}, seed=0)
    poor = adult_cvae.sample(1000, conditions={"income": "<=50K"}, seed=0)
    assert rich.column("income").unique().to_pylist() == [">50K"]
    assert poor.column("income").unique().to_pylist() == ["<=50K"]
    # The condition reaches the decoder: the real data's direction shows in the samples.
    def married(t):
        return pc.mean(pc.equal(t.column("relationship"), "Husband")).as_py()
    assert married(rich) > married(poor) + 0.1
    with pytest.raises(SchemaError, match="'income': condition value 'lots'"):
        adult_cvae.sample(10, conditions={"income": "lots"})
    with pytest.raises(SchemaError, match="'salary': it is not a column of this model"):
        adult_cvae.sample(10, conditions={"salary": 30})


def test_scores_bounds_and_determinism(adult_cvae, adult_test):
    rows = adult_test.slice(0, 500)
    s = adult_cvae.score(rows, per_column=True)
    elbo, log_px = s.column("elbo").to_numpy(), s.column("log_px").to_numpy()
    assert (elbo <= log_px + 1e-5).all()  # Jensen on the same K samples
    assert s.equals(adult_cvae.score(rows, per_column=True))
    assert adult_cvae.score(rows, iwae_samples=64).column("log_px").to_numpy().mean() > \
        adult_cvae.score(rows, iwae_samples=2).column("log_px").to_numpy().mean()
    pct = s.column("percentile").to_numpy()
    assert ((pct >= 0) & (pct <= 100)).all()
    rate = np.mean(s.column("is_anomaly").to_numpy(zero_copy_only=False))
    assert rate < 0.05  # calibrated at the 99th percentile of held-out rows
    nll = np.stack([s.column(f"nll_{c}").to_numpy() for c in
                    [f.name for f in adult_cvae.transformer.schema.features]], axis=1)
    top = s.column("top_columns").to_pylist()
    names = [f.name for f in adult_cvae.transformer.schema.features]
    assert all(t[0] == names[i] for t, i in zip(top, nll.argmax(1), strict=True))


@pytest.mark.parametrize("k", [16, 2048])  # 2048: 128 rows per pass, so segments split
def test_merged_requests_score_exactly_as_alone(adult_cvae, adult_test, k):
    """Serving merges concurrent requests into one pass; each must get its solo result."""
    parts = [adult_test.slice(0, 1), adult_test.slice(1, 300), adult_test.slice(301, 5)]
    seeds = [3, 7, 3]
    merged = adult_cvae.score(pa.concat_tables(parts), iwae_samples=k,
                              segments=[(p.num_rows, s) for p, s in zip(parts, seeds, strict=True)])
    alone = pa.concat_tables([adult_cvae.score(p, iwae_samples=k, seed=s)
                              for p, s in zip(parts, seeds, strict=True)])
    for name in ("elbo", "log_px", "percentile"):
        np.testing.assert_allclose(merged.column(name).to_numpy(), alone.column(name).to_numpy(),
                                   rtol=1e-5, atol=1e-4, err_msg=name)
    assert merged.column("top_columns").equals(alone.column("top_columns"))
    other_seed = adult_cvae.score(parts[1], iwae_samples=k, seed=8).column("log_px").to_numpy()
    assert not np.allclose(other_seed, merged.column("log_px").to_numpy()[1:301])
    with pytest.raises(ValueError, match="segments cover"):
        adult_cvae.score(parts[1], segments=[(10, 0)])


@pytest.mark.parametrize("k", [16, 2048])
def test_a_table_scored_in_pieces_scores_as_one_call(adult_cvae, adult_test, k):
    """Batch jobs score a file in pieces on many workers: (rows, seed, start) segments."""
    rows = adult_test.slice(0, 1200)
    whole = adult_cvae.score(rows, iwae_samples=k, seed=5)
    cuts = [0, 1, 137, 256, 700, 1200]  # inside blocks, on a block edge, across passes
    pieces = pa.concat_tables([
        adult_cvae.score(rows.slice(a, b - a), iwae_samples=k,
                         segments=[(b - a, 5, a)]) for a, b in itertools.pairwise(cuts)])
    for name in ("elbo", "log_px", "is_anomaly"):
        np.testing.assert_allclose(pieces.column(name).to_numpy(), whole.column(name).to_numpy(),
                                   rtol=1e-5, atol=1e-4, err_msg=name)


def test_sampling_in_pieces_gives_the_rows_of_one_call(adult_cvae, adult_test):
    """sample(a + b) == sample(a) + sample(b, start=a): chunks on many workers, one result."""
    whole = adult_cvae.sample(2500, seed=9)
    pieces = pa.concat_tables([adult_cvae.sample(700, seed=9),
                               adult_cvae.sample(1800, seed=9, start=700)])
    assert pieces.equals(whole)
    assert not adult_cvae.sample(1800, seed=9, start=701).equals(pieces.slice(700))
    # With a table of condition rows, each piece takes its own slice of the conditions.
    conditions = adult_test.select(["income"]).slice(0, 2500)
    whole = adult_cvae.sample(2500, conditions=conditions, seed=9)
    pieces = pa.concat_tables([adult_cvae.sample(1030, conditions=conditions.slice(0, 1030),
                                                 seed=9),
                               adult_cvae.sample(1470, conditions=conditions.slice(1030),
                                                 seed=9, start=1030)])
    assert pieces.equals(whole)
    assert whole.column("income").equals(conditions.column("income"))


def test_corrupted_rows_score_worse(adult_cvae, adult_test):
    clean = adult_test.slice(0, 400)
    rng = np.random.default_rng(0)
    ages = clean.column("age").to_numpy()
    corrupted = with_column(clean, "age", ages + rng.choice([-1, 1], 400) * 60)
    country = with_column(clean, "native-country", ["Atlantis"] * 400)
    base = adult_cvae.score(clean).column("score").to_numpy()
    for bad in (corrupted, country):
        s = adult_cvae.score(bad)
        assert s.column("score").to_numpy().mean() > base.mean() + 5
    unseen = adult_cvae.score(country)
    assert unseen.column("unseen_categories").to_pylist() == [1] * 400
    # An unseen country costs ~10 nats; only a rarer value elsewhere in a row may top it.
    tops = [t[0] for t in unseen.column("top_columns").to_pylist()]
    assert tops.count("native-country") >= 0.9 * len(tops)


def test_out_of_range_value_scores_worse_than_every_in_range_value(adult_cvae, adult_train):
    row = adult_train.slice(0, 1)
    ages = sorted(set(adult_train.column("age").to_pylist()))
    candidates = pa.concat_tables([with_column(row, "age", [a]) for a in [*ages, 150]])
    scores = adult_cvae.score(candidates).column("score").to_numpy()
    assert scores[-1] > scores[:-1].max()


def test_embeddings(adult_cvae, adult_test):
    mu, sigma = adult_cvae.embed(adult_test.slice(0, 300), return_std=True)
    assert mu.shape == sigma.shape == (300, 8) and (sigma > 0).all()
    np.testing.assert_array_equal(mu, adult_cvae.embed(adult_test.slice(0, 300)))
    assert mu.std(0).max() > 0.3  # not collapsed to the prior


def test_save_load_round_trip(adult_cvae, adult_test, tmp_path):
    rows = adult_test.slice(0, 200)
    adult_cvae.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "weights.pt"]
    loaded = TabularVAE.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.embed(rows), adult_cvae.embed(rows))
    assert loaded.score(rows).equals(adult_cvae.score(rows))
    assert loaded.sample(50, seed=3).equals(adult_cvae.sample(50, seed=3))
    assert loaded.calibration.threshold() == adult_cvae.calibration.threshold()


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_payload_is_refused_and_never_runs(adult_cvae, tmp_path):
    folder = adult_cvae.save(tmp_path / "m")
    payload = _Payload()
    payload.marker = tmp_path / "pwned"
    (folder / "weights.pt").write_bytes(pickle.dumps({"w": payload}))
    with pytest.raises(ModelFormatError, match="weights.pt: refused"):
        TabularVAE.load(folder)
    torch.save({"w": payload}, folder / "weights.pt")  # the same payload in torch's zip format
    with pytest.raises(ModelFormatError, match="weights.pt: refused"):
        TabularVAE.load(folder)
    assert not payload.marker.exists()


def test_corrupt_or_foreign_model_folders_are_named(adult_cvae, tmp_path):
    with pytest.raises(ModelFormatError, match="no such model folder"):
        TabularVAE.load(tmp_path / "nothing")
    folder = adult_cvae.save(tmp_path / "m")
    (folder / "model.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="model.json: not valid JSON"):
        TabularVAE.load(folder)
    (folder / "model.json").write_text('{"format": "sklearn"}')
    with pytest.raises(ModelFormatError, match="format 'sklearn'"):
        TabularVAE.load(folder)
    (folder / "weights.pt").unlink()
    with pytest.raises(ModelFormatError, match="weights.pt: missing"):
        TabularVAE.load(folder)


def test_bad_input_at_score_time_names_the_column(adult_cvae, adult_test):
    rows = adult_test.slice(0, 10)
    with pytest.raises(SchemaError, match="column 'age' is missing"):
        adult_cvae.score(rows.drop_columns(["age"]))
    with pytest.raises(SchemaError, match="column 'age': expected a number"):
        adult_cvae.score(rows.set_column(0, "age", pc.cast(rows.column("age"), pa.string())))
    with pytest.raises(DataError, match="column 'hours-per-week'"):
        adult_cvae.score(rows.set_column(rows.schema.get_field_index("hours-per-week"),
                                         "hours-per-week", pa.array([np.nan] * 10)))
    with pytest.raises(DataError, match="empty"):
        adult_cvae.score(rows.slice(0, 0))


def test_fit_refuses_bad_tables(adult_train, tmp_path):
    with pytest.raises(DataError, match="empty"):
        TabularVAE(epochs=1).fit(adult_train.slice(0, 0))
    nulls = adult_train.slice(0, 50).set_column(0, "age", pa.nulls(50, pa.int64()))
    with pytest.raises(DataError, match="'age' is null in every row"):
        TabularVAE(epochs=1).fit(nulls)
    with pytest.raises(DataError, match="no such file"):
        TabularVAE(epochs=1).fit(tmp_path / "missing.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="bad.parquet: not a readable Parquet file"):
        TabularVAE(epochs=1).fit(tmp_path / "bad.parquet")
    with pytest.raises(TypeError, match="unknown option 'latent'"):
        TabularVAE(latent=3)


def test_nulls_are_modelled_and_flagged(adult_train):
    t = adult_train.slice(0, 3000)
    rng = np.random.default_rng(0)
    hours = t.column("hours-per-week").to_numpy()
    t = t.set_column(t.schema.get_field_index("hours-per-week"), "hours-per-week",
                     pa.array(hours, mask=rng.random(len(hours)) < 0.2))
    vae = TabularVAE(epochs=8, seed=0).fit(t)
    synthetic = vae.sample(3000, seed=0)
    share = synthetic.column("hours-per-week").null_count / 3000
    assert 0.1 < share < 0.3  # the model learned the missingness rate
    assert synthetic.column("age").null_count == 0  # never null in training → never generated


def test_fit_accepts_a_parquet_path_a_folder_and_a_dataframe(adult_train, tmp_path):
    import pyarrow.parquet as pq

    small = adult_train.slice(0, 1500)
    pq.write_table(small.slice(0, 700), tmp_path / "part-0.parquet")
    pq.write_table(small.slice(700), tmp_path / "part-1.parquet")
    from vae_core import as_table

    for data in (tmp_path / "part-0.parquet", tmp_path, small.to_pandas()):
        vae = TabularVAE(epochs=1, seed=0).fit(data)
        # The input's own types come back (pandas 3 strings arrive as large_string).
        assert vae.sample(10, seed=0).schema == as_table(data).schema.remove_metadata()


def test_fit_is_deterministic_for_a_seed(adult_train):
    small = adult_train.slice(0, 1500)
    a, b = (TabularVAE(epochs=2, seed=3).fit(small) for _ in range(2))
    np.testing.assert_array_equal(a.embed(small), b.embed(small))
    c = TabularVAE(epochs=2, seed=4).fit(small)
    assert not np.array_equal(a.embed(small), c.embed(small))


def test_holdout_split_depends_only_on_row_content():
    from vae_core.training import holdout_mask

    x = np.random.default_rng(0).normal(size=(20000, 7)).astype(np.float32)
    mask = holdout_mask(x, 0.1, seed=0)
    assert 0.09 < mask.mean() < 0.11
    perm = np.random.default_rng(1).permutation(len(x))
    np.testing.assert_array_equal(holdout_mask(x[perm], 0.1, seed=0), mask[perm])  # any order
    np.testing.assert_array_equal(np.concatenate([holdout_mask(x[:777], 0.1), holdout_mask(
        x[777:], 0.1)]), mask)  # any block layout
    assert not holdout_mask(x, 0.0).any()


def test_epoch_sums_add_up_across_ranks_as_one_tensor():
    """What the Ray Train loop all-reduces: the sum of two ranks' tensors is the sums of
    all their batches, and the report's means are per row."""
    def out(loss, terms=None):
        return LossOutput(torch.tensor(loss), torch.tensor(loss / 2), torch.tensor(1.0),
                          None if terms is None else torch.tensor(terms))

    ranks = [EpochSums.of(step_terms(out(4.0, [0.5, 0.25, 0.25])) * 30, rows=30, seconds=2.0),
             EpochSums.of(step_terms(out(2.0, [0.1, 0.2, 0.7])) * 10
                          + step_terms(out(1.0, [0.1, 0.2, 0.7])) * 10, rows=20, seconds=4.0)]
    total = EpochSums.from_tensor(ranks[0].to_tensor() + ranks[1].to_tensor())
    assert total.rows == 50 and total.loss == 4.0 * 30 + 2.0 * 10 + 1.0 * 10
    assert total.tc == pytest.approx(0.25 * 30 + 0.2 * 20)
    val = ValidationSums(rows=10, elbo=-50.0, objective=-40.0)
    report = epoch_report(0, TrainConfig(epochs=3, objective="tcvae"), total, val, 1e-3,
                          best=True, workers=2)
    assert report.epoch == 1 and report.epochs == 3 and report.best
    assert report.train_loss == pytest.approx(150 / 50)
    assert report.train_reconstruction == pytest.approx(75 / 50)
    assert report.train_mi == pytest.approx((0.5 * 30 + 0.1 * 20) / 50)
    assert report.val_elbo == -5.0 and report.val_objective == -4.0
    assert report.rows_per_second == pytest.approx(50 / 3.0)  # by the ranks' mean time
    assert ValidationSums().mean_elbo is None  # no validation rows: nothing to report


def test_derived_tensors_follow_the_module_but_are_not_saved():
    spans = [Span("a", "numeric", 0, 3, atoms=((0.0, 0.5),)), Span("b", "binary", 3, 2),
             Span("k", "categorical", 5, 3, sampleable=2)]
    module = VAEModule(spans, x_dim=8, latent_dim=2, hidden=(8,), autoregressive=True,
                       decoder_scale="column")
    assert set(module.state_dict()) == {n for n, _ in module.named_parameters()}
    assert any(True for _ in module.buffers())  # index tensors, atoms, MADE masks
    module.to("meta")
    assert {b.device.type for b in module.buffers()} == {"meta"}
