"""Reliability, round two (issue 14): what a hostile or careless user broke, each case with the
behaviour a user should see. Small generated images unless a case needs real photos."""

import io
import json
import subprocess
import sys
import warnings

import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import pixql
from conftest import REPO, make_rgb_images, save_color_model
from pixql.commands import predict as predict_command
from pixql.cli import cli
from pixql.errors import ArgumentError, CatalogError, DataError, OptionError, SqlError, StoreError, TrainingError
from pixql.image_columns import pick_image_col
from test_bad_input import snapshot

SIMPLE = "BUILD MODEL {name} USING SimpleCNN OPTIONS (pretrained=false, train_mode='finetune', {options}) AS {query}"


def _png(path, color=(200, 30, 30), size=24):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path)
    return path


# -- 1. COPY from a class-per-folder tree ----------------------------------------------------------
def test_copy_labels_by_the_first_level_folder_and_counts_root_images(tmp_path):
    tree = tmp_path / "photos"
    _png(tree / "cats" / "2019" / "a.png")
    _png(tree / "cats" / "b.png")
    _png(tree / "dogs" / "2020" / "summer" / "c.png")
    _png(tree / "loose.png")
    with pixql.connect(progress=False) as db:
        result = db.sql(f"COPY photos FROM '{tree}'")
        assert result.fetchall() == [("photos", 4)]
        assert any("1 image(s) lie directly in" in m and "NULL" in m for m in result.messages)
        rows = dict(db.sql("SELECT parse_filename(image), label FROM photos").fetchall())
        assert rows == {"a.png": "cats", "b.png": "cats", "c.png": "dogs", "loose.png": None}


def test_a_folder_of_unlabelled_photos_gets_a_text_label_that_can_be_filled_later(tmp_path):
    """Photos with no class folder made `label` of DuckDB's type "NULL": no UPDATE, INSERT or
    append of a label could ever fill it. And appending a folder to a table whose label column
    cannot hold its names gave Python's UnboundLocalError."""
    _png(tmp_path / "flat" / "a.png")
    _png(tmp_path / "tree" / "cats" / "b.png")
    with pixql.connect(progress=False) as db:
        db.sql(f"COPY flat FROM '{tmp_path / 'flat'}'")
        assert db.sql("SELECT column_type FROM (DESCRIBE flat) WHERE column_name = 'label'").fetchall() == [("VARCHAR",)]
        db.sql("UPDATE flat SET label = 'cats'")
        db.sql(f"COPY flat OPTIONS (if_exists='append') FROM '{tmp_path / 'tree'}'")
        assert db.sql("SELECT label, count(*) FROM flat GROUP BY label").fetchall() == [("cats", 2)]
        db.sql("CREATE TABLE digits (image VARCHAR, label INTEGER)")
        with pytest.raises(DataError) as info:
            db.sql(f"COPY digits OPTIONS (if_exists='append') FROM '{tmp_path / 'tree'}'")
        assert info.value.row == 1 and "the label value 'cats'" in str(info.value) and "nothing was loaded" in str(info.value)
        assert db.sql("SELECT count(*) FROM digits").fetchall() == [(0,)]


@pytest.mark.parametrize("name, text", [("blank.csv", "\n\n  \n"), ("empty.json", " [ \n ] \n"),
                                        ("bom.csv", "\ufeff\n")])
def test_a_file_of_blank_lines_or_an_empty_list_keeps_the_table_it_would_replace(tmp_path, name, text):
    """DuckDB reads blank lines as one NULL in a `column0`, `[]` as a `json` column of no rows:
    COPY ... OPTIONS (overwrite=true) replaced a good table with that (a 0-byte file was refused)."""
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pixql.connect(progress=False) as db:
        db.sql("CREATE TABLE good AS SELECT 'a.jpg' AS image, 'cat' AS label")
        with pytest.raises(DataError, match="holds no rows: only blank lines") as info:
            db.sql(f"COPY good OPTIONS (overwrite=true) FROM '{tmp_path / name}'")
        assert info.value.path == str(tmp_path / name)
        assert db.sql("SELECT * FROM good").fetchall() == [("a.jpg", "cat")]


