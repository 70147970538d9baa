"""The engine through the Python API, on small generated images (fast)."""

import os
import shutil
from html import escape

import pandas as pd
import pytest

import pixql
from pixql.errors import CatalogError, DataError, OptionError, SqlError, TrainingError


@pytest.fixture
def db(tmp_path):
    con = pixql.connect(str(tmp_path / "shop.duckdb"), progress=False)
    yield con
    con.close()


def _copy_colors(db, color_csv, table="colors"):
    return db.sql(f"COPY {table} OPTIONS (overwrite=true) FROM '{color_csv}'")


def test_plain_sql_reaches_duckdb(db):
    assert db.sql("SELECT 40 + 2 AS answer").fetchall() == [(42,)]
    db.sql("CREATE TABLE t AS SELECT range AS i FROM range(5); INSERT INTO t VALUES (99)")
    assert db.sql("SELECT count(*), max(i) FROM t").fetchone() == (6, 99)
    assert db.duckdb.execute("SELECT count(*) FROM t").fetchone() == (6,)
    with pytest.raises(SqlError, match="line 1"):
        db.sql("SELEC 1")


def test_copy_csv_resolves_relative_paths_against_the_csv(db, color_csv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _copy_colors(db, os.path.relpath(color_csv, tmp_path))
    assert result.fetchall() == [("colors", 24)]
    paths = [r[0] for r in db.sql("SELECT image FROM colors").fetchall()]
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in paths)
    assert db.sql("SELECT label, count(*) FROM colors GROUP BY label ORDER BY label").fetchall() == [
        ("blue", 12), ("red", 12)]


def test_copy_drops_white_space_around_image_paths(db, tmp_path):
    """`label, image` / `cat, cat.jpg`: the space after the comma belongs to the separator, as in a
    spreadsheet's export; a file really named with the space keeps it."""
    from PIL import Image

    for name in ("cat.jpg", " spaced.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "t.csv").write_text("label, image\ncat, cat.jpg\ndog,cat.jpg \nodd, spaced.jpg\n")
    db.sql(f"COPY t FROM '{tmp_path / 't.csv'}'")
    assert db.sql("SELECT image FROM t").fetchall() == [
        (str(tmp_path / "cat.jpg"),), (str(tmp_path / "cat.jpg"),), (str(tmp_path / " spaced.jpg"),)]


def test_copy_reads_file_urls_windows_paths_and_photos_without_endings(db, tmp_path):
    """Paths as other tools write them: file:// URLs (the CSV's own too), relative paths with
    Windows' backslashes, and photos saved without an ending (a column found by its files, not by
    its name alone: IDs stay IDs); a path of another machine's drive is kept as written."""
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for name in ("cat.jpg", "imgs/dog.jpg", "imgs/0001", "imgs/0002"):
        Image.new("RGB", (8, 8)).save(tmp_path / name, format="JPEG")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "p.csv").write_text(f"image,label\nfile://{tmp_path}/cat.jpg,a\n..\\imgs\\dog.jpg,b\n"
                                            "C:\\data\\x.jpg,c\n")
    db.sql(f"COPY p FROM 'file://{tmp_path}/sub/p.csv'")
    assert db.sql("SELECT image FROM p").fetchall() == [
        (str(tmp_path / "cat.jpg"),), (str(tmp_path / "imgs" / "dog.jpg"),), ("C:\\data\\x.jpg",)]
    (tmp_path / "list.csv").write_text("photo,label\nimgs/0001,cat\nimgs/0002,cat\n")
    (tmp_path / "ids.csv").write_text("image,label\n0001,cat\n0002,cat\n")
    listed = db.sql(f"COPY listed FROM '{tmp_path / 'list.csv'}'")
    assert db.sql("SELECT photo FROM listed").fetchall() == [(str(tmp_path / "imgs" / n),) for n in ("0001", "0002")]
    assert "name files without an image's ending" in listed.messages[0]
    db.sql(f"COPY ids FROM '{tmp_path / 'ids.csv'}'")
    assert db.sql("SELECT image FROM ids").fetchall() == [("0001",), ("0002",)]
    with pytest.raises(DataError, match=r"written as paths, not file:// URLs: /data/c\.jpg, not file:///data/c\.jpg"):
        db.sql("PREDICT USING imagenet_classifier AS SELECT 'file:///data/c.jpg' AS image")


def test_a_missing_image_with_white_space_in_its_name_says_so(db, tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "cat.jpg")
    with pytest.raises(DataError, match=rf"white space \(the file {tmp_path / 'cat.jpg'} exists\)"):
        db.sql(f"PREDICT USING imagenet_classifier AS SELECT '{tmp_path / 'cat.jpg'}  ' AS image")


def test_copy_refuses_existing_table_and_keeps_it(db, color_csv):
    _copy_colors(db, color_csv)
    db.sql("DELETE FROM colors WHERE label = 'red'")
    with pytest.raises(CatalogError, match="already exists"):
        db.sql(f"COPY colors OPTIONS (if_exists='fail') FROM '{color_csv}'")
    assert db.sql("SELECT count(*) FROM colors").fetchone() == (12,)
    assert db.sql(f"COPY colors OPTIONS (if_exists='append') FROM '{color_csv}'").fetchall() == [("colors", 24)]
    assert db.sql("SELECT count(*) FROM colors").fetchone() == (36,)  # the rows loaded were counted, as DuckDB does
    # overwrite=false, written, beside if_exists='replace' replaced the table without a word
    for clash in ("overwrite=false, if_exists='replace'", "overwrite=true, if_exists='fail'",
                  "overwrite=true, if_exists='append'"):
        with pytest.raises(OptionError, match=r"options if_exists='\w+' and overwrite=\w+ contradict each other "
                                              r"\(if_exists='\w+' means overwrite=\w+\); give one") as info:
            db.sql(f"COPY colors OPTIONS ({clash}) FROM '{color_csv}'")
        assert info.value.option == "overwrite"
    assert db.sql("SELECT count(*) FROM colors").fetchone() == (36,)
    assert db.sql(f"COPY colors OPTIONS (overwrite=false, if_exists='append') FROM '{color_csv}'").fetchall() == [
        ("colors", 24)]  # (appending overwrites nothing)


def test_copy_into_a_temp_table_writes_that_table(db, color_csv):
    """A TEMP table's name is read in the temp catalog first, as DuckDB reads it: COPY's rows went
    into a new table of the database hidden behind the TEMP one (0 rows said, none seen)."""
    db.sql("CREATE TEMP TABLE t (image VARCHAR, label VARCHAR); CREATE TEMP TABLE w AS SELECT 1 AS x")
    db.sql(f"COPY t FROM '{color_csv}'")  # (DuckDB's own COPY, the table existing)
    assert db.sql(f"COPY w OPTIONS (overwrite=true) FROM '{color_csv}'").fetchall() == [("w", 24)]
    assert db.sql(f"COPY temp.n FROM '{color_csv}'").fetchall() == [("temp.n", 24)]
    assert db.sql("SELECT count(*) FROM t").fetchone() == (24,) and db.sql("SELECT count(*) FROM w").fetchone() == (24,)
    assert db.sql(f"COPY temp.t OPTIONS (if_exists='replace') FROM '{color_csv}'").fetchall() == [("temp.t", 24)]
    with pytest.raises(CatalogError, match="table t already exists"):  # OPTIONS (), written: pixql's, not DuckDB's
        db.sql(f"COPY t OPTIONS () FROM '{color_csv}'")
    assert db.sql("SELECT database_name, table_name FROM duckdb_tables() ORDER BY 2").fetchall() == [
        ("temp", "n"), ("temp", "t"), ("temp", "w")]  # none in the database


