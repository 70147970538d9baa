"""Bad input (issue 7): each case gets a clear message naming the statement, the row or file
and what to do, and leaves tables and models as they were. Small generated images: fast."""

import hashlib
import os
import re
import shutil
import struct
import zlib

import numpy as np
import pytest

from PIL import Image

from pixql.errors import CatalogError, DataError, OptionError, SqlError, TrainingError
from pixql.ml.images import read_image

BUILD = "BUILD MODEL cm USING SimpleCNN OPTIONS (pretrained=false, overwrite=true{}) AS SELECT * FROM {}"


# -- helpers ---------------------------------------------------------------------------------------
def snapshot(db):
    """Everything a failed statement must leave alone: every table's rows, every model's files."""
    con = db.duckdb
    tables = {}
    for (name,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary").fetchall():
        tables[name] = sorted(con.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)
    root = db.engine.store.root
    files = {}
    for dirpath, _, names in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.startswith("."):
            continue  # .lock, an empty .tmp/: the store's own bookkeeping
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                files[os.path.join(rel, name)] = hashlib.sha256(f.read()).hexdigest()
    return tables, files


def write_bad_image(path, kind):
    if kind == "missing":
        return path
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is a text file named like a photo\n")
    elif kind == "truncated":
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(noise).save(path, "JPEG", quality=95)
        path.write_bytes(path.read_bytes()[:600])
    return path


def png_bytes(width, height, rows=None, depth=1, color=0):
    """A PNG written by hand: `rows` of raw scanlines (filter byte included), or only the first
    scanline compressed (a header that claims far more than the data holds)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    if rows is None:
        body = zlib.compress(b"\x00" * (1 + (width * depth + 7) // 8))
    else:
        body = zlib.compress(b"".join(rows), 9)
    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def add_rows(db, table, rows):
    """`colors` plus `rows` [(image, label)] at its end, as table `table`."""
    values = ", ".join(f"({'NULL' if p is None else repr(str(p))}, {repr(label)})" for p, label in rows)
    db.sql(f"CREATE TABLE {table} AS SELECT * FROM colors UNION ALL "
           f"SELECT * FROM (VALUES {values}) v(image, label)")


# -- unreadable image files --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["missing", "empty", "text", "truncated"])
@pytest.mark.parametrize("keyword, statement", [
    ("BUILD MODEL", BUILD.format("", "bad")),
    ("PREDICT", "PREDICT USING cm AS SELECT * FROM bad"),
    ("EVALUATE", "EVALUATE USING cm AS SELECT * FROM bad"),
    ("PRINT IMAGE", "PRINT IMAGE OPTIONS (limit=100) AS SELECT * FROM bad"),
])
def test_unreadable_image_names_statement_file_row_and_remedy(colors_db, tmp_path, kind, keyword, statement):
    bad = write_bad_image(tmp_path / f"{kind}.jpg", kind)
    add_rows(colors_db, "bad", [(bad, "red")])
    before = snapshot(colors_db)
    with pytest.raises(DataError) as info:
        colors_db.sql(statement)
    message = str(info.value)
    assert message.startswith(f"{keyword} (line 1): ")
    assert str(bad) in message and "(row 25 of the query)" in message
    assert "fix or remove the file" in message
    if keyword in ("BUILD MODEL", "PREDICT"):
        assert "on_error='skip'" in message
    assert snapshot(colors_db) == before


def test_null_image_paths_are_refused_naming_the_rows(colors_db):
    add_rows(colors_db, "bad", [(None, "red"), (None, "blue")])
    before = snapshot(colors_db)
    for statement in (BUILD.format("", "bad"), "PREDICT USING cm AS SELECT * FROM bad",
                      "EVALUATE USING cm AS SELECT * FROM bad"):
        with pytest.raises(DataError, match=r"2 row\(s\) have no image path in 'image' \(rows 25, 26\).*"
                                             r"WHERE image <> ''"):
            colors_db.sql(statement)
    assert snapshot(colors_db) == before


def test_an_image_column_of_numbers_is_refused_naming_the_row(colors_db):
    before = snapshot(colors_db)
    for statement in ("BUILD MODEL n OPTIONS (image_col='n') AS SELECT 7 AS n, label FROM colors",
                      "PREDICT USING cm AS SELECT 42 AS image", "EVALUATE USING cm AS SELECT 42 AS image, 'red' AS label",
                      "CONVERT USING cm AS SELECT 42 AS image"):
        with pytest.raises(DataError, match=r"holds (7|42) \((int|int32)\) in row 1, not an image path") as info:
            colors_db.sql(statement)
        assert info.value.row == 1, statement
    assert snapshot(colors_db) == before


def test_an_image_column_of_bytes_or_long_values_is_named_in_a_line(colors_db):
    """Bytes in the image column (a photo read with read_blob(), crop()'s PNG) are named by their
    size, and other values cut short: the message is not the value."""
    before = snapshot(colors_db)
    for query, words in (("SELECT repeat('x', 100000)::BLOB AS image", "holds a BLOB of 100,000 bytes"),
                         ("SELECT range(50000) AS image", "holds [0, 1, 2,")):
        with pytest.raises(DataError, match="in row 1, not an image path") as info:
            colors_db.sql(f"PREDICT USING cm AS {query}")
        assert words in str(info.value) and len(str(info.value)) < 300, str(info.value)[:400]
    assert snapshot(colors_db) == before


# -- on_error='skip' -------------------------------------------------------------------------------
def test_build_on_error_skip_leaves_out_and_reports_unreadable_images(colors_db, tmp_path):
    bad = [write_bad_image(tmp_path / f"{k}.jpg", k) for k in ("missing", "empty", "text", "truncated")]
    add_rows(colors_db, "bad", [(p, "red") for p in bad] + [(None, "blue")])
    result = colors_db.sql(BUILD.format(", on_error='skip'", "bad"))
    row = result.df().iloc[0]
    assert row.train_rows == 24 and row.skipped_images == 5
    text = "\n".join(result.messages)
    assert "4 unreadable image(s) were skipped" in text and "no image path" in text
    assert all(f"{p} (row {25 + i} of the query)" in text for i, p in enumerate(bad))
    manifest = colors_db.engine.store.manifest("cm")
    assert sorted(manifest["data"]["skipped_images"]) == sorted(map(str, bad))
    assert manifest["data"]["rows_without_image"] == [29]
    assert len(colors_db.sql("PREDICT USING cm AS SELECT * FROM colors").df()) == 24


def test_predict_on_error_skip_gives_null_answers_for_unreadable_rows(colors_db, tmp_path):
    bad = write_bad_image(tmp_path / "text.jpg", "text")
    add_rows(colors_db, "bad", [(bad, "red"), (None, "red")])
    result = colors_db.sql("PREDICT USING cm OPTIONS (on_error='skip', top_k=2, probabilities=true) "
                           "AS SELECT * FROM bad")
    frame = result.df()
    assert len(frame) == 26
    good, skipped = frame.iloc[:24], frame.iloc[24:]
    assert (good.predicted == good.label).all() and good.score.notna().all()
    assert skipped.predicted.isna().all() and skipped.score.isna().all() and skipped.top_k.isna().all()
    assert skipped.prob_red.isna().all()
    (message,) = result.messages
    assert "2 row(s)" in message and f"row 25: {bad}" in message and "row 26: no image path" in message
    # Without skip the same query stops at the first unreadable image.
    with pytest.raises(DataError, match="row 25 of the query"):
        colors_db.sql("PREDICT USING cm AS SELECT * FROM bad WHERE image IS NOT NULL")
    # nested in a query, in a table made of it, or in another statement's query: its notes are the statement's
    for statement in ("SELECT count(*) FROM (PREDICT USING cm OPTIONS (on_error='skip') AS SELECT * FROM bad) "
                      "WHERE predicted IS NOT NULL",
                      "CREATE TABLE evaluated AS SELECT * FROM (EVALUATE USING cm OPTIONS (on_error='skip') "
                      "AS SELECT * FROM bad)",
                      "PRINT IMAGE AS SELECT * FROM (PREDICT USING cm OPTIONS (on_error='skip') AS SELECT * FROM bad) "
                      "WHERE predicted IS NOT NULL LIMIT 2"):
        nested = colors_db.sql(statement)
        assert any(f"row 25: {bad}" in m and "row 26: no image path" in m for m in nested.messages), statement


def test_print_image_on_error_skip_leaves_out_rows_with_no_image_path(colors_db, tmp_path):
    """PRINT IMAGE with on_error='skip' still refused a NULL or '' path, which every other
    statement leaves out under it; an unreadable file after them is named by its query row."""
    bad = write_bad_image(tmp_path / "text.jpg", "text")
    good = [p for (p,) in colors_db.sql("SELECT image FROM colors ORDER BY image LIMIT 2").fetchall()]
    query = "SELECT * FROM (VALUES (1, NULL), (2, ''), (3, ?), (4, ?), (5, ?)) t(n, image) ORDER BY n"
    query = query.replace("?", "'{}'").format(good[0], good[1], bad)
    with pytest.raises(DataError, match="no image path"):
        colors_db.sql(f"PRINT IMAGE AS {query}")
    shown = colors_db.sql(f"PRINT IMAGE OPTIONS (on_error='skip', size=32) AS {query}")
    assert shown.image.size[0] == 2 * (32 + 8) + 8  # the two readable photos of the five rows
    assert shown.messages == [
        "PRINT IMAGE: 2 row(s) with no image path were left out (on_error='skip'): row 1, row 2",
        f"PRINT IMAGE: 1 image(s) that could not be read were left out (on_error='skip'): row 5: {bad}"]


def test_on_error_skip_messages_reach_the_cli_stderr(colors_db, tmp_path):
    from click.testing import CliRunner

    from pixql.cli import cli

    bad = write_bad_image(tmp_path / "text.jpg", "text")
    add_rows(colors_db, "bad", [(bad, "red")])
    db_file = str(tmp_path / "colors.duckdb")
    colors_db.close()
    result = CliRunner().invoke(cli, ["--db", db_file, "--format", "csv", "-c",
                                      "PREDICT USING cm OPTIONS (on_error='skip') AS SELECT * FROM bad"])
    assert result.exit_code == 0, result.stderr
    assert f"row 25: {bad}" in result.stderr and len(result.stdout.splitlines()) == 26


# -- odd but valid images: converted to upright RGB, they just work ------------------------------------
def _png48(path, rgb16):
    h, w, _ = rgb16.shape
    path.write_bytes(png_bytes(w, h, [b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h)],
                               depth=16, color=2))


def test_grayscale_rgba_cmyk_16bit_palette_and_exif_rotated_images_work(colors_db, tmp_path):
    red = np.zeros((32, 32, 3), dtype=np.uint8)
    red[..., 0] = 220
    folder = tmp_path / "odd"
    folder.mkdir()
    Image.fromarray(red).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(red).convert("P").save(folder / "palette.png")
    Image.fromarray(red).convert("CMYK").save(folder / "cmyk.jpg")
    red16 = red.astype(np.uint16) * 257
    _png48(folder / "rgb48.png", red16)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to view
    Image.fromarray(red[:, :16]).save(folder / "rotated.jpg", exif=exif)
    Image.fromarray(red[..., 0]).save(folder / "gray.png")
    Image.fromarray((red[..., 0].astype(np.uint16) * 257)).save(folder / "gray16.png")
    Image.fromarray(red[..., 0] > 100).save(folder / "bilevel.png")
    reds = ["rgba.png", "palette.png", "cmyk.jpg", "rgb48.png", "rotated.jpg"]
    grays = ["gray.png", "gray16.png", "bilevel.png"]
    assert Image.open(folder / "gray16.png").mode.startswith("I")
    add_rows(colors_db, "odd", [(folder / name, "red") for name in reds + grays])

    preds = colors_db.sql("PREDICT USING cm AS SELECT * FROM odd").df().iloc[24:]
    assert list(preds.predicted[:len(reds)]) == ["red"] * len(reds)
    assert preds.score.notna().all()
    assert read_image(folder / "rotated.jpg").size == (32, 16)  # upright: the EXIF turn applied
    row = colors_db.sql(BUILD.format("", "odd")).df().iloc[0]
    assert row.train_rows == 24 + len(reds) + len(grays)
    sheet = colors_db.sql("PRINT IMAGE OPTIONS (size=32, limit=100) AS SELECT * FROM odd").image
    assert sheet.mode == "RGB"


def test_a_path_the_file_system_cannot_open_is_not_called_corrupt(tmp_path):
    """A symlink loop was "truncated or corrupt ([Errno 40] ...)": the file is not corrupt."""
    (tmp_path / "a.jpg").symlink_to(tmp_path / "b.jpg")
    (tmp_path / "b.jpg").symlink_to(tmp_path / "a.jpg")
    with pytest.raises(DataError, match=r"cannot be opened \(Too many levels of symbolic links\): .*a.jpg") as info:
        read_image(tmp_path / "a.jpg")
    assert "corrupt" not in str(info.value) and info.value.path == str(tmp_path / "a.jpg")
    truncated = tmp_path / "cut.jpg"  # PIL's own OSError (no errno) is still corrupt data
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_image(truncated)


# -- decompression bombs --------------------------------------------------------------------------
def test_decompression_bombs_are_refused_with_a_message(colors_db, tmp_path):
    bomb = tmp_path / "bomb.png"  # 84 bytes claiming 30000 x 30000: PIL refuses it outright
    bomb.write_bytes(png_bytes(30000, 30000))
    # 10000 x 10000 is over PIL's limit but under twice it: PIL only warns, and would decode
    # 100 million pixels (300 MB as RGB). 12 KB on disk.
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(10000, 10000, [b"\x00" * 1251] * 10000))
    assert bomb.stat().st_size < 100 and big.stat().st_size < 20000
    for path in (bomb, big):
        with pytest.raises(DataError, match=r"too large to decode safely.*MAX_IMAGE_PIXELS") as info:
            read_image(path)
        assert str(path) in str(info.value)

    add_rows(colors_db, "bad", [(bomb, "red"), (big, "blue")])
    before = snapshot(colors_db)
    with pytest.raises(DataError, match=r"too large.*bomb.png \(row 25 of the query\)"):
        colors_db.sql("PREDICT USING cm AS SELECT * FROM bad")
    frame = colors_db.sql("PREDICT USING cm OPTIONS (on_error='skip') AS SELECT * FROM bad").df()
    assert frame.predicted.isna().sum() == 2
    assert snapshot(colors_db) == before


def test_a_large_jpeg_is_decoded_small_when_training_needs_only_a_thumbnail(tmp_path):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (10000, 9000), (200, 20, 20)).save(path, quality=30)
    assert max(read_image(path, draft_size=256).size) <= 1250  # 1/8 scale: under the pixel limit
    with pytest.raises(DataError, match="too large"):
        read_image(path)  # in full it is over the limit


# -- statements refused before any work ------------------------------------------------------------
REFUSED = [
    # a label column with a single class
    (TrainingError, "at least two classes.*'red'", BUILD.format("", "colors WHERE label = 'red'")),
    # queries with no rows
    (DataError, "no rows", BUILD.format("", "colors WHERE false")),
    (DataError, "no rows", "EVALUATE USING cm AS SELECT * FROM colors WHERE false"),
    (DataError, "no rows", "PRINT IMAGE AS SELECT * FROM colors WHERE false"),
    # unknown model, base model, option, wrong option type
    (OptionError, r"OPTIONS \(weights='/no/such\.safetensors'\): no such file",
     "BUILD MODEL cm9 USING EfficientNet_Lite0 OPTIONS (weights='/no/such.safetensors') AS SELECT * FROM colors"),
    (CatalogError, "model 'ghost' does not exist.*SHOW MODELS", "PREDICT USING ghost AS SELECT * FROM colors"),
    (CatalogError, "model 'ghost' does not exist", "EVALUATE USING ghost AS SELECT * FROM colors"),
    (CatalogError, "model 'ghost' does not exist", "FIT MODEL cm2 USING ghost AS SELECT * FROM colors"),
    (CatalogError, "model 'ghost' does not exist", "DESCRIBE MODEL ghost"),
    (CatalogError, "model 'ghost' does not exist", "DROP MODEL ghost"),
    # a misspelt name: the closest models' names (the built-in's too)
    (CatalogError, r"model 'cmm' does not exist; did you mean cm\? \(SHOW MODELS", "PREDICT USING cmm AS SELECT * FROM colors"),
    (CatalogError, "model 'imagenet_clasifier' does not exist; did you mean imagenet_classifier", "DROP MODEL imagenet_clasifier"),
    # where a base network may be named too (CONVERT, SEARCH IMAGE): neither, and the closest of both
    (CatalogError, r"no model is called 'cmm'; did you mean cm\?.*nor any base network: Unknown base model 'cmm'",
     "CONVERT USING cmm AS SELECT * FROM colors"),
    # a model named as a base network: USING that name would mean either
    (CatalogError, "'resnet18' is the name of the base network ResNet18.*choose another name",
     BUILD.format("", "colors").replace("BUILD MODEL cm ", "BUILD MODEL resnet18 ")),
    (CatalogError, "Unknown base model 'NoSuchNet'.*any timm architecture",
     "BUILD MODEL cm2 USING NoSuchNet AS SELECT * FROM colors"),
    (OptionError, "unknown option 'epoch'.*did you mean 'epochs'", BUILD.format(", epoch=2", "colors")),
    (OptionError, "unknown option 'topk'.*did you mean 'top_k'",
     "PREDICT USING cm OPTIONS (topk=2) AS SELECT * FROM colors"),
    (OptionError, "unknown option 'overwrit'", "COPY colors OPTIONS (overwrit=true) FROM 'x.csv'"),
    # an option of other statements says which (SEGMENT and PRINT IMAGE run here, not on a cluster)
    (OptionError, "unknown option 'cluster'.*; 'cluster' is an option of BUILD MODEL, FIT MODEL, PREDICT, DETECT, "
     "EVALUATE, CONVERT$", "SEGMENT OPTIONS (cluster='auto') AS SELECT image, [0, 0, 9, 9] AS box FROM colors"),
    (OptionError, "unknown option 'max_epochs'.*; 'max_epochs' is an option of BUILD MODEL, FIT MODEL$",
     "PREDICT USING cm OPTIONS (max_epochs=2) AS SELECT * FROM colors"),
    (OptionError, "'epochs' must be an integer, got 'many'", BUILD.format(", epochs='many'", "colors")),
    (OptionError, "'probabilities' must be true/false",
     "PREDICT USING cm OPTIONS (probabilities=1) AS SELECT * FROM colors"),
    (OptionError, "'top_k' must be an integer", "PREDICT USING cm OPTIONS (top_k=1.5) AS SELECT * FROM colors"),
    (OptionError, "'on_error' must be one of fail, skip",
     "PREDICT USING cm OPTIONS (on_error='ignore') AS SELECT * FROM colors"),
    (OptionError, "'limit' must be an integer", "PRINT IMAGE OPTIONS (limit='all') AS SELECT * FROM colors"),
    (OptionError, "'top_k' must be between 1 and 2147483647, got 100000000000000000000000",
     "SEARCH IMAGE USING cm OPTIONS (search_input='a.png', top_k=100000000000000000000000) AS SELECT * FROM colors"),
    # PREDICT on a table without the model's image column
    (DataError, "trained on image column 'image', which the query lacks.*image_col",
     "PREDICT USING cm AS SELECT image AS photo, label FROM colors"),
    (DataError, "has no column 'photo'", "PREDICT USING cm OPTIONS (image_col='photo') AS SELECT * FROM colors"),
    (DataError, "no column 'kind'.*columns: image, label", BUILD.format(", label_col='kind'", "colors")),
    # model names that try to leave the store
    (CatalogError, "invalid model name '../x'", "BUILD MODEL \"../x\" USING SimpleCNN AS SELECT * FROM colors"),
    (CatalogError, "invalid model name '/tmp/x'", "BUILD MODEL \"/tmp/x\" USING SimpleCNN AS SELECT * FROM colors"),
    (CatalogError, "invalid model name '../cm'", "PREDICT USING \"../cm\" AS SELECT * FROM colors"),
    (CatalogError, "invalid model name '/etc/passwd'", "DESCRIBE MODEL \"/etc/passwd\""),
    (CatalogError, "invalid model name 'm\\\\n'", "BUILD MODEL \"m\n\" USING SimpleCNN AS SELECT * FROM colors"),
    (CatalogError, "invalid model name '../colors.duckdb.models'", "DROP MODEL \"../colors.duckdb.models\""),
    (CatalogError, "invalid model name 'a/../../x'", "FIT MODEL \"a/../../x\" USING cm AS SELECT * FROM colors"),
    (CatalogError, "invalid model name '../cm'", "FIT MODEL cm3 USING \"../cm\" AS SELECT * FROM colors"),
    (CatalogError, "predict\\('../cm', ...\\): invalid model name", "SELECT predict('../cm', image) FROM colors"),
    # an answer column named like another answer column would lose the label to it
    (OptionError, "result_col='score' names a column PREDICT adds itself",
     "PREDICT USING cm OPTIONS (result_col='score') AS SELECT image FROM colors"),
    (OptionError, "result_col='TOP_K' names a column PREDICT adds itself",
     "PREDICT USING cm OPTIONS (result_col='TOP_K', top_k=2) AS SELECT image FROM colors"),
    (OptionError, "result_col='prob_red' names a column PREDICT adds itself",
     "PREDICT USING cm OPTIONS (result_col='prob_red', probabilities=true) AS SELECT image FROM colors"),
    (OptionError, "'result_col' names a column, and the name is empty",
     "PREDICT USING cm OPTIONS (result_col='') AS SELECT image FROM colors"),
    # EVALUATE's errors never overwrite the query's columns (the truth labels among them)
    (DataError, "EVALUATE adds the column\\(s\\) predicted, score, true_score.*already has true_score",
     "EVALUATE USING cm OPTIONS (output='errors') AS SELECT image, label, 'x' AS true_score FROM colors"),
    (DataError, "already has predicted",
     "EVALUATE USING cm OPTIONS (output='errors', label_col='predicted') AS SELECT image, label AS predicted "
     "FROM colors"),
    # a list label means several labels per photo: multi_label=true, not the list's text as a class
    (DataError, "label_col 'label', row 1 of the query: the label is a list, \\['[a-z]+'\\], .*multi_label=true",  # not numpy's repr
     BUILD.format("", "(SELECT image, [label] AS label FROM colors ORDER BY image)")),
    (DataError, "label_col 'label', row 1 of the query: the label is a struct",
     "EVALUATE USING cm AS SELECT image, {'name': label} AS label FROM colors"),
    # a multi-label cell that cannot be a set of labels: refused naming the row, not made classes of its text
    (DataError, "label_col 'label', row 1 of the query: the labels are a struct",
     BUILD.format(", multi_label=true", "(SELECT image, {'a': label} AS label FROM colors ORDER BY image)")),
    (DataError, "row 1 of the query: the labels hold a list, \\['[a-z]+'\\], where a label is expected: flatten",
     BUILD.format(", multi_label=true", "(SELECT image, [[label]] AS label FROM colors ORDER BY image)")),
    (DataError, "row 1 of the query: the label '[a-z]+\\|x' holds '\\|', which separates labels",
     BUILD.format(", multi_label=true", "(SELECT image, [label || '|x'] AS label FROM colors ORDER BY image)")),
    (DataError, "row 1 of the query: the labels are the text '\\[[a-z]+, x\\]', a list written as text.*::VARCHAR\\[\\]",
     BUILD.format(", multi_label=true", "(SELECT image, '[' || label || ', x]' AS label FROM colors ORDER BY image)")),
    (OptionError, "task='multi_label' and multi_label=false contradict each other",
     BUILD.format(", task='multi_label', multi_label=false", "colors")),
    # a mistyped size would ask for ~100 GB
    (OptionError, "'image_size' must be between 32 and 2048, got 100000", BUILD.format(", image_size=100000", "colors")),
    # a quoted true is a string: the message says to drop the quotes
    (OptionError, "must be true/false, got 'TRUE' \\(write it without quotes: probabilities=true\\)",
     "PREDICT USING cm OPTIONS (probabilities='TRUE') AS SELECT * FROM colors"),
    (OptionError, "write it without quotes: epochs=2", BUILD.format(", epochs='2'", "colors")),
    # a classifier's keyword search uses no embedding column: a given one is not passed over
    (OptionError, "emb_col is for search_by='image' or a CLIP model's text search",
     "SEARCH IMAGE USING cm OPTIONS (search_by='text', search_input='red', emb_col='nope') AS SELECT * FROM colors"),
    (OptionError, "index is for search_by='image' or a CLIP model's text search",
     "SEARCH IMAGE USING cm OPTIONS (search_by='text', search_input='red', index='exact') AS SELECT * FROM colors"),
    # an option of one way of searching, given with another, is not passed over
    (OptionError, "option 'threshold' is for search_by='duplicates', not search_by='image'.*WHERE similarity >= x",
     "SEARCH IMAGE USING cm OPTIONS (search_input='x.png', threshold=0.9) AS SELECT * FROM colors"),
    (OptionError, "option 'against' is for search_by='duplicates'",
     "SEARCH IMAGE USING cm OPTIONS (search_by='text', search_input='red', against='colors') AS SELECT * FROM colors"),
    (OptionError, "option 'top_k' is for search_by='image' or 'text', not search_by='duplicates'.*LIMIT n",
     "SEARCH IMAGE USING cm OPTIONS (search_by='duplicates', top_k=2) AS SELECT * FROM colors"),
    (OptionError, "emb_col 'embeding' is not a column of the query",
     "SEARCH IMAGE USING cm OPTIONS (search_by='duplicates', emb_col='embeding') AS SELECT * FROM colors"),
    # the pairs' own columns are image and duplicate: a result_col of either would replace it
    (OptionError, "result_col='Image' would replace one",
     "SEARCH IMAGE USING cm OPTIONS (search_by='duplicates', result_col='Image') AS SELECT * FROM colors"),
    # a mistyped tile size would ask for tens of GB
    (OptionError, "'size' must be between 16 and 2048, got 100000",
     "PRINT IMAGE OPTIONS (size=100000) AS SELECT * FROM colors"),
    (OptionError, "limit=100000 tiles of size=240 px would make a sheet of over 128 million pixels: at most limit=2330",
     "PRINT IMAGE OPTIONS (limit=100000) AS SELECT * FROM colors"),
]


@pytest.mark.parametrize("error, message, statement", REFUSED, ids=[r[2][:60] for r in REFUSED])
def test_refused_statements_say_why_and_change_nothing(colors_db, tmp_path, error, message, statement):
    before = snapshot(colors_db)
    with pytest.raises(error, match=message) as info:
        colors_db.sql(statement).fetchall()
    assert "line 1" in str(info.value)
    assert snapshot(colors_db) == before
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


# An option's error names the option in a field (in lower case: options are case-insensitive);
# callers read it there, never out of the message
NAMED_OPTIONS = [
    ("epoch", BUILD.format(", epoch=2", "colors")),  # unknown
    ("epochs", BUILD.format(", EPOCHS='many'", "colors")),  # wrong type
    ("image_size", BUILD.format(", image_size=100000", "colors")),  # out of bounds
    ("on_error", "PREDICT USING cm OPTIONS (on_error='ignore') AS SELECT * FROM colors"),  # not a choice
    ("result_col", "PREDICT USING cm OPTIONS (result_col='') AS SELECT image FROM colors"),  # empty column name
    ("threshold", "SEARCH IMAGE USING cm OPTIONS (search_input='x.png', threshold=0.9) AS SELECT * FROM colors"),
    ("emb_col", "SEARCH IMAGE USING cm OPTIONS (search_by='duplicates', emb_col='embeding') AS SELECT * FROM colors"),
    ("validation", BUILD.format(", validation='nowhere_table'", "colors")),  # no such table
    ("device", "PREDICT USING cm OPTIONS (device='tpu') AS SELECT * FROM colors"),
    ("weights", "BUILD MODEL w USING EfficientNet_Lite0 OPTIONS (weights='/no/such.pth') AS SELECT * FROM colors"),
]


@pytest.mark.parametrize("option, statement", NAMED_OPTIONS, ids=[o for o, _ in NAMED_OPTIONS])
def test_an_option_error_names_the_option_in_a_field(colors_db, option, statement):
    with pytest.raises(OptionError) as info:
        colors_db.sql(statement).fetchall()
    assert info.value.option == option and info.value.keyword is not None


def test_predict_on_a_query_with_no_rows_returns_no_rows_with_the_columns(colors_db):
    frame = colors_db.sql("PREDICT USING cm OPTIONS (top_k=2) AS SELECT * FROM colors WHERE false").df()
    assert len(frame) == 0 and list(frame.columns) == ["image", "label", "predicted", "score", "top_k"]


# -- COPY: bad files leave the table as it was --------------------------------------------------------
def test_copy_of_a_latin1_csv_says_to_name_the_encoding_and_reads_it_when_named(colors_db, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_bytes("image,label\na.png,café\nb.png,crème\n".encode("latin-1"))
    before = snapshot(colors_db)
    with pytest.raises(DataError) as info:
        colors_db.sql(f"COPY colors OPTIONS (overwrite=true) FROM '{csv}'")
    message = str(info.value)
    assert message.startswith("COPY (line 1): ") and str(csv) in message
    assert "not UTF-8" in message and "encoding='latin-1'" in message and "\n" not in message
    assert snapshot(colors_db) == before
    with pytest.raises(OptionError, match=r"encoding='klingon' is not the name of a text encoding") as info:
        colors_db.sql(f"COPY colors OPTIONS (encoding='klingon', overwrite=true) FROM '{csv}'")
    assert info.value.option == "encoding"
    assert snapshot(colors_db) == before
    colors_db.sql(f"COPY labels OPTIONS (encoding='latin-1') FROM '{csv}'")
    assert colors_db.sql("SELECT label FROM labels ORDER BY 1").fetchall() == [("café",), ("crème",)]



def test_copy_says_which_files_are_utf16_and_which_are_not(colors_db, tmp_path):
    wide = tmp_path / "wide.csv"
    wide.write_bytes("image,label\na.png,café\n".encode("utf-16"))
    with pytest.raises(DataError, match="looks like UTF-16 text.*encoding='utf-16'"):
        colors_db.sql(f"COPY wide FROM '{wide}'")
    colors_db.sql(f"COPY wide OPTIONS (encoding='utf-16') FROM '{wide}'")
    assert colors_db.sql("SELECT label FROM wide").fetchall() == [("café",)]
    narrow = tmp_path / "narrow.csv"
    narrow.write_text("image,label\na.png,rose\nb.png,tulip\n")  # UTF-8: read as UTF-16 it is one garbled column
    with pytest.raises(DataError, match="is not UTF-16 text"):
        colors_db.sql(f"COPY narrow OPTIONS (encoding='utf-16') FROM '{narrow}'")
    # a Parquet file holds zero bytes: its failures are its own, not a text encoding's
    colors_db.sql(f"COPY (SELECT 'x' AS label) TO '{tmp_path / 'labels.parquet'}'")
    colors_db.sql("CREATE TABLE numbers (label INTEGER)")
    with pytest.raises(DataError) as info:
        colors_db.sql(f"COPY numbers OPTIONS (if_exists='append') FROM '{tmp_path / 'labels.parquet'}'")
    assert "UTF-16" not in str(info.value)
    assert colors_db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'narrow'").fetchone() == (0,)


@pytest.mark.parametrize("bad_line", ["c.png,red, dark", "lonely.png"])  # an unquoted comma; a field short
def test_copy_names_a_line_whose_fields_do_not_match_the_header(colors_db, tmp_path, bad_line):
    """DuckDB's sniffer read such a file as one column named 'image,label', without an error, and
    overwrite=true replaced the good table with it."""
    import gzip

    import duckdb

    text = "image,label\n" + "".join(f"p{i}.png,red\n" for i in range(10)) + bad_line + "\nlast.png,blue\n"
    plain, packed, zstd = tmp_path / "ragged.csv", tmp_path / "ragged.csv.gz", tmp_path / "ragged.csv.zst"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    with duckdb.connect() as con:  # (Python has no zstd before 3.14: DuckDB writes the lines as they are)
        con.execute(f"COPY (SELECT unnest(?) AS line) TO '{zstd}' (FORMAT csv, HEADER false, QUOTE '', ESCAPE '', "
                    "DELIMITER E'\\x01', COMPRESSION zstd)", [text.splitlines()])
    before = snapshot(colors_db)
    for csv in (plain, packed, zstd):  # (a .zst was read as one column and replaced the table)
        fields = len(bad_line.split(","))
        with pytest.raises(DataError, match=f"line 12 of .*{csv.name} has {fields} fields? where "
                                            "its header has 2 \\(image, label\\)") as info:
            colors_db.sql(f"COPY colors OPTIONS (overwrite=true) FROM '{csv}'")
        assert info.value.path == str(csv)
    assert snapshot(colors_db) == before
    plain.write_text(text.replace(bad_line, '"c.png",\"red, dark\"'))  # quoted, the comma is the label's
    colors_db.sql(f"COPY mended FROM '{plain}'")
    assert colors_db.sql("SELECT count(*), count(DISTINCT label) FROM mended").fetchone() == (12, 3)
    one = tmp_path / "one.csv"
    one.write_text('"image,label"\na.png\n')  # one column whose name holds a comma is a file's own choice
    colors_db.sql(f"COPY one FROM '{one}'")
    assert colors_db.sql("SELECT * FROM one").columns == ["image,label"]


def test_copy_names_what_duckdbs_csv_sniffer_could_not_read(colors_db, tmp_path):
    """Where DuckDB's sniffer gives up it printed its search space and fixes that name options COPY
    does not take: a late line of another number of fields is named; line ends mixed in one file
    (a Windows CSV edited elsewhere) are read, and said."""
    late = tmp_path / "late.csv"
    late.write_text("image,label\n" + "".join(f"p{i}.png,red\n" for i in range(3000)) + "x.png,red, dark\n")
    before = snapshot(colors_db)
    with pytest.raises(DataError, match="line 3002 of .*late.csv has 3 fields where its header has 2") as info:
        colors_db.sql(f"COPY colors OPTIONS (overwrite=true) FROM '{late}'")
    assert "Possible fixes" not in str(info.value) and snapshot(colors_db) == before
    # past the 20,480 lines the sniffer samples the load itself stops: the same words, not DuckDB's dump
    for first, extra, fields, options in (("p.png", "x.png,red, dark", "3 fields", ""),
                                          ("p.png", "x.png", "1 field", ""),
                                          # image_col named: its first values are read first, past NULLs to the line
                                          ("", "x.png,red, dark", "3 fields", ", image_col='image'")):
        late.write_text("image,label\n" + f"{first},red\n" * 25_000 + extra + "\n")
        with pytest.raises(DataError, match=f"line 25002 of .*late.csv has {fields} where its header has 2 "
                                            r"\(image, label\), so DuckDB's CSV reader stopped there") as info:
            colors_db.sql(f"COPY colors OPTIONS (overwrite=true{options}) FROM '{late}'")
        assert "Possible fixes" not in str(info.value) and "null_padding" not in str(info.value)
        assert info.value.path == str(late) and snapshot(colors_db) == before
    mixed = tmp_path / "mixed.csv"
    mixed.write_bytes(b'image,label\na.png,red\r\nb.png,blue\r\n"my ""best"" c.png","red, 12"" tall"\n')
    copied = colors_db.sql(f"COPY mixed FROM '{mixed}'")
    # (read so, DuckDB no longer found the file's quoting: "" stayed doubled, in paths too)
    assert colors_db.sql("SELECT label FROM mixed").fetchall() == [("red",), ("blue",), ('red, 12" tall',)]
    assert colors_db.sql("SELECT image FROM mixed").fetchall()[-1] == (str(tmp_path / 'my "best" c.png'),)
    assert any("lines end some with CRLF (Windows), some with LF" in m for m in copied.messages)


@pytest.mark.parametrize("lines, line, fields", [
    (["p0.png,red", "p1.png,red", "p2.png,red", "p3.png,red", "last.png,blue, big"], 6, 3),  # a wider last line
    (["p0.png,red, dark", "p1.png,red, dark", "p2.png,red, dark"], 2, 3),  # every line one field more
])
def test_copy_refuses_a_csv_whose_header_duckdb_would_skip(colors_db, tmp_path, lines, line, fields):
    """DuckDB's sniffer skipped such a file's first lines and took a data line for its header: the
    table came out with 0 rows, or without its header, and overwrite=true replaced a good one."""
    csv = tmp_path / "skewed.csv"
    csv.write_text("image,label\n" + "\n".join(lines) + "\n")
    before = snapshot(colors_db)
    with pytest.raises(DataError, match=f"line {line} of .*skewed.csv has {fields} fields where its first line has "
                                        "2 \\(image, label\\), so DuckDB would skip lines"):
        colors_db.sql(f"COPY colors OPTIONS (overwrite=true) FROM '{csv}'")
    assert snapshot(colors_db) == before


def test_copy_of_a_list_without_header_says_so_and_reads_it_with_header_false(colors_db, tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("".join(f"imgs/p{i}.png\n" for i in range(5)))  # the first image would be the header
    with pytest.raises(DataError, match="first line of .*list.txt names an image \\(imgs/p0.png\\).*header=false"):
        colors_db.sql(f"COPY listed FROM '{listed}'")
    colors_db.sql(f"COPY listed OPTIONS (header=false) FROM '{listed}'")
    assert colors_db.sql("SELECT count(*), min(image) FROM listed").fetchone() == (5, str(tmp_path / "imgs/p0.png"))
    # label first, then the path: the paths' column is still `image` (it was named by position)
    swapped = tmp_path / "swapped.csv"
    swapped.write_text("cat,imgs/p0.png,x\ndog,imgs/p1.png,y\n")
    colors_db.sql(f"COPY sw OPTIONS (header=false) FROM '{swapped}'")
    assert colors_db.sql("SELECT * FROM sw ORDER BY label").fetchall() == [
        (str(tmp_path / "imgs/p0.png"), "cat", "x"), (str(tmp_path / "imgs/p1.png"), "dog", "y")]
    colors_db.sql(f"COPY (SELECT 1 AS a) TO '{tmp_path / 'x.parquet'}'")
    with pytest.raises(OptionError, match="'header' is for CSV files"):
        colors_db.sql(f"COPY p OPTIONS (header=false) FROM '{tmp_path / 'x.parquet'}'")


def test_copy_reads_the_one_file_named_even_where_its_name_reads_as_a_pattern(colors_db, tmp_path):
    # DuckDB's readers take * ? [ as a pattern: x[1].csv read x1.csv, p*.parquet every p...parquet
    (tmp_path / "x[1].csv").write_text("image,label\nnamed.png,named\n")
    (tmp_path / "x1.csv").write_text("image,label\nother.png,other\n")
    colors_db.sql(f"COPY a FROM '{tmp_path / 'x[1].csv'}'")
    assert colors_db.sql("SELECT label FROM a").fetchall() == [("named",)]
    for name, label in (("p*.parquet", "named"), ("pZ.parquet", "other"), ("q?.json", "named"), ("qZ.json", "other")):
        frame = f"(SELECT '{tmp_path / 'i.png'}' AS image, '{label}' AS label)"
        fmt = "parquet" if name.endswith("parquet") else "json"
        colors_db.sql(f"COPY {frame} TO '{tmp_path / name.replace('*', '_').replace('?', '_')}' (FORMAT {fmt})")
        os.replace(tmp_path / name.replace("*", "_").replace("?", "_"), tmp_path / name)
    for name, table in (("p*.parquet", "p"), ("q?.json", "q")):
        colors_db.sql(f"COPY {table} FROM '{tmp_path / name}'")
        assert colors_db.sql(f"SELECT label FROM {table}").fetchall() == [("named",)]


def test_copy_encodings_globs_schemas_and_symlinks(colors_db, tmp_path, color_csv):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("image,label\na.png,café\n".encode("latin-1"))
    with pytest.raises(OptionError, match="encoding='cp1252' is not one DuckDB's CSV reader reads: use 'utf-8'"):
        colors_db.sql(f"COPY l OPTIONS (encoding='cp1252') FROM '{latin}'")
    colors_db.sql(f"COPY l OPTIONS (encoding='ISO-8859-1') FROM '{latin}'")  # Python's names for DuckDB's
    assert colors_db.sql("SELECT label FROM l").fetchone() == ("café",)
    with pytest.raises(DataError, match="is a pattern of file names; pixql's COPY reads one file"):
        colors_db.sql(f"COPY g FROM '{tmp_path}/*.csv'")
    # a table of the name in another schema is another table: COPY makes main's
    colors_db.sql("CREATE SCHEMA other; CREATE TABLE other.photos (a INTEGER)")
    colors_db.sql(f"COPY photos FROM '{color_csv}'")
    assert colors_db.sql("SELECT count(*) FROM main.photos").fetchone() == (24,)
    # a symlinked CSV's paths hang off the folder it really lives in; a symlinked class folder is followed
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "colors.csv").symlink_to(color_csv)
    colors_db.sql(f"COPY linked FROM '{tmp_path / 'elsewhere' / 'colors.csv'}'")
    assert all(os.path.isfile(p) for (p,) in colors_db.sql("SELECT image FROM linked").fetchall())
    tree = tmp_path / "tree"
    tree.mkdir()
    real_classes = sorted({os.path.dirname(p) for (p,) in colors_db.sql("SELECT image FROM linked").fetchall()})
    for folder in real_classes:
        (tree / os.path.basename(folder)).symlink_to(folder, target_is_directory=True)
    colors_db.sql(f"COPY tree FROM '{tree}'")
    assert colors_db.sql("SELECT count(*), count(DISTINCT label) FROM tree").fetchone() == (24, 2)
    # a class folder that is a link to another (an alias) is read under each name: the real one
    # was lost to whichever name came first; a link to a folder above is a loop, walked once
    first = os.path.basename(real_classes[0])
    (tree / "alias").symlink_to(tree / first, target_is_directory=True)
    (tree / first / "again").symlink_to(tree, target_is_directory=True)
    (tree / first / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a link to a photo that is gone
    copied = colors_db.sql(f"COPY aliased FROM '{tree}'")
    gone = [m for m in copied.messages if "symlink(s) to photos that are gone were left out" in m]
    assert gone and gone[0].split(": ")[1].startswith("2 symlink") and "gone.png" in gone[0]  # (under each name)
    assert colors_db.sql("SELECT label, count(*) FROM aliased GROUP BY ALL ORDER BY 1").fetchall() == [
        ("alias", 12), ("blue", 12), ("red", 12)]
    assert any(f"the class folders alias, {first} are one folder (symlinks)" in m for m in copied.messages)


def test_copy_failing_late_in_a_file_rolls_back_to_the_old_table(colors_db, tmp_path):
    # An undecodable byte far beyond the rows DuckDB samples to sniff the file: the failure
    # comes while the table is being replaced, and the transaction is rolled back.
    csv = tmp_path / "long.csv"
    lines = b"".join(b"p%d.png,red\n" % i for i in range(30000))
    csv.write_bytes(b"image,label\n" + lines + b"last.png,caf\xe9\n")
    before = snapshot(colors_db)
    with pytest.raises(DataError, match="not UTF-8.*encoding="):
        colors_db.sql(f"COPY colors OPTIONS (overwrite=true) FROM '{csv}'")
    assert snapshot(colors_db) == before


@pytest.mark.parametrize("name, content, message", [
    ("missing.csv", None, "not found"),
    ("empty.csv", b"", "is empty"),
    ("photo.parquet", b"not parquet at all", "cannot read"),
    ("data.xlsx", b"PK\x03\x04", "cannot tell the format"),
])
def test_copy_from_a_bad_file_keeps_the_table(colors_db, tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    before = snapshot(colors_db)
    with pytest.raises(DataError, match=message) as info:
        colors_db.sql(f"COPY colors OPTIONS (overwrite=true) FROM '{path}'")
    assert name in str(info.value)
    assert snapshot(colors_db) == before


@pytest.mark.parametrize("name, content, words", [
    ("bad.json", '{"image": "a.jpg", "label": \n', "Malformed JSON"),
    ("bad.parquet", "not a parquet file at all", "No magic bytes"),
])
def test_a_damaged_file_is_named_without_pixqls_own_query(colors_db, tmp_path, name, content, words):
    """DuckDB's 'LINE 1: DESCRIBE SELECT * FROM read_json_auto(...)' quoted the query pixql wrapped
    around the reader: a statement the user never wrote."""
    path = tmp_path / name
    path.write_text(content)
    before = snapshot(colors_db)
    with pytest.raises(DataError, match=f"cannot read {re.escape(str(path))}: .*{words}") as info:
        colors_db.sql(f"COPY colors OPTIONS (overwrite=true) FROM '{path}'")
    assert "LINE 1" not in str(info.value) and "read_" not in str(info.value)
    assert snapshot(colors_db) == before


def test_encoding_is_a_csv_option(colors_db, tmp_path):
    path = tmp_path / "t.parquet"
    colors_db.sql(f"COPY colors TO '{path}' (FORMAT parquet)")
    with pytest.raises(OptionError, match=r"^COPY \(line 1\): option 'encoding' is for CSV files") as info:
        colors_db.sql(f"COPY t OPTIONS (encoding='latin-1') FROM '{path}'")
    assert info.value.option == "encoding"
    folder = tmp_path / "photos" / "red"  # a folder of images has no text to decode, nor a header line
    folder.mkdir(parents=True)
    shutil.copy(colors_db.sql("SELECT image FROM colors LIMIT 1").fetchall()[0][0], folder / "a.png")
    for option in ("encoding='latin-1'", "header=false"):
        with pytest.raises(OptionError, match=r"is for CSV files, not a folder of images \(photos\)"):
            colors_db.sql(f"COPY t OPTIONS ({option}) FROM '{tmp_path / 'photos'}'")
    assert colors_db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 't'").fetchall() == [(0,)]


# -- checkpoints given with weights= are never unpickled ------------------------------------------------
class _Exploit:
    """Unpickling this would run os.system: torch.load(weights_only=True) must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_weights_file_holding_code_is_refused_not_run(colors_db, tmp_path):
    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": _Exploit(marker)}, evil)
    with open(evil, "rb") as f:  # the file does hold a pickled call (a zip with data.pkl)
        assert b"system" in f.read()
    before = snapshot(colors_db)
    with pytest.raises(TrainingError, match=r"BUILD MODEL \(line 1\): Cannot read weights file .*evil.pth"):
        colors_db.sql(f"BUILD MODEL cm USING ResNet18 OPTIONS (weights='{evil}', overwrite=true) "
                      "AS SELECT * FROM colors")
    assert not marker.exists()
    assert snapshot(colors_db) == before
    not_a_checkpoint = tmp_path / "model.onnx"  # an ONNX model, as a user might pass it
    not_a_checkpoint.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(200))
    with pytest.raises(TrainingError, match="neither a .safetensors file nor a PyTorch state dict") as info:
        colors_db.sql(f"BUILD MODEL cm USING ResNet18 OPTIONS (weights='{not_a_checkpoint}', overwrite=true) "
                      "AS SELECT * FROM colors")
    assert "weights_only=False" not in str(info.value)
    text = tmp_path / "notes.txt"  # torch's own error for text was a bare number ('101')
    text.write_text("epochs were 3, lr 1e-3\n")
    with pytest.raises(TrainingError, match="notes.txt: it is neither a .safetensors file nor a PyTorch state dict"):
        colors_db.sql(f"BUILD MODEL cm USING ResNet18 OPTIONS (weights='{text}', overwrite=true) "
                      "AS SELECT * FROM colors")
    assert snapshot(colors_db) == before
    assert snapshot(colors_db) == before


# -- fuzzing the decoder: damaged files of every format ----------------------------------------------
@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL's notes on damaged TIFF/EXIF tags
def test_damaged_image_files_decode_or_raise_data_error_naming_them(tmp_path):
    """Bytes flipped, cut out or inserted in JPEG, PNG, GIF, BMP, TIFF and WebP files: read_image
    returns an RGB image or raises DataError naming the file, never another exception."""
    import io
    import random

    rng = random.Random(7)
    pixels = np.random.default_rng(7).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds = {}
    for fmt in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, fmt, **({"exif": exif} if fmt == "JPEG" else {}))
        seeds[fmt] = buffer.getvalue()
    outcomes = {"decoded": 0, "DataError": 0}
    for n in range(300):
        fmt = rng.choice(sorted(seeds))
        data = bytearray(seeds[fmt])
        for _ in range(rng.randint(1, 6)):
            i, op = rng.randrange(len(data)), rng.random()
            if op < 0.6:
                data[i] = rng.randrange(256)
            elif op < 0.8:
                del data[i:i + rng.randint(1, 50)]
            else:
                data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        path = tmp_path / f"damaged_{n}.{fmt.lower()}"
        path.write_bytes(bytes(data))
        try:
            assert read_image(path).mode == "RGB"
            outcomes["decoded"] += 1
        except DataError as err:
            assert str(path) in str(err)
            outcomes["DataError"] += 1
    assert outcomes["decoded"] and outcomes["DataError"]


