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
