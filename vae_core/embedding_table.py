"""Embeddings as a table: the id columns of the input, then ``z_0…`` (posterior means) and,
on request, ``zstd_0…`` (posterior standard deviations). The one place these column names
are made, for the HTTP routes, the batch jobs and the MLflow pyfunc alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from vae_core.model import TabularVAE


def embedding_table(vae: TabularVAE, table: pa.Table, return_std: bool = False) -> pa.Table:
    """One row per input row: the model's id columns that ``table`` holds, then z_i [zstd_i]."""
    out = vae.embed(table, return_std=return_std)
    mu, sigma = out if return_std else (out, None)
    ids = [s.name for s in vae.transformer.schema.ids if s.name in table.column_names]
    columns = {name: table.column(name) for name in ids}
    columns |= {f"z_{i}": pa.array(mu[:, i]) for i in range(mu.shape[1])}
    if sigma is not None:
        columns |= {f"zstd_{i}": pa.array(sigma[:, i]) for i in range(sigma.shape[1])}
    return pa.table(columns)