@pytest.mark.parametrize("statement, option", [
    ("PREDICT USING cm OPTIONS (runtime='onnx', precision='bf16') AS SELECT * FROM colors", "runtime"),
    ("PREDICT USING cm OPTIONS (threshold=0.5) AS SELECT * FROM colors", "threshold"),
    ("PREDICT USING cm OPTIONS (result_col='score') AS SELECT * FROM colors", "result_col"),
    ("PREDICT USING imagenet_classifier OPTIONS (labels='a|b') AS SELECT * FROM colors", "labels"),
    ("EVALUATE USING cm OPTIONS (label_col='image') AS SELECT * FROM colors", "label_col"),
    ("PRINT IMAGE OPTIONS (limit=5000, size=2048) AS SELECT * FROM colors", "limit"),
    ("SEARCH IMAGE USING cm OPTIONS (search_by='duplicates', result_col='image') AS SELECT * FROM colors",
     "result_col"),
    ("BUILD MODEL b USING EfficientNet_Lite0 OPTIONS (train_mode='linear', augment='light') AS SELECT * FROM colors",
     "augment"),
])
def test_a_refused_option_is_named_in_the_errors_field(colors_db, statement, option):
    # front ends (the notebook's message, a caller's except clause) read the field, not the text
    with pytest.raises(OptionError) as info:
        colors_db.sql(statement).df()
    assert info.value.option == option, str(info.value)


