"""What every training objective returns, and the module DistributedDataParallel wraps.

An objective is configured once, from TrainConfig (vae_core.objectives.objective_for), and
then called with little: ``objective(module, x, c, kl_weight)``. ``TrainingModule`` holds the
VAE module and its objective, and its ``forward`` is the loss, so that wrapped in DDP every
gradient goes through ``DDP.forward`` and is all-reduced (calling the objective on the bare
module instead trains each rank alone, silently). Checkpoints and saved models keep the
VAE module's own ``state_dict``, never this wrapper's.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import nn

from vae_core.nn.latent import LatentVariableModule


class LossOutput(NamedTuple):
    loss: torch.Tensor  # scalar to minimise
    reconstruction: torch.Tensor  # mean over rows of −E_q[log p(x|z)]
    kl: torch.Tensor  # mean over rows of KL(q ‖ p), unweighted
    kl_terms: torch.Tensor | None = None  # β-TCVAE: [MI, TC, dimension-wise KL], batch means


class Objective(Protocol):
    def __call__(self, module: LatentVariableModule, x: torch.Tensor, c: torch.Tensor,
                 kl_weight: float) -> LossOutput: ...


class TrainingModule(nn.Module):
    """The VAE module with its objective: ``forward(x, c, kl_weight)`` is the training loss."""

    def __init__(self, module: LatentVariableModule, objective: Objective) -> None:
        super().__init__()
        self.module, self.objective = module, objective

    def forward(self, x: torch.Tensor, c: torch.Tensor, kl_weight: float = 1.0) -> LossOutput:
        return self.objective(self.module, x, c, kl_weight)
