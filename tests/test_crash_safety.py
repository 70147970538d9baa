"""Crashes and interruption (issue 7): kill -9 and Ctrl-C never leave a half model, an
overwritten model survives until its replacement is complete, a corrupted weights file is a
message, not a crash deep in torch."""

import hashlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from click.testing import CliRunner
from conftest import make_shop, save_color_model

import pixql
from pixql.cli import cli
from pixql.errors import StoreError
from pixql.store import ModelStore

INTERRUPTED = "Interrupted: the statement was stopped; nothing half-written was kept."


def model_files(root):
    """{relative path: sha256} of every file in the store but its bookkeeping (.lock, .tmp, .trash)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.startswith("."):
            continue
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                out[os.path.join(rel, name)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture
def shop(tmp_path):
    return make_shop(tmp_path, per_class=40)


def check_old_model_intact(db_file, before):
    """After a crash: only `cm` is listed, its files are the ones from before, it predicts."""
    with pixql.connect(str(db_file), progress=False) as db:  # opening recovers what a crash left
        root = db.engine.store.root
        assert list(db.sql("SELECT name FROM pixql_models() ORDER BY name").df().name) == [
            "cm", "imagenet_classifier"]
        assert model_files(root) == before
        assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["cm"]
        for hidden in (".tmp", ".trash"):
            assert not (root / hidden).exists() or not any((root / hidden).iterdir()), hidden
        preds = db.sql("PREDICT USING cm AS SELECT * FROM colors").df()
        assert (preds.predicted == preds.label).all()


# -- kill -9 during BUILD MODEL ------------------------------------------------------------------------
# The child builds `cm` again with overwrite=true and is killed mid-training (once its progress
# bar on stderr shows the third epoch), or, when it signals with a marker file, with the new
# weights half in staging, or between moving the old model aside and moving the new one in.
CHILD = textwrap.dedent("""
    import os, sys, time
    import pixql, pixql.store, safetensors.torch
    db_file, marker, phase, epochs = sys.argv[1:5]

    def signal_and_hang():
        open(marker, "w").close()
        time.sleep(600)

    if phase == "writing":
        save_file = safetensors.torch.save_file
        def half_save(tensors, path, *a, **k):
            save_file(tensors, path, *a, **k)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            signal_and_hang()
        safetensors.torch.save_file = half_save
    elif phase == "swapping":
        rename = os.rename
        def slow_rename(src, dst):
            rename(src, dst)
            if "/.trash/" in str(dst):
                signal_and_hang()
        pixql.store.os.rename = slow_rename
    db = pixql.connect(db_file, progress=phase == "training")  # the parent watches training's bar
    db.sql(f"BUILD MODEL cm USING SimpleCNN OPTIONS (pretrained=false, overwrite=true, epochs={epochs}, "
           "num_workers=0) AS SELECT * FROM colors")
    print("finished without being killed")