def test_a_table_name_in_an_option_is_a_name_never_sql(colors_db):
    # against / validation take a query or a table's name; a "name" whose last quoted part was a
    # table ran as written (a file read through it)
    sneaky = ''' (SELECT content AS image, 'red' AS label FROM read_text('/etc/hostname')) AS "colors"'''
    for statement in (f"SEARCH IMAGE USING cm OPTIONS (search_by='duplicates', against={sql_literal(sneaky)}) "
                      "AS SELECT * FROM colors",
                      f"BUILD MODEL b USING EfficientNet_Lite0 OPTIONS (validation={sql_literal(sneaky)}) "
                      "AS SELECT * FROM colors"):
        with pytest.raises(OptionError, match="there is no table|must hold one query or a table name") as info:
            colors_db.sql(statement).df()
        assert info.value.option in ("against", "validation")
    # real names, quoted or dotted, still name their tables
    colors_db.sql('CREATE SCHEMA s; CREATE TABLE s."My colors" AS SELECT * FROM colors LIMIT 4')
    pairs = colors_db.sql("SEARCH IMAGE USING cm OPTIONS (search_by='duplicates', against='s.\"My colors\"', "
                          "threshold=0.999) AS SELECT * FROM colors").df()
    assert len(pairs) >= 4


def test_a_qualifier_in_another_case_names_the_same_table(colors_db, tmp_path, color_csv):
    """DuckDB's identifiers are case-insensitive, its schemas and databases too: `S.photos` is
    s.photos. pixql looked them up case-sensitively, and COPY OPTIONS (if_exists='fail') then
    replaced the table (a QA pass), CREATE TABLE IF NOT EXISTS ran its PREDICT anyway."""
    db = colors_db
    db.sql(f"ATTACH '{tmp_path / 'shop.duckdb'}' AS Shop; CREATE SCHEMA s")
    for table in ("s.kept", "shop.kept", "main.kept"):
        db.sql(f"CREATE TABLE {table} AS SELECT 'keep me' AS image, 'red' AS label")
        written = table.split(".")[0].upper() + ".kept"
        with pytest.raises(CatalogError, match=rf"table {written} already exists; use OPTIONS \(overwrite=true\)"):
            db.sql(f"COPY {written} OPTIONS (if_exists='fail') FROM '{color_csv}'")
        db.sql(f"COPY {written} OPTIONS (if_exists='append') FROM '{color_csv}'")
        assert db.sql(f"SELECT count(*), count(*) FILTER (WHERE image = 'keep me') FROM {table}").fetchone() == (25, 1)
        kept = db.sql(f"CREATE TABLE IF NOT EXISTS {written} AS PREDICT USING cm AS SELECT * FROM colors")
        assert kept.messages == [f"CREATE TABLE IF NOT EXISTS: {written} exists and was kept; nothing was run"]
        with pytest.raises(SqlError, match=f"table {written} already exists: CREATE OR REPLACE TABLE replaces it"):
            db.sql(f"CREATE TABLE {written} AS PREDICT USING cm AS SELECT * FROM colors")
        assert db.sql(f"SELECT count(*) FROM {table}").fetchone() == (25,)


