"""Pictures: PRINT IMAGE contact sheets and DESCRIBE MODEL training curves (display.py),
and where the CLI puts them."""

import sys

import pytest
from click.testing import CliRunner
from PIL import Image

from pixql import display
from pixql.errors import DataError

BLUE, ORANGE = (31, 119, 180), (255, 127, 14)  # matplotlib's tab:blue / tab:orange


def history(epochs=4, validation=True):
    return [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 1 - 0.3 / e,
             "val_loss": 1.2 / e if validation else None, "val_accuracy": 1 - 0.4 / e if validation else None,
             "seconds": 1.0, "images_per_second": 10.0} for e in range(1, epochs + 1)]


def has_color(image, rgb, tolerance=30):
    import numpy as np

    pixels = np.asarray(image.convert("RGB"), dtype=int)
    return bool((np.abs(pixels - np.array(rgb)) <= tolerance).all(axis=-1).any())


# -- training curves ------------------------------------------------------------------------
def test_training_curves_draw_training_and_validation():
    image = display.training_curves(history(), title="model m")
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert image.size == (900, 340)
    assert has_color(image, BLUE) and has_color(image, ORANGE)


def test_training_curves_without_validation_draw_only_training():
    image = display.training_curves(history(validation=False))
    assert has_color(image, BLUE) and not has_color(image, ORANGE)


def test_training_curves_with_one_epoch_and_some_missing_values():
    import math

    one = display.training_curves(history(epochs=1))
    assert one.size == (900, 340) and has_color(one, BLUE) and has_color(one, ORANGE)  # markers, not lines
    fig = display.training_curves_figure(history(epochs=1))
    assert fig.axes[0].get_xlim() == (0.0, 2.0)  # one epoch sits in the middle of its axis
    mixed = history(epochs=3)
    mixed[1]["val_loss"] = mixed[1]["val_accuracy"] = None
    fig = display.training_curves_figure(mixed)
    training, validation = fig.axes[0].lines
    assert list(training.get_ydata()) == [h["train_loss"] for h in mixed]
    ys = list(validation.get_ydata())  # the missing epoch is a gap in the validation curve
    assert ys[0] == mixed[0]["val_loss"] and math.isnan(ys[1]) and ys[2] == mixed[2]["val_loss"]


def test_multi_label_curves_show_the_metric_that_chose_the_kept_epoch_and_mark_it():
    # a multi-label model keeps the epoch of best micro F1: the panel showed exact-set accuracy
    epochs = history(epochs=4)
    for h in epochs:
        h["train_micro_f1"], h["val_micro_f1"] = h["train_accuracy"] - 0.1, h["val_accuracy"] - 0.2
    fig = display.training_curves_figure(epochs, kept=3)
    loss, score = fig.axes
    assert score.get_title() == "Micro F1"
    assert [list(line.get_ydata()) for line in score.lines[:2]] == \
        [[h["train_micro_f1"] for h in epochs], [h["val_micro_f1"] for h in epochs]]
    for ax in (loss, score):  # the kept epoch, on both panels
        assert [line.get_xdata()[0] for line in ax.lines if line.get_label() == "kept: epoch 3"] == [3]
    assert display.training_curves_figure(history(epochs=4)).axes[1].get_title() == "Accuracy"


def test_training_curves_need_a_history():
    for empty in (None, [], [{"epoch": 1, "train_loss": None}]):
        with pytest.raises(DataError, match="no training history"):
            display.training_curves(empty)


def test_training_curves_figure_leaves_pyplot_alone():
    had_pyplot = "matplotlib.pyplot" in sys.modules
    figures_before = sys.modules["matplotlib.pyplot"].get_fignums() if had_pyplot else None
    fig = display.training_curves_figure(history())
    assert [ax.get_title() for ax in fig.axes] == ["Loss", "Accuracy"]
    assert [line.get_label() for line in fig.axes[0].lines] == ["training", "validation"]
    assert display.figure_png(fig).startswith(b"\x89PNG")
    if had_pyplot:  # not registered with pyplot: no figure left open in the user's session
        assert sys.modules["matplotlib.pyplot"].get_fignums() == figures_before
    else:
        assert "matplotlib.pyplot" not in sys.modules


