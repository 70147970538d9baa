"""CONVERT / EMBED, embedding(), SEARCH IMAGE (by image, by keyword, duplicates): issue 17.

Fast tests use the hand-made colour model `cm` (conftest.colors_db), whose embedding is the
image's colour; real-photo tests use the ImageNet classifier's backbone."""

import os
import shutil

import numpy as np
import pytest

from conftest import save_color_model

from pixql.errors import CatalogError, DataError, OptionError, WeightsUnavailableError

SEARCH = "SEARCH IMAGE USING cm OPTIONS ({options}) AS {query}"


def _first(db, label):
    return db.sql(f"SELECT image FROM colors WHERE label = '{label}' ORDER BY image LIMIT 1").fetchone()[0]


# -- CONVERT -----------------------------------------------------------------------------------------
def test_convert_adds_a_unit_vector_column_of_fixed_size(colors_db):
    db = colors_db
    frame = db.sql("CONVERT USING cm AS SELECT * FROM colors").df()
    assert list(frame.columns) == ["image", "label", "embedding"] and len(frame) == 24
    vectors = np.array([np.asarray(v, dtype=np.float32) for v in frame.embedding])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    db.sql("CREATE TABLE e AS CONVERT USING cm AS SELECT * FROM colors")
    (kind,) = db.sql("SELECT typeof(embedding) FROM e LIMIT 1").fetchone()
    assert kind == f"FLOAT[{vectors.shape[1]}]"
    # EMBED is the same statement; result_col renames the column
    again = db.sql("EMBED USING cm OPTIONS (result_col='v') AS SELECT * FROM colors").df()
    assert np.allclose(np.stack(again.v.map(np.asarray)), vectors)


def test_convert_streams_into_a_table_and_nests_in_a_query(colors_db, monkeypatch):
    from pixql.commands import convert

    monkeypatch.setattr(convert, "CHUNK_ROWS", 5)
    db = colors_db
    assert db.sql("CONVERT USING cm AS SELECT * FROM colors").is_streamed
    db.sql("CREATE TABLE e AS CONVERT USING cm AS SELECT * FROM colors")
    assert db.sql("SELECT count(*), count(embedding) FROM e").fetchone() == (24, 24)
    rows = db.sql("SELECT label, count(*) FROM (CONVERT USING cm AS SELECT * FROM colors) "
                  "WHERE embedding IS NOT NULL GROUP BY label ORDER BY label").fetchall()
    assert rows == [("blue", 8), ("green", 8), ("red", 8)]


def test_a_weights_file_replaced_at_its_path_is_loaded_again(colors_db, tmp_path):
    """CONVERT USING a base with OPTIONS (weights=...): a checkpoint copied over the file gives its
    own embeddings in the same connection (the network loaded first was kept by the path alone)."""
    import timm
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "r18.safetensors"
    query = f"CONVERT USING timm:resnet18 OPTIONS (weights='{path}') AS SELECT image FROM colors ORDER BY image LIMIT 2"
    vectors = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_file({k: v.contiguous() for k, v in timm.create_model("resnet18", num_classes=2).state_dict().items()},
                  path)
        os.utime(path, ns=(seed * 10**9, seed * 10**9))  # (the same size: told apart by its time)
        vectors.append(np.stack(colors_db.sql(query).df().embedding))
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)


def test_a_linear_models_vectors_stay_its_own_when_its_base_weights_file_changes(colors_db, tmp_path):
    """A linear model built on a base's weights file makes that base's vectors, named by the file's
    bytes as they were at BUILD: SEARCH USING the model refused the table it filled itself once the
    file was rewritten or gone (the model keeps its own copy of the network)."""
    import timm
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "r18.safetensors"

    def write_weights(seed):
        torch.manual_seed(seed)
        save_file({k: v.contiguous() for k, v in timm.create_model("resnet18", num_classes=2).state_dict().items()},
                  path)

    write_weights(0)
    db = colors_db
    db.sql(f"BUILD MODEL lin USING timm:resnet18 OPTIONS (weights='{path}', train_mode='linear') "
           "AS SELECT * FROM colors")
    db.sql(f"CREATE TABLE base_e AS CONVERT USING ResNet18 OPTIONS (weights='{path}') AS SELECT * FROM colors")
    db.sql("CREATE TABLE lin_e AS CONVERT USING lin AS SELECT * FROM colors")
    search = "SEARCH IMAGE USING lin OPTIONS (search_input='{}', top_k=2) AS SELECT * FROM {}"
    photo = db.sql("SELECT image FROM colors LIMIT 1").fetchone()[0]
    assert len(db.sql(search.format(photo, "base_e")).df()) == 2  # the base's vectors are the model's
    # also under its timm name, which CONVERT writes in lower case ('resnet18' against 'ResNet18')
    db.sql(f"CREATE TABLE timm_e AS CONVERT USING timm:resnet18 OPTIONS (weights='{path}') AS SELECT * FROM colors")
    assert len(db.sql(search.format(photo, "timm_e")).df()) == 2
    write_weights(1)
    assert len(db.sql(search.format(photo, "lin_e")).df()) == 2
    path.unlink()
    assert len(db.sql(search.format(photo, "lin_e")).df()) == 2


def test_convert_of_no_rows_keeps_the_types(colors_db):
    colors_db.sql("CREATE TABLE e AS CONVERT USING cm AS SELECT * FROM colors WHERE false")
    assert colors_db.sql("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'e'"
                         ).fetchall() == [("image", "VARCHAR"), ("label", "VARCHAR"), ("embedding", "FLOAT[512]")]


def test_embedding_function_is_converts_vector(colors_db):
    db = colors_db
    db.sql("CREATE TABLE e AS CONVERT USING cm AS SELECT * FROM colors")
    same = db.sql("SELECT max(abs(list_cosine_similarity(embedding, embedding('cm', image)) - 1)) FROM e").fetchone()
    assert same[0] < 1e-5