def test_ctrl_c_while_copy_resolves_paths_is_an_interrupt_and_keeps_the_table(db, color_csv, monkeypatch):
    """A Ctrl-C inside the function that resolves the paths came back from DuckDB as the text of a
    load error (a DataError, which `except Exception` swallows); it is a KeyboardInterrupt, the
    table as it was and no transaction left open."""
    from pixql import ingest

    _copy_colors(db, color_csv)

    def ctrl_c(value, folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest, "resolved_path", ctrl_c)
    with pytest.raises(KeyboardInterrupt, match="COPY \\(line 1\\): interrupted"):
        db.sql(f"COPY colors OPTIONS (overwrite=true) FROM '{color_csv}'")
    monkeypatch.undo()
    assert db.sql("SELECT count(*) FROM colors").fetchone() == (24,)
    db.sql("BEGIN TRANSACTION; ROLLBACK")  # (a transaction of the COPY's left open would refuse the BEGIN)


def test_copy_inside_the_users_transaction_belongs_to_it(db, color_csv):
    """pixql's COPY neither commits nor aborts a transaction the script began: ROLLBACK undoes it,
    COMMIT keeps it (a nested BEGIN would have aborted the user's transaction)."""
    db.sql("BEGIN TRANSACTION; CREATE TABLE kept AS SELECT 1 AS x")
    _copy_colors(db, color_csv)
    assert db.sql("SELECT count(*) FROM colors").fetchone() == (24,)
    db.sql("ROLLBACK")
    assert db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name IN ('kept', 'colors')").fetchone() == (0,)
    db.sql("BEGIN TRANSACTION")
    _copy_colors(db, color_csv)
    db.sql("COMMIT")
    assert db.sql("SELECT count(*) FROM colors").fetchone() == (24,)


def test_copy_without_options_into_an_existing_table_is_duckdbs_append(db, color_csv):
    """DuckDB's `COPY t FROM 'f.csv'` appends the file's rows as written (no path resolving)."""
    _copy_colors(db, color_csv)
    appended = db.sql(f"COPY colors FROM '{color_csv}'")
    assert db.sql("SELECT count(*) FROM colors").fetchone() == (48,)
    assert "DuckDB's own COPY appended" in appended.messages[0] and "overwrite=true" in appended.messages[0]
    as_written = db.sql(f"SELECT image FROM read_csv('{color_csv}') ORDER BY ALL").fetchall()
    appended = db.sql(f"SELECT image FROM colors WHERE image IN (SELECT image FROM read_csv('{color_csv}')) "
                      "ORDER BY ALL").fetchall()
    assert appended == as_written
    # a file:// URL, which DuckDB's COPY cannot read (its IO Error said no file matched), is pixql's
    with pytest.raises(CatalogError, match="table colors already exists; use OPTIONS \\(overwrite=true\\)"):
        db.sql(f"COPY colors FROM 'file://{color_csv}'")
    assert db.sql("SELECT count(*) FROM colors").fetchone() == (48,)


def test_a_scripts_result_keeps_the_earlier_statements_notes(db, color_csv):
    """db.sql() of a script returns its last statement's Result: the notes of the statements before
    (this COPY's append, a BUILD's "few rows", "ROLLBACK does not undo this") were lost."""
    _copy_colors(db, color_csv)
    result = db.sql(f"COPY colors FROM '{color_csv}'; SELECT count(*) AS n FROM colors; SELECT 1 AS one")
    assert result.fetchall() == [(1,)]
    assert len(result.messages) == 1 and "DuckDB's own COPY appended" in result.messages[0]
    assert "DuckDB's own COPY appended" in str(result)  # (shown under the rows)
    assert db.sql("SELECT 2").messages == []


def test_copy_normalises_paths_and_expands_the_home_folder(db, color_images, tmp_path, monkeypatch):
    """One photo named two ways (`sub/../x.png`, `./x.png`) is one string; `~` is the home folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    first = color_images[0][0]
    (tmp_path / "sub").mkdir()
    rel = os.path.relpath(first, tmp_path / "sub")
    pd.DataFrame({"image": [rel, f"../sub/{rel}", "~/" + os.path.relpath(first, tmp_path), "https://x/a.jpg"],
                  "label": ["a", "b", "c", "d"]}).to_csv(tmp_path / "sub" / "t.csv", index=False)
    db.sql(f"COPY t FROM '{tmp_path}/sub/t.csv'")
    images = [p for (p,) in db.sql("SELECT image FROM t ORDER BY label").fetchall()]
    assert images == [first, first, first, "https://x/a.jpg"]


def test_copy_reads_a_csv_whose_column_changes_type_after_duckdbs_sample(db, tmp_path):
    """Numbers for DuckDB's first 20,480 lines, then 'n/a': the type guessed from the sample broke
    the load, and DuckDB's advice (sample_size=-1) names an option COPY does not take."""
    path = tmp_path / "late.csv"
    path.write_text("image,label\n" + "".join(f"p{i}.png,{i % 3}\n" for i in range(21000)) + "last.png,n/a\n")
    result = db.sql(f"COPY late FROM '{path}'")
    assert db.sql("SELECT count(*), typeof(any_value(label)), max(image) FILTER (label = 'n/a') FROM late"
                  ).fetchall() == [(21001, "VARCHAR", str(tmp_path / "last.png"))]
    assert any("the types were read from every line" in m for m in result.messages)
    db.sql("CREATE TABLE numbers (image VARCHAR, label INTEGER)")  # the table's own types: DuckDB's error, said
    with pytest.raises(DataError, match=r"cannot load .*late.csv: the label value 'n/a' of its row 21001 cannot be "
                                        r"stored in numbers.label \(INTEGER\); nothing was loaded") as info:
        db.sql(f"COPY numbers OPTIONS (if_exists='append') FROM '{path}'")
    assert info.value.row == 21001 and info.value.path == str(path)
    assert db.sql("SELECT count(*) FROM numbers").fetchall() == [(0,)]


def test_copy_missing_file_names_it(db, tmp_path):
    with pytest.raises(DataError, match="not found.*nope.csv"):
        db.sql(f"COPY t FROM '{tmp_path}/nope.csv'")
    with pytest.raises(DataError, match=r"^COPY \(line 1\): the file or folder to read is an empty path"):
        db.sql("COPY t FROM ''")  # not the working folder read as an image tree


def _unreadable(monkeypatch, module, name, path):
    """`module.name` (os.scandir, open) failing as a file without read permission does for `path`
    (chmod alone would not do: the suite may run as root, whom no permission stops)."""
    import builtins

    real = getattr(module, name, getattr(builtins, name, None))

    def fake(target, *args, **kwargs):
        if os.fspath(target) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real(target, *args, **kwargs)

    monkeypatch.setattr(module, name, fake, raising=False)


def test_copy_of_a_file_or_folder_it_cannot_read_names_it(db, color_csv, color_images,
                                                                              monkeypatch):
    """An unreadable CSV was a PermissionError traceback; an unreadable class folder was passed over
    without a word, its whole class missing from the table: now said (not refused: a disk's
    root-owned lost+found holds no photos); an unreadable folder named by COPY is refused."""
    import pixql.ingest

    _copy_colors(db, color_csv)
    _unreadable(monkeypatch, pixql.ingest, "open", color_csv)
    with pytest.raises(DataError, match=f"^COPY \\(line 1\\): cannot read {color_csv}: Permission denied") as info:
        db.sql(f"COPY colors OPTIONS (overwrite=true) FROM '{color_csv}'")
    assert info.value.path == str(color_csv)
    assert db.sql("SELECT count(*) FROM colors").fetchone() == (24,)  # the table as it was
    blue = color_images[-1][0].rsplit(os.sep, 2)[0] + os.sep + "blue"
    _unreadable(monkeypatch, os, "scandir", blue)
    copied = db.sql(f"COPY colors OPTIONS (overwrite=true) FROM '{os.path.dirname(blue)}'")
    assert copied.messages == [f"COPY colors: 1 folder(s) could not be read and were left out (their photos, a class "
                               f"folder's whole class, are not in the table): {blue} (Permission denied)"]
    assert db.sql("SELECT label, count(*) FROM colors GROUP BY ALL").fetchall() == [("red", 12)]
    _unreadable(monkeypatch, os, "scandir", os.path.dirname(blue))
    with pytest.raises(DataError, match=f"cannot read the folder {os.path.dirname(blue)} \\(Permission denied\\)"):
        db.sql(f"COPY colors OPTIONS (overwrite=true) FROM '{os.path.dirname(blue)}'")
    assert db.sql("SELECT count(*) FROM colors").fetchone() == (12,)