""")


@pytest.mark.parametrize("phase", ["training", "writing", "swapping"])
def test_kill_9_during_build_keeps_the_previous_model(shop, tmp_path, phase):
    root = tmp_path / "shop.duckdb.models"
    before = model_files(root)
    marker = tmp_path / "reached"
    epochs = "20" if phase == "training" else "1"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(shop), str(marker), phase, epochs],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = []
    threading.Thread(target=lambda: err.extend(iter(child.stderr.readline, "")), daemon=True).start()

    def reached():
        return any("epoch 3/20" in line for line in err) if phase == "training" else marker.exists()

    try:
        deadline = time.monotonic() + 120
        while not reached():
            assert child.poll() is None, "".join(err)
            assert time.monotonic() < deadline, "the child never reached the point to kill it at"
            time.sleep(0.05)
        if phase == "writing":
            assert any(root.glob(".tmp/cm--*/weights.safetensors"))  # a half model is on disk
        if phase == "swapping":
            assert not (root / "cm").exists() and any(root.glob(".trash/cm--*"))  # the old one is aside
    finally:
        child.kill()  # SIGKILL: no cleanup of any kind runs
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    check_old_model_intact(shop, before)


# -- Ctrl-C ---------------------------------------------------------------------------------------------
# A child hears Ctrl-C as a terminal's foreground job does, however the suite was started: a shell
# hands a job run in the background (`make test &`) SIGINT ignored, and Python then never raises
# KeyboardInterrupt (these tests failed so, the statements running to their end)
HEARS_CTRL_C = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)"

def _pixql(*args):
    """The `pixql` command as a subprocess in its own session, as a terminal runs it; stderr
    is collected by a thread so that the test can watch the progress."""
    proc = subprocess.Popen([sys.executable, "-c", f"{HEARS_CTRL_C}; from pixql.cli import main; main()", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    proc.err = []
    thread = threading.Thread(target=lambda: proc.err.extend(iter(proc.stderr.readline, "")), daemon=True)
    thread.start()
    proc.err_thread = thread
    return proc


@pytest.mark.parametrize("statement, progress, stop", [
    # 80 images: DataLoader worker processes decode them; Ctrl-C reaches them too
    ("BUILD MODEL cm USING SimpleCNN OPTIONS (pretrained=false, overwrite=true, epochs=50) "
     "AS SELECT * FROM colors", "epoch 2/50", "ctrl-c"),
    ("CREATE TABLE p AS PREDICT USING cm AS SELECT c.* FROM colors c, range(500)", "predict:", "ctrl-c"),
    # kill, timeout or a scheduler: SIGTERM to the process alone, which stops as Ctrl-C does
    ("CREATE TABLE p AS PREDICT USING cm AS SELECT c.* FROM colors c, range(500)", "predict:", "sigterm"),
])
def test_ctrl_c_exits_130_with_one_line_and_nothing_half_written(shop, tmp_path, statement, progress, stop):
    root = tmp_path / "shop.duckdb.models"
    before = model_files(root)
    proc = _pixql("--db", str(shop), "-c", statement)
    try:
        deadline = time.monotonic() + 120
        while not any(progress in line for line in proc.err):
            assert proc.poll() is None, "".join(proc.err)
            assert time.monotonic() < deadline, "no progress shown"
            time.sleep(0.05)
        if stop == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # like Ctrl-C in a terminal: the whole process group
        else:
            proc.terminate()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    proc.err_thread.join(timeout=10)
    out, err = proc.stdout.read(), "".join(proc.err)
    said, code = (INTERRUPTED, 130) if stop == "ctrl-c" else (INTERRUPTED.replace("Interrupted", "Terminated"), 143)
    assert proc.returncode == code, err
    assert re.split(r"[\r\n]+", err.strip())[-1] == said  # (progress bars redraw with \r)
    assert err.count(said) == 1 and "Traceback" not in err and "Error" not in err
    assert out == ""
    check_old_model_intact(shop, before)
    with pixql.connect(str(shop), read_only=True, progress=False) as db:  # (read-only: no clean-up at open)
        assert db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'p' "
                      "OR table_name LIKE '__pixql_partial_%'").fetchone() == (0,)


def test_ctrl_c_inside_the_store_swap_puts_the_old_model_back(tmp_path, monkeypatch):
    """KeyboardInterrupt between moving the old model aside and moving the new one in: the old
    one is back at once (not only at the next recovery)."""
    import torch

    import pixql.store

    store, before = _one_model(tmp_path)
    rename = os.rename

    def interrupted_rename(src, dst):
        rename(src, dst)
        if "/.trash/" in str(dst):
            raise KeyboardInterrupt

    monkeypatch.setattr(pixql.store.os, "rename", interrupted_rename)
    with pytest.raises(KeyboardInterrupt):
        store.save("m", {"w": torch.zeros(3)}, {"v": 2}, overwrite=True)
    monkeypatch.undo()
    _as_it_was(store, tmp_path, before)


def _one_model(tmp_path):
    """A store holding model m (v 1, weights of ones), and its files' digests."""
    import torch

    store = ModelStore(tmp_path)
    store.save("m", {"w": torch.ones(3)}, {"v": 1})
    return store, model_files(tmp_path)