def test_convert_bad_input_names_row_and_file(colors_db, tmp_path):
    db = colors_db
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    db.sql(f"INSERT INTO colors VALUES ('{broken}', 'red')")
    with pytest.raises(DataError, match="broken.png") as err:
        db.sql("CONVERT USING cm AS SELECT * FROM colors ORDER BY image").df()
    assert err.value.path is not None
    result = db.sql("CONVERT USING cm OPTIONS (on_error='skip') AS SELECT * FROM colors")
    frame = result.df()
    assert frame.embedding.isna().sum() == 1 and "broken.png" in " ".join(result.messages)
    # SEARCH IMAGE over the same rows says which it skipped, as CONVERT does (it was silent)
    query = db.sql(f"SELECT min(image) FROM colors WHERE image <> '{broken}'").fetchone()[0]
    for options in (f"search_input='{query}'", "search_by='text', search_input='red'"):
        found = db.sql(f"SEARCH IMAGE USING cm OPTIONS ({options}, on_error='skip', top_k=100) AS "
                       "SELECT * FROM colors ORDER BY image = '" + str(broken) + "' DESC")
        assert found.df().similarity.isna().sum() == 1
        assert [m for m in found.messages if "skip" in m] == [
            f"SEARCH IMAGE: 1 row(s) with an unreadable image or no image path got a NULL similarity "
            f"and rank last (on_error='skip'): row 1: {broken}"]
    with pytest.raises(CatalogError, match="Unknown base model 'nope'"):
        db.sql("CONVERT USING nope AS SELECT * FROM colors")
    with pytest.raises(WeightsUnavailableError, match="random weights mean nothing"):
        db.sql("CONVERT USING SimpleCNN AS SELECT * FROM colors")
    with pytest.raises(CatalogError, match="weights=.*is for a base network"):
        db.sql("CONVERT USING cm OPTIONS (weights='x.safetensors') AS SELECT * FROM colors")
    with pytest.raises(OptionError, match="on_error"):
        db.sql("CONVERT USING cm OPTIONS (on_error='maybe') AS SELECT * FROM colors")
    assert db.sql("SELECT count(*) FROM colors").fetchone() == (25,)  # nothing changed


# -- SEARCH IMAGE by image ---------------------------------------------------------------------------
def test_search_by_image_ranks_like_array_cosine_similarity(colors_db):
    db = colors_db
    db.sql("CREATE TABLE e AS CONVERT USING cm AS SELECT * FROM colors")
    query = _first(db, "green")
    found = db.sql(SEARCH.format(options=f"search_input='{query}', top_k=8",
                                 query="SELECT * FROM e")).df()
    assert list(found.columns) == ["image", "label", "embedding", "similarity"]
    assert found.image[0] == query and found.similarity[0] == pytest.approx(1, abs=1e-5)
    assert set(found.label) == {"green"}  # the 8 green squares before any other colour
    (dim,) = db.sql("SELECT len(embedding) FROM e LIMIT 1").fetchone()
    plain = db.sql(f"SELECT image, array_cosine_similarity(embedding, embedding('cm', '{query}')::FLOAT[{dim}]) AS s "
                   "FROM e ORDER BY s DESC, image LIMIT 8").df()
    assert sorted(plain.image) == sorted(found.image)
    assert np.allclose(sorted(plain.s), sorted(found.similarity), atol=1e-5)
    # a file:// URL names the same photo, as COPY reads one (it was "not an image file here")
    url = db.sql(SEARCH.format(options=f"search_input='file://{query}', top_k=8", query="SELECT * FROM e")).df()
    assert url.image.tolist() == found.image.tolist()
    # the rows found keep their vectors' type (a table of them can be searched and compared again),
    # and a list column (FLOAT[], as another tool writes it) is searched the same
    db.sql("CREATE TABLE found AS " + SEARCH.format(options=f"search_input='{query}', top_k=8", query="SELECT * FROM e"))
    db.sql("CREATE TABLE listed AS SELECT image, label, embedding::DOUBLE[] AS embedding FROM e")
    assert db.sql("SELECT typeof(embedding) FROM found LIMIT 1").fetchone() == (f"FLOAT[{dim}]",)
    listed = db.sql(SEARCH.format(options=f"search_input='{query}', top_k=8", query="SELECT * FROM listed")).df()
    assert list(listed.image) == list(found.image)
    assert np.allclose(listed.similarity, found.similarity, atol=1e-5)
    db.sql("CREATE TABLE holed AS SELECT image, label, list_transform(embedding::DOUBLE[], lambda v, i: CASE WHEN "
           "i = 1 AND label = 'red' THEN NULL ELSE v END) AS embedding FROM e")  # a NULL inside the red ones
    with pytest.raises(DataError, match="can not contain NULL values"):  # DuckDB's word, as pixql's error
        db.sql(SEARCH.format(options=f"search_input='{query}', top_k=24", query="SELECT * FROM holed"))
    # without an embedding column the images are embedded (through the cache): the same ranking
    computed = db.sql(SEARCH.format(options=f"search_input='{query}', top_k=8",
                                    query="SELECT image, label FROM colors")).df()
    assert sorted(computed.image) == sorted(found.image)