def test_copy_resolves_only_what_names_an_image_in_a_column_found_by_its_values(db, tmp_path):
    """A column is taken for paths when half its values name images; its other values (a note) are
    kept as written. A column named by image_col is paths throughout, and must be text."""
    (tmp_path / "notes.csv").write_text("id,note\n1,hello world\n2,see a.jpg\n3,b.png\n")
    db.sql(f"COPY notes FROM '{tmp_path / 'notes.csv'}'")
    assert db.sql("SELECT note FROM notes ORDER BY id").fetchall() == [
        ("hello world",), (str(tmp_path / "see a.jpg"),), (str(tmp_path / "b.png"),)]
    db.sql(f"COPY named OPTIONS (image_col='note') FROM '{tmp_path / 'notes.csv'}'")
    assert db.sql("SELECT note FROM named WHERE id = 1").fetchone() == (str(tmp_path / "hello world"),)
    with pytest.raises(OptionError, match="image_col 'id' holds BIGINT values, not image paths"):
        db.sql(f"COPY ids OPTIONS (image_col='id') FROM '{tmp_path / 'notes.csv'}'")


def test_copy_reads_a_compressed_csv_as_duckdb_does(db, tmp_path):
    import gzip

    (tmp_path / "notes.csv.gz").write_bytes(gzip.compress(b"id,note\n1,a.jpg\n2,b.png\n"))
    db.sql(f"COPY zipped FROM '{tmp_path / 'notes.csv.gz'}'")
    assert db.sql("SELECT note FROM zipped ORDER BY id").fetchall() == [(str(tmp_path / "a.jpg"),),
                                                                       (str(tmp_path / "b.png"),)]
    (tmp_path / "notes.xyz.gz").write_bytes(b"x")
    with pytest.raises(DataError, match="cannot tell the format of notes.xyz.gz"):
        db.sql(f"COPY other FROM '{tmp_path / 'notes.xyz.gz'}'")


def test_copy_image_folder_and_parquet_and_json(db, color_images, tmp_path):
    folder = os.path.dirname(os.path.dirname(color_images[0][0]))
    # hidden folders and files are not data (a notebook's checkpoints, macOS's ._ files)
    os.makedirs(os.path.join(folder, ".ipynb_checkpoints"))
    for hidden in (os.path.join(folder, ".ipynb_checkpoints", "a.png"), os.path.join(folder, "red", "._a.png")):
        shutil.copy(color_images[0][0], hidden)
    db.sql(f"COPY tree FROM '{folder}'")
    assert db.sql("SELECT label, count(*) FROM tree GROUP BY ALL ORDER BY 1").fetchall() == [
        ("blue", 12), ("red", 12)]
    assert not db.sql(f"COPY tree2 FROM '{folder}'").messages
    # a dataset's split folders, each with class folders: the rule holds, and is said
    splits = tmp_path / "splits"
    for split in ("train", "Validation"):
        shutil.copytree(folder, splits / split)
    copied = db.sql(f"COPY by_split FROM '{splits}'")
    assert db.sql("SELECT DISTINCT label FROM by_split ORDER BY 1").fetchall() == [("Validation",), ("train",)]
    assert copied.messages == [f"COPY by_split: the labels are the first-level folders, Validation, train, which look "
                               f"like a dataset's splits with class folders inside: COPY one split's folder (COPY "
                               f"by_split FROM '{splits / 'train'}') to label the photos by their classes"]
    db.sql(f"COPY named OPTIONS (image_col='photo') FROM '{folder}'")  # the path column takes the name given
    assert db.sql("SELECT count(photo) FROM named").fetchone() == (24,)
    frame = pd.DataFrame({"path": [os.path.relpath(p, tmp_path) for p, _ in color_images],
                          "label": [l for _, l in color_images]})
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_json(tmp_path / "t.json", orient="records")
    for ext in ("parquet", "json"):
        db.sql(f"COPY t_{ext} OPTIONS (image_col='path') FROM '{tmp_path}/t.{ext}'")
        assert all(os.path.isfile(p) for (p,) in db.sql(f"SELECT path FROM t_{ext}").fetchall())
    wrong = db.sql(f"COPY t_wrong OPTIONS (image_col='label') FROM '{tmp_path}/t.parquet'")  # a slip: said
    assert wrong.messages == [f"COPY t_wrong: image_col 'label' names no file in its first 24 value(s) ('red' is "
                              f"read as {tmp_path / 'red'}); check that it names the image paths' column"]


def test_duckdb_copy_to_still_reaches_duckdb(db, tmp_path):
    db.sql(f"CREATE TABLE t AS SELECT 1 AS x; COPY t TO '{tmp_path}/out.csv' (HEADER)")
    assert (tmp_path / "out.csv").read_text().splitlines() == ["x", "1"]


def test_build_predict_show_describe_drop(db, color_csv):
    _copy_colors(db, color_csv)
    row = db.sql("BUILD MODEL colors_model USING EfficientNet_Lite0 "
                 "OPTIONS (image_col='image', label_col='label', epochs=2) AS SELECT * FROM colors").df()
    assert row.loc[0, "model"] == "colors_model"
    assert row.loc[0, "classes"] == 2 and row.loc[0, "train_rows"] == 24
    assert row.loc[0, "train_mode"] == "linear"

    preds = db.sql("PREDICT USING colors_model AS SELECT * FROM colors").df()
    assert {"image", "label", "predicted", "score"} <= set(preds.columns)
    assert (preds.predicted == preds.label).mean() == 1.0
    assert preds.score.between(0.5, 1.0).all()

    models = db.sql("SHOW MODELS").df()
    assert set(models.name) == {"imagenet_classifier", "colors_model"}
    assert db.sql("SELECT classes FROM pixql_models() WHERE name = 'colors_model'").fetchone() == (2,)

    described = dict(db.sql("DESCRIBE MODEL colors_model").fetchall())
    # linear mode: an epoch is drawn only while L-BFGS still moves the head (epochs=2 at most)
    assert described["base"] == "EfficientNet_Lite0" and "epoch 1" in described
    assert row.loc[0, "epochs"] == sum(k.startswith("epoch ") for k in described) <= 2
    assert '"blue"' in described["classes"]

    # BUILD's row as a table: its metric column is typed though empty (no validation rows asked for)
    db.sql("CREATE TABLE runs AS BUILD MODEL again AS SELECT * FROM colors")
    assert db.sql("SELECT typeof(best_validation_metric), typeof(l2) FROM runs").fetchone() == ("DOUBLE", "DOUBLE")
    db.sql("DROP MODEL again")
    db.sql("CREATE TABLE preds AS PREDICT USING colors_model AS SELECT * FROM colors")
    assert db.sql("SELECT count(*) FROM preds WHERE predicted = label").fetchone() == (24,)

    db.sql("DROP MODEL colors_model")
    assert set(db.sql("SHOW MODELS").df().name) == {"imagenet_classifier"}
    with pytest.raises(CatalogError, match="does not exist"):
        db.sql("PREDICT USING colors_model AS SELECT * FROM colors")
    db.sql("DELETE MODEL IF EXISTS colors_model")