def test_copy_says_which_columns_of_image_names_it_made_absolute(tmp_path):
    """A column of original file names (IMG_0001.JPG) was rewritten into paths beside the CSV,
    files that do not exist, without a word."""
    _png(tmp_path / "photos" / "a.png")
    (tmp_path / "meta.csv").write_text("image,orig_name,label\nphotos/a.png,IMG_0001.JPG,cat\n")
    with pixql.connect(progress=False) as db:
        result = db.sql(f"COPY me FROM '{tmp_path / 'meta.csv'}'")
        (message,) = [m for m in result.messages if "name image files" in m]
        assert "image, orig_name" in message and "OPTIONS (image_col='image')" in message
        db.sql(f"COPY kept OPTIONS (image_col='image') FROM '{tmp_path / 'meta.csv'}'")
        assert db.sql("SELECT image, orig_name FROM kept").fetchall() == [(str(tmp_path / "photos" / "a.png"),
                                                                            "IMG_0001.JPG")]


# -- 2. a query held in an option runs only itself --------------------------------------------------
@pytest.mark.parametrize("validation", [
    "SELECT * FROM colors; DROP TABLE keep",
    'colors"; DROP TABLE keep; --',
    "DROP TABLE keep",
    "INSERT INTO keep VALUES (2) RETURNING *",
])
def test_validation_option_must_be_one_read_only_query(colors_db, validation):
    db = colors_db
    db.sql("CREATE TABLE keep AS SELECT 1 AS x")
    before = snapshot(db)
    literal = "'" + validation.replace("'", "''") + "'"
    with pytest.raises(OptionError, match="option 'validation'"):
        db.sql(SIMPLE.format(name="v", options=f"validation={literal}", query="SELECT * FROM colors"))
    assert snapshot(db) == before
    assert db.sql("SELECT * FROM keep").fetchall() == [(1,)]


# -- 4. image-column detection by content, whatever pandas' string dtype ---------------------------
@pytest.mark.parametrize("dtype", [None, object, "string"])
def test_image_column_is_found_by_its_values(dtype):
    frame = pd.DataFrame({"n": [1, 2], "photo": ["a.jpg", "b.PNG"], "note": ["x", "y"]})
    if dtype is not None:  # pandas 2 gives object columns, pandas 3 its str dtype
        frame = frame.astype({"photo": dtype, "note": dtype})
    assert pick_image_col(frame, None, "the query") == "photo"


def test_predict_finds_a_path_column_of_any_name(colors_db):
    with pytest.raises(DataError) as info:
        colors_db.sql("PREDICT USING imagenet_classifier AS SELECT 'x.jpg' AS photo")
    assert "Image file not found: x.jpg" in str(info.value) and "row 1 of the query" in str(info.value)
    assert info.value.path == "x.jpg" and (info.value.row, info.value.query) == (1, "the query")


# -- 5. a diverged model is never saved; NaN outputs are not blamed on the images -------------------
def test_a_diverging_build_stops_and_keeps_the_previous_model(colors_db):
    db = colors_db
    before = snapshot(db)
    with pytest.raises(TrainingError, match=r"diverged.*learning_rate \(it was 1e\+308\).*no model was saved"):
        db.sql(SIMPLE.format(name="cm", options="learning_rate=1e308, overwrite=true, batch_size=8",
                             query="SELECT * FROM colors"))
    assert snapshot(db) == before


def test_an_exploding_loss_is_a_warning(colors_db):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            colors_db.sql(SIMPLE.format(name="big", options="learning_rate=1e4, batch_size=4, epochs=2",
                                        query="SELECT * FROM colors"))
        except TrainingError as exc:  # it may also run all the way to NaN: then it is an error
            assert "diverged" in str(exc)
            return
    assert any("loss exploded" in str(w.message) for w in caught)


def test_predict_with_nan_weights_blames_the_model_not_the_images(colors_db):
    import torch

    db = colors_db
    manifest, state = db.engine.store.load("cm")
    state = {k: torch.full_like(v, float("nan")) if k.startswith("classifier") else v for k, v in state.items()}
    db.engine.store.save("nanmodel", state, dict(manifest), overwrite=True)
    for options in ("", "OPTIONS (on_error='skip')"):
        with pytest.raises(StoreError, match="not numbers .*NaN.*weights are broken") as info:
            db.sql(f"PREDICT USING nanmodel {options} AS SELECT * FROM colors")
        assert "unreadable" not in str(info.value)


