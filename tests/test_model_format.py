"""Model folders written by an earlier release load and compute what that release computed;
the format written today holds learned parameters only."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from vae_core import ModelFormatError, TabularVAE
from vae_core.artifact import FORMAT, upgrade_state

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


@pytest.mark.parametrize("name", ["vae-autoregressive", "ladder"])
def test_a_v2_folder_saved_again_is_v3_with_learned_parameters_only(name, tmp_path):
    """v3 weights hold what training learned and nothing derived from the columns (the
    likelihood's index tensors, the MADE masks): they are rebuilt from model.json."""
    vae = TabularVAE.load(V2 / name)
    folder = vae.save(tmp_path / name)
    assert json.loads((folder / "model.json").read_text())["format"] == FORMAT
    saved = torch.load(folder / "weights.pt", weights_only=True)
    assert set(saved) == {n for n, _ in vae.module.named_parameters()}
    v2 = torch.load(V2 / name / "weights.pt", weights_only=True)
    assert len(saved) < len(v2)  # the derived keys are gone, the learned ones kept as they were
    for key, value in upgrade_state(v2).items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0)
    probe = pq.read_table(V2 / "probe.parquet")
    assert TabularVAE.load(folder).score(probe, seed=0).equals(vae.score(probe, seed=0))


def test_a_v3_folder_with_a_derived_key_is_refused(tmp_path):
    folder = TabularVAE.load(V2 / "vae-autoregressive").save(tmp_path / "m")
    state = torch.load(folder / "weights.pt", weights_only=True)
    state["likelihood.cat_pad"] = torch.ones(1, 7, dtype=torch.bool)  # what v2 saved
    torch.save(state, folder / "weights.pt")
    with pytest.raises(ModelFormatError,
                       match=r"(?s)inconsistent model folder.*Unexpected key.*cat_pad"):
        TabularVAE.load(folder)