def test_models_persist_beside_the_database(tmp_path, color_csv):
    path = str(tmp_path / "keep.duckdb")
    with pixql.connect(path, progress=False) as db:
        _copy_colors(db, color_csv)
        db.sql("BUILD MODEL m AS SELECT * FROM colors")
    assert (tmp_path / "keep.duckdb.models" / "m" / "weights.safetensors").is_file()
    with pixql.connect(path, progress=False) as db:
        preds = db.sql("PREDICT USING m AS SELECT * FROM colors").df()
        assert (preds.predicted == preds.label).all()


def test_bad_options_are_refused_before_any_work(db, color_csv):
    _copy_colors(db, color_csv)
    with pytest.raises(OptionError, match=r"unknown option 'epoch'.*did you mean 'epochs'.*valid options:.*label_col"):
        db.sql("BUILD MODEL m OPTIONS (epoch=1) AS SELECT * FROM colors")
    with pytest.raises(OptionError, match="'epochs' must be an integer"):
        db.sql("BUILD MODEL m OPTIONS (epochs='many') AS SELECT * FROM colors")
    with pytest.raises(OptionError, match="train_mode"):
        db.sql("BUILD MODEL m OPTIONS (train_mode='sideways') AS SELECT * FROM colors")
    assert list(db.sql("SHOW MODELS").df().name) == ["imagenet_classifier"]


def test_existing_model_is_kept_without_overwrite(db, color_csv):
    _copy_colors(db, color_csv)
    db.sql("BUILD MODEL m AS SELECT * FROM colors")
    created = db.sql("SELECT created FROM pixql_models() WHERE name = 'm'").fetchone()
    with pytest.raises(CatalogError, match="already exists.*overwrite"):
        db.sql("BUILD MODEL m AS SELECT * FROM colors WHERE label = 'red'")
    assert db.sql("SELECT created FROM pixql_models() WHERE name = 'm'").fetchone() == created
    db.sql("BUILD MODEL m OPTIONS (overwrite=true, epochs=1) AS SELECT * FROM colors")


def test_unknown_base_and_unknown_model(db, color_csv):
    _copy_colors(db, color_csv)
    with pytest.raises(CatalogError, match="NoSuchNet"):
        db.sql("BUILD MODEL m USING NoSuchNet AS SELECT * FROM colors")
    with pytest.raises(CatalogError, match="does not exist"):
        db.sql("PREDICT USING ghost AS SELECT * FROM colors")


def test_null_labels_are_skipped_and_counted(db, color_csv):
    _copy_colors(db, color_csv)
    db.sql("UPDATE colors SET label = NULL WHERE image LIKE '%_000.png'")
    row = db.sql("BUILD MODEL m AS SELECT * FROM colors").df()
    assert row.loc[0, "train_rows"] == 22 and row.loc[0, "skipped_null_labels"] == 2


def test_data_problems_name_what_is_wrong(db, color_csv):
    _copy_colors(db, color_csv)
    with pytest.raises(TrainingError, match="at least two classes.*red"):
        db.sql("BUILD MODEL m AS SELECT * FROM colors WHERE label = 'red'")
    with pytest.raises(DataError, match="no rows"):
        db.sql("BUILD MODEL m AS SELECT * FROM colors WHERE false")
    with pytest.raises(DataError, match="no column 'kind'.*columns: image, label"):
        db.sql("BUILD MODEL m OPTIONS (label_col='kind') AS SELECT * FROM colors")
    db.sql("BUILD MODEL m AS SELECT * FROM colors")
    with pytest.raises(DataError, match="trained on image column 'image'.*image_col"):
        db.sql("PREDICT USING m AS SELECT image AS picture FROM colors")
    preds = db.sql("PREDICT USING m OPTIONS (image_col='picture') AS SELECT image AS picture FROM colors").df()
    assert len(preds) == 24
    db.sql("UPDATE colors SET image = NULL WHERE label = 'red' AND image LIKE '%_001.png'")
    with pytest.raises(DataError, match="no image path"):
        db.sql("PREDICT USING m AS SELECT * FROM colors")


def test_print_image_returns_a_captioned_grid(db, color_csv):
    _copy_colors(db, color_csv)
    result = db.sql("PRINT IMAGE OPTIONS (size=100, columns=3) AS SELECT image, label FROM colors LIMIT 5")
    assert len(result.df()) == 5
    width, height = result.image.size
    assert width == 3 * 108 + 8 and height > 2 * 108


def test_imagenet_classifier_names_a_real_photo(db, tmp_path):
    import skimage

    photo = os.path.join(os.path.dirname(skimage.__file__), "data", "chelsea.png")
    df = db.sql(f"PREDICT USING imagenet_classifier AS SELECT '{photo}' AS image").df()
    assert "cat" in df.predicted[0]


def test_convnext_tiny_trains_from_a_local_weights_file(db, color_csv, tmp_path):
    import timm
    from safetensors.torch import save_file

    # Any convnext_tiny checkpoint will do; a random one stands in for downloaded weights.
    backbone = timm.create_model("convnext_tiny", pretrained=False)
    weights = tmp_path / "convnext_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(weights))
    _copy_colors(db, color_csv)
    row = db.sql(f"BUILD MODEL cn USING ConvNeXt_Tiny OPTIONS (weights='{weights}', train_mode='linear', image_size=64) "
                 "AS SELECT * FROM colors").df()
    assert row.loc[0, "base"] == "ConvNeXt_Tiny"
    _, state = db.engine.store.load("cn")
    stem = backbone.state_dict()["stem.0.weight"]
    assert (state["stem.0.weight"] == stem).all()  # the backbone came from the file, frozen
    assert len(db.sql("PREDICT USING cn AS SELECT * FROM colors").df()) == 24


# -- the caller's DataFrames are tables by their names, as in duckdb.sql() ---------------------------
def test_sql_reads_the_callers_dataframes_and_arrow_tables_by_name(colors_db):
    import pyarrow as pa

    photos = colors_db.sql("SELECT * FROM colors").df()
    predicted = colors_db.sql("PREDICT USING cm AS SELECT * FROM photos WHERE label <> 'red'").df()
    assert len(predicted) == 16 and (predicted.predicted == predicted.label).all()

    def inner():
        extra = pa.table({"label": ["red", "teal"]})
        return colors_db.sql("SELECT count(*) FROM colors JOIN extra USING (label)").fetchall()

    assert inner() == [(8,)]
    # the last SELECT's rows are computed while the DataFrame is a table, with DuckDB's types;
    # after the call nothing is left registered
    rows = colors_db.sql("SELECT label, 1::INTEGER AS i, DATE '2026-12-05' AS d, 1.5::DECIMAL(4, 1) AS m "
                         "FROM photos LIMIT 2")
    assert colors_db.duckdb.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchall() == [(0,)]
    assert len(rows.fetchall()) == 2
    same = colors_db.duckdb.sql("SELECT label, 1::INTEGER AS i, DATE '2026-12-05' AS d, 1.5::DECIMAL(4, 1) AS m "
                                "FROM colors LIMIT 2").df()
    assert rows.df().dtypes.tolist() == same.dtypes.tolist()
    # any name DuckDB's system views also use
    columns = pd.DataFrame({"a": [1, 2]})  # noqa: F841
    assert colors_db.sql("SELECT count(*) FROM columns").fetchall() == [(2,)]


def test_a_table_keeps_its_name_over_a_dataframe_of_the_same_name(colors_db):
    colors = pd.DataFrame({"image": ["x.png"], "label": ["red"]})  # noqa: F841 (the SQL names it)
    assert colors_db.sql("SELECT count(*) FROM colors").fetchall() == [(24,)]
    colors_db.sql("CREATE TABLE later AS SELECT 1 AS one")
    later = pd.DataFrame({"one": [5, 6]})  # noqa: F841
    assert colors_db.sql("SELECT sum(one) FROM later").fetchall() == [(1,)]
    # a table made of a DataFrame under its own name (DuckDB's way to save one) is that table from the
    # next statement on
    made = pd.DataFrame({"one": [5, 6]})  # noqa: F841
    assert colors_db.sql("CREATE TABLE made AS SELECT one * 10 AS one FROM made; INSERT INTO made VALUES (1); "
                         "SELECT sum(one) FROM made").fetchall() == [(111,)]