# -- 6. --read-only protects the model store -------------------------------------------------------
def test_read_only_refuses_to_write_models(colors_db, tmp_path):
    db_file = colors_db.engine.database
    colors_db.close()
    with pixql.connect(db_file, read_only=True, progress=False) as ro:
        before = snapshot(ro)
        for statement in (SIMPLE.format(name="n", options="epochs=1", query="SELECT * FROM colors"),
                          "FIT MODEL cm2 USING cm AS SELECT * FROM colors",
                          "DROP MODEL cm"):
            with pytest.raises(StoreError, match="opened read-only"):
                ro.sql(statement)
        assert snapshot(ro) == before
        assert "cm" in ro.sql("SHOW MODELS").df().name.tolist()
    result = CliRunner().invoke(cli, ["--db", db_file, "--read-only", "-c", "DROP MODEL cm"])
    assert result.exit_code == 1 and "read-only" in result.stderr


# -- 7. multi-label rows with no tags are rows -----------------------------------------------------
def test_multi_label_rows_with_empty_tags_are_trained_on(colors_db):
    db = colors_db
    db.sql("CREATE TABLE tagged AS SELECT image, CASE WHEN label = 'red' THEN 'warm|bright' "
           "WHEN label = 'green' THEN '' ELSE NULL END AS tags FROM colors")
    out = db.sql(SIMPLE.format(name="ml", options="multi_label=true, label_col='tags', epochs=1, batch_size=8",
                               query="SELECT * FROM tagged")).df()
    assert out.train_rows[0] == 24 and out.skipped_null_labels[0] == 0 and out.classes[0] == 2
    report = db.sql("EVALUATE USING ml OPTIONS (label_col='tags') AS SELECT * FROM tagged").df()
    assert report.set_index("class").loc["warm", "support"] == 8
    assert not any("NULL label" in m for m in db.sql("EVALUATE USING ml OPTIONS (label_col='tags') "
                                                     "AS SELECT * FROM tagged").messages)


# -- 8. labels of another numeric type are the same classes ----------------------------------------
def test_double_labels_evaluate_against_integer_labels(colors_db):
    db = colors_db
    db.sql("CREATE TABLE nums AS SELECT image, CASE label WHEN 'red' THEN 1.0 WHEN 'green' THEN 2.0 "
           "ELSE 3.0 END::DOUBLE AS label FROM colors")
    db.sql(SIMPLE.format(name="numeric", options="epochs=1, batch_size=8", query="SELECT * FROM nums"))
    assert json.loads(db.sql("DESCRIBE MODEL numeric").df().set_index("property").loc["classes", "value"]) == [
        "1", "2", "3"]
    report = db.sql("EVALUATE USING numeric AS SELECT image, label::INTEGER AS label FROM nums").df()
    assert report.set_index("class").loc[["1", "2", "3"], "support"].tolist() == [8, 8, 8]


