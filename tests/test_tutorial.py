"""The cats-and-dogs tutorial from issue 2, as a user runs it, on the real photos.

`pixql --db shop.duckdb --set data=DATASETS run examples/tutorial.sql` in a subprocess (the
installed command), then
the same statements through `pixql.connect(...).sql(...).df()`.
"""

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

import pixql
from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.data]

TUTORIAL = REPO / "examples" / "tutorial.sql"  # the script the README tells a newcomer to run


def _pixql_command():
    exe = shutil.which("pixql", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "pixql.cli"]


def test_tutorial_from_the_cli_on_all_1000_test_photos(cats_and_dogs, tmp_path):
    proc = subprocess.run([*_pixql_command(), "--db", "shop.duckdb", "--format", "csv",
                           "--set", f"data={cats_and_dogs.parent}", "run", str(TUTORIAL)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "cat,1000" in out and "dog,1000" in out
    # The PREDICT result: 1000 rows with predicted and score.
    lines = out.splitlines()
    header = lines.index("image,label,predicted,score")
    rows = [l.rsplit(",", 3) for l in lines[header + 1: header + 1001]]
    assert len(rows) == 1000
    accuracy = sum(r[1] == r[2] for r in rows) / len(rows)
    assert accuracy >= 0.97, f"accuracy {accuracy:.3f} on the 1000 test photos"
    # PRINT IMAGE wrote a contact sheet and said where on stderr (stdout holds only CSV rows).
    png = next(line.split()[1] for line in proc.stderr.splitlines() if line.startswith("wrote "))
    assert png.endswith(".png") and os.path.isfile(png) and ".png" not in out
    assert "it/s" in proc.stderr or "%" in proc.stderr  # progress was shown on stderr
    assert (tmp_path / "shop.duckdb.models" / "my_image_classifier" / "weights.safetensors").is_file()


def test_same_statements_through_python(cats_and_dogs, tmp_path):
    # A subset, for time: the CLI test above covers the full tutorial.
    db = pixql.connect(str(tmp_path / "shop.duckdb"), progress=False)
    db.sql(f'COPY cat_and_dog_train OPTIONS (overwrite=True) FROM "{cats_and_dogs}/cat_and_dog_train.csv"')
    db.sql(f'COPY cat_and_dog_test OPTIONS (overwrite=True) FROM "{cats_and_dogs}/cat_and_dog_test.csv"')
    counts = db.sql("SELECT label, count(*) AS n FROM cat_and_dog_train GROUP BY label ORDER BY label").df()
    assert counts.to_dict("records") == [{"label": "cat", "n": 1000}, {"label": "dog", "n": 1000}]
    db.sql("CREATE TABLE train_small AS SELECT * FROM cat_and_dog_train USING SAMPLE 300 ROWS (reservoir, 7)")
    built = db.sql("BUILD MODEL pets OPTIONS (epochs=1) AS SELECT * FROM train_small").df()
    assert built.loc[0, "base"] == "EfficientNet_Lite0"
    preds = db.sql("PREDICT USING pets AS SELECT * FROM cat_and_dog_test USING SAMPLE 200 ROWS (reservoir, 3)").df()
    assert isinstance(preds, pd.DataFrame) and len(preds) == 200
    assert (preds.predicted == preds.label).mean() >= 0.95
    sheet = db.sql("PRINT IMAGE AS SELECT image, label FROM cat_and_dog_test LIMIT 5").image
    assert sheet.width == 5 * 248 + 8
    db.close()
