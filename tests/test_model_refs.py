"""Model references: every URI form parsed without a server, and a local folder resolved.
The registry path (aliases pinned, downloads) runs against a real MLflow server in
tests/integration/test_batch.py and test_serving.py."""

from pathlib import Path

import pytest

import model_refs
from model_refs import ModelRef, parse


@pytest.mark.parametrize("uri, expected", [
    ("models:/adult@champion", ModelRef("models:/adult@champion", "registry", "adult",
                                        None, "champion")),
    ("models:/adult/3", ModelRef("models:/adult/3", "registry", "adult", "3", None)),
    ("runs:/abc123/model", ModelRef("runs:/abc123/model", "run")),
    ("mlflow-artifacts:/1/abc/artifacts/model",
     ModelRef("mlflow-artifacts:/1/abc/artifacts/model", "artifact")),
    ("s3://bucket/models/adult", ModelRef("s3://bucket/models/adult", "remote")),
    ("gs://bucket/m", ModelRef("gs://bucket/m", "remote")),
    ("https://host/m", ModelRef("https://host/m", "remote")),
    ("out/demo-model", ModelRef("out/demo-model", "folder", "demo-model")),
    ("/abs/path/m", ModelRef("/abs/path/m", "folder", "m")),
    ("file:///abs/path/m", ModelRef("file:///abs/path/m", "folder", "m")),
])
def test_each_form_parses_without_a_server(uri, expected):
    ref = parse(uri)
    assert ref == expected
    assert ref.local == (expected.kind == "folder") == model_refs.is_local(uri)
    assert ref.needs_tracking == (expected.kind in ("registry", "run", "artifact"))


@pytest.mark.parametrize("uri", ["models:/", "models:/adult", "models:/@champion",
                                 "models:/adult@", "models:/adult@a/b"])
def test_malformed_registry_uris_name_themselves(uri):
    with pytest.raises(ValueError, match="expected models:/NAME"):
        parse(uri)


def test_only_an_alias_needs_pinning():
    assert model_refs.pin_version("models:/adult/7") == "7"
    assert model_refs.pin_version("out/m") is None
    assert model_refs.pin_version("s3://b/m") is None


def test_a_local_folder_resolves_in_place(tmp_path):
    resolved = model_refs.resolve(str(tmp_path / "m"))
    assert resolved.folder == tmp_path / "m"
    assert (resolved.name, resolved.version, resolved.alias) == ("m", None, None)
    assert resolved.label == str(tmp_path / "m")
    assert model_refs.resolve(f"file://{tmp_path}/m").folder == tmp_path / "m"
    assert model_refs.local_path("~/m") == Path.home() / "m"


def test_label_names_the_pinned_version():
    resolved = model_refs.ResolvedModel(Path("x"), "models:/a@champion", "a", "3", "champion")
    assert resolved.label == "models:/a@champion (version 3)"
    assert resolved.info() == {"uri": "models:/a@champion", "name": "a", "version": "3",
                               "alias": "champion"}
