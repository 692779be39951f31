"""DDP must all-reduce gradients: two ranks on different data end with identical weights.
And the moments behind exact principal directions are every row's on every rank, and the
code's start at PCA's is rank 0's on every rank.

The training loss is TrainingModule.forward (the VAE module with its objective) and
train_step calls ``model(...)``; calling the bare TrainingModule (``ddp.module``) instead
would bypass DistributedDataParallel.forward and let each rank train alone, silently. The
bypass is run here too, to show the check can fail.
"""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _on_two_ranks(loop, tmp_path: Path, name: str, datasets: dict | None = None) -> None:
    """Run ``loop`` on two Ray Train workers, one CPU each; it writes under ``tmp_path``."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    TorchTrainer(loop, train_loop_config={"out": str(tmp_path)}, datasets=datasets,
                 scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                 run_config=RunConfig(storage_path=str(tmp_path / "ray"), name=name)).fit()


def _loop(cfg: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from vae_core.config import TrainConfig
    from vae_core.data.transform import Span
    from vae_core.nn import VAEModule
    from vae_core.objectives import TrainingModule, objective_for
    from vae_core.training import make_optimizer, train_step

    rank = ray.train.get_context().get_world_rank()
    # a numeric column [z_low, z_high, missing], then a categorical one of 5 slots
    spans = [Span("a", "numeric", 0, 3), Span("b", "categorical", 3, 5, 3)]
    g = torch.Generator().manual_seed(100 + rank)  # every rank sees different rows
    x = torch.zeros(64, 8)
    x[:, 0] = x[:, 1] = torch.randn(64, generator=g)
    x[torch.arange(64), 3 + torch.randint(0, 3, (64,), generator=g)] = 1.0
    c = torch.zeros(64, 0)
    cfg_train = TrainConfig(learning_rate=0.01)
    sums = {}
    for path in ("through_ddp", "bypassing_ddp"):
        torch.manual_seed(0)  # identical initial weights on every rank
        module = VAEModule(spans, x_dim=8, latent_dim=2, hidden=(16,))
        training = TrainingModule(module, objective_for(cfg_train))
        model = ray.train.torch.prepare_model(training)
        opt, _ = make_optimizer(module, cfg_train)
        for _ in range(5):
            torch.manual_seed(rank)
            if path == "through_ddp":
                train_step(model, opt, x, c, 1.0, cfg_train.grad_clip)
            else:
                train_step(training, opt, x, c, 1.0, cfg_train.grad_clip)  # the silent bug
        sums[path] = float(sum(p.double().sum() for p in module.parameters()))
    Path(cfg["out"], f"rank{rank}.json").write_text(json.dumps(sums))
    ray.train.report({})


def test_two_ranks_end_with_identical_weights(ray_local, tmp_path):
    _on_two_ranks(_loop, tmp_path, "ddp")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["through_ddp"] == ranks[1]["through_ddp"]
    assert ranks[0]["bypassing_ddp"] != ranks[1]["bypassing_ddp"]


def _moments_loop(cfg: dict) -> None:
    import ray.train
    import torch

    from pipelines.train_loop import _row_moments

    rank = ray.train.get_context().get_world_rank()
    shards = [ray.train.get_dataset_shard(name) for name in ("train", "val")]
    moments = _row_moments(shards, 3, torch.device("cpu"))
    torch.save(moments, Path(cfg["out"], f"moments{rank}.pt"))
    ray.train.report({})


def test_every_rank_finds_the_moments_of_every_row_of_both_splits(ray_local, tmp_path):
    import numpy as np
    import ray.data
    import torch

    from vae_core.objectives import row_moments

    rows = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    splits = {"train": rows[:450], "val": rows[450:]}
    _on_two_ranks(_moments_loop, tmp_path, "moments",
                  {k: ray.data.from_items([{"x": r} for r in v]) for k, v in splits.items()})
    every_row = row_moments([torch.from_numpy(rows)], 3)
    for rank in (0, 1):  # each rank saw part of the rows; the all-reduce gave it them all
        got = torch.load(tmp_path / f"moments{rank}.pt")
        assert got[0, 0] == 500
        torch.testing.assert_close(got, every_row)


def _start_loop(cfg: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from pipelines.train_loop import _weights_from_rank_0
    from vae_core.config import TrainConfig
    from vae_core.data.transform import Span
    from vae_core.nn import VAEModule
    from vae_core.objectives import TrainingModule, objective_for, row_moments
    from vae_core.training import aim_at_principal_directions

    rank = ray.train.get_context().get_world_rank()
    spans = [Span(f"v{j}", "numeric", 3 * j, 3) for j in range(3)]
    torch.manual_seed(0)
    module = VAEModule(spans, x_dim=9, latent_dim=2, hidden=(16,), encoder="mlp+linear")
    objective = objective_for(TrainConfig(distance_weight=1.0, distance_rest_share=0.0,
                                          distance_directions="exact"))
    ray.train.torch.prepare_model(TrainingModule(module, objective))
    # moments that differ by rank stand for an eigendecomposition that differs by rank
    rows = torch.randn(200, 9, generator=torch.Generator().manual_seed(rank))
    aim_at_principal_directions(module, objective, row_moments([rows], 9))
    sums = {"own": float(sum(p.double().sum() for p in module.parameters()))}
    _weights_from_rank_0(module)
    sums["shared"] = float(sum(p.double().sum() for p in module.parameters()))
    Path(cfg["out"], f"start{rank}.json").write_text(json.dumps(sums))
    ray.train.report({})


def test_every_rank_starts_the_code_where_rank_0_does(ray_local, tmp_path):
    _on_two_ranks(_start_loop, tmp_path, "start")
    ranks = [json.loads((tmp_path / f"start{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["own"] != ranks[1]["own"]  # each rank's own start differs
    assert ranks[0]["shared"] == ranks[1]["shared"] == ranks[0]["own"]  # rank 0's for all
