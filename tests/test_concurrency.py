"""Concurrent use (issue 7): two processes on one database file get DuckDB's lock as a clear
message (or wait for it), read-only readers share a file and a model, and two writers never
mix their files in the model store."""

import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner
from conftest import make_shop

import pixql
from pixql.cli import cli
from pixql.errors import SqlError
from pixql.store import ModelStore


def _kill_leftovers(procs):
    """After a failed assertion or a timeout, no process outlives the test."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture
def shop(tmp_path):
    return make_shop(tmp_path, per_class=12)


def _wait_for(path, proc, seconds=60):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


HOLDER = textwrap.dedent("""
    import sys, time, duckdb
    db_file, ready, seconds, read_only = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "ro"
    con = duckdb.connect(db_file, read_only=read_only)
    open(ready, "w").close()
    time.sleep(seconds)
    con.close()
""")


def _hold(db_file, tmp_path, seconds, read_only=False):
    """Another process that opens the database file and keeps it for `seconds`."""
    ready = tmp_path / f"held-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db_file), str(ready), str(seconds),
                             "ro" if read_only else "rw"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(ready, proc)
    return proc


OPENER = textwrap.dedent("""
    import sys, pixql
    try:
        pixql.connect(sys.argv[1]).sql("INSERT INTO t VALUES (2)")
        print("written")
    except pixql.SqlError as exc:
        print(exc)
""")


@pytest.mark.parametrize("first", ["pixql", "duckdb"])
def test_opening_a_database_again_in_this_process_keeps_its_lock(tmp_path, first):
    """pixql read a database file's header before opening it, and closing that descriptor ended
    every POSIX lock the process held on the file: a second connect() (a notebook cell run again)
    let another process in, and its committed rows were lost when this one wrote."""
    import duckdb

    path = str(tmp_path / "held.duckdb")
    with pixql.connect(path) as db:
        db.sql("CREATE TABLE t AS SELECT 1 AS x")
    held = pixql.connect(path) if first == "pixql" else duckdb.connect(path)
    again = pixql.connect(path)
    other = subprocess.run([sys.executable, "-c", OPENER, path], capture_output=True, text=True, timeout=120)
    assert "is in use by another process" in other.stdout, other.stdout + other.stderr[-2000:]
    again.sql("INSERT INTO t VALUES (3)")
    again.close()
    held.close()
    with pixql.connect(path) as db:
        assert db.sql("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (3,)]
    # closed, the file is checked again: a CSV copied over it (the same inode) is named, not opened
    with open(path, "w") as f:
        f.write("image,label\na.jpg,cat\n")
    with pytest.raises(SqlError, match="it is not a DuckDB database file"):
        pixql.connect(path)


DROPPER = textwrap.dedent("""
    import gc, sys
    import pandas as pd
    import pixql

    def steps(db):
        frame = pd.DataFrame({"image": [p for (p,) in db.sql("SELECT image FROM colors LIMIT 3").fetchall()]})
        db.sql("PREDICT USING cm AS SELECT * FROM colors").df()
        db.sql("PREDICT USING cm AS SELECT * FROM frame").df()
        db.sql("SELECT * FROM (EVALUATE USING cm AS SELECT * FROM colors)").df()
        db.sql("SELECT predict('cm', image) FROM colors WHERE label = ?", ["red"]).fetchall()
        db.cursor().sql("SELECT count(*) FROM colors").fetchall()
        for typo in ("SELECT predict('cm', 'no-such.jpg')", "PREDICT USING cm AS SELEC * FROM colors"):
            for read in (lambda result: result.df(), str):  # (str: the text a notebook shows)
                try:
                    read(db.sql(typo))
                except pixql.PixqlError:
                    pass

    with pixql.connect(sys.argv[1], progress=False) as warm:  # (imports made, first-use caches filled)
        steps(warm)
    gc.collect()
    gc.disable()  # what is freed now is freed by reference counting, as soon as it is dropped
    db = pixql.connect(sys.argv[1], progress=False)
    steps(db)
    kept = db.sql("SELECT predict('cm', image) AS label FROM colors")
    shown = db.sql("DESCRIBE MODEL cm")  # (an answer already made: it holds nothing of the file)
    del db
    print("result kept", flush=True)
    sys.stdin.readline()
    print(sorted(set(kept.df().label)), flush=True)
    del kept
    from pixql.session import _OPEN  # (the process's count of its open files: the header check's)
    print("dropped" if not _OPEN else f"still counted open: {_OPEN}", flush=True)
    sys.stdin.readline()
