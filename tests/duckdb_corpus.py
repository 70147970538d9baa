"""Plain DuckDB scripts for the differential test (test_duckdb_parity.py).

`CORPUS` is a list of (name, script). Each script is a `;`-separated SQL script that runs on a
fresh in-memory database, once in plain DuckDB and once through pixql; every statement's outcome
(columns and rows, or an error) must agree. `{tmp}` stands for a scratch folder (a different one
for each side, so that files one side writes do not exist for the other).

Rules for new scripts: deterministic output only (no random(), now(), uuid(); ORDER BY wherever
row order matters), nothing that needs the network, no calls to pixql's own SQL functions
(predict(...), predict_score(...)) and no pixql_models. A deliberate error is the LAST statement
of its script.
"""

# The words pixql gives a meaning of its own: scripts below use each as a plain table or column name.
PIXQL_KEYWORDS = ("predict", "evaluate", "models", "model", "image", "build", "copy", "search",
                  "detect", "embed", "print", "fit", "segment", "convert")

CORPUS = [
    # -- basics ------------------------------------------------------------------------------------
    ("select_literals", """
SELECT 1;
SELECT 40 + 2 AS answer, 'text' AS s, NULL AS n, TRUE AND FALSE AS b;
SELECT 1.5::DECIMAL(4, 2) AS d, 7 // 2 AS idiv, 7 % 3 AS m, 2 ** 10 AS p;
SELECT 'a' || 'b' AS cat, upper('x') AS up, length('hello') AS len;
VALUES (1, 'one'), (2, 'two');
"""),
    ("create_insert_select", """
CREATE TABLE t(a INTEGER, b VARCHAR);
INSERT INTO t VALUES (1, 'x'), (2, 'y'), (3, 'z');
SELECT * FROM t ORDER BY a;
SELECT count(*), sum(a), min(b), max(b) FROM t;
DROP TABLE t;
"""),
    ("create_table_as", """
CREATE TABLE t AS SELECT range AS i FROM range(5);
CREATE OR REPLACE TABLE t AS SELECT range AS i, range * range AS sq FROM range(4);
CREATE TABLE IF NOT EXISTS t AS SELECT 1 AS other;
SELECT * FROM t ORDER BY i;
CREATE TEMP TABLE tt AS SELECT 'temp' AS kind;
FROM tt;
"""),
    ("update_delete_counts", """
CREATE TABLE t AS SELECT range AS i FROM range(10);
UPDATE t SET i = i + 100 WHERE i % 2 = 0;
DELETE FROM t WHERE i > 105;
SELECT i FROM t ORDER BY i;
UPDATE t SET i = 0 WHERE FALSE;
DELETE FROM t;
SELECT count(*) FROM t;
"""),
    ("insert_variants", """
CREATE TABLE t(a INTEGER DEFAULT 7, b VARCHAR DEFAULT 'd');
INSERT INTO t DEFAULT VALUES;
INSERT INTO t (b) VALUES ('only b');
INSERT INTO t BY NAME SELECT 'named' AS b, 9 AS a;
INSERT INTO t SELECT range, 'r' || range FROM range(2);
SELECT * FROM t ORDER BY a, b;
"""),
    ("alter_table", """
CREATE TABLE t(a INTEGER);
INSERT INTO t VALUES (1), (2);
ALTER TABLE t ADD COLUMN b VARCHAR DEFAULT 'new';
ALTER TABLE t RENAME COLUMN a TO id;
ALTER TABLE t ALTER COLUMN id TYPE BIGINT;
DESCRIBE t;
ALTER TABLE t RENAME TO renamed;
SELECT * FROM renamed ORDER BY id;
"""),
    ("constraints_and_index", """
CREATE TABLE t(id INTEGER PRIMARY KEY, name VARCHAR NOT NULL UNIQUE, score INTEGER CHECK (score >= 0));
INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20);
CREATE INDEX t_score ON t(score);
SELECT index_name, table_name FROM duckdb_indexes() ORDER BY index_name;
DROP INDEX t_score;
INSERT INTO t VALUES (1, 'c', 30);
"""),
    ("check_constraint_error", """
CREATE TABLE t(score INTEGER CHECK (score >= 0));
INSERT INTO t VALUES (5);
SELECT * FROM t;
INSERT INTO t VALUES (-1);
"""),
    ("not_null_error", """
CREATE TABLE t(a INTEGER NOT NULL);
INSERT INTO t VALUES (1);
INSERT INTO t VALUES (NULL);
"""),
    ("schemas", """
CREATE SCHEMA s1;
CREATE TABLE s1.t(a INTEGER);
INSERT INTO s1.t VALUES (1);
SELECT * FROM s1.t;
SELECT schema_name FROM duckdb_schemas() WHERE database_name = 'memory' ORDER BY schema_name;
DROP SCHEMA s1 CASCADE;
SELECT count(*) FROM duckdb_schemas() WHERE schema_name = 's1';
"""),
    ("truncate_and_checkpoint", """
CREATE TABLE t AS SELECT range AS i FROM range(3);
TRUNCATE t;
SELECT count(*) FROM t;
CHECKPOINT;
VACUUM;
"""),
    ("comment_on", """
CREATE TABLE t(a INTEGER);
COMMENT ON TABLE t IS 'a table; with a semicolon';
COMMENT ON COLUMN t.a IS 'the a column';
SELECT comment FROM duckdb_tables() WHERE table_name = 't';
SELECT comment FROM duckdb_columns() WHERE table_name = 't';
"""),

    # -- strings, quoting, comments ------------------------------------------------------------------
    ("strings_with_semicolons", """
SELECT 'a;b' AS s;
SELECT 'it''s; fine' AS s, '' AS empty;
SELECT ';' AS s1, ';;' AS s2, 'SELECT 1; SELECT 2' AS s3;
SELECT "weird;name" FROM (SELECT 1 AS "weird;name");
SELECT length('--not a comment'), '/* not a comment */' AS c;
"""),
    ("escape_strings", """
SELECT E'a\\nb' AS s;
SELECT E'tab\\there; semi' AS s;
SELECT E'quote \\' inside' AS s;
SELECT E'back\\\\slash' AS s;
SELECT 'plain \\n stays' AS s;
"""),
    ("quoted_identifiers", """
CREATE TABLE "Mixed Case"("Col One" INTEGER, "select" VARCHAR);
INSERT INTO "Mixed Case" VALUES (1, 'kw');
SELECT "Col One", "select" FROM "Mixed Case";
SELECT "Col One" AS "Alias ""quoted"" here" FROM "Mixed Case";
DESCRIBE "Mixed Case";
"""),
    ("line_comments", """
-- a comment before the first statement
SELECT 1 AS a; -- after a statement
-- between statements; with a semicolon
SELECT 2 AS b -- before the semicolon
;
SELECT 3 AS c;
-- after the last statement
"""),
    ("block_comments", """
/* leading block comment */ SELECT 1 AS a;
SELECT /* inline */ 2 AS b;
/* between; statements */
SELECT 3 /* before semicolon */ AS c;
/* after the last one */
"""),
    ("nested_block_comments", """
SELECT 1 /* outer /* inner; */ still comment; */ AS a;
/* /* nested */ between */ SELECT 2 AS b;
SELECT 3 AS c /* trailing /* nested */ */;
"""),
    ("comment_only_tail", """
CREATE TABLE t(a INTEGER);
INSERT INTO t VALUES (1);
SELECT * FROM t;
/* the end */ -- really
"""),
    ("dollar_quoting", """
SELECT $$a;b$$ AS s;
SELECT $$it's; quoted$$ AS s;
SELECT $tag$x; SELECT y;$tag$ AS s;
SELECT $a$ $$ inside $$ ; $a$ AS s;
SELECT length($q$;;;$q$) AS n;
"""),
    ("dollar_quoted_macro_body_like", """
CREATE TABLE notes(body VARCHAR);
INSERT INTO notes VALUES ($$first; note$$), ($x$second -- not a comment$x$);
SELECT body FROM notes ORDER BY body;
SELECT count(*) FROM notes WHERE body LIKE '%;%';
"""),
    ("unicode_strings", """
SELECT 'héllo wörld' AS s, length('héllo') AS n;
SELECT '日本語; テキスト' AS s;
SELECT upper('straße') AS s;
SELECT '🦆' AS duck, strlen('🦆') AS bytes;
"""),
    ("double_semicolon", """
SELECT 1 AS a;;
SELECT 2 AS b;
"""),

    # -- CTEs --------------------------------------------------------------------------------------
    ("cte_basic", """
WITH a AS (SELECT 1 AS x), b AS (SELECT x + 1 AS y FROM a) SELECT * FROM a, b;
WITH t(n) AS (VALUES (1), (2), (3)) SELECT sum(n) FROM t;
CREATE TABLE base AS SELECT range AS i FROM range(4);
WITH doubled AS (SELECT i * 2 AS d FROM base) SELECT d FROM doubled ORDER BY d DESC;
WITH m AS MATERIALIZED (SELECT 42 AS v) SELECT v FROM m;
"""),
    ("cte_recursive", """
WITH RECURSIVE cnt(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM cnt WHERE n < 5) SELECT n FROM cnt ORDER BY n;
WITH RECURSIVE fib(a, b, i) AS (SELECT 0, 1, 0 UNION ALL SELECT b, a + b, i + 1 FROM fib WHERE i < 10) SELECT max(a) FROM fib;
CREATE TABLE edges(src INTEGER, dst INTEGER);
INSERT INTO edges VALUES (1, 2), (2, 3), (3, 4), (1, 5);
WITH RECURSIVE reach(node) AS (SELECT 1 UNION SELECT dst FROM edges JOIN reach ON src = node) SELECT node FROM reach ORDER BY node;
"""),
    ("cte_in_dml", """
CREATE TABLE t(a INTEGER);
INSERT INTO t WITH src AS (SELECT range AS a FROM range(3)) SELECT a FROM src;
WITH gone AS (SELECT 1 AS a) DELETE FROM t WHERE a IN (SELECT a FROM gone);
WITH bump AS (SELECT 2 AS a) UPDATE t SET a = a * 10 WHERE a IN (SELECT a FROM bump);
SELECT a FROM t ORDER BY a;
"""),
    ("cte_named_like_keywords", """
WITH predict AS (SELECT 1 AS image) SELECT image FROM predict;
WITH models AS (SELECT 'm' AS model) SELECT model FROM models;
WITH evaluate(build) AS (VALUES (3)) SELECT build * 2 AS fit FROM evaluate;
"""),

    # -- PIVOT / UNPIVOT ---------------------------------------------------------------------------
    ("pivot_statement", """
CREATE TABLE sales(region VARCHAR, quarter VARCHAR, amount INTEGER);
INSERT INTO sales VALUES ('east', 'q1', 10), ('east', 'q2', 20), ('west', 'q1', 5), ('west', 'q2', 7), ('east', 'q1', 1);
PIVOT sales ON quarter USING sum(amount) GROUP BY region ORDER BY region;
PIVOT sales ON quarter USING sum(amount);
PIVOT sales ON region IN ('east', 'west') USING count(*) GROUP BY quarter ORDER BY quarter;
"""),
    ("pivot_in_select", """
CREATE TABLE sales(region VARCHAR, quarter VARCHAR, amount INTEGER);
INSERT INTO sales VALUES ('east', 'q1', 10), ('east', 'q2', 20), ('west', 'q1', 5);
SELECT * FROM (PIVOT sales ON quarter USING sum(amount) GROUP BY region) ORDER BY region;
SELECT * FROM sales PIVOT (sum(amount) FOR quarter IN ('q1', 'q2') GROUP BY region) ORDER BY region;
WITH p AS (PIVOT sales ON region USING max(amount)) SELECT east, west FROM p ORDER BY ALL;
"""),
    ("unpivot_statement", """
CREATE TABLE wide(id INTEGER, jan INTEGER, feb INTEGER, mar INTEGER);
INSERT INTO wide VALUES (1, 10, 20, 30), (2, 1, 2, 3);
UNPIVOT wide ON jan, feb, mar INTO NAME month VALUE amount ORDER BY id, month;
UNPIVOT wide ON COLUMNS(* EXCLUDE (id)) INTO NAME month VALUE amount ORDER BY id, month;
SELECT id, month, amount FROM wide UNPIVOT (amount FOR month IN (jan, feb, mar)) ORDER BY id, month;
SELECT count(*) FROM (UNPIVOT wide ON jan, feb INTO NAME m VALUE v);
"""),
    ("pivot_create_table_as", """
CREATE TABLE long(k VARCHAR, v INTEGER);
INSERT INTO long VALUES ('a', 1), ('b', 2), ('a', 3);
CREATE TABLE wide AS PIVOT long ON k USING sum(v);
SELECT a, b FROM wide;
DESCRIBE wide;
"""),

    # -- prepared statements -----------------------------------------------------------------------
    ("prepare_execute", """
PREPARE add_one AS SELECT $1 + 1 AS r;
EXECUTE add_one(41);
EXECUTE add_one(-1);
PREPARE concat2 AS SELECT ?::VARCHAR || ?::VARCHAR AS s;
EXECUTE concat2('a;', 'b');
DEALLOCATE add_one;
DEALLOCATE PREPARE concat2;
"""),
    ("prepare_named_params", """
CREATE TABLE t AS SELECT range AS i FROM range(10);
PREPARE pick AS SELECT i FROM t WHERE i BETWEEN $lo AND $hi ORDER BY i;
EXECUTE pick(lo := 3, hi := 5);
PREPARE ins AS INSERT INTO t VALUES ($1);
EXECUTE ins(100);
SELECT max(i) FROM t;
"""),
    ("prepare_deallocated_error", """
PREPARE p AS SELECT 1 AS one;
EXECUTE p;
DEALLOCATE p;
EXECUTE p;
"""),

    # -- RETURNING, upserts, MERGE -----------------------------------------------------------------
    ("insert_returning", """
CREATE TABLE t(id INTEGER, name VARCHAR);
INSERT INTO t VALUES (1, 'a') RETURNING *;
INSERT INTO t VALUES (2, 'b') RETURNING id * 10 AS tenfold, upper(name) AS up;
INSERT INTO t SELECT 3, 'c' RETURNING name;
SELECT * FROM t ORDER BY id;
"""),
    ("update_delete_returning", """
CREATE TABLE t(id INTEGER, v INTEGER);
INSERT INTO t VALUES (1, 10), (2, 20), (3, 30);
UPDATE t SET v = v + 1 WHERE id = 2 RETURNING id, v;
DELETE FROM t WHERE id = 3 RETURNING *;
DELETE FROM t WHERE id = 99 RETURNING id;
SELECT * FROM t ORDER BY id;
"""),
    ("sequence_returning", """
CREATE SEQUENCE ids START 100;
CREATE TABLE t(id INTEGER DEFAULT nextval('ids'), name VARCHAR);
INSERT INTO t(name) VALUES ('a') RETURNING id;
INSERT INTO t(name) VALUES ('b'), ('c') RETURNING id, name;
SELECT currval('ids');
"""),
    ("insert_or_replace", """
CREATE TABLE t(k INTEGER PRIMARY KEY, v VARCHAR);
INSERT INTO t VALUES (1, 'a'), (2, 'b');
INSERT OR REPLACE INTO t VALUES (1, 'A');
INSERT OR IGNORE INTO t VALUES (2, 'ignored'), (3, 'c');
SELECT * FROM t ORDER BY k;
INSERT OR REPLACE INTO t VALUES (3, 'C') RETURNING *;
"""),
    ("on_conflict", """
CREATE TABLE t(k INTEGER PRIMARY KEY, v INTEGER);
INSERT INTO t VALUES (1, 1);
INSERT INTO t VALUES (1, 5) ON CONFLICT DO NOTHING;
INSERT INTO t VALUES (1, 5) ON CONFLICT (k) DO UPDATE SET v = t.v + excluded.v;
INSERT INTO t VALUES (1, 100), (2, 2) ON CONFLICT (k) DO UPDATE SET v = excluded.v WHERE excluded.v < 50 RETURNING *;
SELECT * FROM t ORDER BY k;
"""),
    ("primary_key_violation", """
CREATE TABLE t(k INTEGER PRIMARY KEY);
INSERT INTO t VALUES (1);
INSERT INTO t VALUES (1);
"""),
    ("merge_into", """
CREATE TABLE target(id INTEGER PRIMARY KEY, v INTEGER);
CREATE TABLE source(id INTEGER, v INTEGER);
INSERT INTO target VALUES (1, 10), (2, 20);
INSERT INTO source VALUES (2, 200), (3, 300);
MERGE INTO target USING source ON target.id = source.id WHEN MATCHED THEN UPDATE SET v = source.v WHEN NOT MATCHED THEN INSERT VALUES (source.id, source.v);
SELECT * FROM target ORDER BY id;
MERGE INTO target USING (SELECT 1 AS id) s ON target.id = s.id WHEN MATCHED THEN DELETE;
SELECT * FROM target ORDER BY id;
"""),
    ("merge_into_returning", """
CREATE TABLE target(id INTEGER PRIMARY KEY, v INTEGER);
INSERT INTO target VALUES (1, 10);
MERGE INTO target USING (SELECT 1 AS id, 11 AS v) s ON target.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v RETURNING *;
MERGE INTO target USING (SELECT 5 AS id, 50 AS v) s ON target.id = s.id WHEN NOT MATCHED THEN INSERT BY NAME RETURNING merge_action, id, v;
MERGE INTO target USING (SELECT 5 AS id) s USING (id) WHEN MATCHED THEN DELETE RETURNING id;
SELECT * FROM target ORDER BY id;
"""),
    ("update_from_delete_using", """
CREATE TABLE t(id INTEGER, v INTEGER);
CREATE TABLE u(id INTEGER, nv INTEGER);
INSERT INTO t VALUES (1, 0), (2, 0), (3, 0);
INSERT INTO u VALUES (1, 11), (3, 33);
UPDATE t SET v = u.nv FROM u WHERE t.id = u.id;
DELETE FROM t USING u WHERE t.id = u.id AND u.nv > 20;
SELECT * FROM t ORDER BY id;
"""),

    # -- COPY --------------------------------------------------------------------------------------
    ("copy_to_from_csv_append", """
CREATE TABLE t(a INTEGER, b VARCHAR);
INSERT INTO t VALUES (1, 'x'), (2, 'y;z');
COPY t TO '{tmp}/t.csv' (HEADER);
CREATE TABLE t2(a INTEGER, b VARCHAR);
INSERT INTO t2 VALUES (0, 'existing');
COPY t2 FROM '{tmp}/t.csv';
COPY t2 FROM '{tmp}/t.csv' (FORMAT csv, HEADER);
SELECT * FROM t2 ORDER BY a, b;
"""),
    ("copy_options", """
CREATE TABLE t AS SELECT range AS i, 'v' || range AS s FROM range(3);
COPY t TO '{tmp}/t.tsv' (DELIMITER '\t', HEADER false);
CREATE TABLE back(i INTEGER, s VARCHAR);
COPY back FROM '{tmp}/t.tsv' (DELIMITER '\t', HEADER false);
SELECT * FROM back ORDER BY i;
COPY t TO '{tmp}/q.csv' (QUOTE '"', FORCE_QUOTE *, HEADER);
SELECT * FROM read_csv('{tmp}/q.csv') ORDER BY i;
"""),
    ("copy_query_to_file", """
COPY (SELECT 1 AS a, 'one' AS b UNION ALL SELECT 2, 'two') TO '{tmp}/q.csv' WITH (HEADER true);
SELECT * FROM '{tmp}/q.csv' ORDER BY a;
SELECT count(*) FROM read_csv_auto('{tmp}/q.csv');
COPY (SELECT 'a;b' AS s) TO '{tmp}/s.csv';
SELECT * FROM read_csv('{tmp}/s.csv', header = true);
"""),
    ("copy_parquet", """
CREATE TABLE t AS SELECT range AS i, range % 2 = 0 AS even FROM range(5);
COPY t TO '{tmp}/t.parquet' (FORMAT parquet);
SELECT count(*), sum(i) FROM '{tmp}/t.parquet';
CREATE TABLE u(i BIGINT, even BOOLEAN);
COPY u FROM '{tmp}/t.parquet' (FORMAT parquet);
SELECT * FROM u ORDER BY i;
COPY t TO '{tmp}/t.zst.parquet' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 2);
SELECT count(*) FROM read_parquet('{tmp}/t.zst.parquet');
"""),
    ("copy_json", """
CREATE TABLE t AS SELECT range AS i, 'n' || range AS name FROM range(3);
COPY t TO '{tmp}/t.json';
COPY t TO '{tmp}/t_array.json' (FORMAT json, ARRAY true);
SELECT * FROM read_json('{tmp}/t.json') ORDER BY i;
CREATE TABLE u(i INTEGER, name VARCHAR);
COPY u FROM '{tmp}/t.json' (FORMAT json);
SELECT * FROM u ORDER BY i;
"""),
    ("copy_return_files", """
CREATE TABLE t AS SELECT 1 AS a UNION ALL SELECT 2;
COPY t TO '{tmp}/r.csv' (HEADER, RETURN_FILES);
COPY t TO '{tmp}/r2.csv' (RETURN_FILES true);
SELECT count(*) FROM '{tmp}/r.csv';
"""),
    ("copy_return_stats", """
CREATE TABLE t AS SELECT range AS i FROM range(4);
COPY t TO '{tmp}/s.parquet' (FORMAT parquet, RETURN_STATS);
SELECT sum(i) FROM '{tmp}/s.parquet';
"""),
    ("copy_partitioned", """
CREATE TABLE t(k VARCHAR, v INTEGER);
INSERT INTO t VALUES ('a', 1), ('b', 2), ('a', 3);
COPY t TO '{tmp}/parts' (FORMAT csv, PARTITION_BY (k), HEADER);
SELECT k, sum(v) FROM read_csv('{tmp}/parts/*/*.csv', hive_partitioning = true) GROUP BY k ORDER BY k;
"""),
    ("copy_from_missing_file", """
CREATE TABLE t(a INTEGER);
COPY t FROM '{tmp}/does_not_exist.csv';
"""),
    ("copy_table_named_copy", """
CREATE TABLE copy(a INTEGER, predict VARCHAR);
INSERT INTO copy VALUES (1, 'p');
COPY copy TO '{tmp}/c.csv' (HEADER);
COPY copy FROM '{tmp}/c.csv' (HEADER);
SELECT * FROM copy ORDER BY a;
COPY copy TO '{tmp}/c2.csv';
"""),
    ("copy_into_keyword_tables", """
CREATE TABLE image(path VARCHAR, label VARCHAR);
INSERT INTO image VALUES ('a.png', 'cat');
COPY image TO '{tmp}/images.csv' (HEADER);
CREATE TABLE models(path VARCHAR, label VARCHAR);
COPY models FROM '{tmp}/images.csv';
COPY models FROM '{tmp}/images.csv' (FORMAT csv, HEADER);
SELECT * FROM models ORDER BY ALL;
"""),
    ("copy_with_keyword_and_column_list", """
CREATE TABLE t(a INTEGER, b VARCHAR);
COPY (SELECT 'x' AS b, 1 AS a) TO '{tmp}/ba.csv' WITH (HEADER);
COPY t(b, a) FROM '{tmp}/ba.csv' WITH (HEADER);
COPY t TO '{tmp}/ab.csv' WITH (HEADER);
COPY t FROM '{tmp}/ab.csv' WITH (FORMAT 'csv', HEADER true, DELIMITER ',');
SELECT * FROM t ORDER BY ALL;
COPY t TO '{tmp}/ba.csv' (HEADER, OVERWRITE);
SELECT count(*) FROM '{tmp}/ba.csv';
"""),
    ("export_import_database", """
CREATE TABLE t(a INTEGER, b VARCHAR);
INSERT INTO t VALUES (1, 'semi;colon');
CREATE VIEW v AS SELECT a + 1 AS a1 FROM t;
EXPORT DATABASE '{tmp}/export';
DROP VIEW v;
DROP TABLE t;
IMPORT DATABASE '{tmp}/export';
SELECT * FROM t;
SELECT * FROM v;
"""),
    ("copy_from_database", """
CREATE TABLE t AS SELECT 1 AS a;
ATTACH ':memory:' AS other;
COPY FROM DATABASE memory TO other;
SELECT * FROM other.t;
DETACH other;
"""),

    # -- ATTACH / USE ------------------------------------------------------------------------------
    ("attach_memory", """
ATTACH ':memory:' AS x;
CREATE TABLE x.t(a INTEGER);
INSERT INTO x.t VALUES (1), (2);
SELECT sum(a) FROM x.t;
USE x;
SHOW TABLES;
SELECT current_database();
USE memory;
SELECT current_database();
DETACH x;
"""),
    ("attach_file", """
ATTACH '{tmp}/x.duckdb' AS filedb;
CREATE TABLE filedb.t AS SELECT range AS i FROM range(3);
DETACH filedb;
ATTACH '{tmp}/x.duckdb' AS again (READ_ONLY);
SELECT count(*) FROM again.t;
SELECT database_name, readonly FROM duckdb_databases() WHERE database_name = 'again';
DETACH again;
"""),
    ("attach_read_only_write_error", """
ATTACH '{tmp}/ro.duckdb' AS w;
CREATE TABLE w.t(a INTEGER);
DETACH w;
ATTACH '{tmp}/ro.duckdb' AS r (READ_ONLY);
INSERT INTO r.t VALUES (1);
"""),
    ("attach_if_not_exists_and_use_schema", """
ATTACH ':memory:' AS x;
ATTACH IF NOT EXISTS ':memory:' AS x;
CREATE SCHEMA x.s;
USE x.s;
CREATE TABLE here(a INTEGER);
SELECT database_name, schema_name, table_name FROM duckdb_tables() WHERE table_name = 'here';
SELECT current_schema();
USE memory.main;
DETACH DATABASE x;
"""),
    ("detach_unknown_error", """
SELECT 1;
DETACH nosuchdb;
"""),

    # -- settings and variables --------------------------------------------------------------------
    ("set_reset", """
SET default_order = 'DESC';
SELECT current_setting('default_order');
SELECT * FROM (VALUES (1), (3), (2)) v(x) ORDER BY x;
RESET default_order;
SELECT * FROM (VALUES (1), (3), (2)) v(x) ORDER BY x;
SET SESSION default_null_order = 'nulls_first';
SELECT * FROM (VALUES (1), (NULL)) v(x) ORDER BY x;
"""),
    ("set_variable", """
SET VARIABLE x = 42;
SELECT $x;
SELECT getvariable('x') + 1 AS y;
SET VARIABLE s = 'semi;colon';
SELECT getvariable('s') AS s;
SET VARIABLE lst = [1, 2, 3];
SELECT $lst AS l, len($lst) AS n;
RESET VARIABLE x;
SELECT getvariable('x') IS NULL AS gone;
"""),
    ("set_variable_from_query", """
CREATE TABLE t AS SELECT range AS i FROM range(5);
SET VARIABLE total = (SELECT sum(i) FROM t);
SELECT getvariable('total') AS total;
SELECT i FROM t WHERE i < getvariable('total') / 3 ORDER BY i;
"""),
    ("settings_queries", """
SELECT current_setting('default_order');
SET errors_as_json = false;
SELECT name FROM duckdb_settings() WHERE name = 'default_order';
SET memory_limit = '1GB';
SELECT current_setting('memory_limit');
RESET memory_limit;
"""),
    ("set_unknown_setting_error", """
SET VARIABLE ok = 1;
SET no_such_setting_anywhere = 1;
"""),
    ("pragmas", """
CREATE TABLE t(a INTEGER, b VARCHAR);
PRAGMA table_info('t');
PRAGMA show_tables;
SELECT * FROM pragma_table_info('t');
PRAGMA version;
CALL pragma_version();
"""),

    # -- macros and lambdas ------------------------------------------------------------------------
    ("scalar_macro", """
CREATE MACRO add(a, b) AS a + b;
SELECT add(1, 2) AS three;
CREATE MACRO twice(x) AS x * 2;
SELECT twice(add(1, 1)) AS four;
CREATE OR REPLACE MACRO add(a, b := 10) AS a + b;
SELECT add(1) AS eleven, add(1, b := 2) AS three;
DROP MACRO twice;
"""),
    ("table_macro", """
CREATE TABLE t AS SELECT range AS i FROM range(6);
CREATE MACRO evens(tbl) AS TABLE SELECT i FROM query_table(tbl) WHERE i % 2 = 0;
CREATE MACRO upto(n) AS TABLE SELECT range AS k FROM range(n);
SELECT * FROM upto(3) ORDER BY k;
SELECT count(*) FROM upto(10);
SELECT * FROM evens(t) ORDER BY i;
DROP MACRO TABLE upto;
"""),
    ("macro_errors_last", """
CREATE MACRO one() AS 1;
SELECT one();
SELECT one(1);
"""),
    ("lambdas", """
SELECT list_transform([1, 2, 3], lambda x: x + 1) AS l;
SELECT list_filter([1, 2, 3, 4], lambda x: x % 2 = 0) AS l;
SELECT list_reduce([1, 2, 3, 4], lambda a, b: a + b) AS total;
SELECT list_transform(['a', 'b'], lambda x, i: x || i::VARCHAR) AS l;
SELECT [x * 10 FOR x IN [1, 2, 3] IF x > 1] AS comprehension;
"""),
    ("arrow_lambdas", """
SET lambda_syntax = 'ENABLE_SINGLE_ARROW';
SELECT list_transform([1, 2, 3], x -> x + 1) AS l;
SELECT list_filter([5, 6, 7], x -> x > 5) AS l;
SELECT list_apply([1, 2], (x) -> x * x) AS l;
"""),
    ("arrow_lambda_default_error", """
SELECT list_transform([1, 2, 3], lambda x: x + 1) AS ok;
SELECT list_transform([1, 2, 3], x -> x + 1) AS deprecated;
"""),
    ("json_arrows", """
SELECT '{"a": {"b": 1}}'::JSON -> 'a' AS j;
SELECT '{"a": {"b": 1}}'::JSON ->> '$.a.b' AS s;
SELECT json_extract_string('{"k": "v;w"}', '$.k') AS v;
SELECT json_object('x', 1, 'y', [1, 2]) AS o;
"""),

    # -- FROM-first, clauses -----------------------------------------------------------------------
    ("from_first", """
CREATE TABLE t AS SELECT range AS a, range * 2 AS b FROM range(4);
FROM t;
FROM t SELECT a;
FROM t SELECT b WHERE a > 1 ORDER BY b;
FROM t AS x SELECT x.a + x.b AS s ORDER BY s;
FROM range(3);
FROM (FROM t SELECT a) SELECT count(*);
"""),
    ("group_by_all_order_by_all", """
CREATE TABLE t(k VARCHAR, g INTEGER, v INTEGER);
INSERT INTO t VALUES ('a', 1, 1), ('a', 1, 2), ('b', 2, 3), ('a', 2, 4);
SELECT k, g, sum(v) FROM t GROUP BY ALL ORDER BY ALL;
SELECT k, count(*) AS n FROM t GROUP BY ALL ORDER BY ALL DESC;
SELECT * FROM t ORDER BY ALL;
SELECT k, sum(v) FILTER (WHERE g = 1) AS g1 FROM t GROUP BY ALL ORDER BY k;
"""),
    ("window_functions", """
CREATE TABLE t(k VARCHAR, v INTEGER);
INSERT INTO t VALUES ('a', 3), ('a', 1), ('b', 5), ('b', 2), ('a', 2);
SELECT k, v, row_number() OVER (PARTITION BY k ORDER BY v) AS rn FROM t ORDER BY k, v;
SELECT k, v, sum(v) OVER (PARTITION BY k ORDER BY v ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running FROM t ORDER BY k, v;
SELECT v, lag(v) OVER w AS prev, lead(v) OVER w AS next FROM t WINDOW w AS (ORDER BY v) ORDER BY v;
SELECT k, v, rank() OVER (ORDER BY v DESC) AS r, dense_rank() OVER (ORDER BY k) AS dr FROM t ORDER BY v DESC;
SELECT k, first_value(v) OVER (PARTITION BY k ORDER BY v DESC) AS top FROM t ORDER BY k, top LIMIT 2;
"""),
    ("qualify", """
CREATE TABLE t(k VARCHAR, v INTEGER);
INSERT INTO t VALUES ('a', 3), ('a', 1), ('b', 5), ('b', 2);
SELECT k, v FROM t QUALIFY row_number() OVER (PARTITION BY k ORDER BY v DESC) = 1 ORDER BY k;
SELECT k, v, rank() OVER (ORDER BY v) AS r FROM t QUALIFY r <= 2 ORDER BY r;
FROM t SELECT k, v QUALIFY v = max(v) OVER (PARTITION BY k) ORDER BY k;
"""),
    ("joins", """
CREATE TABLE l(id INTEGER, a VARCHAR);
CREATE TABLE r(id INTEGER, b VARCHAR);
INSERT INTO l VALUES (1, 'l1'), (2, 'l2'), (3, 'l3');
INSERT INTO r VALUES (2, 'r2'), (3, 'r3'), (4, 'r4');
SELECT * FROM l JOIN r USING (id) ORDER BY id;
SELECT l.id, r.id FROM l FULL OUTER JOIN r ON l.id = r.id ORDER BY l.id NULLS LAST, r.id;
SELECT * FROM l SEMI JOIN r USING (id) ORDER BY id;
SELECT * FROM l ANTI JOIN r USING (id);
SELECT count(*) FROM l CROSS JOIN r;
SELECT * FROM l POSITIONAL JOIN r;
"""),
    ("asof_and_lateral", """
CREATE TABLE trades(t INTEGER, px INTEGER);
CREATE TABLE quotes(t INTEGER, q INTEGER);
INSERT INTO trades VALUES (5, 100), (10, 200);
INSERT INTO quotes VALUES (1, 1), (4, 4), (9, 9);
SELECT trades.t, q FROM trades ASOF JOIN quotes ON trades.t >= quotes.t ORDER BY trades.t;
SELECT x, y FROM range(3) t(x), LATERAL (SELECT x * 10 AS y) ORDER BY x;
"""),
    ("set_operations", """
SELECT 1 AS a UNION SELECT 2 UNION SELECT 1 ORDER BY a;
SELECT * FROM range(5) EXCEPT SELECT * FROM range(2) ORDER BY ALL;
SELECT * FROM range(5) INTERSECT SELECT * FROM range(3, 8) ORDER BY ALL;
SELECT 1 AS a, 2 AS b UNION ALL BY NAME SELECT 3 AS b, 4 AS a;
SELECT 1 AS x UNION ALL SELECT 1 UNION ALL SELECT 2 ORDER BY x;
"""),
    ("star_expressions", """
CREATE TABLE t(a_one INTEGER, a_two INTEGER, b INTEGER);
INSERT INTO t VALUES (1, 2, 3);
SELECT * EXCLUDE (b) FROM t;
SELECT * REPLACE (b * 100 AS b) FROM t;
SELECT COLUMNS('a_.*') FROM t;
SELECT max(COLUMNS(*)) FROM t;
SELECT t.* FROM t;
"""),
    ("limit_offset_sample_free", """
SELECT range FROM range(10) ORDER BY range LIMIT 3;
SELECT range FROM range(10) ORDER BY range LIMIT 3 OFFSET 4;
SELECT range FROM range(10) ORDER BY range DESC LIMIT 20%;
SELECT DISTINCT range % 3 AS m FROM range(10) ORDER BY m;
SELECT DISTINCT ON (range % 2) range % 2 AS parity, range FROM range(6) ORDER BY range % 2, range;
"""),
    ("case_and_conditionals", """
SELECT CASE WHEN 1 > 2 THEN 'a' WHEN 2 > 1 THEN 'b' ELSE 'c' END AS c;
SELECT coalesce(NULL, NULL, 3) AS c, nullif(1, 1) AS n, ifnull(NULL, 'x') AS i;
SELECT greatest(1, 5, 3) AS g, least('b', 'a') AS l;
SELECT CASE 2 WHEN 1 THEN 'one' WHEN 2 THEN 'two' END AS w;
SELECT if(true, 'yes', 'no') AS y;
"""),
    ("aggregates", """
CREATE TABLE t AS SELECT range AS i, range % 3 AS g FROM range(12);
SELECT g, count(*), sum(i), avg(i), min(i), max(i) FROM t GROUP BY g ORDER BY g;
SELECT g, list(i ORDER BY i) AS l, string_agg(i::VARCHAR, ';' ORDER BY i) AS s FROM t GROUP BY g ORDER BY g;
SELECT median(i), quantile_disc(i, 0.25), mode(g) FROM t;
SELECT arg_max(i, g), arg_min(i, g) FROM t WHERE i < 6;
SELECT g, count(*) FROM t GROUP BY g HAVING count(*) > 3 ORDER BY g;
SELECT bool_and(i >= 0), bool_or(i > 10) FROM t;
"""),
    ("grouping_sets", """
CREATE TABLE t(a VARCHAR, b VARCHAR, v INTEGER);
INSERT INTO t VALUES ('x', 'p', 1), ('x', 'q', 2), ('y', 'p', 3);
SELECT a, b, sum(v) FROM t GROUP BY GROUPING SETS ((a, b), (a), ()) ORDER BY a NULLS LAST, b NULLS LAST;
SELECT a, sum(v) FROM t GROUP BY ROLLUP (a) ORDER BY a NULLS FIRST;
SELECT a, b, grouping(a, b) AS gid, count(*) FROM t GROUP BY CUBE (a, b) ORDER BY gid, a, b;
"""),

    # -- transactions ------------------------------------------------------------------------------
    ("transaction_commit", """
CREATE TABLE t(a INTEGER);
BEGIN TRANSACTION;
INSERT INTO t VALUES (1);
INSERT INTO t VALUES (2);
COMMIT;
SELECT count(*) FROM t;
"""),
    ("transaction_rollback", """
CREATE TABLE t(a INTEGER);
INSERT INTO t VALUES (1);
BEGIN;
INSERT INTO t VALUES (2), (3);
SELECT count(*) FROM t;
ROLLBACK;
SELECT count(*) FROM t;
"""),
    ("transaction_rollback_ddl", """
BEGIN;
CREATE TABLE t(a INTEGER);
CREATE VIEW v AS SELECT 1 AS one;
ROLLBACK;
SELECT count(*) FROM duckdb_tables() WHERE table_name = 't';
SELECT count(*) FROM duckdb_views() WHERE view_name = 'v';
"""),
    ("transaction_abort_keywords", """
CREATE TABLE t(a INTEGER);
START TRANSACTION;
INSERT INTO t VALUES (1);
ABORT;
BEGIN TRANSACTION;
UPDATE t SET a = 2;
END;
SELECT count(*) FROM t;
"""),
    ("commit_without_transaction_error", """
SELECT 1;
COMMIT;
"""),
    ("nested_begin_error", """
BEGIN;
SELECT 1;
BEGIN;
"""),

    # -- catalog and SHOW --------------------------------------------------------------------------
    ("show_tables", """
CREATE TABLE b(x INTEGER);
CREATE TABLE a(y VARCHAR);
CREATE VIEW c AS SELECT 1 AS z;
SHOW TABLES;
SHOW ALL TABLES;
"""),
    ("show_all_tables_with_attached", """
ATTACH ':memory:' AS aux;
CREATE TABLE aux.t(a INTEGER);
CREATE TABLE main_t(b INTEGER);
SELECT database, schema, name FROM (SHOW ALL TABLES) WHERE NOT temporary ORDER BY database, name;
DETACH aux;
"""),
    ("describe_and_summarize", """
CREATE TABLE t(a INTEGER, b VARCHAR, c DOUBLE);
INSERT INTO t VALUES (1, 'x', 1.5), (2, 'y', 2.5), (3, NULL, NULL);
DESCRIBE t;
SHOW t;
SUMMARIZE t;
DESCRIBE SELECT a, b || 'z' AS bz FROM t;
SUMMARIZE SELECT a FROM t;
"""),
    ("show_select_subquery", """
CREATE TABLE t(a INTEGER, b VARCHAR);
SELECT column_name FROM (DESCRIBE t) ORDER BY column_name;
SELECT name FROM (SHOW TABLES);
SELECT count(*) FROM (SUMMARIZE t);
"""),
    ("duckdb_catalog_functions", """
CREATE TABLE t1(a INTEGER);
CREATE TABLE t2(b VARCHAR);
CREATE VIEW v1 AS SELECT a FROM t1;
SELECT database_name, schema_name, table_name, column_count FROM duckdb_tables() ORDER BY table_name;
SELECT view_name, sql FROM duckdb_views() WHERE NOT internal ORDER BY view_name;
SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE NOT internal AND table_name IN ('t1', 't2', 'v1') ORDER BY ALL;
SELECT database_name FROM duckdb_databases() ORDER BY database_name;
"""),
    ("duckdb_catalog_filtered", """
CREATE TABLE t1(a INTEGER);
SELECT database_name, schema_name, table_name FROM duckdb_tables() WHERE NOT temporary ORDER BY ALL;
SELECT table_name FROM duckdb_tables() WHERE database_name = 'memory' ORDER BY ALL;
"""),
    ("information_schema", """
CREATE TABLE t(a INTEGER, b VARCHAR);
CREATE VIEW v AS SELECT a FROM t;
SELECT table_catalog, table_schema, table_name, table_type FROM information_schema.tables ORDER BY table_name;
SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 't' ORDER BY ordinal_position;
SELECT schema_name FROM information_schema.schemata WHERE catalog_name = 'memory' ORDER BY ALL;
"""),
    ("views", """
CREATE TABLE t AS SELECT range AS i FROM range(5);
CREATE VIEW evens AS SELECT i FROM t WHERE i % 2 = 0;
SELECT * FROM evens ORDER BY i;
CREATE OR REPLACE VIEW evens AS SELECT i * 10 AS i10 FROM t WHERE i % 2 = 0;
SELECT * FROM evens ORDER BY i10;
CREATE VIEW v2(renamed) AS SELECT 1;
SELECT renamed FROM v2;
DROP VIEW evens;
DROP VIEW IF EXISTS evens;
"""),
    ("sequences", """
CREATE SEQUENCE s;
SELECT nextval('s');
SELECT nextval('s');
SELECT currval('s');
CREATE SEQUENCE s2 START WITH 10 INCREMENT BY 5;
SELECT nextval('s2'), nextval('s2');
SELECT sequence_name, start_value, increment_by FROM duckdb_sequences() ORDER BY sequence_name;
DROP SEQUENCE s2;
"""),
    ("sequence_side_effects_not_last", """
CREATE SEQUENCE s;
SELECT nextval('s');
SELECT currval('s');
SELECT nextval('s') AS n FROM range(3) ORDER BY n;
SELECT currval('s');
"""),
    ("currval_before_nextval_error", """
CREATE SEQUENCE s;
SELECT currval('s');
"""),
    ("enum_types", """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE people(name VARCHAR, m mood);
INSERT INTO people VALUES ('a', 'happy'), ('b', 'sad'), ('c', 'ok');
SELECT name FROM people ORDER BY m;
SELECT enum_range(NULL::mood) AS r;
SELECT m::VARCHAR AS s FROM people WHERE m > 'sad' ORDER BY m;
INSERT INTO people VALUES ('d', 'angry');
"""),
    ("user_types", """
CREATE TYPE point AS STRUCT(x DOUBLE, y DOUBLE);
CREATE TYPE ids AS INTEGER[];
CREATE TABLE shapes(p point, members ids);
INSERT INTO shapes VALUES ({'x': 1, 'y': 2}, [1, 2, 3]);
SELECT p.x, p.y, len(members) FROM shapes;
SELECT type_name FROM duckdb_types() WHERE type_name IN ('point', 'ids') ORDER BY ALL;
DROP TABLE shapes;
DROP TYPE ids;
"""),

    # -- nested types ------------------------------------------------------------------------------
    ("structs", """
SELECT {'a': 1, 'b': 'two'} AS s;
SELECT ({'a': 1, 'b': 'two'}).b AS b;
SELECT struct_pack(x := 1, y := [1, 2]) AS s;
SELECT s.* FROM (SELECT {'k': 1, 'v': 'x'} AS s);
SELECT row(1, 'a') AS r;
"""),
    ("lists", """
SELECT [1, 2, 3] AS l, len([1, 2, 3]) AS n;
SELECT [1, 2, 3][2] AS second, [1, 2, 3][2:3] AS slice;
SELECT list_concat([1], [2, 3]) AS c, list_sort([3, 1, 2]) AS s;
SELECT unnest([10, 20, 30]) AS u;
SELECT list_aggregate([1, 2, 3], 'sum') AS s, list_distinct([1, 1, 2]) AS d;
SELECT array_length([[1, 2], [3]]) AS outer_len, flatten([[1, 2], [3]]) AS flat;
"""),
    ("maps", """
SELECT MAP {'a': 1, 'b': 2} AS m;
SELECT MAP {'a': 1, 'b': 2}['b'] AS b;
SELECT map_keys(MAP {'k1': 1, 'k2': 2}) AS k, map_values(MAP {'k1': 1, 'k2': 2}) AS v;
SELECT map_from_entries([('x', 10), ('y', 20)]) AS m;
SELECT cardinality(MAP {1: 'one'}) AS n;
"""),
    ("nested_tables", """
CREATE TABLE t(id INTEGER, tags VARCHAR[], attrs STRUCT(color VARCHAR, size INTEGER), m MAP(VARCHAR, INTEGER));
INSERT INTO t VALUES (1, ['a', 'b'], {'color': 'red', 'size': 3}, MAP {'k': 1});
INSERT INTO t VALUES (2, [], {'color': 'blue', 'size': NULL}, MAP {});
SELECT id, tags, attrs.color, m['k'] FROM t ORDER BY id;
SELECT id, unnest(tags) AS tag FROM t ORDER BY id, tag;
SELECT id, attrs FROM t WHERE attrs.size IS NULL;
"""),
    ("unions_and_arrays", """
SELECT union_value(num := 2)::UNION(num INTEGER, str VARCHAR) AS u;
SELECT [1, 2, 3]::INTEGER[3] AS fixed;
SELECT array_value(1.0, 2.0)::DOUBLE[2] AS a;
SELECT list_cosine_similarity([1.0, 0.0], [1.0, 0.0]) AS cos;
"""),

    # -- types, casts, dates -----------------------------------------------------------------------
    ("casts", """
SELECT '42'::INTEGER AS i, CAST('3.5' AS DOUBLE) AS d, 42::VARCHAR AS s;
SELECT TRY_CAST('x' AS INTEGER) AS t;
SELECT '2024-01-31'::DATE + INTERVAL 1 MONTH AS d;
SELECT 'abc'::BLOB AS b, '\\xAA'::BLOB AS b2;
SELECT typeof(1), typeof(1.5), typeof('x'), typeof([1]);
SELECT 'x'::INTEGER;
"""),
    ("dates_and_times", """
SELECT DATE '2024-02-29' AS d, TIMESTAMP '2024-01-01 12:30:00' AS ts;
SELECT date_part('year', DATE '2024-02-29') AS y, dayname(DATE '2024-02-29') AS dn;
SELECT date_diff('day', DATE '2024-01-01', DATE '2024-03-01') AS days;
SELECT strftime(TIMESTAMP '2024-05-06 07:08:09', '%Y/%m/%d %H;%M') AS s;
SELECT date_trunc('month', TIMESTAMP '2024-05-06 07:08:09') AS m;
SELECT range AS d FROM range(DATE '2024-01-01', DATE '2024-01-04', INTERVAL 1 DAY) ORDER BY d;
"""),
    ("numeric_functions", """
SELECT round(2.567, 2) AS r, floor(-1.5) AS f, ceil(1.2) AS c, abs(-3) AS a;
SELECT sqrt(16) AS s, pow(2, 8) AS p, ln(1) AS l, log10(1000) AS lg;
SELECT 10 / 4 AS div, 10 // 4 AS idiv, 10.0 / 4 AS fdiv;
SELECT 1 / 0 AS inf_or_null;
SELECT hugeint_col FROM (SELECT 170141183460469231731687303715884105727::HUGEINT AS hugeint_col);
SELECT bit_count(255) AS bc, 5 & 3 AS band, 5 | 3 AS bor, xor(5, 3) AS bx;
"""),
    ("string_functions", """
SELECT lower('ABC'), upper('abc'), trim('  x  '), lpad('7', 3, '0');
SELECT replace('a;b;c', ';', ','), split_part('a;b;c', ';', 2), string_split('a;b', ';');
SELECT regexp_matches('abc123', '\\d+'), regexp_replace('a1b2', '\\d', '#', 'g'), regexp_extract('x=42', 'x=(\\d+)', 1);
SELECT 'abc' LIKE 'a%', 'ABC' ILIKE 'a%', 'abc' SIMILAR TO 'a.c', 'a_c' LIKE 'a\\_c' ESCAPE '\\';
SELECT format('{} + {} = {}', 1, 2, 3), printf('%05d', 42);
SELECT concat_ws(';', 'a', NULL, 'b'), reverse('abc'), repeat('ab', 3), left('hello', 2);
"""),
    ("hashing_deterministic", """
SELECT md5('pixql') AS m;
SELECT sha256('duckdb') AS s;
SELECT hash('x') = hash('x') AS same;
SELECT base64('hello'::BLOB) AS b, from_base64('aGVsbG8=') AS raw;
"""),

    # -- EXPLAIN -----------------------------------------------------------------------------------
    ("explain", """
CREATE TABLE t AS SELECT range AS i FROM range(10);
EXPLAIN SELECT * FROM t WHERE i > 5;
EXPLAIN SELECT count(*) FROM t;
SELECT count(*) FROM t WHERE i > 5;
"""),
    ("explain_analyze", """
CREATE TABLE t AS SELECT range AS i FROM range(10);
EXPLAIN ANALYZE SELECT sum(i) FROM t;
SELECT sum(i) FROM t;
"""),
    ("explain_keyword_tables", """
CREATE TABLE predict(image VARCHAR);
EXPLAIN SELECT image FROM predict;
EXPLAIN FROM predict;
"""),

    # -- current_query ----------------------------------------------------------------------------
    ("current_query", """
SELECT current_query();
SELECT current_query() AS q;
SELECT 1 AS one, current_query() AS q -- with a comment
;
"""),
    ("current_query_first_and_only", """
SELECT current_query() AS q
"""),

    # -- errors ------------------------------------------------------------------------------------
    ("error_division_by_zero", """
SELECT 1 AS fine;
SELECT CASE WHEN x = 0 THEN error('division by zero') ELSE 1 / x END FROM (SELECT 0 AS x);
"""),
    ("error_integer_division_by_zero", """
CREATE TABLE t(a INTEGER);
INSERT INTO t VALUES (1);
SELECT 1 // 0 AS idiv;
"""),
    ("division_by_zero_settings", """
SELECT 1 / 0 AS float_division;
SELECT TRY(1 // 0) AS tried;
SET error_on_division_by_zero = false;
SELECT 1 // 0 AS idiv, 1 % 0 AS m;
RESET error_on_division_by_zero;
SELECT 1 % 0 AS m;
"""),
    ("error_unknown_table", """
CREATE TABLE t(a INTEGER);
SELECT * FROM no_such_table;
"""),
    ("error_unknown_column", """
CREATE TABLE t(a INTEGER);
SELECT b FROM t;
"""),
    ("error_syntax_last", """
SELECT 1;
SELECT 2;
SELEC 3;
"""),
    ("error_syntax_unterminated_string", """
SELECT 1;
SELECT 'unterminated;
"""),
    ("error_syntax_only", """
SELEC 1
"""),
    ("error_in_non_last_select", """
SELECT error('boom');
SELECT 42;
"""),
    ("error_in_non_last_select_after_work", """
CREATE TABLE t(a INTEGER);
INSERT INTO t VALUES (1);
SELECT error('boom ' || a) FROM t;
SELECT 42;
"""),
    ("error_cast_in_non_last", """
SELECT CAST('nope' AS INTEGER);
SELECT 1;
"""),
    ("error_conversion_late_row", """
CREATE TABLE t(s VARCHAR);
INSERT INTO t VALUES ('1'), ('2'), ('x');
SELECT s::INTEGER AS i FROM t;
"""),
    ("error_drop_missing", """
DROP TABLE IF EXISTS missing;
DROP VIEW IF EXISTS missing;
DROP TABLE missing;
"""),
    ("error_create_existing", """
CREATE TABLE t(a INTEGER);
CREATE TABLE IF NOT EXISTS t(a INTEGER);
CREATE TABLE t(b INTEGER);
"""),
    ("error_insert_arity", """
CREATE TABLE t(a INTEGER, b INTEGER);
INSERT INTO t VALUES (1, 2);
INSERT INTO t VALUES (1);
"""),
    ("error_ambiguous_column", """
CREATE TABLE a(id INTEGER);
CREATE TABLE b(id INTEGER);
SELECT id FROM a, b;
"""),
    ("error_scalar_subquery", """
SELECT (SELECT 1) AS ok;
SELECT (SELECT range FROM range(2)) AS many;
"""),
    ("error_function_missing", """
SELECT abs(-1);
SELECT no_such_function(1);
"""),
    ("error_after_transaction_failure", """
CREATE TABLE t(a INTEGER PRIMARY KEY);
BEGIN;
INSERT INTO t VALUES (1);
INSERT INTO t VALUES (1);
"""),
    ("error_current_query_in_error", """
SELECT error(current_query());
"""),

    # -- side effects of non-last statements --------------------------------------------------------
    ("side_effects_non_last_select", """
CREATE SEQUENCE s;
SELECT nextval('s');
SELECT nextval('s');
SELECT nextval('s');
SELECT currval('s') AS last;
"""),
    ("side_effects_setvariable_select", """
SET VARIABLE n = 1;
SELECT getvariable('n');
SET VARIABLE n = getvariable('n') + 1;
SELECT getvariable('n');
"""),
    ("side_effects_insert_then_select", """
CREATE TABLE log(msg VARCHAR);
INSERT INTO log VALUES ('one');
SELECT count(*) FROM log;
INSERT INTO log SELECT 'two' RETURNING msg;
SELECT msg FROM log ORDER BY msg;
"""),
    ("side_effects_copy_then_read", """
COPY (SELECT 7 AS seven) TO '{tmp}/seven.csv' (HEADER);
SELECT * FROM '{tmp}/seven.csv';
COPY (SELECT 8 AS eight) TO '{tmp}/seven.csv' (HEADER);
SELECT * FROM '{tmp}/seven.csv';
"""),

    # -- pixql keywords as names ---------------------------------------------------------------------
    ("keyword_table_models", """
CREATE TABLE models(a INTEGER);
INSERT INTO models VALUES (1);
SHOW models;
DESCRIBE models;
SELECT * FROM models;
DROP TABLE models;
"""),
    ("keyword_columns_in_parens", """
SELECT (predict) FROM (SELECT 1 AS predict);
SELECT (evaluate + 1) FROM (SELECT 1 AS evaluate);
SELECT (models) FROM (SELECT 'm' AS models);
SELECT * FROM (SELECT 1 AS build) AS search;
SELECT (image || '.png') AS f FROM (SELECT 'cat' AS image);
"""),
    ("keyword_table_predict", """
CREATE TABLE predict AS SELECT 1 AS image;
SELECT * FROM predict;
INSERT INTO predict VALUES (2);
SELECT image FROM predict ORDER BY image;
UPDATE predict SET image = image * 10;
DELETE FROM predict WHERE image = 10;
SELECT * FROM predict;
"""),
    ("keyword_table_evaluate", """
CREATE TABLE evaluate(model VARCHAR, score DOUBLE);
INSERT INTO evaluate VALUES ('m1', 0.5), ('m2', 0.75);
SELECT model, score FROM evaluate ORDER BY score DESC;
SELECT (SELECT max(score) FROM evaluate) AS best;
DESCRIBE evaluate;
"""),
    ("keyword_table_model", """
CREATE TABLE model(x INTEGER);
INSERT INTO model VALUES (1), (2);
DESCRIBE model;
SHOW model;
DELETE FROM model WHERE x = 1;
SELECT * FROM model;
DROP TABLE model;
"""),
    ("keyword_columns_everywhere", """
CREATE TABLE t(predict INTEGER, evaluate INTEGER, models INTEGER, model INTEGER, image INTEGER, build INTEGER, copy INTEGER, search INTEGER, detect INTEGER, embed INTEGER, print INTEGER, fit INTEGER, segment INTEGER, convert INTEGER);
INSERT INTO t VALUES (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14);
SELECT predict, evaluate, models, model, image, build, copy, search, detect, embed, print, fit, segment, convert FROM t;
SELECT predict + evaluate AS s, (fit) AS f, (print) AS p FROM t;
DESCRIBE t;
"""),
    ("keyword_tables_each", """
CREATE TABLE image(a INTEGER);
CREATE TABLE build(a INTEGER);
CREATE TABLE search(a INTEGER);
CREATE TABLE detect(a INTEGER);
CREATE TABLE embed(a INTEGER);
CREATE TABLE print(a INTEGER);
CREATE TABLE fit(a INTEGER);
CREATE TABLE segment(a INTEGER);
CREATE TABLE convert(a INTEGER);
SHOW TABLES;
"""),
    ("keyword_tables_insert_select", """
CREATE TABLE build(model VARCHAR);
INSERT INTO build VALUES ('resnet');
CREATE TABLE fit AS SELECT model AS image FROM build;
SELECT image FROM fit;
CREATE TABLE print AS FROM fit;
FROM print;
FROM print SELECT image;
"""),
    ("keyword_table_segment_detect_embed", """
CREATE TABLE segment(detect INTEGER, embed VARCHAR);
INSERT INTO segment VALUES (1, 'e1'), (2, 'e2');
SELECT detect, embed FROM segment WHERE detect > 1;
UPDATE segment SET embed = 'x' WHERE detect = 1 RETURNING *;
SELECT count(*) AS convert FROM segment;
"""),
    ("keyword_search_convert", """
CREATE TABLE search(convert VARCHAR);
INSERT INTO search VALUES ('a'), ('b');
SELECT convert FROM search ORDER BY convert;
SELECT s.convert FROM search AS s ORDER BY 1 DESC;
SELECT * FROM (SELECT convert AS image FROM search) AS predict ORDER BY image;
"""),
    ("keyword_create_table_as_selects", """
CREATE TABLE predict AS SELECT 1 AS image;
CREATE TABLE evaluate AS (SELECT 2 AS model);
CREATE TABLE models AS FROM predict;
CREATE TABLE copy AS WITH x AS (SELECT 3 AS build) SELECT * FROM x;
SELECT * FROM predict, evaluate, models, copy;
"""),
    ("keyword_views_and_macros", """
CREATE VIEW predict AS SELECT 'p' AS image;
SELECT * FROM predict;
CREATE MACRO evaluate(x) AS x * 2;
SELECT evaluate(21) AS fit;
CREATE MACRO models() AS TABLE SELECT 'm' AS model;
SELECT * FROM models();
"""),
    ("keyword_show_describe_summarize", """
CREATE TABLE models(image VARCHAR, model VARCHAR);
INSERT INTO models VALUES ('a.png', 'm');
SHOW models;
DESCRIBE models;
SUMMARIZE models;
SELECT column_name FROM (DESCRIBE models) ORDER BY 1;
"""),
    ("keyword_nested_show_describe", """
CREATE TABLE models(a INTEGER);
CREATE TABLE model(b INTEGER);
SELECT column_name FROM (SHOW models);
SELECT column_name FROM (DESCRIBE model);
SELECT * FROM (SHOW TABLES) ORDER BY name;
CREATE TABLE x AS SELECT * FROM (DESCRIBE models);
CREATE TABLE y AS FROM (SUMMARIZE models);
SELECT column_name FROM y;
"""),
    ("keyword_qualified_and_aliases", """
CREATE SCHEMA predict;
CREATE TABLE predict.evaluate(image INTEGER);
INSERT INTO predict.evaluate VALUES (1);
SELECT image FROM predict.evaluate;
SELECT build.image FROM predict.evaluate AS build;
SELECT copy.image AS search FROM predict.evaluate copy;
"""),
    ("keyword_in_with_and_joins", """
CREATE TABLE image(id INTEGER, label VARCHAR);
CREATE TABLE predict(id INTEGER, score DOUBLE);
INSERT INTO image VALUES (1, 'cat'), (2, 'dog');
INSERT INTO predict VALUES (1, 0.5), (2, 0.25);
SELECT image.label, predict.score FROM image JOIN predict USING (id) ORDER BY id;
WITH evaluate AS (SELECT label FROM image) SELECT count(*) FROM evaluate;
"""),
    ("keyword_copy_round_trip", """
CREATE TABLE copy(image VARCHAR, label VARCHAR);
INSERT INTO copy VALUES ('a.png', 'cat'), ('b.png', 'dog');
COPY copy TO '{tmp}/copy.csv' (HEADER);
CREATE TABLE predict(image VARCHAR, label VARCHAR);
COPY predict FROM '{tmp}/copy.csv';
SELECT * FROM predict ORDER BY image;
"""),
    ("keyword_print_fit_build_statements", """
CREATE TABLE print(image VARCHAR);
INSERT INTO print VALUES ('x');
SELECT * FROM print;
CREATE TABLE fit(model INTEGER);
INSERT INTO fit VALUES (1);
SELECT * FROM fit;
CREATE TABLE build(model INTEGER);
SELECT count(*) FROM build;
"""),
    ("keyword_pivot_on_keyword_columns", """
CREATE TABLE predict(model VARCHAR, image VARCHAR, score INTEGER);
INSERT INTO predict VALUES ('m1', 'a', 1), ('m1', 'b', 2), ('m2', 'a', 3);
PIVOT predict ON model USING sum(score) GROUP BY image ORDER BY image;
UNPIVOT (SELECT 1 AS evaluate, 2 AS build) ON evaluate, build INTO NAME k VALUE v ORDER BY k;
"""),
    ("keyword_set_variable_names", """
SET VARIABLE predict = 1;
SET VARIABLE model = 'm';
SELECT getvariable('predict') AS p, getvariable('model') AS m;
SELECT $predict + 1 AS p1;
"""),
    ("keyword_prepare_names", """
PREPARE predict AS SELECT $1 * 2 AS image;
EXECUTE predict(21);
PREPARE evaluate AS SELECT 'ok' AS models;
EXECUTE evaluate;
DEALLOCATE predict;
"""),
    ("keyword_attach_alias", """
ATTACH ':memory:' AS models;
CREATE TABLE models.model(image INTEGER);
INSERT INTO models.model VALUES (5);
SELECT image FROM models.model;
USE models;
SELECT current_database();
USE memory;
DETACH models;
"""),
    ("keyword_sequence_and_type_names", """
CREATE SEQUENCE predict;
SELECT nextval('predict');
CREATE TYPE image AS ENUM ('png', 'jpg');
SELECT 'png'::image AS kind;
CREATE TABLE segment(kind image, n INTEGER DEFAULT nextval('predict'));
INSERT INTO segment(kind) VALUES ('jpg') RETURNING *;
"""),
    ("keyword_columns_lowercase_uppercase", """
SELECT 1 AS PREDICT, 2 AS Evaluate, 3 AS MODELS;
SELECT PREDICT FROM (SELECT 4 AS predict);
SELECT "predict", "Model" FROM (SELECT 1 AS "predict", 2 AS "Model");
"""),
    ("keyword_string_literals", """
SELECT 'PREDICT USING m AS SELECT 1' AS s;
SELECT 'BUILD MODEL x; SHOW MODELS' AS s;
SELECT $$EVALUATE USING m AS SELECT 1; COPY t FROM 'x.csv'$$ AS s;
-- PREDICT USING m AS SELECT 1;
/* BUILD MODEL m ON t; */ SELECT 'after comment' AS s;
"""),
    ("keyword_comments_before_statements", """
-- EVALUATE
CREATE TABLE evaluate(a INTEGER);
/* SHOW MODELS */ SHOW TABLES;
/* PRINT IMAGE */ INSERT INTO evaluate VALUES (1);
SELECT * FROM evaluate;
"""),
    ("keyword_delete_and_drop", """
CREATE TABLE model(a INTEGER);
CREATE TABLE models(a INTEGER);
INSERT INTO model VALUES (1), (2);
DELETE FROM model;
DROP TABLE models;
DROP TABLE model;
SHOW TABLES;
"""),
    ("keyword_export_database", """
CREATE TABLE model(a INTEGER);
INSERT INTO model VALUES (1);
EXPORT DATABASE '{tmp}/export_model';
DROP TABLE model;
IMPORT DATABASE '{tmp}/export_model';
SELECT * FROM model;
"""),
    ("keyword_summarize_and_show_predict", """
CREATE TABLE predict(image VARCHAR, score DOUBLE);
INSERT INTO predict VALUES ('a', 1.0), ('b', 3.0);
SUMMARIZE predict;
SHOW predict;
SELECT * FROM (SHOW predict) ORDER BY column_name;
"""),

    # -- more plain DuckDB -------------------------------------------------------------------------
    ("generate_series_and_range", """
SELECT * FROM generate_series(1, 5) ORDER BY ALL;
SELECT * FROM range(0, 10, 3) ORDER BY ALL;
SELECT generate_series(1, 3) AS g;
SELECT sum(x) FROM range(101) t(x);
"""),
    ("subqueries", """
CREATE TABLE t AS SELECT range AS i FROM range(6);
SELECT i FROM t WHERE i > (SELECT avg(i) FROM t) ORDER BY i;
SELECT i, EXISTS (SELECT 1 FROM t t2 WHERE t2.i = t.i + 1) AS has_next FROM t ORDER BY i;
SELECT i FROM t WHERE i IN (SELECT i * 2 FROM t) ORDER BY i;
SELECT (SELECT max(i) FROM t) AS mx, (SELECT count(*) FROM t WHERE i < 3) AS small;
SELECT i, (SELECT count(*) FROM t t2 WHERE t2.i <= t.i) AS cum FROM t ORDER BY i;
"""),
    ("values_and_table_functions", """
SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS v(n, s) ORDER BY n;
SELECT * FROM unnest([1, 2, 3]) AS u(x) ORDER BY x;
SELECT * FROM read_csv_auto('{tmp}/none.csv');
"""),
    ("read_csv_written_by_script", """
COPY (SELECT range AS i, 'x' || range AS s FROM range(4)) TO '{tmp}/data.csv' (HEADER);
SELECT * FROM read_csv('{tmp}/data.csv', columns = {'i': 'INTEGER', 's': 'VARCHAR'}, header = true) ORDER BY i;
CREATE TABLE loaded AS SELECT * FROM '{tmp}/data.csv';
DESCRIBE loaded;
SELECT count(*) FROM loaded;
"""),
    ("glob_and_filename", """
COPY (SELECT 1 AS a) TO '{tmp}/g1.csv' (HEADER);
COPY (SELECT 2 AS a) TO '{tmp}/g2.csv' (HEADER);
SELECT a FROM read_csv('{tmp}/g*.csv') ORDER BY a;
SELECT count(*) FROM glob('{tmp}/g*.csv');
SELECT a, parse_filename(filename) AS f FROM read_csv('{tmp}/g*.csv', filename = true) ORDER BY a;
"""),
    ("table_function_and_pragma_in_select", """
CREATE TABLE t(a INTEGER PRIMARY KEY, b VARCHAR);
SELECT name, type, pk FROM pragma_table_info('t') ORDER BY cid;
SELECT constraint_type, constraint_text, constraint_column_names FROM duckdb_constraints() WHERE table_name = 't' AND constraint_type = 'PRIMARY KEY';
SELECT table_name, constraint_type FROM duckdb_constraints() WHERE table_name = 't' ORDER BY ALL;
"""),
    ("generated_columns", """
CREATE TABLE t(a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) VIRTUAL);
INSERT INTO t(a) VALUES (1), (2);
SELECT a, b FROM t ORDER BY a;
DESCRIBE t;
"""),
    ("create_or_replace_and_if_not_exists", """
CREATE TABLE t(a INTEGER);
CREATE OR REPLACE TABLE t(b VARCHAR);
CREATE TABLE IF NOT EXISTS t(c DOUBLE);
DESCRIBE t;
CREATE OR REPLACE MACRO m() AS 1;
CREATE OR REPLACE MACRO m() AS 2;
SELECT m();
"""),
    ("temp_objects", """
CREATE TEMP TABLE tt(a INTEGER);
INSERT INTO tt VALUES (1);
CREATE TEMPORARY VIEW tv AS SELECT a + 1 AS b FROM tt;
SELECT * FROM tv;
SELECT database_name, table_name, temporary FROM duckdb_tables() WHERE table_name = 'tt';
DROP TABLE tt CASCADE;
"""),
    ("long_script_many_statements", """
CREATE TABLE t(i INTEGER);
INSERT INTO t VALUES (1);
INSERT INTO t VALUES (2);
INSERT INTO t VALUES (3);
INSERT INTO t VALUES (4);
INSERT INTO t VALUES (5);
UPDATE t SET i = i * 2;
DELETE FROM t WHERE i = 4;
SELECT sum(i) FROM t;
SELECT count(*) FROM t;
"""),
    ("multiline_statements", """
SELECT
    1 AS a,
    'two;
lines' AS b
;
CREATE TABLE
    t
    (
        a INTEGER
    );
INSERT
INTO t
VALUES
    (1);
SELECT
    *
FROM
    t;
"""),
    ("no_trailing_semicolon", """
CREATE TABLE t(a INTEGER);
INSERT INTO t VALUES (1);
SELECT a FROM t
"""),
    ("single_statement", """
SELECT 'just one' AS s
"""),
    ("whitespace_noise", """

   SELECT 1 AS a   ;


	SELECT 2 AS b	;

"""),
    ("call_statements", """
CALL pragma_version();
CALL range(3);
CALL duckdb_settings();
"""),
    ("describe_query_forms", """
DESCRIBE SELECT 1 AS a, 'x' AS b;
DESCRIBE FROM range(2);
DESCRIBE VALUES (1, 2);
"""),
    ("summarize_query_forms", """
SUMMARIZE SELECT range AS i FROM range(10);
SUMMARIZE FROM range(5);
SUMMARIZE VALUES (1), (2);
"""),
    ("table_statement", """
CREATE TABLE t AS SELECT 1 AS a;
TABLE t;
SELECT * FROM t;
"""),
    ("values_first", """
VALUES (1);
VALUES (1, 'a'), (2, 'b') ORDER BY 1 DESC;
VALUES ('x;y');
"""),
    ("like_any_and_between", """
SELECT list_has_any(['a', 'b'], ['b', 'z']) AS l;
SELECT 5 BETWEEN 1 AND 10 AS b, 5 NOT BETWEEN 6 AND 7 AS nb;
SELECT 3 IN (1, 2, 3) AS i, NULL IS NOT DISTINCT FROM NULL AS d;
SELECT 'abc' ^@ 'ab' AS starts, contains('abc', 'bc') AS c;
"""),
    ("nulls_ordering", """
CREATE TABLE t(a INTEGER);
INSERT INTO t VALUES (2), (NULL), (1);
SELECT a FROM t ORDER BY a;
SELECT a FROM t ORDER BY a DESC;
SELECT a FROM t ORDER BY a NULLS FIRST;
SELECT a FROM t ORDER BY a DESC NULLS LAST;
"""),
    ("collations", """
SELECT 'B' < 'a' AS binary_order;
SELECT 'B' COLLATE NOCASE < 'a' AS nocase_order;
SELECT x FROM (VALUES ('b'), ('A'), ('a'), ('B')) v(x) ORDER BY x COLLATE NOCASE, x;
"""),
    ("intervals", """
SELECT INTERVAL 1 DAY + INTERVAL 2 HOUR AS i;
SELECT TIMESTAMP '2024-01-01' + INTERVAL '90 minutes' AS ts;
SELECT to_days(3) AS d, to_hours(5) AS h;
SELECT epoch(TIMESTAMP '1970-01-02 00:00:00') AS e;
"""),
    ("struct_and_list_tables", """
CREATE TABLE events AS SELECT range AS id, {'kind': 'k' || (range % 2), 'n': range} AS info FROM range(4);
SELECT info.kind, count(*) FROM events GROUP BY info.kind ORDER BY info.kind;
SELECT id FROM events WHERE info.n > 1 ORDER BY id;
CREATE TABLE lists AS SELECT [range, range + 1] AS l FROM range(3);
SELECT l, list_sum(l) FROM lists ORDER BY list_sum(l);
"""),
    ("min_max_by_and_histogram", """
CREATE TABLE t(k VARCHAR, v INTEGER);
INSERT INTO t VALUES ('a', 1), ('b', 5), ('c', 3);
SELECT max_by(k, v) AS top, min_by(k, v) AS bottom FROM t;
SELECT histogram(v % 2) AS h FROM t;
SELECT list_sort(list(k)) FROM t;
"""),
    ("update_with_subquery_and_case", """
CREATE TABLE t(id INTEGER, grade VARCHAR);
INSERT INTO t VALUES (1, NULL), (2, NULL), (3, NULL);
UPDATE t SET grade = CASE WHEN id = 1 THEN 'A' WHEN id = 2 THEN 'B' ELSE 'C' END;
UPDATE t SET grade = 'top' WHERE id = (SELECT min(id) FROM t);
SELECT * FROM t ORDER BY id;
"""),
    ("insert_select_from_files", """
COPY (SELECT range AS i FROM range(3)) TO '{tmp}/ints.parquet' (FORMAT parquet);
CREATE TABLE t(i BIGINT);
INSERT INTO t SELECT * FROM '{tmp}/ints.parquet';
INSERT INTO t FROM '{tmp}/ints.parquet';
SELECT i, count(*) FROM t GROUP BY i ORDER BY i;
"""),
    ("views_over_files", """
COPY (SELECT 'x' AS s) TO '{tmp}/v.csv' (HEADER);
CREATE VIEW file_view AS SELECT * FROM read_csv('{tmp}/v.csv');
SELECT * FROM file_view;
SELECT view_name FROM duckdb_views() WHERE view_name = 'file_view';
"""),
    ("semicolon_in_identifier_and_comment_mix", """
CREATE TABLE "a;b"("c;d" INTEGER);
INSERT INTO "a;b" VALUES (1); -- comment; with; semicolons
/* block; with; semicolons */ SELECT "c;d" FROM "a;b";
SELECT ';' AS "x;y" -- trailing
"""),
    ("string_escape_edge_cases", """
SELECT '''' AS one_quote;
SELECT '''''' AS two_quotes;
SELECT 'a''b''c' AS s;
SELECT E'\\'' AS e_quote;
"""),
    ("json_functions", """
SELECT json_array_length('[1, 2, 3]') AS n;
SELECT json_keys('{"a": 1, "b": 2}') AS k;
SELECT '{"a": [1, 2]}'::JSON AS j;
SELECT json_valid('{not json') AS v;
SELECT to_json({'x': 1}) AS j;
"""),
]
