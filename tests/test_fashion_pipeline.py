"""examples/fashion_attributes.sql, the seed's detect -> mask -> classify pipeline, run from the
terminal as its header says, on a few real-product canvases with one detector epoch."""

from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "fashion_attributes.sql"


@pytest.mark.slow
@pytest.mark.data
def test_fashion_attributes_script_runs_end_to_end(data_root, tmp_path, monkeypatch):
    if not (data_root / "fashion_products_sample").is_dir():
        pytest.skip(f"fashion_products_sample not found in {data_root}")
    from pixql.canvases import write_canvases
    from pixql.cli import cli

    write_canvases(data_root, tmp_path / "canvases" / "train", 6, split="train", seed=3)
    write_canvases(data_root, tmp_path / "canvases" / "test", 3, split="test", seed=3)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--db", "fashion.duckdb", "--set", "canvases=canvases", "--set", "epochs=1",
                                       "run", str(SCRIPT)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    con = duckdb.connect("fashion.duckdb", read_only=True)
    rows = con.execute("SELECT image, category, box, mask, attributes, colour FROM fashion").fetchall()
    wanted = dict(con.execute("SELECT image, category FROM wanted").fetchall())
    colours = {c for (c,) in con.execute("SELECT DISTINCT color FROM train").fetchall()}
    assert len(wanted) == 3 and len(rows) <= 3
    for image, category, box, mask, attributes, colour in rows:
        assert wanted[image] == category and set(box) == {"x1", "y1", "x2", "y2"}
        assert Path(mask).is_file() and isinstance(attributes, list) and colour in colours
    assert list((tmp_path / "pixql_output").glob("print_image_*.png")) or not rows
