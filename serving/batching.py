"""Dynamic batching without Ray: run queued requests in as few forward passes as possible.

The Serve deployment hands the requests that arrived within a short window to these
functions. Requests that can share a pass (same options, same Arrow schema) run together;
each still gets exactly its solo result (IWAE noise is seeded per request). When a merged
pass fails, its requests are retried one by one, so a bad request gets its own error and
never fails its neighbours. Errors come back as values, in request order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, fields
from typing import TypeVar

import pyarrow as pa

from serving.codecs import IpcTable
from serving.service import ModelService

Result = pa.Table | Exception
R = TypeVar("R")


class _TableRequest:
    """A request whose table crosses processes as an Arrow IPC stream (codecs.IpcTable)."""

    def __reduce__(self):
        rest = [getattr(self, f.name) for f in fields(self)[1:] if f.init]  # type: ignore[arg-type]
        return type(self), (IpcTable(self.table), *rest)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ScoreRequest(_TableRequest):
    table: pa.Table
    iwae_samples: int | None = None
    seed: int = 0
    top_k: int = 3


@dataclass(frozen=True)
class EmbedRequest(_TableRequest):
    table: pa.Table
    return_std: bool = False


def rows(requests: Sequence[ScoreRequest | EmbedRequest]) -> int:
    """Batch size in rows, not requests (Serve's ``batch_size_fn``)."""
    return sum(r.table.num_rows for r in requests)


def score_batch(service: ModelService, requests: Sequence[ScoreRequest]) -> list[Result]:
    return _run_grouped(
        requests,
        key=lambda r: (r.iwae_samples, r.top_k, r.table.schema),
        together=lambda g: service.score_many([r.table for r in g], [r.seed for r in g],
                                              g[0].iwae_samples, g[0].top_k),
        alone=lambda r: service.score(r.table, r.iwae_samples, r.seed, r.top_k))


def embed_batch(service: ModelService, requests: Sequence[EmbedRequest]) -> list[Result]:
    return _run_grouped(
        requests,
        key=lambda r: (r.return_std, r.table.schema),
        together=lambda g: service.embed_many([r.table for r in g], g[0].return_std),
        alone=lambda r: service.embed(r.table, r.return_std))


def _run_grouped(requests: Sequence[R], key: Callable[[R], Hashable],
                 together: Callable[[list[R]], list[pa.Table]],
                 alone: Callable[[R], pa.Table]) -> list[Result]:
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, request in enumerate(requests):
        groups[key(request)].append(i)
    results: list[Result] = [None] * len(requests)  # type: ignore[list-item]
    for indices in groups.values():
        group = [requests[i] for i in indices]
        outs: list[Result]
        if len(group) == 1:
            outs = [_capture(alone, group[0])]
        else:
            try:
                outs = list(together(group))
            except Exception:  # someone in the group is bad: find out who, alone
                outs = [_capture(alone, r) for r in group]
        for i, out in zip(indices, outs, strict=True):
            results[i] = out
    return results


def _capture(fn: Callable[[R], pa.Table], request: R) -> Result:
    try:
        return fn(request)
    except Exception as e:  # returned, and raised again for the one caller it belongs to
        return e
