"""The on-disk cache of backbone embeddings (linear mode): hits, stale files, restarts, damage."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import make_color_images

from pixql.ml import embedding_cache as ec


def _files(folder, contents):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, text in enumerate(contents):
        path = folder / f"f{i}.bin"
        path.write_text(text)
        paths.append(str(path))
    return paths


class FakeBackbone:
    """compute() as forward_rows gives it: one row per readable file (its length and first
    byte); files that do not exist are skipped. Counts the paths it was asked for."""

    def __init__(self):
        self.asked = []

    def __call__(self, paths, skipped):
        self.asked.extend(paths)
        rows, out = [], []
        for j, p in enumerate(paths):
            if not os.path.exists(p):
                skipped.add(j)
                continue
            data = open(p, "rb").read()
            rows.append(j)
            out.append(torch.tensor([float(len(data)), float(data[0])]))
        return (torch.stack(out) if out else torch.zeros(0)), torch.tensor(rows, dtype=torch.long)


def test_second_pass_computes_nothing_and_gives_the_same_rows(tmp_path):
    paths = _files(tmp_path / "img", ["a", "bb", "ccc", "dddd"])
    cache = ec.EmbeddingCache(str(tmp_path / "cache" / "k"))
    backbone = FakeBackbone()
    first, rows, skipped, hits = ec.cached_forward(cache, paths, backbone)
    assert backbone.asked == paths and hits == 0 and rows.tolist() == [0, 1, 2, 3] and not skipped

    backbone.asked.clear()
    again, rows2, _, hits2 = ec.cached_forward(cache, paths, backbone)
    assert backbone.asked == [] and hits2 == 4
    assert torch.equal(first, again) and rows2.tolist() == [0, 1, 2, 3]

    # a process that starts later (a new cache object on the same folder) finds them too
    backbone.asked.clear()
    _, _, _, hits3 = ec.cached_forward(ec.EmbeddingCache(cache.folder), paths[::-1], backbone)
    assert hits3 == 4 and backbone.asked == []


def test_a_photo_named_in_many_rows_is_computed_once(tmp_path):
    """Repeats within one call (a table naming the same photo many times, or two files with the
    same bytes) cost one computation; every row gets its answer, in order."""
    a, b, same_as_a = _files(tmp_path / "img", ["a", "bb", "a"])
    gone = str(tmp_path / "img" / "gone.bin")
    paths = [a, b, a, gone, same_as_a, b, gone]
    backbone = FakeBackbone()
    feats, rows, skipped, hits = ec.cached_forward(ec.EmbeddingCache(str(tmp_path / "cache" / "k")), paths, backbone)
    assert backbone.asked == [a, b, gone, gone] and hits == 0  # each unreadable one reports its own row
    assert rows.tolist() == [0, 1, 2, 4, 5] and skipped == {3, 6}
    assert feats[:, 0].tolist() == [1.0, 2.0, 1.0, 1.0, 2.0]


def test_a_changed_file_is_recomputed_never_served_stale(tmp_path):
    paths = _files(tmp_path / "img", ["a", "bb", "ccc"])
    cache = ec.EmbeddingCache(str(tmp_path / "cache" / "k"))
    backbone = FakeBackbone()
    ec.cached_forward(cache, paths, backbone)
    with open(paths[1], "w") as f:
        f.write("zzzzzz")  # same path, new content
    backbone.asked.clear()
    feats, rows, _, hits = ec.cached_forward(cache, paths, backbone)
    assert backbone.asked == [paths[1]] and hits == 2
    assert feats[1].tolist() == [6.0, float(ord("z"))]


def test_unreadable_rows_are_skipped_with_their_own_indices_and_not_cached(tmp_path):
    paths = _files(tmp_path / "img", ["a", "bb"])
    paths.insert(1, str(tmp_path / "img" / "missing.bin"))
    cache = ec.EmbeddingCache(str(tmp_path / "cache" / "k"))
    feats, rows, skipped, _ = ec.cached_forward(cache, paths, FakeBackbone())
    assert rows.tolist() == [0, 2] and skipped == {1} and feats.shape == (2, 2)
    backbone = FakeBackbone()
    ec.cached_forward(cache, paths, backbone)
    assert backbone.asked == [paths[1]]  # only the unreadable one is tried again


def test_a_damaged_shard_is_dropped_with_a_warning_and_recomputed(tmp_path):
    paths = _files(tmp_path / "img", ["a", "bb"])
    cache = ec.EmbeddingCache(str(tmp_path / "cache" / "k"))
    ec.cached_forward(cache, paths, FakeBackbone())
    [shard] = os.listdir(cache.folder)
    with open(os.path.join(cache.folder, shard), "r+b") as f:
        f.truncate(40)
    backbone = FakeBackbone()
    with pytest.warns(UserWarning, match="damaged embedding-cache file"):
        feats, _, _, hits = ec.cached_forward(cache, paths, backbone)
    assert hits == 0 and backbone.asked == paths and feats[1].tolist() == [2.0, float(ord("b"))]
    assert shard not in os.listdir(cache.folder)


def _flip_first_sign(shard):
    """The shard's first value negated in place (the file's size the same)."""
    _, _, stored = ec._load(shard)
    data = bytearray(open(shard, "rb").read())
    at = bytes(data).rindex(stored.tobytes())  # the values' bytes in the file
    data[at + stored.itemsize - 1] ^= 0x80
    open(shard, "wb").write(bytes(data))


def test_a_shard_damaged_in_place_is_dropped_and_recomputed_not_served(tmp_path):
    """Bytes of a value changed, the file's size the same (a QA pass flipped sign bits): its
    embeddings came back negated without a word. The shard's checksum tells."""
    paths = _files(tmp_path / "img", ["a", "bb"])
    cache = ec.EmbeddingCache(str(tmp_path / "cache" / "k"))
    ec.cached_forward(cache, paths, FakeBackbone())
    [shard] = [os.path.join(cache.folder, n) for n in os.listdir(cache.folder)]
    _flip_first_sign(shard)
    backbone = FakeBackbone()
    with pytest.warns(UserWarning, match="damaged embedding-cache file.*not those written"):
        feats, _, _, hits = ec.cached_forward(cache, paths, backbone)
    assert hits == 0 and backbone.asked == paths and feats[0].tolist() == [1.0, float(ord("a"))]
    assert not os.path.exists(shard)