""")


def _said(proc, seconds=120):
    """The next line `proc` prints, within `seconds`."""
    import select

    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    assert ready, f"no answer in {seconds} s"
    return proc.stdout.readline().strip()


def test_a_dropped_connection_lets_go_of_its_file_at_once_unless_a_result_still_reads_it(shop):
    """A connection dropped without close() (a notebook re-running `db = pixql.connect(...)`) kept
    its DuckDB file lock and its models until Python's next full garbage collection: the engine
    and its session held each other. Now it goes as DuckDB's does, when the last thing that
    reads through it (a lazy Result, as a DuckDB relation) goes; checked with the collector off."""
    proc = subprocess.Popen([sys.executable, "-c", DROPPER, str(shop)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _said(proc) == "result kept", proc.stderr.read()[-3000:] if proc.poll() is not None else ""
        with pytest.raises(SqlError, match="in use by another process"):
            pixql.connect(str(shop))
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert _said(proc) == "['blue', 'red']"  # the kept Result's predict() still ran
        assert _said(proc) == "dropped"
        with pixql.connect(str(shop)) as db:  # while that process lives on
            db.sql("INSERT INTO colors SELECT * FROM colors LIMIT 1")
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()[-3000:]
    finally:
        _kill_leftovers([proc])


def test_a_database_held_by_another_process_is_a_clear_message(shop, tmp_path):
    holder = _hold(shop, tmp_path, 60)
    try:
        for read_only in (False, True):
            with pytest.raises(SqlError) as info:
                pixql.connect(str(shop), read_only=read_only)
            message = str(info.value)
            assert f"database {shop} is in use by another process (PID {holder.pid}" in message
            assert "--wait SECONDS" in message
            # --read-only is advice only to a writer: a blocked reader has it already
            assert ("open it with --read-only" in message) == (not read_only)
        started = time.monotonic()
        with pytest.raises(SqlError, match=r"in use by another process .*lock on it \(waited 0.5 s\)"):
            pixql.connect(str(shop), wait=0.5)
        assert time.monotonic() - started >= 0.5  # it gave up (the holder keeps the file 60 s) after waiting
        result = CliRunner().invoke(cli, ["--db", str(shop), "-c", "SELECT count(*) FROM colors"])
        assert result.exit_code == 1
        assert result.stderr.startswith("Error: database ") and f"(PID {holder.pid}" in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        # The model store is not the database: its files are untouched by the refused opens.
        assert ModelStore(f"{shop}.models").load("cm")[0]["classes"] == ["blue", "red"]
    finally:
        holder.kill()
        holder.communicate()


def test_wait_gets_the_database_once_the_other_process_lets_go(shop, tmp_path):
    holder = _hold(shop, tmp_path, 1.5)
    try:
        result = CliRunner().invoke(cli, ["--db", str(shop), "--wait", "60", "--format", "csv",
                                          "-c", "SELECT count(*) AS n FROM colors"])
        assert result.exit_code == 0, result.stderr
        assert result.stdout == "n\n24\n"
    finally:
        holder.communicate()
    holder = _hold(shop, tmp_path, 1.5)
    try:
        with pixql.connect(str(shop), wait=60, progress=False) as db:
            assert db.sql("SELECT count(*) FROM colors").fetchone() == (24,)
    finally:
        holder.communicate()
    assert CliRunner().invoke(cli, ["--db", str(shop), "--wait", "-1", "-c", "SELECT 1"]).exit_code == 2


READER = textwrap.dedent("""
    import os, sys, time
    import pixql
    db_file, me, everyone = sys.argv[1], sys.argv[2], sys.argv[3:]
    db = pixql.connect(db_file, read_only=True, progress=False)
    open(me, "w").close()
    while not all(os.path.exists(p) for p in everyone):  # every reader has the file open
        time.sleep(0.02)
    frame = db.sql("PREDICT USING cm AS SELECT * FROM colors ORDER BY image").df()
    print(frame.to_csv(index=False), end="")