# -- 9. piped input is a script --------------------------------------------------------------------
def test_piped_input_runs_as_a_script_without_prompts(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pixql", "--db", str(tmp_path / "p.duckdb"), "--format", "csv"],
                          input="SELECT 1;\nSELECT 2\n", capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1\n1\n2\n2\n"
    assert "pixql>" not in proc.stdout + proc.stderr


# -- 10. a user's own table named pixql_models -----------------------------------------------------
def test_a_user_table_named_pixql_models_is_not_hidden(colors_db):
    db = colors_db
    db.sql("CREATE TABLE pixql_models AS SELECT 'mine' AS owner")
    assert db.sql("SELECT * FROM pixql_models").fetchall() == [("mine",)]
    assert db.sql("SELECT * FROM main.pixql_models").fetchall() == [("mine",)]
    assert "cm" in db.sql("SHOW MODELS").df().name.tolist()
    db.sql(SIMPLE.format(name="after", options="epochs=1, batch_size=8", query="SELECT * FROM colors"))
    assert db.sql("SELECT * FROM pixql_models").fetchall() == [("mine",)]
    # the models are pixql_models(), a table function: both stay usable side by side
    assert {"cm", "after"} <= set(db.sql("SELECT name FROM pixql_models()").df().name)
    db.sql("DROP TABLE pixql_models; DROP MODEL after")
    assert "after" not in db.sql("SELECT name FROM pixql_models()").df().name.tolist()


# -- 11. a streamed JSON result that fails half-way stays valid JSON -------------------------------
def test_json_stream_failing_in_a_later_chunk_is_still_valid_json(tmp_path, monkeypatch):
    from pixql.store import ModelStore

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(predict_command, "CHUNK_ROWS", 4)
    rows = make_rgb_images(tmp_path / "rgb", per_class=3)
    db_file = tmp_path / "s.duckdb"
    with pixql.connect(str(db_file), progress=False) as db:
        frame = pd.DataFrame(rows + [(str(tmp_path / "gone.png"), "red")], columns=["image", "label"])
        db.duckdb.register("f", frame)
        db.duckdb.execute("CREATE TABLE t AS SELECT * FROM f")
    save_color_model(ModelStore(f"{db_file}.models"), "cm")
    result = CliRunner().invoke(cli, ["--db", str(db_file), "--format", "json", "-c",
                                      "PREDICT USING cm AS SELECT * FROM t"])
    assert result.exit_code == 1
    assert len(json.loads(result.stdout)) == 8  # the two whole chunks before the bad one
    assert "PREDICT (line 1)" in result.stderr and "gone.png" in result.stderr and "row 10" in result.stderr


# -- unclear messages ------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["http://example.com/a.jpg", "https://example.com/b.png", "s3://bucket/c.jpg"])
def test_url_image_paths_are_named_as_urls(colors_db, path):
    with pytest.raises(DataError, match=r"URLs are not read.*\(row 2 of the query\)") as info:
        colors_db.sql(f"PREDICT USING cm AS SELECT * FROM (VALUES ('{colors_db.sql('SELECT image FROM colors').fetchone()[0]}'), "
                      f"('{path}')) v(image)")
    assert info.value.path == path


def test_copy_from_a_url_is_refused_without_mangling_it(colors_db):
    with pytest.raises(DataError, match=r"s3://bucket/data.csv is a URL; COPY reads local files"):
        colors_db.sql("COPY remote FROM 's3://bucket/data.csv'")


def test_empty_path_and_a_path_with_colon_space_name_their_rows(colors_db, tmp_path):
    db = colors_db
    with pytest.raises(DataError, match=r"row\(s\) have no image path in 'image' \(rows 2\)"):
        db.sql("PREDICT USING cm AS SELECT * FROM (VALUES ('a.png'), ('')) v(image)")
    odd = _png(tmp_path / "odd: name.png")
    odd.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"odd: name.png \(row 3 of the query\)") as info:
        db.sql(f"PREDICT USING cm AS (SELECT image FROM colors LIMIT 2) UNION ALL SELECT '{odd}'")
    assert info.value.path == str(odd)


def test_predict_function_on_a_bad_image_is_pixqls_message(colors_db, tmp_path):
    missing = tmp_path / "missing.png"
    for sql in (f"SELECT predict('cm', '{missing}') AS p",
                f"CREATE TABLE p AS SELECT predict('cm', '{missing}') AS p"):
        with pytest.raises(DataError) as info:
            colors_db.sql(sql).fetchall()
        message = str(info.value)
        assert "predict('cm', ...): Image file not found" in message and "WHERE" in message
        assert "Python exception" not in message and info.value.path == str(missing)


def test_print_image_of_no_rows_says_so(colors_db):
    with pytest.raises(DataError, match="returned no rows"):
        colors_db.sql("PRINT IMAGE AS SELECT * FROM colors WHERE false")