def test_search_options_are_checked(colors_db, tmp_path):
    db = colors_db
    db.sql("CREATE TABLE e AS CONVERT USING cm AS SELECT * FROM colors")
    query = _first(db, "red")
    with pytest.raises(OptionError, match="needs OPTIONS \\(search_input"):
        db.sql(SEARCH.format(options="search_by='image'", query="SELECT * FROM e"))
    with pytest.raises(OptionError, match="emb_col 'vec' is not a column"):
        db.sql(SEARCH.format(options=f"search_input='{query}', emb_col='vec'", query="SELECT * FROM e"))
    with pytest.raises(OptionError, match="emb_col 'label' is VARCHAR, not an embedding"):
        db.sql(SEARCH.format(options=f"search_input='{query}', emb_col='label'", query="SELECT * FROM e"))
    with pytest.raises(OptionError, match=r"holds vectors of 3 numbers \(FLOAT\[3\]\) and 'cm' makes vectors of"):
        db.sql(SEARCH.format(options=f"search_input='{query}'", query="SELECT [1, 2, 3]::FLOAT[3] AS embedding"))
    # the search photo: what is wrong with it, said as being about search_input
    bad_text = tmp_path / "text.jpg"
    bad_text.write_text("no photo")
    for given, words in (("/no/such.jpg", "is no file here"),
                         ("no/such.jpg", f"is no file here (looked for {os.path.abspath('no/such.jpg')})"),
                         ("https://example.com/cat.jpg", "is a URL, and URLs are not read"),
                         (str(tmp_path), "is a folder, not a photo"),
                         (str(bad_text), f"search_input '{bad_text}': Not an image")):
        with pytest.raises(DataError, match=r"SEARCH IMAGE \(line 1\): search_input") as info:
            db.sql(SEARCH.format(options=f"search_input='{given}'", query="SELECT * FROM e"))
        assert words in str(info.value) and info.value.path == given, str(info.value)
    with pytest.raises(OptionError, match="search_by"):
        db.sql(SEARCH.format(options="search_by='sound', search_input='x'", query="SELECT * FROM e"))
    with pytest.raises(OptionError, match="top_k"):
        db.sql(SEARCH.format(options=f"search_input='{query}', top_k=0", query="SELECT * FROM e"))
    # the ranking never silently replaces a column of the query (an earlier search's scores)
    db.sql("CREATE TABLE ranked AS " + SEARCH.format(options=f"search_input='{query}'", query="SELECT * FROM e"))
    for by, query_of in ((f"search_input='{query}'", "SELECT * FROM ranked"),
                         ("search_by='text', search_input='red'", "SELECT * EXCLUDE (embedding) FROM ranked")):
        with pytest.raises(DataError, match="already has similarity.*result_col"):
            db.sql(SEARCH.format(options=by, query=query_of))
    with pytest.raises(DataError, match="already has similarity"):  # said before the search photo is read
        db.sql(SEARCH.format(options="search_input='/no/such.jpg'", query="SELECT * FROM ranked"))
    again = db.sql(SEARCH.format(options=f"search_input='{query}', result_col='again'", query="SELECT * FROM ranked"))
    assert list(again.df().columns) == ["image", "label", "embedding", "similarity", "again"]


def test_rows_without_an_embedding_rank_last_and_pair_with_nothing(colors_db):
    """A NULL embedding is what CONVERT OPTIONS (on_error='skip') writes for a photo it could not
    read: ranked as ORDER BY ... DESC NULLS LAST ranks it, and never half of a duplicate pair."""
    db = colors_db
    db.sql("CREATE TABLE e AS CONVERT USING cm AS SELECT * FROM colors")
    db.sql("CREATE TABLE holes AS SELECT image, label, CASE WHEN label = 'red' THEN NULL ELSE embedding END "
           "AS embedding FROM e")
    query = _first(db, "green")
    db.sql("CREATE TABLE found AS " + SEARCH.format(options=f"search_input='{query}', top_k=24",
                                                    query="SELECT * FROM holes"))
    assert db.sql("SELECT label, count(*), count(similarity), count(embedding) FROM found GROUP BY label "
                  "ORDER BY label").fetchall() == [("blue", 8, 8, 8), ("green", 8, 8, 8), ("red", 8, 0, 0)]
    ranked = db.sql("SELECT label FROM found").fetchall()
    assert [label for (label,) in ranked][-8:] == ["red"] * 8
    # a table of the result keeps the query's types (pandas makes a DATE a timestamp)
    db.sql("CREATE TABLE dated AS " + SEARCH.format(options=f"search_input='{query}', top_k=3",
                                                    query="SELECT *, DATE '2024-01-31' AS d FROM holes"))
    db.sql("CREATE TABLE worded AS " + SEARCH.format(options="search_by='text', search_input='green', top_k=3",
                                                     query="SELECT image, DATE '2024-01-31' AS d FROM holes"))
    assert db.sql("SELECT typeof(d) FROM dated LIMIT 1").fetchone() == db.sql(
        "SELECT typeof(d) FROM worded LIMIT 1").fetchone() == ("DATE",)
    # the column's name is compared as SQL compares names
    upper = db.sql(SEARCH.format(options=f"search_input='{query}', top_k=3, emb_col='EMBEDDING'",
                                 query="SELECT * FROM holes")).df()
    top = db.sql("SELECT similarity FROM found ORDER BY similarity DESC LIMIT 3").fetchall()
    assert upper.similarity.tolist() == pytest.approx([t for (t,) in top]) and set(upper.label) == {"green"}
    pairs = db.sql(SEARCH.format(options="search_by='duplicates', threshold=-1", query="SELECT * FROM holes"))
    frame = pairs.df()
    assert len(frame) == 16 * 15 // 2  # every pair of the 16 rows with an embedding, none with a red one
    reds = {r[0] for r in db.sql("SELECT image FROM holes WHERE label = 'red'").fetchall()}
    assert not reds & (set(frame.image) | set(frame.duplicate))
    assert any("8 row(s) without an embedding paired with nothing" in m for m in pairs.messages)


def test_a_result_col_holding_the_query_placeholder_stays_a_name(colors_db):
    # the ranking SQL around the query once replaced every '{query}' in it, names included: the
    # query's text then stood inside a quoted name, and a '"' in one of its strings broke out
    db = colors_db
    db.sql("CREATE TABLE e AS CONVERT USING cm AS SELECT * FROM colors")
    query = "SELECT * FROM e WHERE label = 'nothing\" FROM e, range(1000) --'"
    found = db.sql(SEARCH.format(options=f"search_input='{_first(db, 'red')}', result_col='{{query}}', top_k=2",
                                 query=query)).df()
    assert len(found) == 0 and "{query}" in found.columns  # no row is labelled so: nothing found


# -- SEARCH IMAGE by keyword ---------------------------------------------------------------------------
def test_search_by_keyword_ranks_by_the_class_probability(colors_db):
    db = colors_db
    found = db.sql(SEARCH.format(options="search_by='text', search_input='Blue', top_k=8",
                                 query="SELECT * FROM colors")).df()
    assert set(found.label) == {"blue"} and found.similarity.is_monotonic_decreasing
    with pytest.raises(DataError, match=r"no class of 'cm' is called 'purple' \(its classes: blue, green, red\)"):
        db.sql(SEARCH.format(options="search_by='text', search_input='purple'", query="SELECT * FROM colors"))
    # a class named with a comma is found by its whole name, as PREDICT writes it, and named whole
    db.sql("BUILD MODEL commas AS SELECT image, CASE label WHEN 'red' THEN 'red, crimson' ELSE label END AS label "
           "FROM colors")
    found = db.sql("SEARCH IMAGE USING commas OPTIONS (search_by='text', search_input='red, crimson', top_k=8) "
                   "AS SELECT * FROM colors").df()
    assert set(found.label) == {"red"}
    with pytest.raises(DataError, match=r"\(its classes: 'blue', 'green', 'red, crimson'\)"):
        db.sql("SEARCH IMAGE USING commas OPTIONS (search_by='text', search_input='purple') AS SELECT * FROM colors")
    # a base network has no classes: said so (it was "model 'EfficientNet_Lite0' does not exist")
    with pytest.raises(CatalogError, match="'EfficientNet_Lite0' is a base network, whose features match photos"):
        db.sql("SEARCH IMAGE USING EfficientNet_Lite0 OPTIONS (search_by='text', search_input='blue') "
               "AS SELECT * FROM colors")