def test_an_unwritable_cache_folder_costs_a_warning_not_the_result(tmp_path):
    paths = _files(tmp_path / "img", ["a", "bb"])
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    cache = ec.EmbeddingCache(str(blocker / "k"))
    with pytest.warns(UserWarning, match="could not write the embedding cache"):
        feats, rows, _, _ = ec.cached_forward(cache, paths, FakeBackbone())
    assert rows.tolist() == [0, 1] and feats.shape == (2, 2)


def test_many_shards_are_merged_into_one_without_losing_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(ec, "MAX_SHARDS", 3)
    cache = ec.EmbeddingCache(str(tmp_path / "cache" / "k"))
    all_paths = []
    for n in range(5):  # five builds, each on new files
        paths = _files(tmp_path / f"img{n}", [f"{n}" * (i + 1) for i in range(3)])
        ec.cached_forward(cache, paths, FakeBackbone())
        all_paths += paths
    assert 1 <= len(os.listdir(cache.folder)) <= 3
    backbone = FakeBackbone()
    _, _, _, hits = ec.cached_forward(cache, all_paths, backbone)
    assert hits == 15 and backbone.asked == []


def test_a_merge_leaves_a_damaged_shard_out_never_writing_its_values_under_a_new_checksum(tmp_path, monkeypatch):
    """A merge read the shards' values unchecked and wrote them under a checksum of its own: a
    damaged shard's values were then served as good (a review)."""
    monkeypatch.setattr(ec, "MAX_SHARDS", 2)
    cache = ec.EmbeddingCache(str(tmp_path / "k"))
    assert cache.put([b"a" * 16], np.array([[1.5, 2.5]], dtype=np.float32))
    [damaged] = cache._shards()
    _flip_first_sign(damaged)
    assert cache.put([b"b" * 16], np.array([[3.5, 4.5]], dtype=np.float32))
    assert cache.put([b"c" * 16], np.array([[5.5, 6.5]], dtype=np.float32))  # (two shards there: a merge first)
    with pytest.warns(UserWarning, match="damaged embedding-cache file"):
        found = cache.get([b"a" * 16, b"b" * 16, b"c" * 16])
    assert b"a" * 16 not in found and found[b"b" * 16].tolist() == [3.5, 4.5]