""")


def test_many_read_only_processes_predict_with_the_same_model_at_once(shop, tmp_path):
    marks = [str(tmp_path / f"reader-{i}") for i in range(3)]
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(shop), mark, *marks],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for mark in marks]
    try:
        for mark, proc in zip(marks, readers):
            _wait_for(tmp_path / mark, proc)
        # While they all hold it, the command line can read it too, but not write it.
        result = CliRunner().invoke(cli, ["--db", str(shop), "--read-only", "--format", "csv", "-c",
                                          "SELECT predict('cm', image) = label AS ok, count(*) AS n "
                                          "FROM colors GROUP BY ok"])
        assert result.exit_code == 0, result.stderr
        assert result.stdout == "ok,n\nTrue,24\n"
        refused = CliRunner().invoke(cli, ["--db", str(shop), "-c", "SELECT 1"])
        assert refused.exit_code == 1 and "in use by another process" in refused.stderr
        outputs = [proc.communicate(timeout=120) for proc in readers]
    finally:
        _kill_leftovers(readers)
    assert [proc.returncode for proc in readers] == [0, 0, 0], [err for _, err in outputs]
    frames = [out for out, _ in outputs]
    assert frames[0] == frames[1] == frames[2]
    rows = frames[0].splitlines()
    assert rows[0] == "image,label,predicted,score" and len(rows) == 25
    assert all(row.split(",")[1] == row.split(",")[2] for row in rows[1:])


ROUNDS = 10
WRITER = textwrap.dedent("""
    import os, sys, time, torch
    from pixql.store import ModelStore
    root, me, rounds, reader_saw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    store = ModelStore(root)
    for n in range(rounds):
        if n == rounds // 2:  # half-way, wait (bounded) until the reader has read a model: the reads overlap
            deadline = time.monotonic() + 120
            while not os.path.exists(reader_saw):
                if time.monotonic() > deadline:
                    sys.exit("the reader never read a model")
                time.sleep(0.01)
        value = me * 1000 + n
        store.save("shared", {"w": torch.full((200_000,), float(value))}, {"value": value}, overwrite=True)
        store.save(f"own_{me}", {"w": torch.full((1000,), float(value))}, {"value": value}, overwrite=True)
    print("done")
""")


def test_writers_never_mix_their_files_and_readers_see_whole_models(tmp_path):
    """Three processes overwrite the same model again and again while this one reads it: every
    read is one writer's manifest with that same writer's weights."""
    import safetensors.torch  # noqa: F401  (imported before the race starts: it takes a second or two)

    root = tmp_path / "store"
    reader_saw = tmp_path / "reader_saw"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(i), str(ROUNDS), str(reader_saw)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 2, 3)]
    store = ModelStore(root)
    seen = set()
    try:
        while any(proc.poll() is None for proc in writers):
            if store.exists("shared"):
                manifest, state = store.load("shared")
                assert state["w"][0].item() == state["w"][-1].item() == manifest["value"]
                seen.add(manifest["value"])
                reader_saw.touch()
            time.sleep(0.01)
        outputs = [proc.communicate(timeout=120) for proc in writers]
    finally:
        _kill_leftovers(writers)
    assert [proc.returncode for proc in writers] == [0, 0, 0], [err for _, err in outputs]
    manifest, state = store.load("shared")
    # The writers waited half-way for a read: the first read saw a half-way model, this one the last.
    assert len(seen | {manifest["value"]}) > 1
    assert manifest["value"] % 1000 == ROUNDS - 1 and state["w"][0].item() == manifest["value"]
    for i in (1, 2, 3):
        manifest, state = store.load(f"own_{i}")
        last = i * 1000 + ROUNDS - 1
        assert manifest["value"] == last and state["w"].unique().tolist() == [float(last)]
    assert sorted(m["name"] for m in store.list()) == ["own_1", "own_2", "own_3", "shared"]
    assert not any((root / ".tmp").iterdir()) and not any((root / ".trash").iterdir())