def test_a_dataframe_in_a_failed_transaction_gets_pixqls_error(colors_db):
    frame = pd.DataFrame({"a": [1]})  # noqa: F841
    colors_db.sql("BEGIN TRANSACTION")
    with pytest.raises(SqlError):
        colors_db.sql("SELECT * FROM no_such_table")
    with pytest.raises(SqlError, match="transaction is aborted"):
        colors_db.sql("SELECT a FROM frame")
    colors_db.sql("ROLLBACK")
    assert colors_db.sql("SELECT a FROM frame").fetchall() == [(1,)]


def test_a_failed_script_leaves_no_dataframe_registered(colors_db):
    frame = pd.DataFrame({"a": [1]})  # noqa: F841
    with pytest.raises(SqlError):
        colors_db.sql("SELECT a FROM frame; SELECT * FROM no_such_table")
    assert colors_db.duckdb.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchall() == [(0,)]


def test_a_notebooks_table_of_a_lazy_query_reads_its_first_rows(db):
    html = db.sql("SELECT range AS i FROM range(20000000)")._repr_html_()
    assert html.count("<tr>") == 40 and "first 40 rows shown" in html  # 40 rows (the header is <tr style=...>)
    small = db.sql("SELECT range AS i FROM range(3)")._repr_html_()
    assert small.count("<tr>") == 3 and "rows shown" not in small


def test_a_result_shown_in_python_says_its_messages_under_its_rows(colors_db):
    """A notebook cell's value or print(result): the notes the terminal and %%pixql print (here, a
    class the model lacks) come with the rows, not only in .messages."""
    result = colors_db.sql("EVALUATE USING cm AS SELECT image, CASE WHEN label = 'red' THEN 'purple' ELSE label END "
                           "AS label FROM colors")
    note = next(m for m in result.messages if "purple" in m)
    assert repr(result).endswith(note) and repr(result).startswith(result.text())
    html = result._repr_html_()
    assert html.index("<table") < html.index(f"<pre>{escape(note)}</pre>")
    assert "<pre>" not in colors_db.sql("SELECT 1 AS a")._repr_html_()


def test_a_plain_querys_result_takes_duckdbs_relation_methods(colors_db, tmp_path):
    db = colors_db
    result = db.sql("SELECT * FROM colors")
    assert result.filter("label = 'red'").limit(2).aggregate("count(*)").fetchall() == [(2,)]
    assert result.shape == (24, 2)
    result.to_parquet(str(tmp_path / "c.parquet"))
    assert db.sql(f"SELECT count(*) FROM '{tmp_path / 'c.parquet'}'").fetchone() == (24,)
    with pytest.raises(AttributeError, match="'filter' is a DuckDB relation method, for a plain query's result; "
                                             r"PREDICT's rows are computed by pixql: run the query over them"):
        db.sql("PREDICT USING cm AS SELECT * FROM colors").filter("label = 'red'")
    with pytest.raises(AttributeError, match="'Result' object has no attribute 'nosuch'"):
        result.nosuch
    # another Result where DuckDB takes a relation (it refused one: "Expected a DuckDBPyRelation")
    reds, blues = db.sql("SELECT * FROM colors WHERE label = 'red'"), db.sql("SELECT * FROM colors WHERE label = 'blue'")
    assert reds.union(blues).shape == (16, 2) and reds.except_(blues).shape == (8, 2)
    assert reds.intersect(result).shape == (8, 2)


def test_a_query_reads_a_result_in_a_variable_by_its_name(colors_db):
    """As duckdb.sql() reads a relation in a variable ("Table with name reds does not exist" here):
    a plain query's result, a pixql statement's rows, a result of another connection."""
    import pixql

    db = colors_db
    reds = db.sql("SELECT * FROM colors WHERE label = 'red'")
    assert db.sql("SELECT count(*) FROM reds").fetchall() == [(8,)]
    predicted = db.sql("PREDICT USING cm AS SELECT * FROM colors")
    assert db.sql("SELECT count(*) FROM predicted WHERE predicted = label").fetchall() == [(24,)]
    with pixql.connect() as other:
        answer = other.sql("SELECT 42 AS x")
        assert db.sql("SELECT x FROM answer").fetchall() == [(42,)]
    # only a table's name reads one: an alias or a column of the name computes nothing, and a
    # result that cannot be read (its connection closed) leaves the name to DuckDB
    assert db.sql("SELECT count(*) FROM colors answer").fetchall() == [(24,)]
    assert db.sql("SELECT count(*) FROM colors predicted WHERE predicted.label = 'red'").fetchall() == [(8,)]
    kept = db.sql("CREATE TABLE IF NOT EXISTS colors AS PREDICT USING cm AS SELECT * FROM colors")
    with pytest.raises(SqlError, match="Table with name kept does not exist"):  # (no columns: the name is DuckDB's)
        db.sql("SELECT * FROM kept")
    assert kept.columns == []


def test_a_file_open_for_writing_here_is_not_opened_read_only_too(tmp_path):
    path = str(tmp_path / "one_way.duckdb")
    with pixql.connect(path, progress=False):
        with pytest.raises(SqlError, match="read-only: this process has it open already with another configuration"):
            pixql.connect(path, read_only=True, progress=False)


def test_a_result_has_a_relations_types_and_show(db, color_csv, capsys):
    db.sql(f"COPY colors FROM '{color_csv}'")
    assert db.sql("SELECT 1::TINYINT AS a, 'x' AS b").types == ["TINYINT", "VARCHAR"]
    shown = db.sql("SHOW TABLES")
    assert shown.types == ["VARCHAR"]
    shown.show()
    assert "colors" in capsys.readouterr().out


def test_describe_model_writes_class_names_as_they_are(db, color_csv):
    _copy_colors(db, color_csv)
    db.sql("BUILD MODEL farver AS SELECT image, CASE label WHEN 'blue' THEN 'blå' ELSE 'rød' END AS label FROM colors")
    described = dict(db.sql("DESCRIBE MODEL farver").fetchall())
    assert '"blå"' in described["classes"] and '"rød"' in described["classes"]  # not "bl\u00e5"


def test_build_notes_labels_that_look_like_one_class_written_two_ways(db, color_csv):
    _copy_colors(db, color_csv)
    # a CSV with a space after some commas: ' red' and 'red' are two classes as written
    result = db.sql("BUILD MODEL spaced AS SELECT image, CASE WHEN image LIKE '%0.png' THEN ' ' || label ELSE label END "
                    "AS label FROM colors")
    notes = " ".join(result.messages)
    assert "' blue' and 'blue' in 'label' are classes of their own that differ only in spaces or case" in notes
    assert "NULLIF(lower(trim(label)), '')" in notes
    clean = db.sql("BUILD MODEL clean AS SELECT * FROM colors")
    assert not any("differ only" in m or "no text" in m for m in clean.messages)
    blank = db.sql("BUILD MODEL blank AS SELECT image, CASE WHEN image LIKE '%0.png' THEN '' ELSE label END AS label "
                   "FROM colors")
    assert "the label(s) '' in 'label' are a class of its own with no text" in " ".join(blank.messages)


def test_a_syntax_error_in_a_statements_query_runs_nothing_of_the_script(db):

    script = "CREATE TABLE side AS SELECT 1 AS a;\n\nPREDICT USING imagenet_classifier\n  AS SELECT image\n  FRM photos"
    with pytest.raises(SqlError, match='(?s)syntax error at or near "photos".*LINE 5:   FRM photos') as info:
        db.sql(script)
    assert (info.value.keyword, info.value.statement_line) == ("PREDICT", 3)
    assert db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'side'").fetchone() == (0,)