def test_cache_root_is_pixql_cache_else_the_user_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("PIXQL_CACHE", str(tmp_path / "here"))
    assert ec.cache_root() == str(tmp_path / "here")
    monkeypatch.delenv("PIXQL_CACHE")
    import platformdirs

    assert ec.cache_root() == platformdirs.user_cache_dir("pixql", appauthor=False)


def test_backbone_key_follows_backbone_weights_and_preprocessing_not_the_head():
    from pixql.ml.networks import SimpleCNN, linear_head

    torch.manual_seed(0)
    net = SimpleCNN(2, 32)
    pre = {"input_size": [3, 32, 32], "mean": [0.5] * 3}
    key = ec.backbone_key(net, linear_head(net), pre, "fp32", "cpu")
    assert key == ec.backbone_key(net, linear_head(net), dict(pre), "fp32", "cpu")
    with torch.no_grad():
        linear_head(net).weight.add_(1.0)
    assert ec.backbone_key(net, linear_head(net), pre, "fp32", "cpu") == key  # the head is not hashed
    assert ec.backbone_key(net, linear_head(net), {**pre, "mean": [0.4] * 3}, "fp32", "cpu") != key
    assert ec.backbone_key(net, linear_head(net), pre, "bf16", "cpu") != key
    with torch.no_grad():
        next(net.features.parameters()).add_(1e-3)
    assert ec.backbone_key(net, linear_head(net), pre, "fp32", "cpu") != key


# -- through BUILD MODEL -------------------------------------------------------------------

def _build(db, name, label_col="label", extra=""):
    return db.sql(f"BUILD MODEL {name} USING EfficientNet_Lite0 OPTIONS (train_mode='linear', "
                  f"label_col='{label_col}'{extra}) AS SELECT * FROM colors")


def test_a_second_linear_build_on_the_same_images_reads_the_cache(tmp_path, monkeypatch):
    import pandas as pd

    import pixql

    monkeypatch.setenv("PIXQL_CACHE", str(tmp_path / "cache"))
    rows = make_color_images(tmp_path / "img", per_class=8, size=32)
    db = pixql.connect(str(tmp_path / "c.duckdb"), progress=False)
    frame = pd.DataFrame(rows, columns=["image", "label"])
    frame["is_red"] = (frame["label"] == "red").map({True: "yes", False: "no"})
    db.duckdb.register("__f", frame)
    db.duckdb.execute("CREATE TABLE colors AS SELECT * FROM __f")

    first = _build(db, "m1")
    assert not any("came from the cache" in m for m in first.messages)
    used = db.sql("DESCRIBE MODEL m1").info["manifest"]["options"]["used"]
    assert used["cached_embeddings"] == 0

    # another label column and other options: every embedding comes from the cache
    second = _build(db, "m2", "is_red", ", validation=0.25, seed=3")
    assert any("16 of 16 images' embeddings came from the cache" in m for m in second.messages)
    assert db.sql("DESCRIBE MODEL m2").info["manifest"]["options"]["used"]["cached_embeddings"] == 16
    predicted = db.sql("PREDICT USING m2 AS SELECT * FROM colors").df()
    assert (predicted["predicted"] == predicted["is_red"]).all()

    # the same statement again gives the very same head as the uncached first build
    _build(db, "m3")
    w1 = db.engine.store.load("m1")[1]
    w3 = db.engine.store.load("m3")[1]
    assert all(torch.equal(w1[k], w3[k]) for k in w1)
    # an unreadable image skipped has no embedding: it is not counted among those asked for
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    db.duckdb.execute(f"INSERT INTO colors VALUES ('{tmp_path / 'broken.jpg'}', 'red', 'yes')")
    skipping = _build(db, "m4", extra=", on_error='skip'")
    assert any("16 of 16 images' embeddings came from the cache" in m for m in skipping.messages)
    db.close()


def test_the_cache_survives_a_restart_of_the_cli(tmp_path, color_csv):
    env = {**os.environ, "PIXQL_CACHE": str(tmp_path / "cache")}
    db = str(tmp_path / "s.duckdb")

    def pixql(sql):
        return subprocess.run([sys.executable, "-m", "pixql", "--db", db, "-c", sql],
                              capture_output=True, text=True, env=env, timeout=300)

    load = f"COPY colors FROM '{color_csv}'; "
    build = "BUILD MODEL {} USING EfficientNet_Lite0 OPTIONS (train_mode='linear') AS SELECT * FROM colors"
    first = pixql(load + build.format("a"))
    assert first.returncode == 0, first.stderr
    assert "from the cache" not in first.stderr
    second = pixql(build.format("b"))
    assert second.returncode == 0, second.stderr
    assert "24 of 24 images' embeddings came from the cache" in second.stderr