def _as_it_was(store, tmp_path, before):
    assert model_files(tmp_path) == before
    assert [row["name"] for row in store.list()] == ["m"]
    manifest, state = store.load("m")
    assert manifest["v"] == 1 and state["w"].tolist() == [1.0, 1.0, 1.0]
    assert not any((tmp_path / ".tmp").iterdir()) and not list(tmp_path.glob(".trash/*"))


@pytest.mark.parametrize("handler", ["raises", "takes note"])
@pytest.mark.parametrize("change", ["overwrite", "new", "drop"])
def test_ctrl_c_as_the_store_swaps_a_model_in_or_out_undoes_the_swap(tmp_path, monkeypatch, change, handler):
    """A Ctrl-C that strikes as BUILD (overwrite) moves its new model into place, or as DROP moves
    the model out, stopped the statement with "nothing half-written was kept" while the new model
    was in place (or the model gone). The swap is undone: the store is as it was before. A program
    whose handler only takes note of the signal (asyncio's, a server's) is told by an interrupt too:
    the save it asked for did not happen."""
    import torch

    import pixql.store

    store, before = _one_model(tmp_path)
    rename = os.rename

    def ctrl_c_as_it_moves(src, dst):
        rename(src, dst)
        if "/.trash/" not in str(dst) and str(src) != str(dst):
            signal.raise_signal(signal.SIGINT)  # (Python delivers it at its next instruction)

    noted = []
    saved = signal.signal(signal.SIGINT, signal.default_int_handler if handler == "raises"  # (a pytest-xdist
                          else lambda signum, frame: noted.append(signum))  # worker may ignore it)
    try:
        monkeypatch.setattr(pixql.store.os, "rename", ctrl_c_as_it_moves)
        with pytest.raises(KeyboardInterrupt):
            if change == "drop":
                store.drop("m")
            else:
                store.save("m" if change == "overwrite" else "n", {"w": torch.zeros(3)}, {"v": 2}, overwrite=True)
        monkeypatch.undo()
    finally:
        signal.signal(signal.SIGINT, saved)
    assert noted == ([] if handler == "raises" else [signal.SIGINT])  # (the program's handler heard it once)
    _as_it_was(store, tmp_path, before)
    store.save("m", {"w": torch.zeros(3)}, {"v": 2}, overwrite=True)  # the store goes on
    assert store.load("m")[0]["v"] == 2


def test_ctrl_c_as_duckdb_calls_the_path_function_stops_a_copy_and_keeps_the_table(tmp_path, monkeypatch):
    """A Ctrl-C (or SIGTERM, which the terminal turns into one) that strikes as DuckDB calls COPY's
    path-resolving function, outside its own code, left only DuckDB's text ('... executing the
    UDF: KeyboardInterrupt'), which read as 'cannot load' the file."""
    import pandas as pd

    import pixql.ingest

    csv = tmp_path / "t.csv"
    pd.DataFrame({"image": [f"p{i}.png" for i in range(10)], "label": "x"}).to_csv(csv, index=False)
    db = pixql.connect(str(tmp_path / "c.duckdb"), progress=False)
    db.sql("CREATE TABLE t AS SELECT 'old' AS marker")

    def struck(*args):
        raise KeyboardInterrupt  # (not through the function's own record of what it raised)

    monkeypatch.setattr(pixql.ingest, "_resolved_paths", struck)
    with pytest.raises(KeyboardInterrupt):
        db.sql(f"COPY t OPTIONS (overwrite=true) FROM '{csv}'")
    monkeypatch.undo()
    assert db.sql("SELECT * FROM t").fetchall() == [("old",)]
    db.sql(f"COPY t OPTIONS (overwrite=true) FROM '{csv}'")  # the connection goes on
    assert db.sql("SELECT count(*) FROM t").fetchall() == [(10,)]
    db.close()