def sql_literal(text):
    return "'" + text.replace("'", "''") + "'"


def test_errors_name_the_query_they_are_in(colors_db, tmp_path):
    # a bad photo of SEARCH's against query, a bad label of BUILD's validation query, a failing
    # option query: the error's `query` field and its message name that query, not the statement's
    db = colors_db
    db.sql(f"CREATE TABLE bad AS SELECT '{tmp_path / 'gone.png'}' AS image, 'red' AS label "
           "UNION ALL (SELECT * FROM colors LIMIT 2)")
    with pytest.raises(DataError) as info:
        db.sql("SEARCH IMAGE USING cm OPTIONS (search_by='duplicates', against='SELECT * FROM bad ORDER BY image') "
               "AS SELECT * FROM colors")
    assert info.value.query == "the against query" and info.value.row == 1 and "gone.png" in info.value.path
    assert "row 1 of the against query" in str(info.value)
    with pytest.raises(DataError) as info:
        db.sql("BUILD MODEL b USING EfficientNet_Lite0 OPTIONS (validation='SELECT image, [label] AS label "
               "FROM colors') AS SELECT * FROM colors")
    assert info.value.query == "the validation query" and info.value.row == 1
    assert "row 1 of the validation query" in str(info.value)
    with pytest.raises(DataError) as info:
        db.sql("BUILD MODEL b USING EfficientNet_Lite0 OPTIONS (validation='SELECT * FROM nosuch') "
               "AS SELECT * FROM colors")
    assert info.value.query == "the validation query" and "the validation query failed" in str(info.value)
    assert not db.engine.store.exists("b")