def test_describe_results_carry_their_curves_as_a_figure(colors_db):
    from pixql.figures import Curves

    manifest, state = colors_db.engine.store.load("cm")
    colors_db.engine.store.save("hist", state, dict(manifest, history=history()), overwrite=True)
    (figure,) = colors_db.sql("DESCRIBE MODEL hist").figures
    assert isinstance(figure, Curves) and figure.stem == "training_curves_hist"
    assert figure.picture().size == (900, 340)
    assert colors_db.sql("DESCRIBE MODEL imagenet_classifier").figures == []
    assert colors_db.sql("DESCRIBE MODEL cm").figures == []  # saved without a history


# -- contact sheets -------------------------------------------------------------------------
def test_print_image_says_when_the_query_has_more_rows_than_it_shows(colors_db):
    shown = colors_db.sql("PRINT IMAGE OPTIONS (limit=5, size=32, columns=5) AS SELECT * FROM colors ORDER BY image")
    assert shown.image.size[0] == 5 * (32 + 8) + 8
    assert shown.messages == ["PRINT IMAGE: the query's first 5 rows are shown; it has more (OPTIONS (limit=...) "
                              "shows more)"]
    # all of them shown: nothing to say
    assert colors_db.sql("PRINT IMAGE OPTIONS (limit=5) AS SELECT * FROM colors LIMIT 5").messages == []
    assert "first 20 rows are shown" in colors_db.sql("PRINT IMAGE AS SELECT * FROM colors").messages[0]  # 24 rows


def test_contact_sheet_grid_and_captions(color_images):
    paths = [p for p, _ in color_images[:7]]
    sheet = display.contact_sheet(paths, [[f"label: {l}"] for _, l in color_images[:7]], size=64, columns=3)
    assert sheet.width == 3 * (64 + 8) + 8
    assert sheet.height > 3 * (64 + 8)  # three rows plus caption lines
    with pytest.raises(DataError, match="no rows"):
        display.contact_sheet([], [], size=64)


def test_captions_write_letters_beyond_ascii(color_images):
    import numpy as np

    path = color_images[0][0]

    def sheet(text):
        return np.asarray(display.contact_sheet([path], [[text]], size=128))

    # a font without the letter draws the same "missing" box for each: ü and ï would look alike
    assert not np.array_equal(sheet("Müller"), sheet("Mïller"))
    assert not np.array_equal(sheet("Ωμέγα"), sheet("Ωμέγε"))


def test_a_caption_gives_each_column_a_line_and_lists_as_items():
    # the fashion pipeline's sheet: a long product name must not push the colour out of the caption
    import numpy as np

    from pixql.commands.common import caption

    row = {"image": "a.jpg", "product": "Indigo Nation Men Striped Black & Blue T-shirt",
           "attributes": np.array(["t-shirt", "striped"], dtype=object), "colour": "Black", "note": None}
    lines = display._caption_lines(caption(row, ["product", "attributes", "colour", "note"], "image"), 24)
    assert lines == ["product: Indigo Nation…", "attributes: t-shirt,…", "colour: Black", "note: NULL"]
    assert display._caption_lines(["label: " + "a long label " * 4], 24) == \
        ["label: a long label a", "long label a long label", "a long label"]  # one column wraps as before
    assert caption({"image": "a.jpg", "tags": []}, ["tags"], "image") == ["tags: []"]


def test_a_caption_line_never_runs_into_the_next_tile(color_images):
    import numpy as np

    paths = [p for p, _ in color_images[:2]]
    sheet = np.asarray(display.contact_sheet(paths, [["W" * 60], ["M" * 60]], size=64).convert("L"))
    gap = sheet[64 + 8:, 8 + 64 + 2: 8 + 64 + 8 - 1]  # under the tiles, between the two columns
    assert gap.min() > 200  # white: the letters stopped at their tile's edge


def test_box_labels_are_drawn_to_be_read_in_their_tile_and_inside_the_photo(tmp_path):
    # the label was sized for the photo, then shrunk with it into a 240 px tile (~6 px tall), in the
    # box's colour on the photo, and ran past the photo's edge
    import numpy as np

    from pixql.ml.images import Region

    path = tmp_path / "photo.png"
    Image.new("RGB", (960, 720), "white").save(path)
    red = (230, 25, 75)  # the first box colour
    boxes = [Region(str(path), (700.0, 300.0, 950.0, 600.0))]
    drawn = np.asarray(display.boxes_drawn(str(path), boxes, ["a long label for a box near the edge"], shown=240))
    tag = np.argwhere((np.abs(drawn.astype(int) - red) <= 3).all(axis=-1) & (np.arange(720)[:, None] < 300))
    height = tag[:, 0].max() - tag[:, 0].min() + 1
    assert height * 240 / 960 >= 12  # at least 12 px tall in the tile
    assert tag[:, 1].max() < 960 and tag[:, 1].min() >= 480  # inside the photo, at most half its width
    white = (drawn[tag[:, 0].min():tag[:, 0].max() + 1, tag[:, 1].min():tag[:, 1].max() + 1] > 240).all(axis=-1)
    assert white.any()  # white letters on the tag


