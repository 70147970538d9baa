import json

import pytest
import torch

from pixql.errors import CatalogError, StoreError
from pixql.store import ModelStore


def _state(value=1.0):
    return {"fc.weight": torch.full((2, 3), value), "fc.bias": torch.zeros(2)}


def test_save_load_roundtrip_with_checksum(tmp_path):
    store = ModelStore(tmp_path / "models")
    manifest = store.save("Cats", _state(), {"base": "x", "classes": ["cat", "dog"]})
    assert manifest["weights_sha256"]
    loaded, state = store.load("cats")  # names are case-insensitive
    assert loaded["classes"] == ["cat", "dog"]
    assert torch.equal(state["fc.weight"], _state()["fc.weight"])
    assert [m["name"] for m in store.list()] == ["Cats"]


def test_existing_model_needs_overwrite_and_survives_refusal(tmp_path):
    store = ModelStore(tmp_path)
    store.save("m", _state(1.0), {"v": 1})
    with pytest.raises(CatalogError, match="already exists"):
        store.save("m", _state(2.0), {"v": 2})
    assert store.load("m")[0]["v"] == 1
    store.save("m", _state(2.0), {"v": 2}, overwrite=True)
    manifest, state = store.load("m")
    assert manifest["v"] == 2 and float(state["fc.weight"][0, 0]) == 2.0
    assert not any(p.name.startswith("m--") for p in (tmp_path / ".trash").glob("*"))


@pytest.mark.parametrize("name", ["../x", "/abs/path", "a/b", "", "1abc", "a.b", "x y"])
def test_names_that_escape_the_store_are_refused(tmp_path, name):
    store = ModelStore(tmp_path / "models")
    with pytest.raises(CatalogError, match="invalid model name"):
        store.save(name, _state(), {})
    assert not (tmp_path / "x").exists()


def test_corrupted_weights_are_detected(tmp_path):
    store = ModelStore(tmp_path)
    store.save("m", _state(), {})
    weights = tmp_path / "m" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt"):
        store.load("m")


def test_crash_between_renames_restores_previous_model(tmp_path):
    store = ModelStore(tmp_path)
    store.save("m", _state(1.0), {"v": 1})
    # Simulate a writer killed after moving the old model aside, before the new one landed.
    (tmp_path / ".trash").mkdir()
    (tmp_path / "m").rename(tmp_path / ".trash" / "m--dead")
    (tmp_path / ".tmp" / "m--half").mkdir(parents=True)
    store.save("other", _state(), {})  # any write recovers first
    assert store.load("m")[0]["v"] == 1
    assert not (tmp_path / ".tmp").exists() or not any((tmp_path / ".tmp").iterdir())


def test_drop(tmp_path):
    store = ModelStore(tmp_path)
    store.save("m", _state(), {})
    assert store.drop("M") is True
    assert store.list() == []
    with pytest.raises(CatalogError, match="does not exist"):
        store.drop("m")
    assert store.drop("m", if_exists=True) is False


def test_a_folder_without_a_manifest_is_listed_broken_and_can_be_dropped(tmp_path):
    # (pixql writes a model whole in .tmp/ and renames it in: such a folder was damaged or copied in part)
    store = ModelStore(tmp_path)
    (tmp_path / "ghost").mkdir()
    (tmp_path / "ghost" / "weights.safetensors").write_bytes(b"partial")
    store.save("real", _state(), {})
    listed = {m["name"]: m.get("broken") for m in store.list()}
    assert listed == {"ghost": "manifest.json is missing; DROP MODEL ghost and rebuild it", "real": None}
    assert store.drop("ghost") and [m["name"] for m in store.list()] == ["real"]
    assert json.loads((tmp_path / "real" / "manifest.json").read_text())["format_version"] == 1