def test_a_syntax_error_around_or_inside_a_nested_statement_runs_nothing(colors_db):
    # DuckDB parses a whole script first: a statement holding (PREDICT ...) is no exception
    for script, line in (("CREATE TABLE t9 AS SELECT 1;\n\n\nSELECT * FROM (PREDICT USING cm AS SELECT * FROM colors)"
                          "\n  WHERE WHERE;", 5),
                         ("CREATE TABLE t9 AS SELECT 1;\nSELECT * FROM (PREDICT USING cm\n  AS SELECT FROM FROM colors)",
                          3),
                         ("CREATE TABLE t9 AS SELECT 1;\nCREATE TABLE p AS PREDICT USING cm AS\n  SELECT * FROM "
                          "(PREDICT USING cm AS SELECT * FROM colors) x WHERE WHERE", 3)):
        with pytest.raises(SqlError) as info:
            colors_db.sql(script)
        assert f"LINE {line}:" in str(info.value), str(info.value)
        assert colors_db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name IN ('t9', 'p')").fetchall() == [(0,)]


def test_a_mistake_in_the_query_around_a_nested_statement_is_said_before_its_model_runs(colors_db, monkeypatch):
    """A misspelt column or a missing table around (PREDICT ...) was found only after the model
    had gone over every photo of its query (minutes on a large table). The query is bound first
    over the statement's result on none of its rows (EVALUATE, which refuses no rows, still runs first)."""
    queries = []
    run_nested = colors_db.engine.session._run_nested

    def recording(inner):
        queries.append(inner.query)
        return run_nested(inner)

    monkeypatch.setattr(colors_db.engine.session, "_run_nested", recording)
    for script, wrong in (("SELECT predicted, labl FROM (PREDICT USING cm AS SELECT * FROM colors)", '"labl"'),
                          ("CREATE TABLE kept AS\nSELECT p.predicted FROM (PREDICT USING cm AS SELECT * FROM colors) p "
                           "JOIN nosuch n USING (image)", "nosuch"),
                          ("SELECT predicted FROM (PREDICT USING cm AS SELECT * FROM colors) GROUP BY predicted "
                           "HAVING max(scor) > 0", '"scor"')):
        queries.clear()
        with pytest.raises(SqlError) as info:
            colors_db.sql(script)
        assert wrong in str(info.value) and "Binder Error" in str(info.value) or "Catalog Error" in str(info.value)
        assert queries and all(q.rstrip().endswith("LIMIT 0") for q in queries), queries  # no row went through cm
    assert colors_db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'kept'").fetchall() == [(0,)]
    # a query that binds runs as before: its statement over all of its rows
    queries.clear()
    rows = colors_db.sql("SELECT label, predicted FROM (PREDICT USING cm AS SELECT * FROM colors) ORDER BY image").df()
    assert len(rows) == 24 and (rows.label == rows.predicted).all()
    assert [q.rstrip().endswith("LIMIT 0") for q in queries] == [True, False]