def test_a_failing_query_is_shown_at_its_line_without_pixqls_own_sql(db, color_csv):
    _copy_colors(db, color_csv)
    with pytest.raises(DataError, match="(?s)the query failed: Conversion Error.*LINE 3:     'a'::INT AS n") as info:
        db.sql("SELECT 1;\nPREDICT USING imagenet_classifier AS SELECT image,\n    'a'::INT AS n FROM colors")
    assert "__pixql" not in str(info.value) and info.value.keyword == "PREDICT"
    with pytest.raises(DataError, match="Table with name nowhere does not exist") as info:
        db.sql("PREDICT USING imagenet_classifier AS SELECT * FROM nowhere")
    assert "__pixql" not in str(info.value)
    # DuckDB's own error, as a plain query's is: an SqlError (and still a DataError, as it was)
    from pixql import QueryError, SqlError

    with pytest.raises(SqlError, match="Binder Error.*imag") as info:
        db.sql("PREDICT USING imagenet_classifier AS SELECT imag FROM colors")
    assert isinstance(info.value, QueryError) and info.value.query == "the query"


def test_a_scripts_last_select_that_fails_to_bind_says_where_as_an_earlier_one_does(db):
    """The last SELECT is a lazy relation, whose binder and catalog errors carry no "LINE n:" and
    caret (an earlier one, run by execute(), had them)."""
    db.sql("CREATE TABLE photos AS SELECT 1 AS a")
    for script, line in (("SELECT nocol FROM photos", 1), ("SELECT 1;\nSELECT 2;\nSELECT nocol\nFROM photos", 3),
                         ("SELECT 1;\nSELECT * FROM nowhere", 2)):
        with pytest.raises(SqlError) as info:
            db.sql(script)
        assert f"LINE {line}: SELECT" in str(info.value) and "^" in str(info.value), str(info.value)


def test_a_closed_connection_refuses_every_statement_with_a_pixql_error(tmp_path):
    with pixql.connect(str(tmp_path / "c.duckdb")) as closed:
        pass
    for statement in ("SHOW MODELS", "SELECT 1", "PREDICT USING imagenet_classifier AS SELECT 1 AS image"):
        with pytest.raises(SqlError, match="Connection already closed"):
            closed.sql(statement)


def test_cursors_share_an_in_memory_database_and_its_models_across_threads(color_csv):
    import threading

    db = pixql.connect(progress=False)  # in memory: a cursor is the only way another thread sees its tables
    _copy_colors(db, color_csv)
    db.sql("BUILD MODEL shared AS SELECT * FROM colors")
    cursors, answers, errors = [db.cursor(), db.cursor()], [], []

    def predict(cursor):
        try:
            for _ in range(3):
                answers.append(cursor.sql("SELECT count(*) FROM (PREDICT USING shared AS SELECT * FROM colors) "
                                          "WHERE predicted = label").fetchone()[0])
        except Exception as exc:  # noqa: BLE001 (reported below, on the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=predict, args=(c,)) for c in cursors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert errors == [] and answers == [24] * 6
    db.close()  # closes its cursors, as DuckDB's does
    with pytest.raises(SqlError, match="Connection already closed"):
        cursors[0].sql("SELECT 1")


def test_close_while_a_cursor_runs_a_statement_says_so_and_closes_once_it_is_over(tmp_path):
    """DuckDB refuses to close a connection mid-statement: close() raised its ResourceInUseException
    (no pixql error), and the cursor was marked closed while its DuckDB connection stayed open, so
    a second close() passed it over and the file stayed locked."""
    import threading

    db = pixql.connect(str(tmp_path / "busy.duckdb"), progress=False)
    cursor, began, release, ended = db.cursor(), threading.Event(), threading.Event(), []

    def wait_here(x):  # a statement that runs until the test lets it end
        began.set()
        release.wait(120)
        return x

    cursor.duckdb.create_function("wait_here", wait_here, ["BIGINT"], "BIGINT")
    thread = threading.Thread(target=lambda: ended.append(cursor.sql("SELECT wait_here(1)").fetchall()))
    thread.start()
    assert began.wait(120)
    with pytest.raises(SqlError, match="a cursor of this connection is running a statement in another thread"):
        db.close()
    release.set()
    thread.join(timeout=120)
    assert not thread.is_alive() and ended == [[(1,)]]
    assert cursor.sql("SELECT 2").fetchall() == [(2,)]  # still open, as the message says
    db.close()
    with pixql.connect(str(tmp_path / "busy.duckdb"), read_only=True) as again:  # the file is let go
        assert again.sql("SELECT 1").fetchall() == [(1,)]
    with pytest.raises(SqlError, match="Connection already closed"):
        cursor.sql("SELECT 1")


def test_results_answer_duckdbs_other_readers(db, color_csv):
    import duckdb

    plain = "SELECT 1 AS a, 'x' AS b, NULL::DATE AS d"
    expected = duckdb.sql(plain)
    ours = db.sql(plain)
    assert [(n, str(t)) for n, t, *_ in expected.description] == [(n, t) for n, t, *_ in ours.description]
    assert {k: v.tolist() for k, v in ours.fetchnumpy().items()} == \
        {k: v.tolist() for k, v in expected.fetchnumpy().items()}
    assert ours.fetchdf().equals(expected.df())
    _copy_colors(db, color_csv)
    predicted = db.sql("PREDICT USING imagenet_classifier AS SELECT * FROM colors LIMIT 3")
    assert [d[:2] for d in predicted.description] == [("image", "VARCHAR"), ("label", "VARCHAR"),
                                                      ("predicted", "VARCHAR"), ("score", "DOUBLE")]
    assert predicted.fetchnumpy()["score"].shape == (3,)
    try:
        import polars  # noqa: F401
    except ImportError:
        with pytest.raises(pixql.PixqlError, match="pl\\(\\) needs polars.*pip install polars"):
            predicted.pl()
    else:
        assert predicted.pl().shape == (3, 4)


def test_results_give_arrow_as_the_installed_duckdb_does(db, color_csv):
    # DuckDB 2's relation.arrow() is a RecordBatchReader (1's a Table): code written for the
    # installed DuckDB (reader.read_all(), table.num_rows) works on pixql's results alike
    import datetime

    import duckdb
    import pyarrow as pa

    plain = "SELECT range AS n FROM range(3)"
    kind = type(duckdb.sql(plain).arrow())
    _copy_colors(db, color_csv)
    for query in (plain, "PREDICT USING imagenet_classifier AS SELECT * FROM colors LIMIT 3"):
        result = db.sql(query)
        assert type(result.arrow()) is kind
        table = db.sql(query).fetch_arrow_table()
        assert isinstance(table, pa.Table) and table.num_rows == 3
        assert db.sql(query).to_arrow_reader().read_all().equals(table)
        assert pa.table(db.sql(query)).equals(table)  # the Arrow stream protocol, as DuckDB's relations
        # DuckDB's arguments: batch sizes, date_as_object, a lazy polars frame
        assert [len(b) for b in db.sql(query).fetch_record_batch(2)] == [2, 1]
        assert [len(b) for b in db.sql(query).to_arrow_reader(batch_size=2)] == [2, 1]
        assert db.sql(query).to_arrow_table(2).num_rows == db.sql(query).fetch_arrow_table(batch_size=2).num_rows == 3
        assert type(db.sql(query).arrow(2)) is kind
    when = "SELECT DATE '2024-01-31' AS d, image FROM colors LIMIT 1"
    for query in (when, f"PREDICT USING imagenet_classifier AS {when}"):
        assert db.sql(query).df(date_as_object=True).d.tolist() == [datetime.date(2024, 1, 31)]
        assert str(db.sql(query).df().d.dtype).startswith("datetime64")