def test_png_bytes_round_trip():
    image = Image.new("RGB", (5, 4), "red")
    data = display.png_bytes(image)
    assert data.startswith(b"\x89PNG")


# -- the CLI writes the curves next to PRINT IMAGE's sheets ---------------------------------------
def fake_model(database, name="m", hist=None):
    """A model in the store beside `database`, with a training history (no training needed)."""
    import torch

    from pixql.store import ModelStore

    ModelStore(f"{database}.models").save(name, {"w": torch.zeros(1)}, {
        "base": "EfficientNet_Lite0", "task": "classification", "classes": ["a", "b"],
        "image_col": "image", "label_col": "label", "train_mode": "linear",
        "history": history() if hist is None else hist,
        "metrics": {"train_accuracy": 0.925, "val_accuracy": 0.9, "best_val_accuracy": 0.9}})


def test_cli_describe_model_writes_the_curves_and_prints_the_path(tmp_path, monkeypatch):
    from pixql.cli import cli

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "t.duckdb"
    fake_model(db)
    result = CliRunner().invoke(cli, ["--db", str(db), "--out-dir", "pics", "-c", "DESCRIBE MODEL m"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].strip("│").split("│")[0].strip() == "property"  # DuckDB's box: names on line 2
    assert lines[1].strip("│").split("│")[1].strip() == "value"
    assert lines[-1].startswith("training curves: ")
    path = lines[-1].split(": ", 1)[1]
    assert path.endswith(".png") and path.startswith(str(tmp_path / "pics"))
    with Image.open(path) as image:
        assert image.size == (900, 340)


def test_cli_describe_model_csv_keeps_stdout_clean(tmp_path, monkeypatch):
    from pixql.cli import cli

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "t.duckdb"
    fake_model(db)
    result = CliRunner().invoke(cli, ["--db", str(db), "--format", "csv", "-c", "DESCRIBE MODEL m"],
                                catch_exceptions=False)
    assert result.exit_code == 0
    assert "training curves" not in result.stdout and result.stdout.startswith("property,value")
    assert "training curves: " in result.stderr
    assert len(list((tmp_path / "pixql_output").glob("training_curves_m_*.png"))) == 1


def test_cli_describe_model_without_history_writes_nothing(tmp_path, monkeypatch):
    from pixql.cli import cli

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "t.duckdb"), "-c", "DESCRIBE MODEL imagenet_classifier"],
                                catch_exceptions=False)
    assert result.exit_code == 0
    assert "training curves" not in result.output
    assert not (tmp_path / "pixql_output").exists()


def test_contact_sheet_shows_a_photo_too_large_to_decode_in_full(tmp_path, monkeypatch):
    """A big JPEG is decoded at a reduced scale for its thumbnail, as training does."""
    from PIL import Image as PILImage

    from pixql.display import contact_sheet

    path = tmp_path / "big.jpg"
    PILImage.new("RGB", (2400, 1600), (200, 30, 30)).save(path, quality=80)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 2_000_000)  # a full decode would be refused
    sheet = contact_sheet([str(path)], [["big"]], size=120)
    assert sheet.getpixel((8 + 60, 8 + 60))[0] > 150  # the red photo is there


def test_a_label_the_font_lacks_draws_no_warning(recwarn):
    """An emoji or CJK class name shows as a box in DejaVu Sans (the one font sure to be here);
    matplotlib's 'Glyph ... missing' warning reached the terminal with its source line."""
    import matplotlib.pyplot as plt

    from pixql.display import figure_png

    fig, ax = plt.subplots()
    ax.set_title("Rosé Blüten \N{ROSE} 猫")
    assert figure_png(fig).startswith(b"\x89PNG")
    plt.close(fig)
    assert not [w for w in recwarn if "missing from font" in str(w.message)]