@pytest.mark.parametrize("sql, hint", [
    ("DESCRIBE PREDICT USING cm AS SELECT * FROM colors", r"DESCRIBE \(PREDICT \.\.\.\)"),
    ("SUMMARIZE EVALUATE USING cm AS SELECT * FROM colors", r"SUMMARIZE \(EVALUATE \.\.\.\)"),
    ("EXPLAIN ANALYZE PREDICT USING cm AS SELECT * FROM colors", r"EXPLAIN SELECT \.\.\. FROM \(PREDICT \.\.\.\)"),
    ("PREPARE q AS PREDICT USING cm AS SELECT * FROM colors", "a prepared statement cannot hold a pixql statement"),
    ("CREATE OR REPLACE TEMP VIEW v AS PREDICT USING cm AS SELECT * FROM colors", "a view cannot hold"),
    ("CREATE /* c */ VIEW IF NOT EXISTS v AS PREDICT USING cm AS SELECT * FROM colors", "a view cannot hold"),
    ("CREATE MACRO m(a) AS TABLE PREDICT USING cm AS SELECT * FROM colors", "a macro cannot hold"),
])
def test_a_bare_pixql_statement_where_duckdb_takes_a_query_says_what_to_write(colors_db, sql, hint):
    """DuckDB's syntax error alone ('at or near USING') did not say that the parenthesised form
    works, or why a view cannot hold one."""
    with pytest.raises(SqlError, match=f"(?s)syntax error.*{hint}"):
        colors_db.sql(sql)
    with pytest.raises(SqlError) as plain:  # DuckDB's own syntax errors stay DuckDB's
        colors_db.sql("DESCRIBE nosuch thing")
    assert "\n" not in str(plain.value).split("^")[-1].strip()


