"""Model references: what ``--model`` / ``model_uri`` may say, and how each becomes a folder.

One resolver for the batch jobs (pipelines) and the Serve app (serving), which must not
import each other. Forms:

* a model folder (a path, or ``file://…``): used where it is;
* ``models:/NAME@ALIAS``: pinned to the version the alias points at *now* (or the version
  given), so that every actor or replica of one job loads the same model;
* ``models:/NAME/VERSION``, ``runs:/RUN/PATH``, ``mlflow-artifacts:/…``: through the MLflow
  tracking server (the caller points MLflow at it first);
* any other ``SCHEME://`` (``s3://``, ``gs://``, ``wasbs://``, ``hdfs://``, ``https://``…):
  a remote copy of a logged MLflow model (or of a bare model folder), downloaded by MLflow.

Downloads read files only; no model code is executed. Imports vae_core and mlflow only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MLFLOW_PREFIXES = ("models:/", "runs:/", "mlflow-artifacts:")
MODEL_SUBFOLDER = Path("artifacts") / "vae_model"  # inside a logged MLflow model
FOLDER, REGISTRY, RUN, ARTIFACT, REMOTE = "folder", "registry", "run", "artifact", "remote"


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference, before any server is asked."""

    uri: str  # as given
    kind: str  # folder | registry | run | artifact | remote
    name: str | None = None  # registry: the model's name; folder: the folder's name
    version: str | None = None  # models:/NAME/VERSION
    alias: str | None = None  # models:/NAME@ALIAS

    @property
    def local(self) -> bool:
        return self.kind == FOLDER

    @property
    def needs_tracking(self) -> bool:
        """Resolving it asks the MLflow tracking server (set its URI first)."""
        return self.kind in (REGISTRY, RUN, ARTIFACT)


@dataclass(frozen=True)
class ResolvedModel:
    """A reference made concrete: the local model folder and the version it holds."""

    folder: Path
    uri: str  # as given (an alias stays an alias here; ``version`` says where it pointed)
    name: str | None
    version: str | None
    alias: str | None

    @property
    def label(self) -> str:
        """For logs: ``models:/m@champion (version 3)``, or the URI itself."""
        return f"{self.uri} (version {self.version})" if self.alias and self.version else self.uri

    def info(self) -> dict:
        return {"uri": self.uri, "name": self.name, "version": self.version,
                "alias": self.alias}


def parse(uri: str) -> ModelRef:
    """Which form ``uri`` is; raises ValueError naming it when a registry URI is malformed."""
    uri = str(uri)
    if uri.startswith("models:/"):
        rest = uri[len("models:/"):]
        name, at, alias = rest.partition("@")
        if at:
            if not name or not alias or "/" in alias:
                raise ValueError(f"{uri}: expected models:/NAME@ALIAS")
            return ModelRef(uri, REGISTRY, name=name, alias=alias)
        name, _, version = rest.partition("/")
        if not name or not version:
            raise ValueError(f"{uri}: expected models:/NAME/VERSION or models:/NAME@ALIAS")
        return ModelRef(uri, REGISTRY, name=name, version=version)
    if uri.startswith("runs:/"):
        return ModelRef(uri, RUN)
    if uri.startswith("mlflow-artifacts:"):
        return ModelRef(uri, ARTIFACT)
    scheme, sep, path = uri.partition("://")
    if sep and scheme.lower() == "file":
        return ModelRef(uri, FOLDER, name=Path(path).name)
    if sep and scheme:
        return ModelRef(uri, REMOTE)
    return ModelRef(uri, FOLDER, name=Path(uri).name)


def is_local(uri: str) -> bool:
    """A model folder on this machine, not a registry / run / artifact / remote URI."""
    return parse(uri).local


def local_path(uri: str) -> Path:
    """The folder a local reference names (``file://`` stripped, ``~`` expanded)."""
    ref = parse(uri)
    if not ref.local:
        raise ValueError(f"{uri}: not a local model folder")
    path = uri.split("://", 1)[1] if "://" in uri else uri
    return Path(path).expanduser()


def pin_version(uri: str) -> str | None:
    """The registry version ``models:/NAME@ALIAS`` points at now; None for other forms."""
    ref = parse(uri)
    if ref.alias is None:
        return ref.version
    from mlflow.tracking import MlflowClient

    return str(MlflowClient().get_model_version_by_alias(ref.name, ref.alias).version)


def resolve(uri: str, version: str | None = None, dst: Path | None = None) -> ResolvedModel:
    """The model folder for ``uri`` (downloaded unless local) and what it resolved to.

    ``models:/NAME@ALIAS`` loads ``version`` when given (all replicas agree on it), else the
    version the alias points at now.
    """
    ref = parse(uri)
    if ref.local:
        folder = local_path(uri)
        return ResolvedModel(folder, uri, ref.name, None, None)
    download = uri
    if ref.kind == REGISTRY:
        version = version or pin_version(uri)
        download = f"models:/{ref.name}/{version}"
    folder = _download(uri, download, dst)
    return ResolvedModel(folder, uri, ref.name, version if ref.kind == REGISTRY else None,
                         ref.alias)


def model_folder(uri: str, dst: Path | None = None) -> Path:
    """Just the local folder of ``uri`` (see :func:`resolve`)."""
    return resolve(uri, dst=dst).folder


def _download(uri: str, artifact_uri: str, dst: Path | None) -> Path:
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri,
                                                     dst_path=str(dst) if dst else None))
    for folder in (local / MODEL_SUBFOLDER, local):  # a logged MLflow model, or a bare folder
        if (folder / "model.json").is_file():
            return folder
    raise FileNotFoundError(f"{uri}: not a vae-tables model (no {MODEL_SUBFOLDER.as_posix()})")


__all__ = ["ModelRef", "ResolvedModel", "is_local", "local_path", "model_folder", "parse",
           "pin_version", "resolve"]
