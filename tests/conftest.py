"""Shared fixtures. Environment first: these must be set before ray/mlflow are imported."""

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")

import pytest
import torch

# One thread: on a 2-core box a second torch thread next to any busy process is 20× slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def adult_train():
    from vae_core.datasets import load_adult

    return load_adult("train")


@pytest.fixture(scope="session")
def adult_test():
    from vae_core.datasets import load_adult

    return load_adult("test")


@pytest.fixture(scope="session")
def adult_cvae(adult_train):
    """A short fit on a slice of Adult, conditional on income (shared by the model tests)."""
    from vae_core import TabularVAE

    reports = []
    vae = TabularVAE(epochs=8, latent_dim=8, columns={"income": "condition"}, seed=0)
    vae.fit(adult_train.slice(0, 8000), progress=reports.append)
    vae.progress_reports = reports
    return vae
