"""Shared fixtures: generated images for fast tests, and the real photo datasets."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def datasets_root():
    """PIXQL_DATA, else ../shared/datasets beside the repository (None when absent)."""
    root = Path(os.environ.get("PIXQL_DATA") or REPO.parent / "shared" / "datasets")
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def data_root():
    root = datasets_root()
    if root is None:
        pytest.skip("real photo datasets not found: set PIXQL_DATA or provide ../shared/datasets")
    return root


@pytest.fixture(scope="session")
def cats_and_dogs(data_root):
    folder = data_root / "cats_and_dogs_filtered_200px"
    if not (folder / "cat_and_dog_train.csv").is_file():
        pytest.skip(f"cats and dogs photos not found in {folder}")
    return folder


def make_color_images(folder, per_class=12, size=48, seed=0):
    """Red-ish vs blue-ish noisy squares in class folders; returns [(path, label)]."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    for label, channel in (("red", 0), ("blue", 2)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            pixels[..., channel] = rng.integers(170, 256, (size, size), dtype=np.uint8)
            path = folder / label / f"{label}_{i:03d}.png"
            Image.fromarray(pixels).save(path)
            rows.append((str(path), label))
    return rows


@pytest.fixture
def color_images(tmp_path):
    return make_color_images(tmp_path / "colors")


@pytest.fixture
def color_csv(tmp_path):
    """A CSV with paths relative to its own folder, as in the tutorials."""
    rows = make_color_images(tmp_path / "data" / "colors")
    csv = tmp_path / "data" / "colors.csv"
    lines = ["image,label"] + [f"{os.path.relpath(p, csv.parent)},{label}" for p, label in rows]
    csv.write_text("\n".join(lines) + "\n")
    return csv
