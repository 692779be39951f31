"""Model folders written by an earlier release load and compute what that release computed."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from vae_core import TabularVAE

V2 = Path(__file__).parent / "data" / "model_v2"


@pytest.mark.parametrize("name", ["vae-autoregressive", "ladder"])
def test_a_v2_folder_loads_and_scores_as_its_release_did(name):
    vae = TabularVAE.load(V2 / name)
    expected = json.loads((V2 / name / "expected.json").read_text())
    probe = pq.read_table(V2 / "probe.parquet")
    scored = vae.score(probe, seed=0)
    np.testing.assert_allclose(scored.column("elbo").to_numpy(), expected["elbo"], rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(scored.column("log_px").to_numpy(), expected["log_px"],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(vae.embed(probe), expected["embedding"], rtol=1e-4, atol=1e-5)
    synthetic = vae.sample(20, seed=0, conditions={"group": "a"} if name != "ladder" else None)
    assert synthetic.num_rows == 20 and set(probe.column_names) <= set(synthetic.column_names)