def test_copy_takes_photos_of_every_common_format(colors_db, tmp_path):
    # .jfif, .jpe, .avif, .mpo, ... are photos Pillow reads: a folder's COPY left them out without a
    # word, and a CSV's relative paths to them stayed relative (not found from another folder)
    from PIL import Image

    formats = {"a.jfif": "JPEG", "b.jpe": "JPEG", "c.tga": "TGA", "d.ppm": "PPM", "e.avif": "AVIF"}
    tree = tmp_path / "tree" / "green"
    tree.mkdir(parents=True)
    for name, fmt in list(formats.items()):
        try:
            Image.new("RGB", (32, 32), (0, 200, 0)).save(tree / name, format=fmt)
        except (KeyError, OSError):  # (a Pillow built without AVIF)
            formats.pop(name)
    colors_db.sql(f"COPY tree FROM '{tmp_path / 'tree'}'")
    assert sorted(os.path.basename(p) for (p,) in colors_db.sql("SELECT image FROM tree").fetchall()) == sorted(formats)
    (tmp_path / "list.csv").write_text("image,label\n" + "".join(f"tree/green/{n},green\n" for n in formats))
    colors_db.sql(f"COPY listed FROM '{tmp_path / 'list.csv'}'")
    assert all(os.path.isabs(p) and os.path.isfile(p) for (p,) in colors_db.sql("SELECT image FROM listed").fetchall())
    predicted = colors_db.sql("PREDICT USING cm AS SELECT * FROM listed").df()
    assert set(predicted.predicted) == {"green"}


def test_an_option_written_null_is_its_default(colors_db):
    """NULL was the default for some options (epochs, normalized), refused by others (train_mode)
    and reached the code as None in PREDICT's top_k: a TypeError and a traceback."""
    plain = colors_db.sql("PREDICT USING cm AS SELECT * FROM colors ORDER BY image").df()
    nulls = colors_db.sql("PREDICT USING cm OPTIONS (top_k=NULL, image_col=NULL, result_col=NULL, runtime=NULL) "
                          "AS SELECT * FROM colors ORDER BY image").df()
    assert nulls.equals(plain)
    row = colors_db.sql("BUILD MODEL n USING EfficientNet_Lite0 OPTIONS (train_mode=NULL, epochs=NULL) "
                        "AS SELECT * FROM colors").df().iloc[0]
    assert row["train_mode"] == "linear"  # (auto's choice here)
