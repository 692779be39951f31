"""The model folder: ``model.json`` (everything but weights) + ``weights.pt`` (tensors only).

Loading never unpickles project objects: the JSON is parsed as JSON and the weights are
read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers and refuses any other pickled object (a planted ``__reduce__`` payload is
rejected before it runs). ``map_location`` lets a model trained on GPU load on CPU.

Formats: v3 is written; v2 and v3 are read. v2 (up to the split of vae_core by concept)
also saved index tensors derived from the columns (the likelihood's ``num_x``,
``cat_pad``, …, the MADE masks) and kept the numeric σ at ``likelihood.column_scale``;
``upgrade_state`` drops the one and renames the other, in this one place, and the module
then loads the result strictly. A v3 ``weights.pt`` holds learned parameters only.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import pickle
import zipfile
from pathlib import Path

import pyarrow as pa
import torch

from vae_core.errors import ModelFormatError

FORMAT = "vae-tables/model/v3"  # v3: weights.pt holds learned parameters only
V2 = "vae-tables/model/v2"  # v2: numeric columns encoded as intervals (atoms)
READABLE = (V2, FORMAT)
META_FILE, WEIGHTS_FILE = "model.json", "weights.pt"

# What v2 saved that v3 derives from the columns: index buffers of the likelihood, and the
# masks of the autoregressive decoder (MADE) — ``<prefix>.<name>`` keys.
V2_DERIVED = {"likelihood": ("num_x", "num_out", "bin_x", "bin_out", "cat_x", "cat_out",
                             "cat_pad", "cat_sampleable", "to_span_order"),
              "autoregression.net": ("0.mask", "2.mask", "4.mask")}
V2_RENAMED = {"likelihood.column_scale": "likelihood.numeric.column_scale"}


def upgrade_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A v2 state_dict as v3 names it: derived keys dropped, renamed ones renamed. Also
    what an older training checkpoint (train_state.pt, which has no format) needs; a v3
    state_dict comes back unchanged."""
    derived = {f"{prefix}.{name}" for prefix, names in V2_DERIVED.items() for name in names}
    return {V2_RENAMED.get(k, k): v for k, v in state.items() if k not in derived}


def write_model_folder(path: str | Path, meta: dict, state_dict: dict[str, torch.Tensor]) -> Path:
    """Write the folder (format FORMAT) atomically: a crash never leaves one that looks
    complete."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cpu_state = {k: v.detach().cpu() for k, v in state_dict.items()}
    tmp_w, tmp_m = path / (WEIGHTS_FILE + ".tmp"), path / (META_FILE + ".tmp")
    torch.save(cpu_state, tmp_w)
    tmp_m.write_text(json.dumps({"format": FORMAT, "versions": versions(), **_finite(meta)},
                                indent=1, allow_nan=False))
    tmp_w.replace(path / WEIGHTS_FILE)
    tmp_m.replace(path / META_FILE)
    return path


def read_model_folder(path: str | Path, map_location: str | torch.device = "cpu"
                      ) -> tuple[dict, dict[str, torch.Tensor]]:
    """(model.json, the state_dict in v3 names) of a v2 or v3 folder."""
    path = Path(path)
    meta_path, weights_path = path / META_FILE, path / WEIGHTS_FILE
    if not path.is_dir():
        raise ModelFormatError(f"{path}: no such model folder", str(path))
    for f in (meta_path, weights_path):
        if not f.is_file():
            raise ModelFormatError(f"{f}: missing; {path} is not a vae-tables model folder", str(f))
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{meta_path}: not valid JSON ({e})", str(meta_path)) from e
    if not isinstance(meta, dict) or meta.get("format") not in READABLE:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelFormatError(f"{meta_path}: format {found!r} is not one of "
                               f"{', '.join(map(repr, READABLE))}", str(meta_path))
    try:
        state = torch.load(weights_path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFormatError(f"{weights_path}: refused, not a plain tensor file ({first})",
                               str(weights_path)) from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFormatError(f"{weights_path}: expected a dict of tensors", str(weights_path))
    return meta, upgrade_state(state) if meta["format"] == V2 else state


def versions() -> dict[str, str]:
    """What wrote the folder."""
    try:
        own = importlib.metadata.version("vae-tables")
    except importlib.metadata.PackageNotFoundError:
        own = "unknown"
    return {"vae-tables": own, "torch": torch.__version__, "pyarrow": pa.__version__}


def _finite(obj):  # any JSON value
    """JSON has no NaN: store non-finite floats (e.g. a missing validation ELBO) as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