def test_print_image_skips_unreadable_photos_when_told_to(colors_db, tmp_path):
    """As BUILD, PREDICT and EVALUATE do: on_error='skip' leaves an unreadable photo's tile out and
    says which row (it was refused as an option about boxes)."""
    (tmp_path / "broken.jpg").write_bytes(b"")
    query = (f"SELECT image FROM ((SELECT image, 1 AS k FROM colors ORDER BY image LIMIT 2) UNION ALL "
             f"SELECT '{tmp_path / 'broken.jpg'}', 2) ORDER BY k, image")
    with pytest.raises(DataError, match="empty.*row 3 of the query.*on_error='skip'"):
        colors_db.sql(f"PRINT IMAGE AS {query}")
    shown = colors_db.sql(f"PRINT IMAGE OPTIONS (on_error='skip', columns=3) AS {query}")
    assert shown.image.width < 3 * 240  # two tiles
    assert shown.messages == [f"PRINT IMAGE: 1 image(s) that could not be read were left out (on_error='skip'): "
                              f"row 3: {tmp_path / 'broken.jpg'}"]
    # none readable: an error, naming each row and file (as the note would have)
    (tmp_path / "text.jpg").write_text("no photo")
    with pytest.raises(DataError, match="no image of the query could be read") as info:
        colors_db.sql(f"PRINT IMAGE OPTIONS (on_error='skip') AS SELECT '{tmp_path / 'broken.jpg'}' AS image "
                      f"UNION ALL SELECT '{tmp_path / 'text.jpg'}' ORDER BY image")
    assert f"row 1: {tmp_path / 'broken.jpg'}" in str(info.value) and f"row 2: {tmp_path / 'text.jpg'}" in str(info.value)
    assert (info.value.row, info.value.path) == (1, str(tmp_path / "broken.jpg"))


def test_a_broken_manifest_is_listed_as_broken(colors_db):
    root = colors_db.engine.store.root
    save_color_model(colors_db.engine.store, "bad")
    (root / "bad" / "manifest.json").write_text("{not json")
    models = colors_db.sql("SHOW MODELS").df().set_index("name")
    assert models.loc["bad", "status"].startswith("broken: manifest.json cannot be read")
    assert models.loc["cm", "status"] == "ok"
    colors_db.sql("DROP MODEL bad")
    assert "bad" not in colors_db.sql("SHOW MODELS").df().name.tolist()
    # a folder whose manifest is gone is a broken model too: seen, and dropped
    save_color_model(colors_db.engine.store, "gone")
    (root / "gone" / "manifest.json").unlink()
    models = colors_db.sql("SHOW MODELS").df().set_index("name")
    assert models.loc["gone", "status"] == "broken: manifest.json is missing; DROP MODEL gone and rebuild it"
    assert colors_db.sql("DROP MODEL gone").fetchall() and not (root / "gone").exists()
    # JSON, but no model's manifest: a list, or one without its classes or network (a traceback before)
    for name, edit, why in (("listed", lambda m: [1, 2], "it holds a JSON list, not an object"),
                            ("classless", lambda m: {k: v for k, v in m.items() if k != "classes"}, "it lacks classes"),
                            ("netless", lambda m: {k: v for k, v in m.items() if k != "network"}, "lacks network")):
        save_color_model(colors_db.engine.store, name)
        path = root / name / "manifest.json"
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))
        for statement in (f"PREDICT USING {name} AS SELECT * FROM colors", f"DESCRIBE MODEL {name}"):
            if name == "netless" and statement.startswith("DESCRIBE"):
                continue  # (what it trained on, its classes: DESCRIBE shows them; only loading needs the network)
            with pytest.raises(StoreError, match=f"model '{name}': .*{why}.*drop and rebuild the model"):
                colors_db.sql(statement)


def test_a_manifest_whose_classes_do_not_fit_the_weights_names_the_model(colors_db):
    import json

    from pixql.errors import StoreError

    root = colors_db.engine.store.root
    save_color_model(colors_db.engine.store, "edited")
    path = root / "edited" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["classes"] = manifest["classes"][:2]  # edited by hand
    path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"model 'edited' \(.*edited\): The network has 3 outputs but 2 classes "
                                         r"are listed; .*drop and rebuild the model"):
        colors_db.sql("PREDICT USING edited AS SELECT * FROM colors")


