"""Conditions on any column (vae_core.conditions, vae_core.constrained_sampling): truncated
draws against closed forms, every returned row meets every condition, and the kept rows
follow the model's own conditional distribution (rows filtered from unconditional draws)."""

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from torch.distributions import Normal

from vae_core import SchemaError
from vae_core import constrained_sampling as sampling
from vae_core.conditions import split_conditions
from vae_core.nn.truncation import truncated_normal


@pytest.mark.parametrize("low, high", [(-1.0, 0.5), (8.0, 9.0), (-9.0, -8.5), (1.5, math.inf),
                                       (-math.inf, -2.0)])
def test_truncated_normal_matches_its_closed_form(low, high):
    """Mean of N(0,1) on [a, b] is (φ(a) − φ(b)) / (Φ(b) − Φ(a)); draws stay inside, far
    tails included (a naive inverse CDF returns inf or nan at a = 8)."""
    d = Normal(torch.zeros(200_000, dtype=torch.float64), torch.ones(200_000,
                                                                     dtype=torch.float64))
    x = truncated_normal(d, low, high, torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all() and (x >= low).all() and (x <= high).all()
    std = Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    a, b = torch.tensor(low, dtype=torch.float64), torch.tensor(high, dtype=torch.float64)
    lower_a, lower_b = (-b, -a) if low > 0 else (a, b)  # Φ keeps its digits in the lower tail
    log_b = torch.special.log_ndtr(lower_b)
    mass = log_b.exp() * -torch.expm1(torch.special.log_ndtr(lower_a) - log_b)
    mean = (std.log_prob(a).exp() - std.log_prob(b).exp()) / mass
    assert float(x.mean()) == pytest.approx(float(mean), abs=4 * float(x.std()) / 450 + 1e-3)


def distribution(column: pa.ChunkedArray) -> dict:
    counts = pc.value_counts(column).to_pylist()
    total = sum(c["counts"] for c in counts)
    return {c["values"]: c["counts"] / total for c in counts}


def total_variation(a: dict, b: dict) -> float:
    return 0.5 * sum(abs(a.get(k, 0) - b.get(k, 0)) for k in set(a) | set(b))


@pytest.fixture(scope="module")
def adult_ar(adult_train):
    from vae_core import TabularVAE

    vae = TabularVAE(preset="synthesis", epochs=4, latent_dim=8, seed=0)
    return vae.fit(adult_train.slice(0, 6000)) or vae


@pytest.mark.parametrize("which", ["adult_cvae", "adult_ar"])
def test_every_row_meets_every_condition(which, request):
    vae = request.getfixturevalue(which)
    conditions = {"age": {">=": 30, "<": 40}, "workclass": ["Private", "State-gov"],
                  "capital-gain": 0, "hours-per-week": {">": 39.5}, "education": "Bachelors"}
    rows = vae.sample(700, conditions=conditions, seed=4)
    assert rows.num_rows == 700
    assert pc.all(pc.and_(pc.greater_equal(rows["age"], 30), pc.less(rows["age"], 40))).as_py()
    assert set(rows["workclass"].to_pylist()) <= {"Private", "State-gov"}
    assert set(rows["capital-gain"].to_pylist()) == {0}
    assert pc.min(rows["hours-per-week"]).as_py() >= 40
    assert set(rows["education"].to_pylist()) == {"Bachelors"}
    # Rows start..start+n are the same however the calls are cut (batch jobs rely on it).
    pieces = pa.concat_tables([vae.sample(300, conditions=conditions, seed=4),
                               vae.sample(400, conditions=conditions, seed=4, start=300)])
    assert pieces.equals(rows)
    assert vae.sample(5, conditions={"age": 35}, seed=0)["age"].to_pylist() == [35] * 5


def test_a_declared_condition_column_takes_a_list_too(adult_cvae):
    both = adult_cvae.sample(400, conditions={"income": [">50K", "<=50K"], "age": {"<": 25}},
                             seed=0)
    assert set(both["income"].to_pylist()) == {">50K", "<=50K"}
    assert pc.max(both["age"]).as_py() < 25


@pytest.mark.parametrize("which, condition, other", [
    ("adult_cvae", {"relationship": "Husband"}, "marital-status"),
    ("adult_ar", {"marital-status": "Never-married"}, "relationship"),
    ("adult_ar", {"age": {">=": 55}}, "occupation"),
])
def test_kept_rows_follow_the_models_conditional(which, condition, other, request):
    """Against the model's own p(other | condition), read off unconditional draws that meet
    the condition: truncating the column alone would leave `other` near its unconditional
    distribution (TV ≈ 0.2–0.4 here); the mass w of the truncated draws corrects it, and its
    mean is P(condition) (the identity E_proposal[w] = P(A) of rejection sampling)."""
    vae = request.getfixturevalue(which)
    kept = vae.sample(8000, conditions=condition, seed=1)
    drawn = vae.sample(60_000, seed=2)
    _, constraints = split_conditions(vae.transformer, condition)
    meets = constraints[0].holds(drawn[constraints[0].column])
    reference = distribution(drawn.filter(pa.array(meets))[other])
    assert total_variation(distribution(kept[other]), reference) < 0.04
    restricted = sampling.restrictions(vae.transformer, constraints)
    c = torch.from_numpy(vae.transformer.draw_conditions(20_000, np.random.default_rng(0)))
    _, log_w = vae.module.sample_within(20_000, c.float(), restricted,
                                        torch.Generator().manual_seed(3))
    assert float(log_w.exp().mean()) == pytest.approx(meets.mean(), abs=0.015)


@pytest.mark.parametrize("condition, words", [
    ({"workclass": "Astronaut"}, "no such value was seen in training"),
    ({"age": {">=": 40, "<": 30}}, "is empty"),
    ({"age": {">": 30, "<": 30}}, "is empty"),
    ({"age": {">=": 150}}, "the model draws no such value"),
    ({"age": {">": 35.2, "<": 35.8}}, "the model draws no such value"),
    ({"fnlwgt": 123456}, "the model draws no such value"),
    ({"age": []}, "an empty list"),
    ({"age": None}, "null is not a condition value"),
    ({"age": "old"}, "'old' is not a int64"),
    ({"age": {"between": [1, 2]}}, "a range is a mapping of"),
    ({"workclass": {"<": "S"}}, "a range needs a numeric"),
    ({"salary": 1}, "'salary': it is not a column of this model"),
    ({"age": 10 ** 20}, "is not a int64"),
    ({"income": "lots", "age": {">=": 30}}, "condition value 'lots' was not seen"),
    ({"income": ["lots", "more"]}, "no such value was seen in training"),
])
def test_impossible_conditions_are_one_line_errors(adult_cvae, condition, words):
    with pytest.raises(SchemaError, match=words):
        adult_cvae.sample(5, conditions=condition, seed=0)


def test_too_rare_conditions_fail_stating_the_rate(adult_cvae, monkeypatch):
    monkeypatch.setattr(sampling, "MIN_ACCEPTANCE", 0.9)
    with pytest.raises(sampling.ConditionError, match=r"rows drawn met them \(\d+\.\d+%\)"):
        adult_cvae.sample(10, conditions={"age": {">=": 75}}, seed=0)


def test_binary_and_datetime_columns_take_conditions():
    """A bool column takes a value, a date column a range given as strings (the CLI's)."""
    from vae_core import TabularVAE

    rng = np.random.default_rng(0)
    amount = rng.lognormal(3, 1, 3000)
    table = pa.table({
        "amount": amount,
        "large": amount > 30,
        "day": pa.array(np.datetime64("2024-01-01") + rng.integers(0, 365, 3000)
                        .astype("timedelta64[D]")).cast(pa.date32()),
        "kind": rng.choice(["a", "b", "c"], 3000)})
    vae = TabularVAE(epochs=3, latent_dim=4, seed=0).fit(table)
    rows = vae.sample(300, conditions={"large": True, "day": {">=": "2024-06-01",
                                                              "<": "2024-07-01"}}, seed=0)
    assert rows["large"].to_pylist() == [True] * 300
    days = rows["day"].to_pylist()
    assert min(days).isoformat() >= "2024-06-01" and max(days).isoformat() < "2024-07-01"
    with pytest.raises(SchemaError, match="draws no such value"):  # no whole day inside
        vae.sample(5, conditions={"day": {">": "2024-06-01", "<": "2024-06-02"}})


def test_a_range_maps_to_its_exact_interval_of_z(adult_train):
    """With numeric_transform: standard, z = (x − mean) / std: capital-gain ≥ 70,000 is
    ~9σ out, beyond where the quantile map puts any value; the edges are found exactly."""
    from vae_core import TabularVAE

    vae = TabularVAE(epochs=1, latent_dim=4, seed=0, numeric_transform="standard")
    vae.fit(adult_train.slice(0, 4000))
    _, constraints = split_conditions(vae.transformer, {"capital-gain": {">=": 70_000,
                                                                         "<": 80_000}})
    (r,) = sampling.restrictions(vae.transformer, constraints).values()
    qmap = vae.transformer.encoders["capital-gain"].qmap
    # capital-gain is an integer column: 69,999.5 already rounds to 70,000, and < 80,000
    # means ≤ 79,999, so below 79,999.5.
    assert r.z_low == pytest.approx((69_999.5 - qmap.mean) / qmap.std, abs=1e-6)
    assert r.z_high == pytest.approx((79_999.5 - qmap.mean) / qmap.std, abs=1e-6)