def test_params_fill_plain_statements_and_a_pixql_statements_query(db, color_csv):
    from pixql.errors import ArgumentError

    _copy_colors(db, color_csv)
    assert db.execute("SELECT ? AS a, ? AS b", [1, "x"]).fetchall() == [(1, "x")]  # as duckdb's execute()
    assert db.sql("SELECT $n + 1 AS a", params={"n": 41}).fetchall() == [(42,)]
    reds = db.sql("PREDICT USING imagenet_classifier AS SELECT * FROM colors WHERE label = ?", ["red"]).df()
    assert len(reds) == 12 and set(reds.label) == {"red"}
    # a value is a value: quotes in it never become SQL
    assert len(db.sql("PREDICT USING imagenet_classifier AS SELECT * FROM colors WHERE label = ?",
                      ["red' OR 1=1 --"]).df()) == 0
    db.sql("CREATE TABLE blues AS PREDICT USING imagenet_classifier AS SELECT * FROM colors WHERE label = $l",
           {"l": "blue"})
    assert db.sql("SELECT count(*) FROM blues").fetchone() == (12,)
    # the one pixql statement inside a query that holds them takes them (a query of its own has none)
    inside = "(PREDICT USING imagenet_classifier AS SELECT * FROM colors WHERE label = ?)"
    assert db.sql(f"SELECT count(*), min(label) FROM {inside}", ["red"]).fetchall() == [(12, "red")]
    db.sql("CREATE TABLE kept (image VARCHAR, predicted VARCHAR)")
    db.sql(f"INSERT INTO kept SELECT image, predicted FROM {inside}", ["blue"])
    assert db.sql("SELECT count(*) FROM kept").fetchone() == (12,)
    # ... and the query around them takes them where none inside has any (it was refused)
    plain = "(PREDICT USING imagenet_classifier AS SELECT * FROM colors)"
    assert db.sql(f"SELECT count(*), min(label) FROM {plain} WHERE label = ?", ["red"]).fetchall() == [(12, "red")]
    db.sql(f"CREATE TEMP TABLE b2 AS SELECT * FROM {plain} WHERE label = $l", {"l": "blue"})
    assert db.sql("SELECT count(*), min(label) FROM b2").fetchall() == [(12, "blue")]
    streamed = db.sql("PREDICT USING imagenet_classifier AS SELECT * FROM colors WHERE label = ?", ["red"])
    db.sql("SELECT 1")  # the next statement drops the bound rows: the result keeps its own
    assert len(streamed.df()) == 12
    for script, params, message in [
        ("SELECT 1; SELECT ?", [1], "params go with a script of one statement"),
        ("SELECT ?", 5, "params must be a list \\(for \\?\\) or a dict"),
        ("SHOW MODELS", [1], "SHOW MODELS has none"),
        ("SELECT ?::INT, * FROM (PREDICT USING imagenet_classifier AS SELECT * FROM colors WHERE label = ?)",
         [1, "red"], "of a query, or of the one pixql statement inside it that has them; not both"),
        ("SELECT * FROM (PREDICT USING imagenet_classifier AS SELECT * FROM colors WHERE label = $l) JOIN "
         "(PREDICT USING imagenet_classifier AS SELECT * FROM colors WHERE label = $l) USING (image)", {"l": "red"},
         "nor several such statements"),
    ]:
        with pytest.raises(ArgumentError, match=message):
            db.sql(script, params)
    assert not [t for (t,) in db.sql("SELECT table_name FROM duckdb_tables()").fetchall() if "params" in t]


def test_connect_takes_duckdbs_config(tmp_path):
    from pixql.errors import ArgumentError

    with pixql.connect(str(tmp_path / "c.duckdb"), config={"threads": 1, "memory_limit": "1GB"}) as db:
        assert db.sql("SELECT current_setting('threads')").fetchone() == (1,)
    with pytest.raises(SqlError, match="options were not recognized: nosuch"):
        pixql.connect(config={"nosuch": 1})
    with pytest.raises(ArgumentError, match="config must be a dict"):
        pixql.connect(config=[("threads", 1)])


def test_connect_without_a_database_opens_pixql_db_as_the_terminal_and_the_notebook_do(tmp_path, monkeypatch):
    """SPEC: tables live in the file given by --db, connect() or PIXQL_DB. connect() ignored it,
    so a script's tables went to memory where the terminal's and the notebook's went to the file."""
    monkeypatch.setenv("PIXQL_DB", str(tmp_path / "env.duckdb"))
    with pixql.connect() as db:
        db.sql("CREATE TABLE kept AS SELECT 42 AS answer")
    with pixql.connect(":memory:") as memory:  # memory still, when asked for
        assert memory.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'kept'").fetchone() == (0,)
    monkeypatch.delenv("PIXQL_DB")
    with pixql.connect(str(tmp_path / "env.duckdb")) as again:
        assert again.sql("SELECT answer FROM kept").fetchone() == (42,)