def test_bf16_values_are_kept_in_half_the_bytes_and_others_as_they_are(tmp_path):
    """Embeddings computed in bf16 (every value a bf16 one) are stored as their upper 16 bits;
    anything else as float32. Either way they come back exactly, in any shape."""
    from safetensors.numpy import load_file

    cache = ec.EmbeddingCache(str(tmp_path / "k"))
    exact = torch.randn(3, 4, 2, 2).bfloat16().float()
    other = torch.randn(2, 4, 2, 2) * (1 + 2 ** -12)  # float32 values that bf16 cannot hold
    assert cache.put([bytes([i]) * 16 for i in range(3)], exact)
    assert cache.put([bytes([9 + i]) * 16 for i in range(2)], other)
    shards = [load_file(s) for s in cache._shards()]
    kinds = sorted((k, str(v.dtype)) for s in shards for k, v in s.items() if k != "digests")
    assert kinds == [("embeddings", "float32"), ("embeddings_bf16", "uint16")]
    got = cache.get([bytes([i]) * 16 for i in (0, 1, 2, 9, 10)])
    for i in range(3):
        assert torch.equal(torch.from_numpy(got[bytes([i]) * 16]), exact[i])
    for i in range(2):
        assert torch.equal(torch.from_numpy(got[bytes([9 + i]) * 16]), other[i])


def test_a_merge_folds_the_small_shards_in_their_stored_form_and_leaves_large_ones(tmp_path, monkeypatch):
    from safetensors import safe_open

    monkeypatch.setattr(ec, "MAX_SHARDS", 4)
    cache = ec.EmbeddingCache(str(tmp_path / "k"))
    rng = np.random.default_rng(0)
    digests = [bytes([i]) * ec.DIGEST_BYTES for i in range(40)]
    exact = (rng.integers(-64, 64, size=(40, 8)) / 8).astype(np.float32)  # bf16 holds these exactly
    cache.put(digests[:30], exact[:30])  # one large shard
    big = set(os.listdir(cache.folder))
    monkeypatch.setattr(ec, "MERGE_BYTES", os.path.getsize(os.path.join(cache.folder, *big)) - 1)
    for i in range(30, 33):  # three small ones: the fourth put merges them, and writes its own
        cache.put(digests[i:i + 1], exact[i:i + 1])
    cache.put(digests[33:40], exact[33:40])
    shards = set(os.listdir(cache.folder))
    assert big <= shards and len(shards) == 3  # the large one, the merged small ones, the last put
    got = cache.get(digests)
    assert sorted(got) == sorted(digests)
    assert all(np.array_equal(got[d], exact[i]) for i, d in enumerate(digests))
    for name in shards:
        with safe_open(os.path.join(cache.folder, name), framework="np") as f:
            assert set(f.keys()) == {"digests", "embeddings_bf16"}  # merged without widening to float32
    # No two shards fit in a merge: none is read or rewritten, the new rows get their own.
    monkeypatch.setattr(ec, "MAX_SHARDS", 2)
    monkeypatch.setattr(ec, "MERGE_BYTES", min(os.path.getsize(os.path.join(cache.folder, s)) for s in shards))
    import safetensors

    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: pytest.fail("a merge read a shard"))
    cache.put([b"\xff" * ec.DIGEST_BYTES], exact[:1])
    assert shards < set(os.listdir(cache.folder)) and len(os.listdir(cache.folder)) == 4


def test_a_merge_that_fails_still_writes_the_new_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(ec, "MAX_SHARDS", 1)
    cache = ec.EmbeddingCache(str(tmp_path / "k"))
    cache.put([b"\x01" * ec.DIGEST_BYTES], np.ones((1, 4), np.float32))
    cache.put([b"\x02" * ec.DIGEST_BYTES], np.ones((1, 4), np.float32))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "_merge", full)
    with pytest.warns(UserWarning, match="could not merge"):
        assert cache.put([b"\x03" * ec.DIGEST_BYTES], np.ones((1, 4), np.float32)) is True
    assert len(cache.get([bytes([i]) * ec.DIGEST_BYTES for i in (1, 2, 3)])) == 3  # nothing lost, the new row in
