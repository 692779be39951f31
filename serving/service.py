"""The model behind the HTTP routes, as a plain class (no Ray, no HTTP): testable alone.

It loads a vae_core model folder from a local path or from the MLflow registry
(``models:/NAME@ALIAS``, resolved by model_refs), reading weights only (no model code is
executed), enforces the request limits, and answers embed / score / generate / info with
Arrow tables.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

import model_refs
from serving.codecs import RequestError, check_strings
from vae_core import ModelFormatError, TableSchema, TabularVAE
from vae_core.artifact import META_FILE
from vae_core.embedding_table import embedding_table


@dataclass(frozen=True)
class Limits:
    max_rows: int = 10_000  # per embed/score request
    max_generate: int = 100_000  # n per generate request
    max_body_bytes: int = 64 * 2**20
    max_iwae_samples: int = 1024
    max_string_chars: int = 10_000  # per value of a text column
    # rows a generate request's conditions on non-condition columns may draw (rejection):
    # a rare condition must not hold a replica for minutes
    max_generate_draws: int = 5_000_000


class ModelService:
    def __init__(self, vae: TabularVAE, info: Mapping[str, Any], limits: Limits = Limits()):
        self.vae, self.info_, self.limits = vae, dict(info), limits

    @classmethod
    def load(cls, uri: str, limits: Limits = Limits(), device: str | None = None,
             version: str | None = None) -> ModelService:
        import torch

        resolved = model_refs.resolve(uri, version)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(TabularVAE.load(resolved.folder, device=device), resolved.info(), limits)

    @property
    def schema(self):
        return self.vae.transformer.schema

    def info(self) -> dict:
        vae = self.vae
        calibration = vae.calibration.to_dict() if vae.calibration else None
        return {**self.info_,
                "schema": self.schema.to_dict()["columns"],
                "latent_dim": vae.model_config.latent_dim,
                "latent_layers": vae.model_config.latent_layers,
                "decoder": vae.model_config.decoder,
                "numeric_transform": vae.model_config.numeric_transform,
                "preset": vae.preset.to_dict() if vae.preset else None,
                "embedding_dim": vae.embedding_dim,
                "iwae_samples": vae.train_config.iwae_samples,
                "thresholds": calibration and calibration["thresholds"],
                "threshold_quantile": calibration and calibration["threshold_quantile"],
                "limits": asdict(self.limits), "device": str(vae.device)}

    def embed(self, table: pa.Table, return_std: bool = False) -> pa.Table:
        self._check_rows(table)
        return self._embed(table, return_std)

    def _embed(self, table: pa.Table, return_std: bool) -> pa.Table:
        return embedding_table(self.vae, table, return_std)

    def score(self, table: pa.Table, iwae_samples: int | None = None, seed: int = 0,
              top_k: int = 3) -> pa.Table:
        self._check_rows(table)
        self._check_iwae_samples(iwae_samples)
        return self.vae.score(table, iwae_samples=iwae_samples, seed=seed, top_k=top_k)

    def score_many(self, tables: Sequence[pa.Table], seeds: Sequence[int],
                   iwae_samples: int | None = None, top_k: int = 3) -> list[pa.Table]:
        """Several requests in one forward pass; each gets exactly what ``score`` gives it.

        The tables must share one Arrow schema (JSON requests always do).
        """
        for table in tables:
            self._check_rows(table)
        self._check_iwae_samples(iwae_samples)
        merged = self.vae.score(pa.concat_tables(tables), iwae_samples=iwae_samples,
                                top_k=top_k, segments=[(t.num_rows, s) for t, s in
                                                       zip(tables, seeds, strict=True)])
        return _split(merged, tables)

    def embed_many(self, tables: Sequence[pa.Table], return_std: bool = False
                   ) -> list[pa.Table]:
        for table in tables:
            self._check_rows(table)
        return _split(self._embed(pa.concat_tables(tables), return_std), tables)

    def generate(self, n: int, conditions: Mapping | None = None, seed: int | None = None
                 ) -> pa.Table:
        if not 1 <= n <= self.limits.max_generate:
            raise RequestError(422 if n < 1 else 413,
                               f"n must be in 1..{self.limits.max_generate}, got {n}")
        return self.vae.sample(n, conditions=conditions, seed=seed,
                               max_draws=self.limits.max_generate_draws)

    def _check_rows(self, table: pa.Table) -> None:
        if table.num_rows > self.limits.max_rows:
            raise RequestError(413, f"too many rows: {table.num_rows} > {self.limits.max_rows}")
        check_strings(table, self.limits.max_string_chars)

    def _check_iwae_samples(self, k: int | None) -> None:
        if k is not None and not 1 <= k <= self.limits.max_iwae_samples:
            raise RequestError(422, f"iwae_samples must be in 1..{self.limits.max_iwae_samples}")


def request_schema(uri: str, version: str | None = None) -> TableSchema:
    """The schema a model's requests are read with, from its ``model.json`` alone: the
    ingress decodes requests but never runs the model, so it builds no module and reads no
    weights."""
    meta_path = model_refs.resolve(uri, version).folder / META_FILE
    try:
        return TableSchema.from_dict(json.loads(meta_path.read_text())["transformer"]["schema"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelFormatError(f"{meta_path}: no readable schema ({e})", str(meta_path)) from e


def _split(merged: pa.Table, parts: Sequence[pa.Table]) -> list[pa.Table]:
    """The merged result cut back into one table per request."""
    offsets = itertools.accumulate((t.num_rows for t in parts), initial=0)
    return [merged.slice(a, b - a) for a, b in itertools.pairwise(offsets)]


def limits_from_env() -> Limits:
    """VAE_SERVE_MAX_ROWS, VAE_SERVE_MAX_GENERATE, VAE_SERVE_MAX_BODY_BYTES,
    VAE_SERVE_MAX_GENERATE_DRAWS override defaults."""
    d = Limits()
    return Limits(int(os.environ.get("VAE_SERVE_MAX_ROWS", d.max_rows)),
                  int(os.environ.get("VAE_SERVE_MAX_GENERATE", d.max_generate)),
                  int(os.environ.get("VAE_SERVE_MAX_BODY_BYTES", d.max_body_bytes)),
                  d.max_iwae_samples, d.max_string_chars,
                  int(os.environ.get("VAE_SERVE_MAX_GENERATE_DRAWS", d.max_generate_draws)))


__all__ = ["Limits", "ModelService", "limits_from_env", "request_schema"]