def test_a_model_folder_copied_under_another_name_is_listed_by_that_name(colors_db):
    import shutil

    root = colors_db.engine.store.root
    shutil.copytree(root / "cm", root / "cm_copy")  # as a user moves a model between databases
    names = colors_db.sql("SELECT name FROM pixql_models() ORDER BY name").df().name.tolist()
    assert names.count("cm") == 1 and "cm_copy" in names
    assert len(colors_db.sql("PREDICT USING cm_copy AS SELECT * FROM colors").df()) == 24
    described = colors_db.sql("DESCRIBE MODEL cm_copy").df().set_index("property")["value"]
    assert described["name"] == "cm_copy"  # (it said 'cm', the name in the copied manifest)
    colors_db.sql("DROP MODEL cm_copy")
    assert colors_db.sql("SELECT count(*) FROM pixql_models() WHERE name = 'cm'").fetchone() == (1,)
    # a folder no statement can name was listed 'ok' ("model 'Upper' does not exist; did you mean Upper?")
    for folder, rename in (("Upper", "to upper"), ("bad-name", "to a name of letters, digits and underscores")):
        shutil.copytree(root / "cm", root / folder)
        status = colors_db.sql(f"SELECT status FROM pixql_models() WHERE name = '{folder}'").fetchone()[0]
        assert status.startswith("broken: its folder's name is no model's") and status.endswith(rename), status
    with pytest.raises(CatalogError) as info:  # (it said "model 'Upper' does not exist; did you mean Upper?")
        colors_db.sql("PREDICT USING Upper AS SELECT * FROM colors")
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("script", [None, 42, b"SELECT 1", ["SELECT 1"]])
def test_sql_with_a_non_string_names_the_argument(script):
    with pixql.connect(progress=False) as db, pytest.raises(ArgumentError, match="sql\\(\\): the script must be a str"):
        db.sql(script)


@pytest.mark.parametrize("kwargs, name", [({"wait": "abc"}, "wait"), ({"wait": -1}, "wait"),
                                          ({"read_only": "yes"}, "read_only"), ({"database": 3}, "database")])
def test_connect_with_bad_arguments_names_them(kwargs, name):
    with pytest.raises(ArgumentError, match=f"connect\\(\\): {name} must be"):
        pixql.connect(**kwargs)
    assert issubclass(ArgumentError, TypeError)
    with pytest.raises(ArgumentError, match="read_only=True needs a database file"):
        pixql.connect(read_only=True)


def test_build_without_validation_rows_leaves_the_validation_metric_empty(colors_db):
    result = colors_db.sql(SIMPLE.format(name="nv", options="epochs=1, batch_size=8", query="SELECT * FROM colors"))
    assert pd.isna(result.df().best_validation_metric[0])
    assert any("no validation rows" in m and "train accuracy" in m for m in result.messages)


def test_linear_mode_stops_when_the_head_has_converged(colors_db):
    built = colors_db.sql("BUILD MODEL lin USING EfficientNet_Lite0 OPTIONS (train_mode='linear', epochs=5) "
                          "AS SELECT * FROM colors")
    out = built.df()
    history = colors_db.sql("DESCRIBE MODEL lin").info["manifest"]["history"]
    assert out.epochs[0] == len(history) < 5
    # the epochs asked for and the result row's differ: said (it looked as if epochs were ignored)
    assert any(f"L-BFGS converged after {len(history)} of the 5 epochs asked" in m for m in built.messages)
    losses = [h["train_loss"] for h in history]
    assert len(set(losses)) == len(losses)  # no point repeats the one before


def test_offline_weights_message_names_the_base_that_ships_its_weights(monkeypatch):
    from pixql.ml import weights
    from pixql.ml.bases import resolve_base

    monkeypatch.setattr(weights, "cached_hub_file", lambda arch: None)
    monkeypatch.setattr(weights, "hub_reachable", lambda: False)
    with pytest.raises(TrainingError, match="USING EfficientNet_Lite0, whose ImageNet weights ship with pixql"):
        weights.create_hub_pretrained(resolve_base("ConvNeXt_Tiny"), 2)


# -- a newcomer's tutorial -------------------------------------------------------------------------
def test_the_tutorial_script_exists_and_names_its_data_folder():
    text = (REPO / "examples" / "tutorial.sql").read_text()
    assert "{data}" in text and "BUILD MODEL" in text and "PREDICT" in text