def test_a_keyword_search_scores_as_predict_and_reads_the_embedding_cache(colors_db, monkeypatch):
    # another keyword over the same rows reads the network's features from the cache CONVERT and
    # SEARCH by image fill: no pass of the network, the probabilities PREDICT's network gives
    from pixql.ml import embed, infer

    db = colors_db
    with monkeypatch.context() as patched:  # the embedder's network only: no classifier loaded beside it
        patched.setattr(db.engine.catalog, "load", lambda *a, **k: pytest.fail("a second network was loaded"))
        found = db.sql(SEARCH.format(options="search_by='text', search_input='blue', top_k=24",
                                     query="SELECT * FROM colors")).df()
    model = db.engine.catalog.load("cm")[0]
    expected = model.predict_proba(list(found.image), progress=False)[:, list(model.classes).index("blue")]
    assert np.allclose(found.similarity, expected, atol=1e-3)

    def no_network(*args, **kwargs):
        raise AssertionError("the network ran")

    for module in (embed, infer):
        monkeypatch.setattr(module, "forward_rows", no_network)
    reds = db.sql(SEARCH.format(options="search_by='text', search_input='red', top_k=8",
                                query="SELECT * FROM colors")).df()
    assert set(reds.label) == {"red"}


def test_keywords_reach_the_imagenet_classes_through_wordnet():
    from pixql import keywords
    from pixql.ml.imagenet import imagenet_class_names

    classes = imagenet_class_names()
    dogs = keywords.matching_classes("dog", classes)
    assert dogs == list(range(151, 269))  # the 118 breeds
    assert keywords.matching_classes("Persian cat", classes) == [283]
    assert set(range(281, 286)) <= set(keywords.matching_classes("cat", classes))
    assert len(keywords.matching_classes("vehicle", classes)) > 50
    assert keywords.matching_classes("no such thing", classes) == []
    # a class's whole name, as PREDICT writes it, names that class (it was "no class is called")
    assert keywords.matching_classes("tabby, tabby cat", classes) == [281]
    assert keywords.matching_classes("Tabby,tabby cat ", classes) == [281]
    assert keywords.matching_classes("tabby, Persian cat", classes) == []  # two classes' names: neither
    # a plural is read as its singular where the plural names nothing ('dogs' was "no class is called")
    assert keywords.keyword_classes("Dogs", classes) == ("Dog", dogs)
    assert keywords.keyword_classes("running shoes", classes) == ("running shoe", keywords.matching_classes(
        "running shoe", classes)) and keywords.matching_classes("running shoe", classes)
    assert keywords.keyword_classes("dresses", classes)[0] == "dress"
    assert keywords.keyword_classes("kites", classes)[0] == "kite"  # (not 'kit': a carpenter's kit)
    assert keywords.keyword_classes("glass", classes)[0] == "glass"  # (not 'glas')
    assert keywords.keyword_classes("no such things", classes) == ("no such things", [])


def test_a_keyword_search_says_how_it_read_a_plural_and_refuses_blank_text_and_weights(colors_db):
    db = colors_db
    found = db.sql(SEARCH.format(options="search_by='text', search_input='Blues', top_k=3",
                                 query="SELECT * FROM colors"))
    assert set(found.df().label) == {"blue"}
    assert "SEARCH IMAGE: 'Blues' is read as 'Blue', as 'cm' names its classes" in found.messages
    with pytest.raises(OptionError, match="search_by='text' needs OPTIONS \\(search_input=...\\)"):
        db.sql(SEARCH.format(options="search_by='text', search_input='   '", query="SELECT * FROM colors"))
    # a model's own weights: a weights file was passed over without a word (CONVERT refused it)
    with pytest.raises(OptionError, match="weights=...\\) is for a base network or a CLIP model; 'imagenet_classifier'"):
        db.sql("SEARCH IMAGE USING imagenet_classifier OPTIONS (search_by='text', search_input='dog', "
               "weights='/no/such.safetensors') AS SELECT * FROM colors")


# -- near-duplicates --------------------------------------------------------------------------------------
def test_a_photos_similarity_to_itself_is_at_most_one():
    """A unit float32 vector's product with itself can round above 1 (1.0000001 here): a
    similarity, or a pair of copies, showed 1.0000002 on real photos."""
    from pixql.commands.search import _pairs
    from pixql.tasks.embedding import EMBEDDING

    v = np.zeros(1280, dtype=np.float32)
    v[7] = np.nextafter(np.float32(1), np.float32(2))  # unit to float32's precision; its square rounds above 1
    assert float(v @ v) > 1.0
    assert EMBEDDING.similarity(v[None], v).tolist() == [1.0]
    assert _pairs(np.stack([v, v]), np.stack([v, v]), 0.99, same=True) == [(0, 1, 1.0)]


