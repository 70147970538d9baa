"""`make demo` / `pixql demo`: the main job, offline, on images that installed packages ship.

1. scikit-image's sample photos, named by the ready `imagenet_classifier`;
2. scikit-learn's handwritten digits written out as PNG files in class folders,
   a classifier built, applied and scored with SQL.
"""

import shutil
import sys
from pathlib import Path

SAMPLE_PHOTOS = {  # file in skimage/data -> what it shows
    "chelsea.png": "a tabby cat",
    "coffee.png": "a cup of coffee",
    "rocket.jpg": "a rocket on its launch pad",
    "astronaut.png": "an astronaut",
    "motorcycle_left.png": "a motorcycle",
    "camera.png": "a photographer (grayscale)",
}

SCRIPT = """\
-- 1. Photos that scikit-image ships, named by the ready ImageNet classifier.
COPY photos OPTIONS (overwrite=true) FROM '{photos_csv}';
CREATE OR REPLACE TABLE named AS PREDICT USING imagenet_classifier AS SELECT image, shows FROM photos;
SELECT shows, predicted, round(score, 3) AS score FROM named;
PRINT IMAGE AS SELECT image, shows, predicted FROM named;

-- 2. scikit-learn's handwritten digits: build a classifier, apply it, score it with SQL.
COPY digits_train OPTIONS (overwrite=true) FROM '{digits}/train';
COPY digits_test OPTIONS (overwrite=true) FROM '{digits}/test';
SELECT label, count(*) AS images FROM digits_train GROUP BY label ORDER BY label;
BUILD MODEL digits USING EfficientNet_Lite0 OPTIONS (overwrite=true, validation=0.1)
  AS SELECT * FROM digits_train;
CREATE OR REPLACE TABLE digit_predictions AS PREDICT USING digits AS SELECT * FROM digits_test;
SELECT count(*) AS test_images, round(avg(CAST(predicted = label AS DOUBLE)), 4) AS accuracy
  FROM digit_predictions;
EVALUATE USING digits AS SELECT * FROM digits_test;
-- The mistakes, worst first, as pictures.
PRINT IMAGE OPTIONS (limit=10) AS
  SELECT image, label, predicted, round(score, 3) AS score
  FROM (EVALUATE USING digits OPTIONS (output='errors') AS SELECT * FROM digits_test);
-- Everything above is in the database (tables, and the model in its .models folder beside it):
SHOW TABLES;
SHOW MODELS;
"""


def write_sample_photos(folder):
    """Copy the sample photos and a CSV (image, shows) with paths relative to it."""
    import skimage

    folder.mkdir(parents=True, exist_ok=True)
    source = Path(skimage.__file__).parent / "data"
    lines = ["image,shows"]
    for name, shows in SAMPLE_PHOTOS.items():
        shutil.copy(source / name, folder / name)
        lines.append(f"{name},{shows}")
    csv = folder / "photos.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def write_digits(folder, test_fraction=0.3, seed=0):
    """scikit-learn's 1797 8x8 digits as 32x32 PNGs in <split>/<digit>/ folders."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.images))
    n_test = int(len(order) * test_fraction)
    for rank, i in enumerate(order):
        split = "test" if rank < n_test else "train"
        target = folder / split / str(digits.target[i])
        target.mkdir(parents=True, exist_ok=True)
        pixels = (255 - digits.images[i] * (255 / 16)).astype("uint8")  # dark ink on white
        Image.fromarray(pixels, "L").resize((32, 32), Image.BICUBIC).save(target / f"digit_{i:04d}.png")
    return folder


def main(out="demo_out"):
    import pixql
    from pixql.terminal import run_script

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    photos_csv = write_sample_photos(out / "photos")
    digits = write_digits(out / "digits")
    script = SCRIPT.format(photos_csv=photos_csv, digits=digits)
    print(script, file=sys.stderr)
    with pixql.connect(str(out / "demo.duckdb")) as connection:
        return run_script(connection, script, "table", out / "pictures", open_image=False)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