def test_the_cli_set_option_interpolates_values_as_literals(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "v.duckdb"), "--format", "csv", "--set", "n=x'; SELECT 1; --",
                                      "-c", "SELECT {n} AS v, '{n}' AS w"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert pd.read_csv(io.StringIO(result.stdout)).iloc[0].tolist() == ["x'; SELECT 1; --"] * 2
    result = CliRunner().invoke(cli, ["--set", "no-name", "-c", "SELECT 1"])
    assert result.exit_code == 2 and "NAME=VALUE" in result.stderr
    # numbers and truth values are such in SQL code (options take them), and as typed in quotes
    sets = ["--set", "n=6", "--set", "rate=0.001", "--set", "small=1e-3", "--set", "yes=true", "--set", "no=False",
            "--set", "word=truthy"]
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "v.duckdb"), "--format", "csv", *sets, "-c",
                                      "SELECT typeof({n}) AS a, {rate} * 1000 AS b, {small} * 1000 AS c, typeof({yes}) "
                                      "AS d, NOT {no} AS e, '{rate}|{yes}|{no}' AS f, {word} AS g"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert pd.read_csv(io.StringIO(result.stdout), dtype=str).iloc[0].tolist() == [
        "INTEGER", "1.000", "1.0", "BOOLEAN", "True", "0.001|true|False", "truthy"]
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "v.duckdb"), "--set", "yes=true", "--set", "v=0.5", "-c",
                                      "COPY t OPTIONS (overwrite={yes}) FROM 'nowhere.csv'"])
    assert result.exit_code == 1 and "must be true/false" not in result.stderr and "nowhere.csv" in result.stderr



# -- fuzz: option values holding SQL never run more than the one query they name -------------------
_FRAGMENTS = ["SELECT * FROM colors", "SELECT 1", "colors", "keep", ";", "; ", "DROP TABLE keep", "DELETE FROM keep",
              "INSERT INTO keep VALUES (9)", "'", '"', "--", "/*", "*/", "(", ")", " UNION ALL ", "WITH x AS (",
              "CREATE TABLE boom AS SELECT 1", "\n", " ", "$$", "UPDATE keep SET x = 0", "RETURNING *"]


@pytest.fixture(scope="module")
def fuzz_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    db = pixql.connect(str(folder / "f.duckdb"), progress=False)
    rows = make_rgb_images(folder / "rgb", per_class=2)
    db.duckdb.register("r", pd.DataFrame(rows, columns=["image", "label"]))
    db.duckdb.execute("CREATE TABLE colors AS SELECT * FROM r; CREATE TABLE keep AS SELECT 1 AS x")
    yield db
    db.close()


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(parts=st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=8))
def test_fuzz_validation_option_values_never_change_the_database(fuzz_db, parts):
    value = "".join(parts)
    before = snapshot(fuzz_db)
    literal = "'" + value.replace("'", "''") + "'"
    # the training rows' images do not exist: a query that passes the check stops at the first image
    statement = SIMPLE.format(name="fz", options=f"validation={literal}, batch_size=2",
                              query="SELECT '/nonexistent/a.png' AS image, 'red' AS label "
                                    "UNION ALL SELECT '/nonexistent/b.png', 'blue'")
    with pytest.raises((OptionError, DataError, pixql.ParseError)):
        fuzz_db.sql(statement)
    assert snapshot(fuzz_db) == before


# -- found in review: the same promises, from other directions -------------------------------------
def test_an_option_query_cannot_smuggle_a_pixql_statement(colors_db):
    db = colors_db
    db.sql("CREATE TABLE keep AS SELECT 1 AS x")
    before = snapshot(db)
    value = "SELECT * FROM (PREDICT USING imagenet_classifier AS SELECT 'x.png' AS image; DROP TABLE keep)"
    with pytest.raises(OptionError, match="cannot hold a pixql statement"):
        db.sql(SIMPLE.format(name="v", options="validation='" + value.replace("'", "''") + "'",
                             query="SELECT * FROM colors"))
    assert snapshot(db) == before