def test_duplicates_within_a_table_and_against_another(colors_db, tmp_path):
    db = colors_db
    original = _first(db, "blue")
    copy = tmp_path / "copy_of_blue.png"
    shutil.copy(original, copy)
    db.sql(f"CREATE TABLE more AS SELECT * FROM colors UNION ALL SELECT '{copy}', 'blue'")
    pairs = db.sql(SEARCH.format(options="search_by='duplicates', threshold=0.99999",
                                 query="SELECT image FROM more")).df()
    assert list(pairs.columns) == ["image", "duplicate", "similarity"]
    found = {frozenset(p) for p in zip(pairs.image, pairs.duplicate)}
    assert frozenset((original, str(copy))) in found
    # across tables: the copy (a "test" photo) is found in the training table
    db.sql(f"CREATE TABLE test_photos AS SELECT '{copy}' AS image")
    leak = db.sql(SEARCH.format(options="search_by='duplicates', threshold=0.99999, against='colors'",
                                query="SELECT image FROM test_photos")).df()
    assert (str(copy), original) in set(zip(leak.image, leak.duplicate))
    with pytest.raises(OptionError, match="against"):
        db.sql(SEARCH.format(options="search_by='duplicates', against='no_such_table'",
                             query="SELECT image FROM test_photos"))
    # the rows' stored embeddings against photos that have none: those are embedded
    db.sql("CREATE TABLE e AS CONVERT USING cm AS SELECT * FROM colors")
    stored = db.sql(SEARCH.format(options="search_by='duplicates', threshold=0.99999, emb_col='embedding', "
                                          "against='test_photos'", query="SELECT * FROM e")).df()
    assert (original, str(copy)) in set(zip(stored.image, stored.duplicate))
    db.sql("CREATE TABLE test_other AS SELECT image, [1, 0, 0]::FLOAT[3] AS embedding FROM test_photos")
    with pytest.raises(OptionError, match="column 'embedding' holds vectors of 3 numbers"):  # named, and not this model's
        db.sql(SEARCH.format(options="search_by='duplicates', emb_col='embedding', against='test_other'",
                             query="SELECT * FROM e"))
    db.sql("CREATE TABLE e2 AS SELECT image, label, embedding AS vec FROM e")
    named = db.sql(SEARCH.format(options="search_by='duplicates', threshold=0.99999, emb_col='vec', "
                                         "against='test_other'", query="SELECT * FROM e2")).df()
    assert (original, str(copy)) in set(zip(named.image, named.duplicate))  # test_other's 'embedding' passed over
    # no pairs: a table of the same types as one with pairs (they were DOUBLE, refusing a path)
    db.sql("CREATE TABLE none_alike AS " + SEARCH.format(options="search_by='duplicates', threshold=1.0",
                                                        query="SELECT image FROM colors WHERE label = 'red' LIMIT 1"))
    assert db.sql("SELECT column_type FROM (DESCRIBE none_alike)").fetchall() == [("VARCHAR",), ("VARCHAR",),
                                                                                   ("DOUBLE",)]


def test_a_table_made_by_convert_says_which_network_made_it_and_search_keeps_to_it(colors_db, tmp_path):
    """Every EfficientNet-Lite makes 1280 numbers: the size alone cannot tell two networks'
    vectors apart. CONVERT writes its network on the column; SEARCH IMAGE with another refuses."""
    db = colors_db
    save_color_model(db.engine.store, "cm_other", sharpness=2.0)  # the same network, other weights
    db.sql("CREATE TABLE e AS CONVERT USING cm AS SELECT * FROM colors")
    db.sql("CREATE TEMP TABLE t_other AS CONVERT USING cm_other AS SELECT * FROM colors")
    sha = db.engine.store.manifest("cm")["weights_sha256"][:12]
    assert db.sql("SELECT column_name, comment FROM duckdb_columns() WHERE table_name = 'e' "
                  "AND comment IS NOT NULL").fetchall() == [
        ("embedding", f"pixql CONVERT: embeddings of model cm (weights {sha})")]
    red = _first(db, "red")
    by_image = "search_by='image', search_input='{}', top_k=3".format(red)
    assert len(db.sql(SEARCH.format(options=by_image, query="SELECT * FROM e WHERE label <> 'x' LIMIT 20")).df()) == 3
    db.sql("CREATE TABLE labels AS SELECT image, label AS colour FROM colors")
    db.sql("CREATE VIEW e_view AS SELECT * FROM e")
    for query in ("SELECT * FROM e", "SELECT image, embedding FROM e WHERE label = 'red'",
                  # the column passed on through a join, a subquery, WITH, an alias of the table
                  "SELECT l.image, l.colour, x.embedding FROM labels l JOIN e x USING (image)",
                  "SELECT * FROM labels JOIN e ON labels.image = e.image",
                  "SELECT * FROM (SELECT * EXCLUDE (label) FROM e WHERE label <> 'x') AS s",
                  "WITH a AS (SELECT image, embedding FROM main.e), b AS (FROM a) SELECT * FROM b LIMIT 9",
                  "SELECT image, vec AS embedding FROM (SELECT image, embedding AS vec FROM e)",
                  "SELECT * FROM e ANTI JOIN t_other ON e.label = 'none'",  # (the left's columns only)
                  # a WITH name is read where it is written: `e` in a's body is the table, not the later e
                  "WITH a AS (FROM e), e AS (FROM t_other) SELECT * FROM a",
                  "WITH a AS (FROM e) SELECT * FROM (WITH e AS (FROM t_other) SELECT * FROM a)"):
        with pytest.raises(OptionError, match=r"column 'embedding' holds embeddings of model cm \(weights .*\) "
                                              r"\(CONVERT wrote so on it\), and USING cm_other makes embeddings of "
                                              r"model cm_other"):
            db.sql(f"SEARCH IMAGE USING cm_other OPTIONS ({by_image}) AS {query}")
    with pytest.raises(OptionError, match="holds embeddings of model cm_other"):  # a TEMP table's too
        db.sql(SEARCH.format(options=by_image, query="FROM t_other"))
    # a column that is not the stored one, or that could be either of two: nothing is refused on its account
    for query in ("SELECT image, embedding('cm_other', image) AS embedding FROM e",
                  "SELECT image, embedding FROM e_view",  # (a view's column is not traced)
                  "SELECT image, embedding FROM e UNION ALL SELECT image, embedding FROM t_other"):
        assert len(db.sql(f"SEARCH IMAGE USING cm_other OPTIONS ({by_image}) AS {query}").df()) == 3
    with pytest.raises(OptionError, match="holds embeddings of model cm_other"):  # this table's own, not e's
        db.sql(SEARCH.format(options=by_image, query="SELECT t_other.* FROM e JOIN t_other USING (image)"))
    # duplicates: stored vectors against the model's, or against another table's stored ones
    db.sql(f"CREATE TABLE plain AS SELECT '{red}' AS image")
    with pytest.raises(OptionError, match="USING cm_other makes"):
        db.sql("SEARCH IMAGE USING cm_other OPTIONS (search_by='duplicates', against='plain') AS SELECT * FROM e")
    with pytest.raises(OptionError, match="the against query's column holds embeddings of model cm_other"):
        db.sql(SEARCH.format(options="search_by='duplicates', against='t_other'", query="SELECT * FROM e"))
    found = db.sql(SEARCH.format(options="search_by='duplicates', threshold=0.99999, against='plain'",
                                 query="SELECT * FROM e")).df()
    assert red in set(found.image)


