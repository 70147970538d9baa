"""`make demo`'s data and script: offline, from what installed packages ship."""

from PIL import Image

from pixql.demo import SAMPLE_PHOTOS, SCRIPT, write_digits, write_sample_photos
from pixql.sql import parse_script


def test_demo_data_is_written_from_installed_packages(tmp_path):
    csv = write_sample_photos(tmp_path / "photos")
    assert len(csv.read_text().splitlines()) == len(SAMPLE_PHOTOS) + 1
    digits = write_digits(tmp_path / "digits")
    train = list((digits / "train").glob("*/*.png"))
    test = list((digits / "test").glob("*/*.png"))
    assert len(train) + len(test) == 1797 and len({p.parent.name for p in train}) == 10
    with Image.open(train[0]) as img:
        assert img.size == (32, 32)


def test_demo_script_parses_into_pixql_statements():
    statements = parse_script(SCRIPT.format(photos_csv="/x/photos.csv", digits="/x/digits"))
    kinds = [s.keyword for s in statements]
    assert kinds.count("BUILD MODEL") == 1 and kinds.count("PRINT IMAGE") == 2
    assert "EVALUATE" in kinds and "CREATE TABLE AS" in kinds


def test_demo_with_an_unusable_out_folder_or_stopped_says_one_line(tmp_path):
    """--out naming a file gave a FileExistsError traceback; SIGTERM (and Ctrl-C) printed click's
    'Aborted!' and status 1, where every other command says one line and 143 (130)."""
    import signal
    import subprocess
    import sys
    import time

    from click.testing import CliRunner

    from pixql.cli import cli

    taken = tmp_path / "a_file"
    taken.write_text("not a folder")
    for out in (taken, taken / "below"):
        result = CliRunner().invoke(cli, ["demo", "--out", str(out)])
        assert result.exit_code == 1 and result.stderr.startswith(f"Error: the demo's folder --out {out} cannot be used")
    demo = subprocess.Popen([sys.executable, "-m", "pixql", "demo", "--out", str(tmp_path / "demo")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "demo" / "demo.duckdb").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # (under way: its database open)
        demo.send_signal(signal.SIGTERM)
        _, err = demo.communicate(timeout=120)
    finally:
        demo.kill()
    assert demo.returncode == 143, err
    assert err.strip().splitlines()[-1] == "Terminated: the demo was stopped; nothing half-written was kept."


def test_demo_refuses_the_options_of_statements_it_would_ignore(tmp_path):
    """`pixql --db shop.duckdb demo` ran the demo into demo_out/demo.duckdb, leaving shop.duckdb
    untouched without a word."""
    from click.testing import CliRunner

    from pixql.cli import cli

    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "shop.duckdb"), "--format", "csv", "demo",
                                      "--out", str(tmp_path / "demo")])
    assert result.exit_code == 2
    assert "--db, --format would not be used" in result.stderr and "--out" in result.stderr
    assert not (tmp_path / "demo").exists() and not (tmp_path / "shop.duckdb").exists()
