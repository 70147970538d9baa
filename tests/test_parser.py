"""The SQL front end: tokenizer, script splitting, pixql statements, passthrough."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from pixql.errors import ParseError
from pixql.sql import (
    BuildModel, Copy, CreateTableAs, DescribeModel, DropModel, Evaluate, FitModel, Predict,
    PrintImage, ShowBaseModels, ShowModels, Sql, Statement, nested_statements, parse, parse_script, split_script,
)
from pixql.sql.tokens import IDENT, NUMBER, PARAM, PUNCT, QIDENT, STRING, tokenize


def one(text):
    (stmt,) = parse_script(text)
    return stmt


def error(script):
    with pytest.raises(ParseError) as info:
        parse_script(script)
    return info.value


# -- tokenizer ----------------------------------------------------------------

def test_token_kinds_values_and_positions():
    toks = tokenize("SELECT \"a\"\"b\", 'it''s', 1.5e-3, .5, 42, $1, $p, x::INT\n  <> =>")
    got = [(t.kind, t.value, t.line, t.col) for t in toks]
    assert got == [
        (IDENT, "SELECT", 1, 1), (QIDENT, 'a"b', 1, 8), (PUNCT, ",", 1, 14),
        (STRING, "it's", 1, 16), (PUNCT, ",", 1, 23), (NUMBER, "1.5e-3", 1, 25),
        (PUNCT, ",", 1, 31), (NUMBER, ".5", 1, 33), (PUNCT, ",", 1, 35), (NUMBER, "42", 1, 37),
        (PUNCT, ",", 1, 39), (PARAM, "$1", 1, 41), (PUNCT, ",", 1, 43), (PARAM, "$p", 1, 45),
        (PUNCT, ",", 1, 47), (IDENT, "x", 1, 49), (PUNCT, "::", 1, 50), (IDENT, "INT", 1, 52),
        (PUNCT, "<>", 2, 3), (PUNCT, "=>", 2, 6),
    ]


def test_token_offsets_slice_the_source():
    script = "a /* c */ 'x' -- d\n\"y\" $$z$$ 3"
    for t in tokenize(script):
        assert script[t.start:t.end] in ("a", "'x'", '"y"', "$$z$$", "3")


def test_comments_are_skipped_and_nest():
    toks = tokenize("a -- one ; two\n/* x /* y ; */ z; */ b")
    assert [t.value for t in toks] == ["a", "b"]
    assert (toks[1].line, toks[1].col) == (2, 22)


def test_dollar_quotes_and_escape_strings():
    toks = tokenize("$$a;'b$$ $tag$x$$;y$tag$ E'a\\'b;' e'\\n'")
    assert [(t.kind, t.value) for t in toks] == [
        (STRING, "a;'b"), (STRING, "x$$;y"), (STRING, "a'b;"), (STRING, "\n")]


def test_identifiers_may_contain_dollar_and_unicode():
    assert [t.value for t in tokenize("a$b café _x1")] == ["a$b", "café", "_x1"]


def test_crlf_counts_as_one_line_break():
    toks = tokenize("a\r\nb\rc\nd")
    assert [(t.line, t.col) for t in toks] == [(1, 1), (2, 1), (3, 1), (4, 1)]


def test_any_other_character_is_punctuation():
    assert [t.value for t in tokenize("@ # ? ~ \\ ` {")] == list("@#?~\\`{")


@pytest.mark.parametrize("script, what, line, col", [
    ("SELECT 'abc", "string", 1, 8),
    ("SELECT 1;\n  SELECT \"abc", "quoted identifier", 2, 10),
    ("SELECT 1 /* never\nclosed", "comment", 1, 10),
    ("SELECT /* /* */", "comment", 1, 8),
    ("x\n\n $q$ abc $q", "dollar-quoted string", 3, 2),
    ("SELECT E'abc\\'", "string", 1, 8),
    ("SELECT 'it''s", "string", 1, 8),
])
def test_unterminated_raises_where_it_began(script, what, line, col):
    err = error(script)
    assert err.message == f"unterminated {what}"
    assert (err.line, err.col) == (line, col)
    assert err.statement == script


@pytest.mark.parametrize("script, keyword, line", [
    ("SELECT 1;\n\nPREDICT USING m AS SELECT 'x.jpg AS image", "PREDICT", 3),
    ("BUILD MODEL m /* not closed", "BUILD MODEL", 1),
    ("SHOW BASE MODELS 'x", "SHOW BASE MODELS", 1),
    ("SELECT 'x; PREDICT USING m AS SELECT 1", None, None),  # (the string holds the PREDICT)
])
def test_unterminated_in_a_pixql_statement_names_it(script, keyword, line):
    """As the parser's own errors do: the splitter fails before statements exist, so the
    statement an open quote is in is read from the words after the last `;`."""
    with pytest.raises(ParseError) as info:
        parse_script(script)
    assert (info.value.keyword, info.value.statement_line) == (keyword, line)


# -- splitting ----------------------------------------------------------------

def test_split_script_positions_and_texts():
    script = "SELECT 1;\n  SELECT 2 ;;\n\n-- only a comment\n;\nSELECT\n 3"
    assert split_script(script) == [("SELECT 1", 1, 1), ("SELECT 2", 2, 3), ("SELECT\n 3", 6, 1)]


def test_split_ignores_semicolons_in_strings_identifiers_comments_dollars():
    script = ("SELECT 'a;b', \"c;d\" -- e;f\n; SELECT /* ; */ $$g;h$$; "
              "SELECT $t$;$t$; SELECT E'\\';'")
    assert [t for t, _, _ in split_script(script)] == [
        "SELECT 'a;b', \"c;d\"", "SELECT /* ; */ $$g;h$$", "SELECT $t$;$t$", "SELECT E'\\';'"]


def test_split_drops_empty_statements():
    assert split_script("") == []
    assert split_script(" ; ;\n -- x\n /* y */ ;") == []
    assert parse_script(";;") == []


def test_statement_text_excludes_surrounding_comments():
    (stmt,) = parse_script("-- train it\n  /* note */ SHOW MODELS -- done\n;")
    assert isinstance(stmt, ShowModels)
    assert (stmt.text, stmt.line, stmt.col) == ("SHOW MODELS", 2, 14)


# -- the tutorial ---------------------------------------------------------------

TUTORIAL = """COPY cat_and_dog_train OPTIONS (overwrite=True) FROM "data/cat_and_dog_train.csv";
BUILD MODEL my_image_classifier USING ConvNeXt_Tiny
  OPTIONS (image_col='image', label_col='label', epochs=1) AS SELECT * FROM cat_and_dog_train;
