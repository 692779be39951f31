"""CUDA paths. Skipped cleanly on a machine without a GPU (CI); run on the device machine."""

import numpy as np
import pytest
import torch

from vae_core import TabularVAE

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_trained_on_gpu_loads_and_agrees_on_cpu(adult_train, adult_test, tmp_path):
    vae = TabularVAE(epochs=2, seed=0).fit(adult_train.slice(0, 4000), device="cuda")
    assert vae.device.type == "cuda"
    rows = adult_test.slice(0, 500)
    on_gpu = vae.embed(rows)
    vae.save(tmp_path / "m")
    on_cpu = TabularVAE.load(tmp_path / "m", device="cpu")
    assert on_cpu.device.type == "cpu"
    np.testing.assert_allclose(on_cpu.embed(rows), on_gpu, rtol=1e-4, atol=1e-4)
    assert on_cpu.sample(100, seed=0).num_rows == 100
