"""The VAE modules, pure torch: tensors in, tensors and distributions out.

    layout          where each column's slots and decoder units are (derived, never saved)
    heads           one likelihood head per column kind: numeric, binary, categorical
    likelihood      p(x | z, c) of a whole row, from the decoder output
    blocks          MLPs and Gaussian layers
    autoregressive  the MADE correction of ``decoder: autoregressive``
    latent          what every variant offers (decoder, ELBO, IWAE, generation)
    vae, ladder     the one-layer VAE and the two-layer hierarchical one
    build           the module a ModelConfig describes
"""

from vae_core.nn.build import build_module
from vae_core.nn.ladder import LadderVAEModule
from vae_core.nn.latent import LatentVariableModule
from vae_core.nn.likelihood import ColumnLikelihood, RowDistributions
from vae_core.nn.vae import VAEModule

__all__ = ["ColumnLikelihood", "LadderVAEModule", "LatentVariableModule", "RowDistributions",
           "VAEModule", "build_module"]