PREDICT USING my_image_classifier AS SELECT * FROM cat_and_dog_test;
PRINT IMAGE AS SELECT image FROM cat_and_dog_test LIMIT 5;
"""


def test_tutorial_script():
    copy, build, predict, show = parse_script(TUTORIAL)
    assert copy == Copy(table="cat_and_dog_train", source="data/cat_and_dog_train.csv",
                        options={"overwrite": True}, with_options=True)
    assert build == BuildModel(name="my_image_classifier", base="ConvNeXt_Tiny",
                               query="SELECT * FROM cat_and_dog_train",
                               options={"image_col": "image", "label_col": "label", "epochs": 1})
    assert predict == Predict(model="my_image_classifier", query="SELECT * FROM cat_and_dog_test")
    assert show == PrintImage(query="SELECT image FROM cat_and_dog_test LIMIT 5")
    assert [(s.line, s.col) for s in (copy, build, predict, show)] == [(1, 1), (2, 1), (4, 1), (5, 1)]
    assert build.text == TUTORIAL.split(";\n")[1]
    assert show.text == "PRINT IMAGE AS SELECT image FROM cat_and_dog_test LIMIT 5"


# -- COPY -----------------------------------------------------------------------

@pytest.mark.parametrize("text, table, source", [
    ("COPY t FROM 'a.csv'", "t", "a.csv"),
    ('COPY t FROM "data/x.csv"', "t", "data/x.csv"),
    ("copy T from 'it''s.csv'", "T", "it's.csv"),
    ("COPY main.photos FROM 'imgs/'", "main.photos", "imgs/"),
    ('COPY "My Photos" FROM \'imgs/\'', '"My Photos"', "imgs/"),
    ('COPY s."t" FROM $$x;y.csv$$', 's."t"', "x;y.csv"),
])
def test_copy(text, table, source):
    stmt = one(text)
    assert stmt == Copy(table=table, source=source)
    assert stmt.text == text


def test_copy_with_options():
    stmt = one("Copy photos Options (Overwrite=TRUE, if_exists='replace', image_col=path) From 'p.parquet'")
    assert stmt == Copy(table="photos", source="p.parquet",
                        options={"overwrite": True, "if_exists": "replace", "image_col": "path"}, with_options=True)
    # OPTIONS () written: pixql's COPY (into a table that exists DuckDB's own would fail to parse it)
    assert one("COPY photos OPTIONS () FROM 'p.csv'") == Copy(table="photos", source="p.csv", with_options=True)


@pytest.mark.parametrize("text", [
    "COPY t TO 'out.parquet'",
    "COPY t TO 'out.csv' (HEADER, DELIMITER ',')",
    "COPY (SELECT * FROM t) TO 'out.parquet' (FORMAT parquet)",
    "COPY t FROM 'f.csv' (FORMAT csv, HEADER true)",
    "COPY t FROM 'f.csv' (AUTO_DETECT true)",
    "COPY t FROM 'f.csv' WITH (FORMAT csv)",
    "COPY t FROM 'f.csv' DELIMITER ','",
    "COPY t(col1, col2) FROM 'f.csv'",
    "COPY t (col1) FROM 'f.csv'",
    "COPY FROM DATABASE db1 TO db2",
    "COPY FROM DATABASE db1 TO db2 (SCHEMA)",
    "COPY t FROM",
    "COPY t",
    "COPY",
    "COPY 'x'",
    "COPY t FROM t2",
    "copy t to 'x.json'",
])
def test_duckdb_copy_passes_through(text):
    assert one(text) == Sql(sql=text)


@pytest.mark.parametrize("text, message, col", [
    ("COPY t OPTIONS (a=1)", "expected FROM after the OPTIONS of COPY, found end of statement", 21),
    ("COPY t OPTIONS (a=1) TO 'x'", "expected FROM after the OPTIONS of COPY, found 'TO'", 22),
    ("COPY t OPTIONS (a=1) FROM data.csv", "expected a quoted path after FROM, found 'data'", 27),
    ("COPY t OPTIONS (a=1) FROM 'f' (FORMAT csv)", "expected end of COPY after the path, found '('", 31),
    ("COPY t OPTIONS a=1 FROM 'f'", "expected '(' after OPTIONS, found 'a'", 16),
])
def test_copy_errors_once_options_are_given(text, message, col):
    err = error(text)
    assert (err.message, err.line, err.col) == (message, 1, col)


# -- BUILD MODEL ----------------------------------------------------------------

@pytest.mark.parametrize("using, base", [
    ("timm:resnet50.a1_in1k", "timm:resnet50.a1_in1k"),
    ("resnet50.a1_in1k", "resnet50.a1_in1k"),
    ("ConvNeXt_Tiny", "ConvNeXt_Tiny"),
    ("efficientnet_lite0", "efficientnet_lite0"),
    ("hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
     "hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"),
    ("'timm:convnext_tiny.fb_in22k'", "timm:convnext_tiny.fb_in22k"),
    ('"ResNet50"', "ResNet50"),
    ("vgg16.tv_in1k", "vgg16.tv_in1k"),
])
def test_build_model_bases_keep_their_spelling(using, base):
    stmt = one(f"BUILD MODEL cats USING {using} AS SELECT * FROM t")
    assert stmt == BuildModel(name="cats", base=base, query="SELECT * FROM t")


def test_build_model_without_using_or_options():
    assert one("build model Cats as select 1") == BuildModel(name="Cats", base=None, query="select 1")


def test_build_model_with_options_and_no_using():
    stmt = one("BUILD MODEL m OPTIONS (epochs=3) AS SELECT 1")
    assert stmt == BuildModel(name="m", base=None, query="SELECT 1", options={"epochs": 3})


def test_build_model_quoted_name_keeps_spelling():
    assert one('BUILD MODEL "My ""Cat"" Model" USING x AS t').name == 'My "Cat" Model'


def test_query_is_a_verbatim_slice():
    script = ("BuiLD   Model m USING r18 OPTIONS(epochs=1)   AS\n"
              "  -- training rows\n  SELECT *  FROM t\n  WHERE x = 'a;b' /* keep */\n  LIMIT 3  -- trailing\n;")
    stmt = one(script)
    assert stmt.query == "SELECT *  FROM t\n  WHERE x = 'a;b' /* keep */\n  LIMIT 3"
    assert stmt.query in script
    assert stmt.text == script[:script.index("  -- trailing")]


def test_query_starting_with_parenthesis_or_with():
    assert one("PREDICT USING m AS (SELECT 1) UNION ALL (SELECT 2)").query == "(SELECT 1) UNION ALL (SELECT 2)"
    assert one("PREDICT USING m AS WITH a AS (SELECT 1) SELECT * FROM a").query == \
        "WITH a AS (SELECT 1) SELECT * FROM a"


@pytest.mark.parametrize("text, message, col", [
    ("BUILD MODEL m USING x SELECT 1",
     "expected OPTIONS or AS before the query of BUILD MODEL, found 'SELECT'", 23),
    ("BUILD MODEL m SELECT 1",
     "expected USING, OPTIONS or AS before the query of BUILD MODEL, found 'SELECT'", 15),
    ("BUILD MODEL m USING x OPTIONS (a=1) SELECT 1",
     "expected AS before the query of BUILD MODEL, found 'SELECT'", 37),
    ("BUILD MODEL m OPTIONS (a=1) USING x AS SELECT 1",
     "expected AS before the query of BUILD MODEL, found 'USING'", 29),
    ("BUILD MODEL m USING x AS", "expected a query after AS in BUILD MODEL, found end of statement", 25),
    ("BUILD MODEL m USING x", "expected OPTIONS or AS before the query of BUILD MODEL, found end of statement", 22),
    ("BUILD MODEL AS SELECT 1", "expected a model name after BUILD MODEL, found 'AS'", 13),
    ("BUILD MODEL", "expected a model name after BUILD MODEL, found end of statement", 12),
    ("BUILD MODEL 'm' AS SELECT 1", "expected a model name after BUILD MODEL, found ''m''", 13),
    ("BUILD MODEL m USING AS SELECT 1", "expected a base model name after USING, found 'AS'", 21),
    ("BUILD MODEL m USING timm: resnet AS SELECT 1",
     "expected the rest of the base model name after 'timm:', found 'resnet'", 27),
    ("BUILD MODEL m USING x. AS t", "expected the rest of the base model name after 'x.', found 'AS'", 24),
    ("BUILD TABLE m AS SELECT 1", "expected MODEL after BUILD, found 'TABLE'", 7),
    ("BUILD", "expected MODEL after BUILD, found end of statement", 6),
])
def test_build_model_errors(text, message, col):
    err = error(text)
    assert (err.message, err.line, err.col) == (message, 1, col)


# -- FIT MODEL / PREDICT / EVALUATE / PRINT IMAGE -------------------------------

def test_fit_model():
    stmt = one("fit model cats_v2 using cats options (epochs=2) as select * from more")
    assert stmt == FitModel(name="cats_v2", source_model="cats", query="select * from more",
                            options={"epochs": 2})


@pytest.mark.parametrize("text, message, col", [
    ("FIT MODEL b AS SELECT 1", "expected USING after the model name of FIT MODEL, found 'AS'", 13),
    ("FIT MODEL b USING AS SELECT 1", "expected a model name after USING, found 'AS'", 19),
    ("FIT MODEL b USING a SELECT 1", "expected OPTIONS or AS before the query of FIT MODEL, found 'SELECT'", 21),
    ("FIT b USING a AS SELECT 1", "expected MODEL after FIT, found 'b'", 5),
])
def test_fit_model_errors(text, message, col):
    err = error(text)
    assert (err.message, err.line, err.col) == (message, 1, col)


@pytest.mark.parametrize("cls, word", [(Predict, "PREDICT"), (Evaluate, "EVALUATE")])
def test_predict_and_evaluate(cls, word):
    stmt = one(f"{word.lower()} Using \"Cats\" OPTIONS (top_k=3, output='errors') As SELECT image FROM t")
    assert stmt == cls(model="Cats", query="SELECT image FROM t", options={"top_k": 3, "output": "errors"})
    assert stmt.keyword == word


@pytest.mark.parametrize("text, message, col", [
    ("PREDICT m AS SELECT 1", "expected USING after PREDICT, found 'm'", 9),
    ("PREDICT", "expected USING after PREDICT, found end of statement", 8),
    ("EVALUATE USING AS SELECT 1", "expected a model name after EVALUATE USING, found 'AS'", 16),
    ("PREDICT USING m SELECT 1", "expected OPTIONS or AS before the query of PREDICT, found 'SELECT'", 17),
    ("EVALUATE USING m OPTIONS () FROM t", "expected AS before the query of EVALUATE, found 'FROM'", 29),
    ("PREDICT USING m.x AS SELECT 1", "expected OPTIONS or AS before the query of PREDICT, found '.'", 16),
])
def test_predict_evaluate_errors(text, message, col):
    err = error(text)
    assert (err.message, err.line, err.col) == (message, 1, col)


def test_print_image():
    assert one("PRINT IMAGE AS SELECT image FROM t") == PrintImage(query="SELECT image FROM t")
    stmt = one("print image options (limit=4, size=120) as from t")
    assert stmt == PrintImage(query="from t", options={"limit": 4, "size": 120})
    err = error("PRINT IMAGE SELECT 1")
    assert (err.message, err.col) == ("expected OPTIONS or AS before the query of PRINT IMAGE, found 'SELECT'", 13)
    err = error("PRINT IMAGES AS SELECT 1")
    assert (err.message, err.col) == ("expected IMAGE after PRINT, found 'IMAGES'", 7)


# -- SHOW / DESCRIBE / DROP / DELETE ------------------------------------------------

def test_show_models_and_base_models():
    assert one("SHOW MODELS") == ShowModels()
    assert one("show   models") == ShowModels()
    assert one("Show Base Models") == ShowBaseModels()
    err = error("SHOW MODELS LIKE 'x'")
    assert (err.message, err.col) == ("expected end of SHOW MODELS, found 'LIKE'", 13)


def test_describe_drop_delete_model():
    assert one("DESCRIBE MODEL cats") == DescribeModel(name="cats")
    assert one('describe model "Cats"') == DescribeModel(name="Cats")
    assert one("DROP MODEL cats") == DropModel(name="cats")
    assert one("drop model if exists cats") == DropModel(name="cats", if_exists=True)
    assert one("DELETE MODEL cats") == DropModel(name="cats")
    assert one("Delete Model If Exists cats") == DropModel(name="cats", if_exists=True)
    assert one("DROP MODEL if") == DropModel(name="if")


@pytest.mark.parametrize("text, message, col", [
    ("DROP MODEL", "expected a model name after DROP MODEL, found end of statement", 11),
    ("DROP MODEL IF EXISTS", "expected a model name after DROP MODEL IF EXISTS, found end of statement", 21),
    ("DELETE MODEL 3", "expected a model name after DELETE MODEL, found '3'", 14),
    ("DROP MODEL a b", "expected end of DROP MODEL, found 'b'", 14),
    ("DROP MODEL a, b", "expected end of DROP MODEL, found ','", 13),
    ("DESCRIBE MODEL a b", "expected end of DESCRIBE MODEL, found 'b'", 18),
    ("DESCRIBE MODEL 'a'", "expected a model name after DESCRIBE MODEL, found ''a''", 16),
])
def test_model_statement_errors(text, message, col):
    err = error(text)
    assert (err.message, err.line, err.col) == (message, 1, col)


# -- CREATE TABLE ... AS <pixql statement> -------------------------------------------

def test_create_table_as_predict():
    stmt = one("CREATE TABLE preds AS PREDICT USING cats AS SELECT * FROM t")
    inner = Predict(model="cats", query="SELECT * FROM t")
    assert stmt == CreateTableAs(table="preds", statement=inner)
    assert (stmt.statement.text, stmt.statement.line, stmt.statement.col) == \
        ("PREDICT USING cats AS SELECT * FROM t", 1, 23)


def test_create_or_replace_table_as_evaluate_and_show_models():
    script = "create or replace table main.report as\n  EVALUATE USING cats AS SELECT * FROM t;\n" \
             "CREATE TABLE IF NOT EXISTS \"m\" AS SHOW MODELS;\nCREATE TABLE b AS SHOW BASE MODELS"
    a, b, c = parse_script(script)
    assert a == CreateTableAs(table="main.report", statement=Evaluate(model="cats", query="SELECT * FROM t"),
                              or_replace=True)
    assert (a.statement.line, a.statement.col) == (2, 3)
    assert b == CreateTableAs(table='"m"', statement=ShowModels(), if_not_exists=True)
    assert c == CreateTableAs(table="b", statement=ShowBaseModels())
    assert a.text == "create or replace table main.report as\n  EVALUATE USING cats AS SELECT * FROM t"


def test_create_temp_table_as():
    assert one("CREATE TEMP TABLE t AS SHOW MODELS") == CreateTableAs(table="t", statement=ShowModels(), temporary=True)
    assert one("create or replace temporary table t as SHOW MODELS") == \
        CreateTableAs(table="t", statement=ShowModels(), or_replace=True, temporary=True)
    assert one("CREATE TEMP TABLE IF NOT EXISTS t AS SHOW MODELS") == \
        CreateTableAs(table="t", statement=ShowModels(), if_not_exists=True, temporary=True)


def test_a_pixql_statement_as_the_query_is_read_as_its_rows():
    for script, where in (("PRINT IMAGE AS\n  EVALUATE USING m OPTIONS (output='errors') AS SELECT * FROM t", (2, 3)),
                          ("PRINT IMAGE OPTIONS (limit=2) AS EVALUATE USING m AS SELECT * FROM t", (1, 34)),
                          ("SEGMENT AS EVALUATE USING m AS SELECT * FROM t", (1, 12))):
        stmt = one(script)
        assert stmt.query.startswith("FROM (") and stmt.query.endswith("AS SELECT * FROM t)")
        ((_, _, inner),) = nested_statements(stmt.query, stmt.query_line, stmt.query_col)
        assert isinstance(inner, Evaluate) and (inner.line, inner.col) == where  # where EVALUATE is
    assert one("PREDICT USING a AS SELECT * FROM predict").query == "SELECT * FROM predict"  # a table's name


def test_create_table_as_describe_model():
    assert one("CREATE TABLE d AS DESCRIBE MODEL cats") == \
        CreateTableAs(table="d", statement=DescribeModel(name="cats"))


@pytest.mark.parametrize("text", [
    "CREATE TABLE t AS SELECT * FROM x",
    "CREATE OR REPLACE TABLE t AS SELECT 1",
    "CREATE TABLE t AS (SELECT 1)",
    "CREATE TABLE t AS FROM x",
    "CREATE TABLE t AS WITH a AS (SELECT 1) SELECT * FROM a",
    "CREATE TABLE t (a INTEGER, b VARCHAR)",
    "CREATE TABLE t(a) AS SELECT 1",
    "CREATE TEMP TABLE t AS SELECT 1",
    "CREATE VIEW v AS SELECT 1",
    "CREATE MACRO f(x) AS x + 1",
    "CREATE SCHEMA s",
    "CREATE TABLE t AS DESCRIBE x",
    "CREATE TABLE t AS SHOW TABLES",
    "CREATE TABLE t AS",
    "CREATE TABLE",
    "CREATE",
    "CREATE TABLE t AS CREATE TABLE u AS SHOW MODELS",
])
def test_create_table_passthrough(text):
    assert one(text) == Sql(sql=text)


def test_create_table_as_errors():
    err = error("CREATE TABLE t AS PREDICT USING m SELECT 1")
    assert (err.message, err.col) == ("expected OPTIONS or AS before the query of PREDICT, found 'SELECT'", 35)
    err = error("CREATE OR REPLACE TABLE IF NOT EXISTS t AS SHOW MODELS")
    assert (err.message, err.col) == ("OR REPLACE and IF NOT EXISTS cannot be combined", 25)
    err = error("CREATE TABLE t AS SHOW MODELS x")
    assert (err.message, err.col) == ("expected end of SHOW MODELS, found 'x'", 31)


# -- passthrough ------------------------------------------------------------------

PASSTHROUGH = [
    "SELECT 1",
    "select * from t where a = 'PREDICT USING m AS x'",
    "WITH a AS (SELECT 1) SELECT * FROM a",
    "FROM t",
    "SHOW TABLES",
    "SHOW ALL TABLES",
    "SHOW t",
    "SHOW models.t",
    'SHOW "models"',
    "SHOW BASE",
    "DESCRIBE t",
    "DESCRIBE SELECT 1",
    "DESCRIBE model",
    "DESCRIBE model.t",
    "DESCRIBE",
    "SUMMARIZE t",
    "DROP TABLE t",
    "DROP TABLE IF EXISTS t",
    "DROP VIEW v",
    "DROP",
    "DELETE FROM t WHERE x = 1",
    "DELETE",
    "ATTACH 'other.duckdb' AS other",
    "DETACH other",
    "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
    "INSERT INTO t SELECT * FROM u",
    "UPDATE t SET a = 1",
    "PRAGMA table_info('t')",
    "PRAGMA version",
    "SET threads = 4",
    "INSTALL httpfs",
    "LOAD httpfs",
    "EXPLAIN SELECT 1",
    "EXPLAIN PREDICT USING m AS SELECT 1",
    "BEGIN TRANSACTION",
    "COMMIT",
    "VACUUM",
    "CHECKPOINT",
    "EXPORT DATABASE 'dir'",
    "IMPORT DATABASE 'dir'",
    "PIVOT t ON a USING sum(b)",
    "SELECT $$a$$, E'\\n', $1, x::INT, [1, 2][1], {'a': 1}, a->>'b' FROM t",
    "VALUES (1), (2)",
    "USE other",
    "CALL duckdb_functions()",
    "(SELECT 1)",
    "SELECT predict('cats', image) AS animal FROM photos",
    "this is not sql at all @#!",
    '"PREDICT" USING m AS SELECT 1',
    "MODEL x",
]


@pytest.mark.parametrize("text", PASSTHROUGH)
def test_passthrough(text):
    stmt = one(text)
    assert stmt == Sql(sql=text)
    assert (stmt.text, stmt.line, stmt.col) == (text, 1, 1)
    assert stmt.keyword == "SQL"


def test_passthrough_script_keeps_text_verbatim():
    script = "SELECT 'a;b'  ,  \"c\"\n  FROM t ; INSERT INTO t VALUES ($$x;y$$)"
    a, b = parse_script(script)
    assert a == Sql(sql="SELECT 'a;b'  ,  \"c\"\n  FROM t")
    assert b == Sql(sql="INSERT INTO t VALUES ($$x;y$$)")
    assert (b.line, b.col) == (2, 12)


# -- OPTIONS values --------------------------------------------------------------------

@pytest.mark.parametrize("written, value", [
    ("true", True), ("TRUE", True), ("True", True), ("false", False), ("False", False),
    ("NULL", None), ("null", None),
    ("3", 3), ("0", 0), ("-3", -3), ("+3", 3), ("- 3", -3), ("1_000", 1000),
    ("0.1", 0.1), ("1.", 1.0), (".5", 0.5), ("-0.25", -0.25), ("1e-4", 1e-4), ("3E2", 300.0),
    ("2.5e+3", 2500.0), ("-1e-3", -1e-3),
    ("'adamw'", "adamw"), ('"adamw"', "adamw"), ("'it''s'", "it's"), ("''", ""), ("'true'", "true"),
    ("'3'", "3"), ("$$a,b)$$", "a,b)"),
    ("adamw", "adamw"), ("AdamW", "AdamW"), ("cuda:0", "cuda:0"), ("timm:resnet50.a1_in1k", "timm:resnet50.a1_in1k"),
    ("truex", "truex"), ("nullable", "nullable"),
    ("[1, 'a', 2.5, true, NULL]", [1, "a", 2.5, True, None]),
    ("('a', 'b')", ["a", "b"]), ("[]", []), ("()", []), ("[[1, 2], (3)]", [[1, 2], [3]]),
    ("['-']", ["-"]), ("[-1, -2.5]", [-1, -2.5]),
    ("(SELECT * FROM t WHERE x)", "SELECT * FROM t WHERE x"),
    ("( select a, (b) from t where c in (1, 2) )", "select a, (b) from t where c in (1, 2)"),
    ("(WITH a AS (SELECT 1) SELECT * FROM a)", "WITH a AS (SELECT 1) SELECT * FROM a"),
    ("(FROM t)", "FROM t"),
    ("(SELECT ')' AS p)", "SELECT ')' AS p"),
])
def test_option_values(written, value):
    stmt = one(f"PREDICT USING m OPTIONS (x={written}, after=1) AS SELECT 1")
    assert stmt.options == {"x": value, "after": 1}
    assert type(stmt.options["x"]) is type(value)


def test_option_names_are_lowercased_and_may_be_quoted():
    stmt = one('PRINT IMAGE OPTIONS (Image_Col=\'p\', "LIMIT"=2) AS SELECT 1')
    assert stmt.options == {"image_col": "p", "limit": 2}


def test_empty_options():
    assert one("PRINT IMAGE OPTIONS () AS SELECT 1").options == {}


def test_options_across_lines_with_comments():
    stmt = one("BUILD MODEL m USING r OPTIONS (\n  epochs = 2, -- a while\n  /* lr */ learning_rate=1e-3\n) AS t")
    assert stmt.options == {"epochs": 2, "learning_rate": 1e-3}


@pytest.mark.parametrize("options, message, col", [
    ("(epochs=1, EPOCHS=2)", "duplicate option 'epochs'", 36),
    ("(a 1)", "expected '=' after option 'a', found '1'", 28),
    ("(a=)", "expected a value for option 'a', found ')'", 28),
    ("(a=1,)", "expected an option name in the OPTIONS of PREDICT, found ')'", 30),
    ("(a=1 b=2)", "expected ',' or ')' after the value of option 'a', found 'b'", 30),
    ("(a=1", "expected ',' or ')' after the value of option 'a', found 'AS'", 30),
    ("('a'=1)", "expected an option name in the OPTIONS of PREDICT, found ''a''", 26),
    ("(1=1)", "expected an option name in the OPTIONS of PREDICT, found '1'", 26),
    ("(a=[1, 2)", "expected ',' or ']' in the list of option 'a', found ')'", 33),
    ("(a=(1, 2])", "expected ',' or ')' in the list of option 'a', found ']'", 33),
    ("(a=$1)", "expected a value for option 'a', found '$1'", 28),
    ("(a=*)", "expected a value for option 'a', found '*'", 28),
    ("(a=-x)", "expected a value for option 'a', found '-'", 28),
    ("(a=1__0)", "invalid number '1__0' for option 'a'", 28),
    ("(a=cuda:)", "expected the rest of the value of option 'a' after 'cuda:', found ')'", 33),
    ("(v=SELECT 1)", "expected ',' or ')' after the value of option 'v', found '1' "
                     "(put the query of option 'v' in parentheses)", 35),
    ("(a=1, b=2", "expected ',' or ')' after the value of option 'b', found 'AS'", 35),
])
def test_option_errors(options, message, col):
    err = error(f"PREDICT USING m OPTIONS {options} AS SELECT 1")
    assert (err.message, err.line, err.col) == (message, 1, col)


def test_option_errors_at_end_of_statement():
    err = error("PRINT IMAGE OPTIONS (a=1")
    assert (err.message, err.col) == ("expected ',' or ')' after the value of option 'a', found end of statement", 25)
    err = error("PRINT IMAGE OPTIONS (v=(SELECT 1")
    assert (err.message, err.col) == ("expected ')' to close the query of option 'v'", 24)
    err = error("PRINT IMAGE OPTIONS")
    assert (err.message, err.col) == ("expected '(' after OPTIONS, found end of statement", 20)


# -- error positions in scripts -----------------------------------------------------

def test_error_position_and_rendering_in_a_multiline_script():
    script = ("SELECT 1;\n"
              "-- now train\n"
              "BUILD MODEL cats USING resnet18\n"
              "  OPTIONS (epochs=2, epochs=3)\n"
              "  AS SELECT * FROM t;\n"
              "SELECT 2;")
    err = error(script)
    assert (err.line, err.col) == (4, 22)
    assert err.statement == script
    assert (err.keyword, err.statement_line) == ("BUILD MODEL", 3)  # the statement, as SPEC's errors name it
    assert str(err) == ("BUILD MODEL (line 3): Syntax error at line 4, column 22: duplicate option 'epochs'\n"
                        "    OPTIONS (epochs=2, epochs=3)\n"
                        "                       ^")


def test_a_syntax_error_names_the_innermost_statement():
    err = error("SELECT 1;\nCREATE TABLE p AS\n  PREDICT USING m OPTIONS (top_k=) AS SELECT 1")
    assert (err.keyword, err.statement_line, err.line) == ("PREDICT", 3, 3)
    assert str(err).startswith("PREDICT (line 3): Syntax error at line 3, column 34: expected a value for option 'top_k'")


def test_error_in_second_statement_on_same_line():
    err = error("SHOW MODELS; PREDICT USING m SELECT 1")
    assert (err.line, err.col) == (1, 30)
    assert str(err).endswith("\n  SHOW MODELS; PREDICT USING m SELECT 1\n" + " " * 31 + "^")


def test_missing_query_points_after_as_across_lines():
    err = error("SELECT 1;\n\nPREDICT USING m\n  AS   ;\nSELECT 2")
    assert (err.message, err.line, err.col) == ("expected a query after AS in PREDICT, found end of statement", 4, 5)


def test_error_with_crlf_line_endings():
    err = error("SELECT 1;\r\nDROP MODEL\r\n")
    assert (err.line, err.col) == (2, 11)
    assert "\n  DROP MODEL\n" in str(err)


def test_statement_positions_in_a_script():
    script = "  SHOW MODELS ;\n\tDROP MODEL a;  DESCRIBE MODEL b\n;\n\n   SELECT\n1"
    stmts = parse_script(script)
    assert [(type(s).__name__, s.text, s.line, s.col) for s in stmts] == [
        ("ShowModels", "SHOW MODELS", 1, 3),
        ("DropModel", "DROP MODEL a", 2, 2),
        ("DescribeModel", "DESCRIBE MODEL b", 2, 17),
        ("Sql", "SELECT\n1", 5, 4),
    ]


# -- parse() for one statement ---------------------------------------------------------

def test_parse_one_statement():
    assert parse("SHOW MODELS") == ShowModels()
    assert parse("SHOW MODELS;") == ShowModels()
    assert parse("  SELECT 1 ; ") == Sql(sql="SELECT 1")
    stmt = parse("PREDICT USING m AS SELECT 1", line=3, col=5)
    assert (stmt.line, stmt.col, stmt.text) == (3, 5, "PREDICT USING m AS SELECT 1")


def test_parse_errors_use_script_positions():
    with pytest.raises(ParseError) as info:
        parse("PREDICT USING m\n  SELECT 1", line=3, col=5)
    err = info.value
    assert (err.line, err.col) == (4, 3)
    assert str(err).endswith("\n    SELECT 1\n    ^")


def test_parse_rejects_empty_and_several_statements():
    with pytest.raises(ParseError, match="expected a statement, found nothing"):
        parse("  -- nothing\n")
    with pytest.raises(ParseError, match="found another starting with 'SELECT'") as info:
        parse("SELECT 1; SELECT 2")
    assert (info.value.line, info.value.col) == (1, 11)


def test_statements_are_frozen_and_compare_without_position():
    a, b = parse_script("SHOW MODELS;\nSHOW MODELS")
    assert a == b and (a.line, b.line) == (1, 2)
    with pytest.raises(AttributeError):
        a.line = 3


# -- properties ---------------------------------------------------------------------------

VALID = [
    TUTORIAL,
    "BUILD MODEL m USING timm:resnet50.a1_in1k OPTIONS (epochs=2, lr=-1e-3, v=(SELECT 1), l=[1,'a']) AS SELECT 1",
    "FIT MODEL b USING a OPTIONS (x=NULL) AS SELECT * FROM t",
    "EVALUATE USING m OPTIONS (output='errors') AS SELECT * FROM t WHERE a = 'x;y'",
    "CREATE OR REPLACE TABLE r AS PREDICT USING m AS SELECT 1",
    "DROP MODEL IF EXISTS m; DELETE MODEL \"n\"; DESCRIBE MODEL m; SHOW BASE MODELS",
    "COPY t FROM 'a.csv' (FORMAT csv); COPY t TO 'b'; COPY (SELECT 1) TO 'c'",
    "SELECT $$a$$ /* c */ -- d\n, E'\\'' FROM t",
]

# Characters that matter to the tokenizer, plus some that do not.
ALPHABET = "abcSELECTMODELUSINGOPTIONSAS '\"$;-/*()[],.=:+_0123456789eE\n\t\\\r@é"
KEYWORDS = ["BUILD", "MODEL", "FIT", "USING", "OPTIONS", "AS", "PREDICT", "EVALUATE", "PRINT", "IMAGE",
            "COPY", "FROM", "CREATE", "OR", "REPLACE", "TABLE", "IF", "NOT", "EXISTS", "SHOW", "MODELS",
            "BASE", "DESCRIBE", "DROP", "DELETE", "SELECT", "(", ")", "[", "]", ",", "=", ";", "'", '"',
            "$$", "/*", "*/", "--", "-", "1.5", "true", "NULL", "\n"]


def check(script):
    """parse_script either returns statements that point into the script, or raises ParseError."""
    try:
        stmts = parse_script(script)
    except ParseError as err:
        assert err.statement == script
        assert err.line >= 1 and err.col >= 1
        str(err)
        return
    lines = script.splitlines()
    texts = [t for t, _, _ in split_script(script)]
    assert [s.text for s in stmts] == texts
    for stmt in stmts:
        assert isinstance(stmt, Statement)
        assert lines[stmt.line - 1][stmt.col - 1:].startswith(stmt.text.splitlines()[0])
        if isinstance(stmt, Sql):
            assert stmt.sql == stmt.text


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(hs.text(alphabet=ALPHABET, max_size=80))
def test_random_text_only_parses_or_raises_parse_error(script):
    check(script)


@FAST
@given(hs.lists(hs.sampled_from(KEYWORDS + ["m", "t", "x.y", "timm:r50", "'p'", '"q"', "3"]), max_size=14),
       hs.sampled_from([" ", "", "\n"]))
def test_keyword_soup_only_parses_or_raises_parse_error(words, sep):
    check(sep.join(words))


@hs.composite
def mutated(draw):
    text = draw(hs.sampled_from(VALID))
    for _ in range(draw(hs.integers(1, 4))):
        i = draw(hs.integers(0, len(text)))
        op = draw(hs.sampled_from(["delete", "insert", "replace", "truncate", "swap"]))
        piece = draw(hs.sampled_from(KEYWORDS + list(ALPHABET)))
        if op == "delete":
            text = text[:i] + text[i + draw(hs.integers(1, 10)):]
        elif op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "replace":
            text = text[:i] + piece + text[i + len(piece):]
        elif op == "truncate":
            text = text[:i]
        else:
            j = draw(hs.integers(0, len(text)))
            i, j = min(i, j), max(i, j)
            text = text[j:] + text[i:j] + text[:i]
    return text


@FAST
@given(mutated())
def test_mutated_statements_only_parse_or_raise_parse_error(script):
    check(script)


@pytest.mark.parametrize("script", VALID)
def test_valid_samples_parse(script):
    stmts = parse_script(script)
    assert stmts and all(isinstance(s, Statement) for s in stmts)


# What the engine does with a parsed statement before any work: look for pixql statements
# nested in plain SQL (`FROM (EVALUATE ...)`), and check the options. Those two, fed random
# and mutated input, also only ever answer or raise pixql's own error.
@FAST
@given(mutated(), hs.sampled_from(["{}", "SELECT * FROM ({}) t", "SELECT 1 FROM (SELECT * FROM ({}))"]),
       hs.integers(1, 5), hs.integers(1, 5))
def test_nested_statements_and_options_only_answer_or_raise_pixql_errors(script, wrap, line, col):
    from pixql import options as opts
    from pixql.commands import SCHEMAS
    from pixql.errors import OptionError
    from pixql.sql import nested_statements

    text = wrap.format(script)
    try:
        for start, end, stmt in nested_statements(text, line=line, col=col):
            assert text[start] == "(" and text[end - 1] == ")" and isinstance(stmt, Statement)
    except ParseError as err:
        assert err.line >= line
    try:
        stmts = parse_script(script)
    except ParseError:
        return
    for stmt in stmts:
        if getattr(stmt, "options", None) is not None:
            try:
                opts.resolve(stmt.keyword, stmt.options, SCHEMAS.get(stmt.keyword, {}))
            except OptionError:
                pass


OPTION_VALUES = hs.recursive(hs.none() | hs.booleans() | hs.integers() | hs.floats() | hs.text(max_size=8),
                             lambda inner: hs.lists(inner, max_size=3), max_leaves=5)


@FAST
@given(hs.sampled_from(["COPY", "BUILD MODEL", "FIT MODEL", "PREDICT", "EVALUATE", "PRINT IMAGE"]),
       hs.dictionaries(hs.sampled_from(["epochs", "on_error", "image_col", "top_k", "validation", "overwrite",
                                        "threshold", "device", "max_epochs", "encoding"]) | hs.text(max_size=8),
                       OPTION_VALUES, max_size=4))
def test_any_option_values_resolve_or_raise_option_error(keyword, options):
    from pixql import options as opts
    from pixql.commands import SCHEMAS
    from pixql.errors import OptionError

    try:
        resolved, given = opts.resolve(keyword, options, SCHEMAS[keyword])
    except OptionError as err:
        assert keyword in str(err)
        return
    assert set(given) <= set(resolved)


# -- a syntax error inside a nested statement keeps its place (issue 15) ---------------------------
@pytest.mark.parametrize("script, line, text", [
    ("SELECT 1;\nSELECT *\n  FROM (PREDICT USING cm OPTIONS (x=) AS SELECT * FROM colors)", 3,
     "  FROM (PREDICT USING cm OPTIONS (x="),
    ("SELECT 1; SELECT * FROM (PREDICT USING cm OPTIONS (x=) AS SELECT 1)", 1,
     "SELECT 1; SELECT * FROM (PREDICT USING cm OPTIONS (x="),
    ("PREDICT USING cm AS\n  SELECT * FROM (EVALUATE USING cm OPTIONS (y=) AS SELECT * FROM colors)", 2,
     "  SELECT * FROM (EVALUATE USING cm OPTIONS (y="),
])
def test_a_nested_syntax_error_keeps_its_line_and_column(colors_db, script, line, text):
    with pytest.raises(ParseError) as info:
        colors_db.sql(script)
    assert (info.value.line, info.value.col) == (line, len(text) + 1)
    assert f"line {line}, column {len(text) + 1}" in str(info.value)


def test_split_finished_keeps_what_the_prompt_must_read_on_for():
    from pixql.sql.parser import split_finished

    assert split_finished("SELECT 3; SELECT") == ("SELECT 3;", " SELECT")
    assert split_finished("SELECT 3; -- a ; in a comment ends nothing") == ("SELECT 3;", "")
    assert split_finished("SELECT 'a;") == ("", "SELECT 'a;")  # an open string's `;`
    assert split_finished("SELECT 1; SELECT 'b;") == ("SELECT 1;", " SELECT 'b;")
    assert split_finished("SELECT 1; /* open; comment") == ("SELECT 1;", " /* open; comment")
    assert split_finished("SELECT 1 -- no end;") == ("", "SELECT 1 -- no end;")