def test_ctrl_c_inside_duckdb_is_the_interrupt_front_ends_expect(tmp_path, monkeypatch):
    """DuckDB answers Ctrl-C with its own errors (InterruptException from interrupt(), a RuntimeError
    'Query interrupted' for a SIGINT while rows are fetched): pixql raises a KeyboardInterrupt
    (Interrupted, naming the statement, where one was running), and the connection goes on."""
    import subprocess
    import sys

    script = (
        "import threading, pixql\n"
        "db = pixql.connect()\n"
        "long = 'SELECT count(*) FROM range(300000000000) t(x) WHERE x % 7 = 3'\n"
        "for run in (lambda: db.sql('CREATE TABLE t AS ' + long + '; SELECT 1'), db.sql(long).fetchall):\n"
        "    done = threading.Event()\n"  # interrupt() again until the statement is over: one before it began is lost
        "    threading.Thread(target=lambda: [db.duckdb.interrupt() for _ in iter(lambda: done.wait(0.3), True)],\n"
        "                     daemon=True).start()\n"
        "    try:\n"
        "        run()\n"
        "    except KeyboardInterrupt as exc:\n"
        "        print(type(exc).__name__, exc)\n"
        "    finally:\n"
        "        done.set()\n"
        "print(db.sql('SELECT 42').fetchone()[0])\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    lines = out.stdout.splitlines()
    assert "Traceback" not in out.stderr and lines[-1] == "42", out.stderr
    assert lines[0] == "Interrupted CREATE statement at line 1: interrupted; nothing half-written was kept"
    assert lines[1] == "KeyboardInterrupt "  # while a lazy result's rows were read
    # a SIGINT while DuckDB computes is its RuntimeError 'Query interrupted': the same KeyboardInterrupt
    from pixql.commands import plain_sql

    def sigint(engine, statement):
        raise RuntimeError("Query interrupted")

    with pixql.connect() as db:
        monkeypatch.setattr(plain_sql, "run", sigint)
        with pytest.raises(KeyboardInterrupt, match="SELECT statement at line 1: interrupted"):
            db.sql("SELECT 1")


def test_create_table_as_a_pixql_statement_on_a_read_only_database_is_refused_before_any_work(tmp_path, color_csv):
    with pixql.connect(str(tmp_path / "ro.duckdb"), progress=False) as db:
        _copy_colors(db, color_csv)
    with pixql.connect(str(tmp_path / "ro.duckdb"), read_only=True, progress=False) as db:
        db.engine.catalog.load = None  # loading a model would be work done for nothing: it must not happen
        with pytest.raises(SqlError, match="cannot create table p: database ro is opened read-only.*nothing was run"):
            db.sql("CREATE TABLE p AS PREDICT USING imagenet_classifier AS SELECT * FROM colors")
        db.engine.catalog.load = type(db.engine.catalog).load.__get__(db.engine.catalog)
        db.sql("CREATE TEMP TABLE p AS PREDICT USING imagenet_classifier AS SELECT * FROM colors LIMIT 2")
        assert db.sql("SELECT count(*) FROM p").fetchone() == (2,)


def test_create_table_as_a_pixql_statement_in_a_missing_schema_is_refused_before_any_work(tmp_path, color_csv):
    """PREDICT ran over every row, then the CREATE failed as 'Current transaction is aborted'."""
    with pixql.connect(str(tmp_path / "s.duckdb"), progress=False) as db:
        _copy_colors(db, color_csv)
        db.sql(f"ATTACH '{tmp_path / 'other.duckdb'}' AS other; CREATE SCHEMA kept")
        load = db.engine.catalog.load
        db.engine.catalog.load = None  # loading a model would be work done for nothing: it must not happen
        for name, words in (("nosuch.p", "schema nosuch does not exist.*CREATE SCHEMA nosuch"),
                            ("nodb.main.p", "no database named nodb is attached"),
                            ("other.nosuch.p", "schema nosuch does not exist")):
            with pytest.raises(SqlError, match=f"cannot create table {name}: {words}.*nothing was run"):
                db.sql(f"CREATE TABLE {name} AS PREDICT USING imagenet_classifier AS SELECT * FROM colors")
        db.engine.catalog.load = load
        for name in ("KEPT.p", "other.p", "other.main.q"):  # (names are case-blind, as DuckDB's)
            db.sql(f"CREATE TABLE {name} AS PREDICT USING imagenet_classifier AS SELECT * FROM colors LIMIT 1")
            assert db.sql(f"SELECT count(*) FROM {name}").fetchone() == (1,)


def test_a_connection_keeps_its_models_when_the_process_changes_folder(tmp_path, monkeypatch):
    # a notebook's %cd after connect("shop.duckdb"): the store stays the database's (its models were
    # gone, and a BUILD wrote a second store in the new folder)
    from conftest import save_color_model

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    with pixql.connect("shop.duckdb", progress=False) as db:
        save_color_model(db.engine.store, "cm")
        monkeypatch.chdir(tmp_path / "elsewhere")
        assert ("cm",) in db.sql("SELECT name FROM pixql_models()").fetchall()
        db.sql("CREATE TABLE t AS SELECT 1 AS x; DROP MODEL cm")
    assert not (tmp_path / "elsewhere" / "shop.duckdb.models").exists()
    assert (tmp_path / "shop.duckdb.models").is_dir()


def test_a_named_in_memory_database_keeps_its_models_in_a_temporary_folder(tmp_path, monkeypatch):
    """DuckDB's ':memory:shop' is in memory like ':memory:': its models are not written to a folder
    named ':memory:shop.models' in the working directory, to outlive the tables."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIXQL_HOME", raising=False)
    with pixql.connect(":memory:shop", progress=False) as db:
        store = str(db.model_store)
        assert not store.startswith(str(tmp_path)) and os.path.isdir(store)
        db.sql("CREATE TABLE t AS SELECT 1 AS x")
        assert db.sql("SELECT x FROM t").fetchall() == [(1,)]
    assert os.listdir(tmp_path) == []
    with pytest.raises(pixql.ArgumentError, match="read_only=True needs a database file"):
        pixql.connect(":memory:shop", read_only=True)


def test_a_cursor_keeps_an_in_memory_databases_models_after_its_connection_is_dropped(color_csv):
    """As DuckDB's cursor keeps an in-memory database after its connection is dropped, a cursor
    keeps its models: the parent's temporary model folder went with the parent."""
    import gc

    from conftest import save_color_model

    db = pixql.connect(progress=False)
    db.sql(f"COPY colors FROM '{color_csv}'")
    cursor = db.cursor()
    save_color_model(cursor.engine.store, "cm")
    store = db.model_store
    del db
    gc.collect()
    assert os.path.isdir(store)
    assert cursor.sql("SELECT count(*) FROM colors").fetchone() == (24,)  # (DuckDB's)
    assert cursor.sql("SELECT name FROM pixql_models() WHERE name = 'cm'").fetchall() == [("cm",)]
    assert len(cursor.sql("PREDICT USING cm AS SELECT * FROM colors LIMIT 2").df()) == 2
    cursor.close()


ENDLESS = "SELECT count(*) AS n FROM range(300000) a, range(300000) b WHERE (a.range * b.range) % 7 = 1"


def _signals(sig, *at):
    """Timers that send `sig` to this process at each of `at` seconds (cancel them after)."""
    import signal  # noqa: F401
    import threading

    timers = [threading.Timer(t, os.kill, (os.getpid(), sig)) for t in at]
    for timer in timers:
        timer.daemon = True
        timer.start()
    return timers


def test_ctrl_c_while_a_result_is_printed_stops_it_without_running_it_again(monkeypatch):
    """repr(), .show() and the terminal's table caught DuckDB's InterruptException as a rendering
    error and ran the whole query again to word it: the first Ctrl-C was lost."""
    import signal

    from pixql.result import Result

    again = []
    monkeypatch.setattr(Result, "_drained", lambda self: again.append(1))
    with pixql.connect() as db:
        result = db.sql(ENDLESS)
        timers = _signals(signal.SIGINT, 0.5, 20, 40)  # (the later ones end the test if the first is lost)
        try:
            with pytest.raises(KeyboardInterrupt):
                repr(result)
        finally:
            for timer in timers:
                timer.cancel()
        assert again == []
        assert db.sql("SELECT 1 AS one").fetchall() == [(1,)]  # the connection goes on


def test_a_programs_own_signal_handler_that_exits_stops_duckdb_first(tmp_path):
    """A handler that raises SystemExit (sys.exit() on SIGTERM) left the wait with the query still
    running on the connection's DuckDB thread: the program then never ended (its exit waits for
    that thread, and closing the connection for the query)."""
    import subprocess
    import sys

    script = tmp_path / "leaves.py"
    script.write_text(
        "import os, signal, sys, threading\n"
        "import pixql\n"
        "signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(3))\n"
        "db = pixql.connect()\n"
        "threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()\n"
        f"db.sql({ENDLESS!r}).df()\n")
    try:
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the program did not end: its query ran on after its SIGTERM handler's sys.exit()")
    assert done.returncode == 3, done.stderr


def test_a_long_session_keeps_a_few_loaded_models_and_none_dropped_or_replaced(colors_db):
    """A notebook's kernel runs for hours: the catalog kept every model it ever loaded (a QA pass:
    12 models built, used and dropped, 24 networks and 430 MB still held), an overwritten model's
    embedder, and every one of them after close() for as long as a Result was kept."""
    import gc
    import weakref

    from conftest import save_color_model
    from pixql.catalog import KEPT_MODELS

    db = colors_db
    catalog, store = db.engine.catalog, db.engine.store

    def held(*refs):
        gc.collect()
        return [ref() is not None for ref in refs]

    # replaced (by this process's BUILD, or another's): its network and its embedder go
    old = weakref.ref(catalog.load("cm")[0]), weakref.ref(catalog.embedder("cm"))
    save_color_model(store, "cm", sharpness=2.0)  # (as another process would: not through this catalog)
    assert held(*old) == [True, True]
    new = weakref.ref(catalog.load("cm")[0])
    assert held(*old, new) == [False, False, True]
    # dropped: gone at once
    db.sql("DROP MODEL cm")
    assert held(new) == [False]
    # many models used in turn: the last KEPT_MODELS stay loaded, the older ones go
    models = []
    for i in range(KEPT_MODELS + 2):
        save_color_model(store, f"m{i}")
        models.append(weakref.ref(catalog.load(f"m{i}")[0]))
    assert held(*models) == [False] * 2 + [True] * KEPT_MODELS
    assert len(db.sql("PREDICT USING m0 AS SELECT * FROM colors").df()) == 24  # (loaded again)
    kept = db.sql("SELECT 1")  # (a Result kept after close, as a notebook's Out[] keeps every one)
    db.close()
    assert held(*models) == [False] * len(models) and kept is not None