def test_signals_held_over_a_block_are_heard_after_it_sigterm_first():
    """errors.signals_held (EXPORT's two renames): Ctrl-C and SIGTERM wait for the block; both held,
    SIGTERM is delivered first (SIGINT's KeyboardInterrupt would end the delivery before it)."""
    from pixql.errors import signals_held

    heard, done = [], []

    def term(signum, frame):
        heard.append("term")

    before = signal.signal(signal.SIGTERM, term)
    before_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # (a pytest-xdist worker may ignore it)
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_held():
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGTERM)
                done.append(True)  # (reached: nothing raised inside)
        assert done == [True] and heard == ["term"]
        assert signal.getsignal(signal.SIGTERM) is term and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, before)
        signal.signal(signal.SIGINT, before_int)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_programs_own_handler_hears_a_signal_after_a_first_import_under_a_statement(tmp_path, monkeypatch, sig):
    """A program that set its own Ctrl-C or SIGTERM handler and runs a statement: a signal inside
    a C extension's first import under it (onnx, under a first PREDICT's export) aborted the
    process at exit (status -6). Its handler hears it once the import is over, and is put back."""
    from pixql.engine import Engine

    (tmp_path / "slow_for_a_program.py").write_text(
        f"import os, time\nos.kill(os.getpid(), {int(sig)})\ntime.sleep(0.2)\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    heard = []

    def stop(signum, frame):
        heard.append(sys.modules["slow_for_a_program"].DONE)  # (raises if the import is not over)
        raise KeyboardInterrupt

    def importing(self, statement, params=None):
        import slow_for_a_program  # noqa: F401
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.01)

    before = signal.signal(sig, stop)
    try:
        with pixql.connect() as db:
            monkeypatch.setattr(Engine, "run", importing)
            with pytest.raises(KeyboardInterrupt):
                db.sql("SELECT 1")
        assert heard == [True]
        assert signal.getsignal(sig) is stop
    finally:
        signal.signal(sig, before)
        sys.modules.pop("slow_for_a_program", None)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_a_modules_first_import_stops_the_terminal_after_it(tmp_path, monkeypatch, sig):
    """Ctrl-C or SIGTERM striking inside duckdb's first import, as `pixql` opens its database,
    aborted the process at exit (nanobind's enums half made: status -6, one try in twenty): the
    terminal's handlers deliver it once the import is over."""
    from pixql import cli as terminal

    (tmp_path / "slow_to_import.py").write_text(
        f"import os, time\nos.kill(os.getpid(), {int(sig)})\ntime.sleep(0.2)\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(terminal, "_terminated", False)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (a terminal's foreground job hears Ctrl-C)
    try:
        terminal._hear_signals()
        with pytest.raises(KeyboardInterrupt):
            import slow_to_import  # noqa: F401
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                time.sleep(0.01)
        assert sys.modules["slow_to_import"].DONE  # the import ran to its end, then the stop
    finally:
        for kind, handler in before.items():
            signal.signal(kind, handler)
        sys.modules.pop("slow_to_import", None)


def test_ctrl_c_inside_a_first_import_under_a_statement_stops_it_after_the_import(tmp_path, monkeypatch):
    """From Python or a notebook (Python's own Ctrl-C handler), as a statement first imports a
    module (torch, under a first PREDICT): the import ends, then the statement stops."""
    from pixql.engine import Engine

    (tmp_path / "slow_under_a_statement.py").write_text(
        f"import os, time\nos.kill(os.getpid(), {int(signal.SIGINT)})\ntime.sleep(0.2)\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def importing(self, statement, params=None):
        import slow_under_a_statement  # noqa: F401
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.01)

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pixql.connect() as db:
            monkeypatch.setattr(Engine, "run", importing)
            with pytest.raises(KeyboardInterrupt, match="SELECT statement at line 1: interrupted"):
                db.sql("SELECT 1")
        assert sys.modules["slow_under_a_statement"].DONE
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    finally:
        signal.signal(signal.SIGINT, before)
        sys.modules.pop("slow_under_a_statement", None)


def test_ctrl_c_as_the_database_opens_is_an_interrupt_not_a_traceback(tmp_path, monkeypatch):
    """Struck while DuckDB ran a set-up query of the connection (the SQL functions' registration),
    it was `RuntimeError: Query interrupted` with a traceback, status 1."""
    from pixql.catalog import Catalog

    def interrupted(self, session):
        raise RuntimeError("Query interrupted")  # (DuckDB's own answer to a signal inside execute())

    db = str(tmp_path / "t.duckdb")
    with monkeypatch.context() as patch:
        patch.setattr(Catalog, "register", interrupted)
        result = CliRunner().invoke(cli, ["--db", db, "-c", "SELECT 1"])
        assert result.exit_code == 130, result.output
        assert result.output.strip() == INTERRUPTED
        with pytest.raises(KeyboardInterrupt):
            pixql.connect(db)
    with pixql.connect(db) as again:  # nothing held the file
        assert again.sql("SELECT 1").fetchall() == [(1,)]


# -- corrupted model files ---------------------------------------------------------------------------
def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage_with_matching_checksum(path):
    """Not a safetensors file at all, though the manifest's checksum says it is the right one."""
    import json

    path.write_bytes(b"\x00" * 64)
    manifest_path = path.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["weights_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, message", [
    (_flip_last_byte, r"weights file .*weights.safetensors is corrupt \(checksum mismatch\); drop and rebuild"),
    (_truncate, "weights file .* is corrupt"),
    (lambda p: p.unlink(), "weights file .* is missing; drop and rebuild"),
    (_garbage_with_matching_checksum, "cannot read weights file .*; drop and rebuild"),
    (lambda p: (p.parent / "manifest.json").write_text("{not json"), r"cannot read .*manifest.json"),
    # its folder without its manifest: SHOW MODELS said broken, PREDICT and DESCRIBE 'does not exist'
    (lambda p: (p.parent / "manifest.json").unlink(), r"its manifest .*cm/manifest.json is missing; DROP MODEL cm"),
])
def test_corrupted_model_files_are_a_message_and_the_model_can_be_dropped(shop, tmp_path, damage, message):
    weights = tmp_path / "shop.duckdb.models" / "cm" / "weights.safetensors"
    damage(weights)
    with pixql.connect(str(shop), progress=False) as db:
        with pytest.raises(StoreError, match=rf"PREDICT \(line 1\): model 'cm': {message}"):
            db.sql("PREDICT USING cm AS SELECT * FROM colors")
        with pytest.raises(StoreError, match=message):
            db.sql("FIT MODEL cm2 USING cm AS SELECT * FROM colors")
    result = CliRunner().invoke(cli, ["--db", str(shop), "-c", "SELECT predict('cm', image) FROM colors"])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "model 'cm'" in result.stderr and "leave its row out" not in result.stderr  # (a model's file, no row's)
    with pixql.connect(str(shop), progress=False) as db:
        db.sql("DROP MODEL cm")
        assert list(db.sql("SHOW MODELS").df().name) == ["imagenet_classifier"]
        save_color_model(db.engine.store, "cm", classes=("blue", "red"))
        assert len(db.sql("PREDICT USING cm AS SELECT * FROM colors").df()) == 80


API_CHILD = HEARS_CTRL_C + """
import sys, pixql
db = pixql.connect(sys.argv[1], progress=False)
db.sql("CREATE TABLE kept AS SELECT 1 AS x")
open(sys.argv[2], "w").close()
try:
    # no rows handed over until it ends (an hour's work here): DuckDB's execute() alone let
    # Ctrl-C wait for its end
    db.sql("CREATE TABLE big AS SELECT count(*) AS c FROM range(1000000000000) t(a) WHERE a % 7 = 3; SELECT 1")
except KeyboardInterrupt as exc:
    print(type(exc).__name__, exc.keyword, exc.line)
print(db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'big'").fetchall()[0][0],
      db.sql("SELECT x FROM kept").fetchall()[0][0])
"""


QUERY_CHILD = HEARS_CTRL_C + """
import sys, time, pixql
from PIL import Image
Image.new("RGB", (32, 32), "red").save(sys.argv[3])
db = pixql.connect(progress=False)
db.sql("CREATE TABLE kept AS SELECT 1 AS x")
# the network loaded first: Ctrl-C is meant for the query (CPython dies by SIGINT at exit, the
# error caught or not, when one lands while a C extension runs Python code during import torch)
db.sql(f"PREDICT USING imagenet_classifier AS SELECT '{sys.argv[3]}' AS image")
long = ("PREDICT USING imagenet_classifier AS SELECT ? AS image, count(*) AS c FROM range(1000000000000) t(a) "
        "WHERE a % 7 = 3")
for params in ([sys.argv[3]], None):  # with parameters (their table) and without (the query's own)
    open(sys.argv[2] + str(params is None), "w").close()
    started = time.monotonic()
    try:
        db.sql(long if params else long.replace("?", repr(sys.argv[3])), params=params)
    except KeyboardInterrupt as exc:
        print(type(exc).__name__, exc.keyword, time.monotonic() - started < 60)
print(db.sql("SELECT x FROM kept").fetchall()[0][0])
"""


def test_ctrl_c_stops_a_pixql_statements_long_query_from_python(tmp_path):
    """A PREDICT's query is stored into a temporary table before the statement reads it: DuckDB's
    execute() there let Ctrl-C wait for the query's end (an hour's here), as plain statements did."""
    marker = str(tmp_path / "started_")
    proc = subprocess.Popen([sys.executable, "-c", QUERY_CHILD, str(tmp_path / "x.duckdb"), marker,
                             str(tmp_path / "red.png")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        for step in ("False", "True"):
            deadline = time.monotonic() + 120
            while not os.path.exists(marker + step):
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, f"the child never started statement {step} (the one before never stopped?)"
                time.sleep(0.05)
            time.sleep(0.5)  # inside DuckDB's execute()
            os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert out.split() == ["Interrupted", "PREDICT", "True"] * 2 + ["1"]  # stopped twice; the connection works


def test_ctrl_c_stops_a_long_create_table_as_from_python(tmp_path):
    marker = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", API_CHILD, str(tmp_path / "x.duckdb"), str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the child never started the statement"
            time.sleep(0.05)
        time.sleep(0.5)  # inside DuckDB's execute()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)  # the statement itself would take an hour
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert out.split() == ["Interrupted", "SQL", "1", "0", "1"]  # stopped, no table, the connection works


def test_a_commit_the_disk_refuses_is_a_clear_error_and_keeps_the_database(tmp_path):
    """CREATE TABLE AS PREDICT whose COMMIT failed (a full disk, a file-size limit: DuckDB could not
    write its log) came out as DuckDB's raw TransactionException with a traceback: rolling back a
    transaction the failed COMMIT had ended already (a QA pass under `ulimit -f`)."""
    db_file = make_shop(tmp_path)
    script = (f"import resource, pixql\n"
              f"db = pixql.connect({str(db_file)!r}, progress=False)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))\n"
              "try:\n"
              "    db.sql('CREATE TABLE p AS PREDICT USING cm AS SELECT * FROM colors, range(40)')  # (960 rows: one chunk)\n"
              "except pixql.PixqlError as e:\n"
              "    print(type(e).__name__, e)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("SqlError CREATE TABLE AS (line 1): ") and "Failed to commit" in done.stdout, \
        done.stdout
    db = pixql.connect(str(db_file), progress=False)
    assert db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'p'").fetchone() == (0,)
    assert db.sql("SELECT count(*) FROM colors").fetchone() == (24,)
    db.close()


def test_a_statement_that_fails_inside_pixqls_own_transaction_leaves_the_connection_usable(colors_db):
    """Any error inside the transaction a pixql statement opens (here DuckDB refusing to replace a
    table another one references) aborts it: it is rolled back, not left aborted, so the next
    statement runs (a review found a check of it that the aborted transaction refused)."""
    from pixql.errors import SqlError

    db = colors_db
    db.sql("CREATE TABLE parent(image VARCHAR PRIMARY KEY); INSERT INTO parent VALUES ('a'); "
           "CREATE TABLE child(i VARCHAR REFERENCES parent(image))")
    with pytest.raises(SqlError, match=r"^CREATE TABLE AS \(line 1\): "):
        db.sql("CREATE OR REPLACE TABLE parent AS PREDICT USING cm AS SELECT * FROM colors")
    assert db.sql("SELECT count(*) FROM parent").fetchone() == (1,)