def test_a_linear_models_vectors_are_its_bases_and_stay_searchable_when_it_is_rebuilt(colors_db):
    """A `linear` model trains only its head: CONVERT USING it makes its base's vectors, and says
    so, so that rebuilding or dropping the model leaves the table searchable (with its base, the
    built-in classifier, or the rebuilt model); one built at another image size is its own."""
    db = colors_db
    build = ("BUILD MODEL lin USING EfficientNet_Lite0 OPTIONS (label_col='label', train_mode='linear'{}) "
             "AS SELECT * FROM colors")
    db.sql(build.format(""))
    db.sql("CREATE TABLE e AS CONVERT USING lin AS SELECT * FROM colors")
    db.sql("CREATE TABLE b AS CONVERT USING EfficientNet_Lite0 AS SELECT * FROM colors")
    comments = db.sql("SELECT table_name, comment FROM duckdb_columns() WHERE column_name = 'embedding' "
                      "ORDER BY table_name").fetchall()
    assert comments == [("b", "pixql CONVERT: embeddings of base EfficientNet_Lite0"),
                        ("e", "pixql CONVERT: embeddings of base EfficientNet_Lite0")]
    red = _first(db, "red")
    search = "SEARCH IMAGE USING {} OPTIONS (search_input='%s', top_k=5) AS SELECT image, embedding FROM {}" % red
    expected = db.sql(search.format("EfficientNet_Lite0", "b")).df()
    db.sql("DROP MODEL lin")
    db.sql(build.format(", l2=0.5"))  # another head: the same vectors
    for model in ("lin", "EfficientNet_Lite0", "imagenet_classifier"):
        got = db.sql(search.format(model, "e")).df()
        assert list(got.image) == list(expected.image)
        np.testing.assert_allclose(got.similarity, expected.similarity, atol=1e-6)
    assert str(db.sql(search.format("lin", "e")).types[-1]) == "DOUBLE"  # as a table made of it has it
    db.sql("CREATE TABLE s AS " + search.format("lin", "e"))
    assert db.sql("SELECT column_type FROM (DESCRIBE s) WHERE column_name = 'similarity'").fetchall() == [("DOUBLE",)]
    db.sql("BUILD MODEL big USING EfficientNet_Lite0 OPTIONS (label_col='label', train_mode='linear', image_size=256) "
           "AS SELECT * FROM colors")
    db.sql("CREATE TABLE e256 AS CONVERT USING big AS SELECT * FROM colors")
    with pytest.raises(OptionError, match=r"holds embeddings of base EfficientNet_Lite0 at 256 px .* and USING "
                                          r"EfficientNet_Lite0 makes embeddings of base EfficientNet_Lite0:.*"
                                          r"COMMENT ON COLUMN <table>.embedding IS NULL"):
        db.sql(search.format("EfficientNet_Lite0", "e256"))
    assert len(db.sql(search.format("big", "e256")).df()) == 5


# -- real photos ------------------------------------------------------------------------------------------
@pytest.mark.data
def test_keyword_search_finds_dogs_among_real_photos(cats_and_dogs):
    import pixql

    with pixql.connect(progress=False) as db:
        db.sql(f"COPY pets FROM '{cats_and_dogs}/cat_and_dog_test.csv'")
        found = db.sql("SEARCH IMAGE USING imagenet_classifier OPTIONS (search_by='text', search_input='dog', "
                       "top_k=40) AS SELECT * FROM pets ORDER BY hash(image) LIMIT 120").df()
        # 'dog' is no ImageNet class: its 118 breeds are found through WordNet
        assert (found.label == "dog").mean() >= 0.85


