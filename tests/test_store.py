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
    # every file of it as readable as the manifest (safetensors wrote its files 0600: another
    # account reading the database saw the model listed and could not load it)
    saved = tmp_path / "models" / "cats"
    modes = {path.name: path.stat().st_mode & 0o777 for path in saved.iterdir()}
    assert modes["weights.safetensors"] == modes["manifest.json"] and modes["manifest.json"] & 0o044


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
    with pytest.warns(UserWarning, match="pixql: model 'm' is back as it was: a process killed while saving over it"):
        store.save("other", _state(), {})  # any write recovers first, and says what it put back
    assert store.load("m")[0]["v"] == 1
    assert not (tmp_path / ".tmp").exists() or not any((tmp_path / ".tmp").iterdir())


def test_a_read_only_store_reads_a_model_a_crashed_overwrite_set_aside(tmp_path):
    """A read-only connection cannot put it back (a read-write open does): it reads it where it
    lies, listed and loaded under its name (it was "does not exist")."""
    store = ModelStore(tmp_path)
    store.save("m", _state(1.0), {"v": 1})
    (tmp_path / ".trash").mkdir()
    (tmp_path / "m").rename(tmp_path / ".trash" / "m--dead")
    reader = ModelStore(tmp_path, read_only=True)
    reader.recover()
    assert [m["name"] for m in reader.list()] == ["m"] and reader.load("m")[0]["v"] == 1
    assert not (tmp_path / "m").exists()  # (nothing written by a reader)


@pytest.mark.parametrize("text, why", [("[1, 2]", "holds a JSON list, not an object"), ("{}", "lacks weights_sha256, classes"),
                                       (None, "lacks classes")])
def test_a_manifest_that_is_json_but_no_manifest_is_a_store_error(tmp_path, text, why):
    store = ModelStore(tmp_path, required=("classes",))
    store.save("m", _state(), {"classes": ["a", "b"]})
    path = tmp_path / "m" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["classes"]
    path.write_text(text if text is not None else json.dumps(manifest))
    for read in (store.manifest, store.load):
        with pytest.raises(StoreError, match=f"model 'm': cannot read .*manifest.json: it {why}; drop and rebuild"):
            read("m")
    assert store.list() == [{"name": "m", "broken": f"manifest.json cannot be read (it {why}); DROP MODEL m "
                                                    "and rebuild it"}]


@pytest.mark.parametrize("key, value, why", [("classes", 5, "its classes is 5, not a list of text"),
                                             ("classes", ["a", 2], 'its classes is \\["a", 2\\], not a list of text'),
                                             ("network", "x", 'its network is "x", not an object')])
def test_a_manifest_key_of_another_type_is_a_broken_model_not_a_traceback(tmp_path, key, value, why):
    """A manifest edited by hand with `classes` a number hid every model from SHOW MODELS (its
    len() a TypeError in the listing) and PREDICT of it was a traceback (a QA pass)."""
    from pixql.catalog import MANIFEST_KEYS, MANIFEST_TYPES

    store = ModelStore(tmp_path, required=MANIFEST_KEYS, types=MANIFEST_TYPES)
    store.save("m", _state(), {"classes": ["a", "b"], "network": {"arch": "x"}})
    store.save("kept", _state(), {"classes": ["a", "b"]})
    path = tmp_path / "m" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    with pytest.raises(StoreError, match=f"model 'm': cannot read .*manifest.json: {why}; drop and rebuild"):
        store.load("m")
    listed = {m["name"]: m.get("broken") for m in store.list()}
    assert listed["kept"] is None and listed["m"].startswith("manifest.json cannot be read (its ")
    assert store.drop("m")


def test_a_folder_under_a_built_ins_name_is_listed_broken(tmp_path):
    store = ModelStore(tmp_path, also_named=("imagenet_classifier",))
    store.save("real", _state(), {})
    (tmp_path / "real").rename(tmp_path / "imagenet_classifier")  # (copied by hand)
    [listed] = store.list()
    assert listed["name"] == "imagenet_classifier" and "the name of a built-in model" in listed["broken"]


def test_a_missing_model_of_a_store_with_no_folder_says_where_models_are_kept(tmp_path):
    """A database file moved without its `.models` folder: "does not exist" alone did not say why."""
    with pytest.raises(CatalogError, match=r"model 'm' does not exist .*; there is no models folder .*moved or copied"):
        ModelStore(tmp_path / "db.duckdb.models").manifest("m")
    ModelStore(tmp_path / "made").save("other", _state(), {})
    with pytest.raises(CatalogError) as info:
        ModelStore(tmp_path / "made").manifest("m")
    assert "models folder" not in str(info.value)


def test_a_store_that_cannot_be_written_is_a_store_error_and_keeps_the_model(tmp_path, monkeypatch):
    import errno
    import os

    from pixql import store as store_module

    store = ModelStore(tmp_path / "models")
    store.save("m", _state(1.0), {"v": 1})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "_save_tensors", full)
    with pytest.raises(StoreError, match="model 'm' could not be written in .*No space left.*previous version is kept"):
        store.save("m", _state(2.0), {"v": 2}, overwrite=True)
    monkeypatch.undo()
    assert store.load("m")[0]["v"] == 1
    # a read-only file system: said before any training (check_writable), and by the lock
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(StoreError, match="the model store .*models cannot be written .*set PIXQL_HOME"):
        store.check_writable("save model 'n'")
    monkeypatch.undo()
    elsewhere = ModelStore(tmp_path / "nowhere" / "models")
    monkeypatch.setattr(type(elsewhere.root), "mkdir", full)
    with pytest.raises(StoreError, match="the model store .*nowhere/models cannot be written: No space left"):
        elsewhere.save("n", _state(), {})


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