def test_interpolation_knows_nested_block_comments():
    from pixql.interpolation import expand
    from pixql.sql import parse_script

    script = expand("/* a /* b */ it's */ SELECT * FROM t WHERE a = {v}", {"v": "1; DROP TABLE x"})
    assert len(parse_script(script)) == 1 and script.endswith("'1; DROP TABLE x'")


def test_a_script_run_without_its_set_value_says_which(tmp_path, monkeypatch):
    """The tutorial run without --set data=...: 'file or folder not found: .../{data}/...' alone."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "v.duckdb"), "-c",
                                      "COPY t FROM '{data}/photos.csv'"])
    assert result.exit_code == 1
    assert "file or folder not found" in result.stderr and \
        "{data} in it was not filled: pixql --set data=VALUE gives it a value (in a notebook, a Python variable data)" \
        in result.stderr


def test_the_cli_set_values_are_names_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "v.duckdb"), "--format", "csv", "--set", "n=ab",
                                      "-c", "SELECT '{n.upper()}' AS x, '{n}' AS y"], catch_exceptions=False)
    assert result.stdout == "x,y\n{n.upper()},ab\n"  # no Python ran
    # `$n` is DuckDB's in a script (a prepared statement's parameter): --set filled it too
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "v.duckdb"), "--format", "csv", "--set", "n=7", "-c",
                                      "PREPARE p AS SELECT $n::INT + 1 AS v; EXECUTE p(n := 1)"], catch_exceptions=False)
    assert result.exit_code == 0 and result.stdout == "v\n2\n", result.stderr


def test_an_earlier_predict_error_does_not_replace_a_later_sql_error(colors_db):
    import duckdb

    with pytest.raises(CatalogError):
        colors_db.sql("SELECT predict('nosuch', image) FROM colors").fetchall()
    with pytest.raises(duckdb.Error):  # DuckDB's own connection: the UDF's error is left pending
        colors_db.duckdb.sql("SELECT predict('nosuch', image) FROM colors").fetchall()
    with pytest.raises(SqlError, match="missing_table"):
        colors_db.sql("SELECT * FROM missing_table")


@pytest.mark.parametrize("options, message", [
    ("learning_rate=0", "must be greater than 0, got 0"),
    ("validation=1.5", "at least 0 and less than 1, or a query or a table name, got 1.5"),
    ("batch_size=0", "must be at least 1, got 0"),
])
def test_option_bounds_say_what_is_allowed(colors_db, options, message):
    with pytest.raises(OptionError, match=message):
        colors_db.sql(SIMPLE.format(name="b", options=options, query="SELECT * FROM colors"))


def test_fit_with_a_class_the_model_does_not_know_names_it(colors_db):
    colors_db.sql("CREATE TABLE more AS SELECT image, 'purple' AS label FROM colors")
    with pytest.raises(DataError, match=r"row 1 of the query has the label purple, which is not among the classes "
                                        r"of 'cm' \(blue, green, red\); 1 label\(s\) in all are not: purple\. FIT "
                                        "MODEL keeps its model's classes") as err:
        colors_db.sql("FIT MODEL cm2 USING cm AS SELECT * FROM more")
    assert err.value.row == 1
    with pytest.raises(DataError, match="row 26 of the query has the label purple") as err:  # after a NULL label
        colors_db.sql("FIT MODEL cm2 USING cm AS SELECT image, label FROM (SELECT *, 0 AS o FROM colors UNION ALL "
                      "(SELECT image, NULL, 1 FROM more LIMIT 1) UNION ALL (SELECT image, label, 2 FROM more LIMIT 1)) "
                      "ORDER BY o")
    assert err.value.row == 26
    with pytest.raises(DataError, match=r"BUILD MODEL a multi-label one \(OPTIONS \(multi_label=true\)\)"):
        colors_db.sql("FIT MODEL cm2 USING cm AS SELECT image, [label] AS label FROM colors")
    assert not colors_db.engine.store.exists("cm2")


def test_a_manifest_that_says_multi_label_true_is_multi_label():
    from pixql.tasks import task_of

    assert task_of({"multi_label": True}).name == "multi_label"
    assert task_of({"task": "multi-label"}).name == "multi_label" and task_of({}).name == "classification"