@pytest.mark.data
def test_planted_copies_are_found_among_real_photos(data_root, tmp_path):
    """Resized, re-encoded and mirrored copies of real product photos, with the default threshold."""
    import pandas as pd
    from PIL import Image, ImageOps

    import pixql

    folder = data_root / "fashion_products_sample"
    paths = sorted(str((folder / p).resolve()) for p in pd.read_csv(folder / "product_image_test.csv").image_path)[:60]
    planted = {}
    for k, path in enumerate(paths[:12]):
        with Image.open(path) as im:
            im = im.convert("RGB")
            copy = [im.resize((im.width * 3 // 4, im.height * 3 // 4)), im, ImageOps.mirror(im)][k % 3]
        target = tmp_path / f"copy_{k}.jpg"
        copy.save(target, quality=50)
        planted[str(target)] = path
    with pixql.connect(progress=False) as db:
        db.duckdb.register("f", pd.DataFrame({"image": paths + list(planted)}))
        db.sql("CREATE TABLE photos AS SELECT * FROM f")
        pairs = db.sql("SEARCH IMAGE USING imagenet_classifier OPTIONS (search_by='duplicates') "
                       "AS SELECT image FROM photos").df()
    found = {frozenset(p) for p in zip(pairs.image, pairs.duplicate)}
    truth = {frozenset(p) for p in planted.items()}
    assert len(found & truth) >= 10  # of 12
    assert len(found - truth) <= 2


def test_print_image_shows_duplicate_pairs_side_by_side(colors_db, tmp_path):
    db = colors_db
    copy = tmp_path / "copy.png"
    shutil.copy(_first(db, "red"), copy)
    db.sql(f"CREATE TABLE more AS SELECT image FROM colors UNION ALL SELECT '{copy}'")
    result = db.sql("PRINT IMAGE OPTIONS (image_col='image, duplicate', size=64) AS SELECT * FROM "
                    "(SEARCH IMAGE USING cm OPTIONS (search_by='duplicates', threshold=0.99999) AS SELECT image FROM more)")
    single = db.sql("PRINT IMAGE OPTIONS (size=64, limit=1) AS SELECT image FROM more")
    pairs = len(result.df())
    assert pairs >= 1
    # two images per row of the query, side by side: as wide as two thumbnails, as many rows as pairs
    assert result.image.width >= 2 * single.image.width - 8
    with pytest.raises(DataError, match="no column 'nope'"):
        db.sql("PRINT IMAGE OPTIONS (image_col='image, nope') AS SELECT image, image AS other FROM more")


# -- the vector index ----------------------------------------------------------------------------------------
def test_a_vector_index_serves_whole_tables_and_follows_changes(colors_db, monkeypatch):
    from pixql import vector_index

    db = colors_db
    db.sql("CREATE TABLE e AS CONVERT USING cm AS SELECT * FROM colors")
    query = _first(db, "green")
    exact = db.sql(SEARCH.format(options=f"search_input='{query}', top_k=8, index='exact'",
                                 query="SELECT * FROM e")).df()
    monkeypatch.setattr(vector_index, "MIN_ROWS", 10)  # 'auto' uses an index from 10 rows
    first = db.sql(SEARCH.format(options=f"search_input='{query}', top_k=8", query="SELECT * FROM e"))
    assert any("built a vector index of e.embedding (24 rows" in m for m in first.messages)
    assert sorted(first.df().image) == sorted(exact.image)
    again = db.sql(SEARCH.format(options=f"search_input='{query}', top_k=8", query="SELECT * FROM e"))
    assert again.messages == [] and list(again.df().image) == list(first.df().image)  # the saved index
    # a changed table: the index is rebuilt, and the new row is found
    db.sql(f"INSERT INTO e SELECT image || '', label, embedding FROM e WHERE image = '{query}'")
    changed = db.sql(SEARCH.format(options=f"search_input='{query}', top_k=2",
                                   query="SELECT image, embedding FROM e"))
    assert any("the table changed" in m for m in changed.messages)
    assert list(changed.df().columns) == ["image", "embedding", "similarity"]
    assert changed.df().similarity.tolist() == pytest.approx([1, 1], abs=1e-5)
    # a view, a file or a DataFrame of the rows has no rowid to key an index by: ranked exactly
    db.sql("CREATE VIEW ev AS SELECT * FROM e")
    viewed = db.sql(SEARCH.format(options=f"search_input='{query}', top_k=8", query="SELECT * FROM ev"))
    assert viewed.messages == [] and sorted(viewed.df().image) == sorted(exact.image)
    with pytest.raises(OptionError, match="needs a whole table of the database \\(not a view"):
        db.sql(SEARCH.format(options=f"search_input='{query}', index='approximate'", query="SELECT * FROM ev"))
    # the index serves whole tables only
    with pytest.raises(OptionError, match="needs a whole table"):
        db.sql(SEARCH.format(options=f"search_input='{query}', index='approximate'",
                             query="SELECT * FROM e WHERE label = 'red'"))
    filtered = db.sql(SEARCH.format(options=f"search_input='{query}', top_k=3",
                                    query="SELECT * FROM e WHERE label = 'red'")).df()
    assert set(filtered.label) == {"red"}  # a filtered query is ranked exactly
    # a table replaced by as many rows (same rowids, and maybe the same sampled rows) is a changed table
    db.sql("CREATE OR REPLACE TABLE e AS SELECT * FROM e ORDER BY rowid")
    db.sql(f"UPDATE e SET image = image || '#' WHERE image = '{query}'")  # (a new rowid: a change seen before)
    db.sql("CREATE OR REPLACE TABLE e AS SELECT * FROM e ORDER BY image")  # same count, other rows at each rowid
    replaced = db.sql(SEARCH.format(options=f"search_input='{query}', top_k=1", query="SELECT * FROM e"))
    assert replaced.df().image.tolist() == [f"{query}#"]
    # more rows asked for than the probed lists hold: all of them, as DuckDB ranks them
    every = db.sql(SEARCH.format(options=f"search_input='{query}', top_k=1000", query="SELECT * FROM e")).df()
    assert len(every) == db.sql("SELECT count(*) FROM e").fetchone()[0]
    # a column named rowid hides DuckDB's, by which the index keys rows: ranked exactly, or refused if asked
    db.sql("CREATE TABLE withid AS SELECT 'sku-' || image AS rowid, * FROM e")
    ranked = db.sql(SEARCH.format(options=f"search_input='{query}', top_k=2", query="SELECT * FROM withid")).df()
    assert ranked.image.tolist()[0] == f"{query}#"
    with pytest.raises(OptionError, match="has a column named rowid"):
        db.sql(SEARCH.format(options=f"search_input='{query}', index='approximate'", query="SELECT * FROM withid"))
    # a table of an ATTACHed database, written db.t or db.main.t, is one table with one index
    db.sql(f"ATTACH '{db.engine.database}.other.duckdb' AS other; CREATE TABLE other.e AS SELECT * FROM e")
    built = db.sql(SEARCH.format(options=f"search_input='{query}', top_k=2", query="SELECT * FROM other.e"))
    assert any("built a vector index" in m for m in built.messages)
    assert db.sql(SEARCH.format(options=f"search_input='{query}', top_k=2", query="SELECT * FROM other.main.e")
                  ).messages == []


def test_a_dropped_tables_index_goes_with_it_and_no_other_index_does(colors_db, tmp_path, monkeypatch):
    """SEARCH IMAGE's index folders outlived DROP TABLE (a 1M-row table's is 2.6 GB); now a DROP, or
    the next read-write open after another program dropped the table, removes the index of a table
    that is gone, and only that: not another database's in a shared store, not one a ROLLBACK
    kept. An index is found again after the process changes folder (a notebook's %cd)."""
    import duckdb
    import pandas as pd

    import pixql

    db = colors_db
    root = os.path.join(db.model_store, ".indexes")
    query = _first(db, "green")
    photos = pd.DataFrame(db.sql("SELECT image FROM colors").fetchall(), columns=["image"])  # (a table by its name)

    def search(con, table):
        messages = con.sql(SEARCH.format(options=f"search_input='{query}', top_k=2, index='approximate'",
                                          query=f"SELECT * FROM {table}")).messages
        return any("built a vector index" in m for m in messages)

    for table in ("e1", "e2"):
        db.sql(f"CREATE TABLE {table} AS CONVERT USING cm AS SELECT * FROM colors")
        assert search(db, table)
    # another database, opened by a relative path, keeps its models (and indexes) in the same store
    monkeypatch.chdir(tmp_path)
    other = pixql.connect("other.duckdb", model_store=db.model_store, progress=False)
    other.sql("CREATE TABLE e1 AS CONVERT USING cm AS SELECT * FROM photos")
    assert search(other, "e1")
    monkeypatch.chdir(tmp_path / "rgb")
    assert not search(other, "e1")  # its own index, found from another folder
    other.close()
    assert len(os.listdir(root)) == 3
    db.sql("BEGIN; DROP TABLE e2; ROLLBACK")  # undone: its index stays
    assert not search(db, "e2")
    assert not search(db, "COLORS.MAIN.E2")  # (one table, one index, however it is written)
    # a table another connection of this process made and has not committed is not judged gone
    cursor = db.cursor()
    cursor.sql("BEGIN; CREATE TABLE e3 AS CONVERT USING cm AS SELECT * FROM colors")
    assert search(cursor, "e3") and len(os.listdir(root)) == 4
    db.sql("CREATE TABLE scratch AS SELECT 1 AS x; DROP TABLE scratch")
    assert len(os.listdir(root)) == 4
    cursor.sql("COMMIT; DROP TABLE e3")  # (its index goes when no other connection of the process is open)
    assert len(os.listdir(root)) == 4
    cursor.close()
    db.sql("BEGIN; DROP TABLE e1")
    assert len(os.listdir(root)) == 4  # (not yet: ROLLBACK may undo it)
    db.sql("COMMIT")
    assert len(os.listdir(root)) == 2
    assert not search(db, "e2")
    with pixql.connect(str(tmp_path / "other.duckdb"), model_store=db.model_store, progress=False) as other:
        assert not search(other, "e1")
    # a table another program dropped: its index goes at the next read-write open, not a reader's
    database = db.engine.database
    db.close()
    with duckdb.connect(database) as plain:
        plain.execute("DROP TABLE e2")
    pixql.connect(database, read_only=True).close()
    assert len(os.listdir(root)) == 2
    pixql.connect(database).close()
    assert len(os.listdir(root)) == 1
    # an in-memory database's index ends with the process: none in a store that outlives it
    with pixql.connect(":memory:", model_store=db.model_store, progress=False) as memory:
        memory.sql("CREATE TABLE e AS CONVERT USING cm AS SELECT * FROM photos")
        assert search(memory, "e") and not search(memory, "e")
    assert len(os.listdir(root)) == 1


def test_the_ivf_index_finds_the_exact_neighbours(tmp_path):
    """vector_index on its own: an IVF index of 3000 clustered vectors against exact search."""
    import duckdb
    import pandas as pd

    from pixql import vector_index
    from pixql.tasks.embedding import EMBEDDING

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 32))
    vectors = centres[rng.integers(0, 40, 3000)] + 0.5 * rng.normal(size=(3000, 32))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    con = duckdb.connect()
    con.register("f", pd.DataFrame({"id": range(3000), "embedding": EMBEDDING.column(vectors)}))
    con.execute("CREATE TABLE e AS SELECT * FROM f")
    table = vector_index.Table(None, None, "e")
    index, note = vector_index.ready_index(con, table, "embedding", 32, str(tmp_path / "ix"))
    assert index.meta["nlist"] >= 8 and "3000 rows" in note
    queries = vectors[rng.choice(3000, 50, replace=False)] + 0.05 * rng.normal(size=(50, 32)).astype(np.float32)
    recall = []
    for q in queries:
        q = q / np.linalg.norm(q)
        truth = set(np.argsort(-(vectors @ q))[:10].tolist())  # ids are rowids 0..2999 here
        found, far = index.search(q, 10)
        recall.append(len(truth & set(found)) / 10)
    assert np.mean(recall) >= 0.9
    # a query unlike every row (a shoe against cats and flowers): its neighbours spread over many
    # lists, which the tuned few miss; every list is searched, and the neighbours are the exact ones
    outside = rng.normal(size=32).astype(np.float32)
    outside -= vectors.mean(axis=0) * (outside @ vectors.mean(axis=0)) / (vectors.mean(axis=0) @ vectors.mean(axis=0))
    outside /= np.linalg.norm(outside)
    found, far = index.search(outside, 10)
    assert far and set(found) == set(np.argsort(-(vectors @ outside))[:10].tolist())
    assert vector_index.ready_index(con, table, "embedding", 32, str(tmp_path / "ix"))[1] is None  # reused
    # the table's id differs in a process that loads the table from the one that made it: the whole
    # column's hash tells an unchanged table (reused, the new id kept) from a replaced one
    index.meta["fingerprint"]["table_oid"] = -1
    index.save_meta()
    assert vector_index.ready_index(con, table, "embedding", 32, str(tmp_path / "ix"))[1] is None
    assert vector_index.VectorIndex.load(str(tmp_path / "ix")).meta["fingerprint"]["table_oid"] != -1
    con.execute("UPDATE e SET embedding = NULL WHERE id = 0")  # row 0 is in the fingerprint's sample
    assert "changed" in vector_index.ready_index(con, table, "embedding", 32, str(tmp_path / "ix"))[1]
    con.close()


def test_duplicates_through_the_index_match_the_exact_pairs(monkeypatch):
    from pixql.commands import search

    rng = np.random.default_rng(1)
    a = rng.normal(size=(600, 24)).astype(np.float32)
    a[300:320] = a[:20] + 0.01 * rng.normal(size=(20, 24))  # 20 planted near-copies
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    exact = search._pairs(a, a, 0.95, same=True)
    monkeypatch.setattr(search, "EXACT_PAIRS", 0)
    indexed = search._pairs(a, a, 0.95, same=True)
    assert {(i, j) for i, j, _ in exact} == {(i, j) for i, j, _ in indexed} == {(i, i + 300) for i in range(20)}
    # threshold=1: exact copies, whose float32 products fall a hair under 1, are found each way
    b = rng.normal(size=(600, 1280)).astype(np.float32)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    b[300:320] = b[:20]
    assert min(float(b[i] @ b[i]) for i in range(20)) < 1  # (why the threshold gives way by a rounding)
    for limit in (0, 10**12):
        monkeypatch.setattr(search, "EXACT_PAIRS", limit)
        assert {(i, j) for i, j, _ in search._pairs(b, b, 1.0, same=True)} == {(i, i + 300) for i in range(20)}
