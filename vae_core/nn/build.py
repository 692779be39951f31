"""The torch module a ModelConfig describes, for a fitted transformer's columns."""

from __future__ import annotations

from vae_core.config import ModelConfig
from vae_core.data.transform import ColumnTransformer
from vae_core.nn.ladder import LadderVAEModule
from vae_core.nn.latent import LatentVariableModule
from vae_core.nn.vae import VAEModule


def build_module(transformer: ColumnTransformer, cfg: ModelConfig) -> LatentVariableModule:
    spans, x_dim, c_dim = transformer.feature_spans, transformer.x_dim, transformer.c_dim
    autoregressive = cfg.decoder == "autoregressive"
    if cfg.latent_layers == 2:
        return LadderVAEModule(spans, x_dim, c_dim, cfg.latent_dim, cfg.top_latent_dim,
                               tuple(cfg.hidden), cfg.min_scale, autoregressive,
                               cfg.decoder_scale)
    return VAEModule(spans, x_dim, c_dim, cfg.latent_dim, tuple(cfg.hidden), cfg.min_scale,
                     autoregressive, cfg.decoder_scale, cfg.encoder)
