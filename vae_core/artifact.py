"""The model folder: ``model.json`` (everything but weights) + ``weights.pt`` (tensors only).

Loading never unpickles project objects: the JSON is parsed as JSON and the weights are
read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers and refuses any other pickled object (a planted ``__reduce__`` payload is
rejected before it runs). ``map_location`` lets a model trained on GPU load on CPU.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import torch

from vae_core.errors import ModelFormatError

FORMAT = "vae-tables/model/v2"  # v2: numeric columns encoded as intervals (atoms)
META_FILE, WEIGHTS_FILE = "model.json", "weights.pt"


def write_model_folder(path: str | Path, meta: dict, state_dict: dict[str, torch.Tensor]) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cpu_state = {k: v.detach().cpu() for k, v in state_dict.items()}
    # Write-then-rename so that a crash never leaves a folder that looks complete.
    tmp_w, tmp_m = path / (WEIGHTS_FILE + ".tmp"), path / (META_FILE + ".tmp")
    torch.save(cpu_state, tmp_w)
    tmp_m.write_text(json.dumps({"format": FORMAT, **meta}, indent=1, allow_nan=False))
    tmp_w.replace(path / WEIGHTS_FILE)
    tmp_m.replace(path / META_FILE)
    return path


def read_model_folder(path: str | Path, map_location: str | torch.device = "cpu"
                      ) -> tuple[dict, dict[str, torch.Tensor]]:
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
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelFormatError(f"{meta_path}: format {found!r} is not {FORMAT!r}", str(meta_path))
    try:
        state = torch.load(weights_path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFormatError(f"{weights_path}: refused, not a plain tensor file ({first})",
                               str(weights_path)) from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFormatError(f"{weights_path}: expected a dict of tensors", str(weights_path))
    return meta, state
