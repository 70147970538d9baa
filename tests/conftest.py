"""Shared fixtures: generated images for fast tests, and the real photo datasets."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# make test runs two processes on the same cores, each with torch's 2 OpenMP threads, and some
# tests start more (a kernel, the terminal, Ray's workers): with OpenMP's default wait, an idle
# thread spins for its next task, and four spinning threads on two cores slowed a detector's
# BUILD in a notebook from 14 s to 71 s beside another torch process. A passive wait sleeps.
# (Read when OpenMP starts, with torch's first import; subprocesses inherit it.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_configure(config):
    # The suite never reads or fills the user's own cache folder; subprocesses inherit this.
    import tempfile

    os.environ["PIXQL_CACHE"] = tempfile.mkdtemp(prefix="pixql-test-cache-")
    # nor the user's own database, model store or cluster: connect() and the terminal read these
    for name in ("PIXQL_DB", "PIXQL_HOME", "PIXQL_CLUSTER"):
        os.environ.pop(name, None)


# The order in which `make test`'s two workers take whole files (the Makefile turns off xdist's
# own, by number of tests): the Ray file first, whose minutes are mostly spent waiting for
# its workers to start (the other worker's files use the cores meanwhile), then the other files
# of long tests, longest first (their seconds summed in one run of this suite, 2026-12-07), then
# the rest, most tests first. Drawn by number of tests, files of a few long tests came last and
# one of them kept a core busy alone for minutes after the other had finished.
_FIRST = ("test_ray.py", "test_notebooks.py", "test_crash_safety.py", "test_cached_linear.py",
          "test_onnx_runtime.py", "test_tutorial.py", "test_detection.py", "test_engine.py",
          "test_build_options.py", "test_concurrency.py", "test_duckdb_parity.py", "test_ml_train.py",
          "test_regions.py", "test_top_tune.py", "test_bad_input.py", "test_predict_options.py",
          "test_predict_stream.py", "test_search.py", "test_evaluate.py", "test_allocator.py",
          "test_linear_head.py", "test_cli.py", "test_strategy.py")


def pytest_collection_modifyitems(session, config, items):
    import collections

    tests = collections.Counter(item.path.name for item in items)
    rank = {name: i for i, name in enumerate(_FIRST)}
    # (a stable sort: each file's tests keep their own order)
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -tests[item.path.name], item.path.name))


def pytest_unconfigure(config):
    import shutil

    shutil.rmtree(os.environ.get("PIXQL_CACHE", ""), ignore_errors=True)


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


def cat_and_dog_photos(data_root, per_class):
    """The first `per_class` cat photos then dog photos of the validation folder (paths), or a skip."""
    folder = data_root / "cats_and_dogs_filtered_200px" / "validation"
    photos = [str(p) for kind in ("cats", "dogs") for p in sorted((folder / kind).glob("*.jpg"))[:per_class]]
    if len(photos) < 2 * per_class:
        pytest.skip(f"cats and dogs photos not found in {folder}")
    return photos


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
def fp32_cpu(monkeypatch):
    """pixql's `auto` precision in fp32, as on a CPU without native bf16: for tests that compare
    its outputs with an fp32 reference (ONNX Runtime, open_clip), on any CPU."""
    from pixql.ml import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)


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


# -- a model that needs no training ------------------------------------------------------------
_CHANNEL = {"red": 0, "green": 1, "blue": 2}


def make_rgb_images(folder, colors=("red", "green", "blue"), per_class=8, size=32, seed=0):
    """Noisy squares, one class per colour (any of red, green, blue); returns [(path, label)]."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    for label in colors:
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            pixels[..., _CHANNEL[label]] = rng.integers(120, 256, (size, size), dtype=np.uint8)
            path = folder / label / f"{label}_{i:03d}.png"
            Image.fromarray(pixels).save(path)
            rows.append((str(path), label))
    return rows


def save_color_model(store, name, classes=("blue", "green", "red"), task="classification", sharpness=4.0,
                     channels=None, label_col="label", regions=None):
    """A SimpleCNN whose weights are set by hand to tell the dominant colour of an image
    (classes among red, green, blue, or named freely with `channels`: one RGB channel index
    per class), saved in `store` (a ModelStore) without training. The probabilities vary
    with each image's brightness, so scores are not all alike. `regions`: the region options
    its manifest records, as BUILD with box_col would."""
    import torch

    from pixql.ml.data import preprocessing_for
    from pixql.ml.networks import SimpleCNN

    side = 32
    net = SimpleCNN(len(classes), side)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
        for conv in convs:
            for c in range(3):
                conv.weight[c, c, 1, 1] = 1.0
        cells = net.fc.in_features // convs[-1].out_channels
        for c in range(3):
            net.fc.weight[c, c * cells:(c + 1) * cells] = 1.0 / cells
        for j, cls in enumerate(classes):
            net.classifier.weight[j, channels[j] if channels else _CHANNEL[cls]] = sharpness
            net.classifier.bias[j] = -sharpness * 0.5
    pre = preprocessing_for(net)
    store.save(name, net.state_dict(), {
        "base": "SimpleCNN", "task": task, "classes": list(classes),
        "network": {"arch": "simple_cnn", "num_classes": len(classes), "input_size": side},
        "preprocessing": pre, "image_col": "image", "label_col": label_col, "train_mode": "finetune",
        "history": [], "metrics": {}, "regions": regions}, overwrite=True)


@pytest.fixture
def colors_db(tmp_path):
    """An in-memory pixql connection with a table `colors` (image, label: 8 red, 8 green, 8 blue
    32 px squares) and the hand-made colour model `cm` (classes blue, green, red)."""
    import pandas as pd

    import pixql

    rows = make_rgb_images(tmp_path / "rgb")
    db = pixql.connect(str(tmp_path / "colors.duckdb"), progress=False)
    db.duckdb.register("__rows", pd.DataFrame(rows, columns=["image", "label"]))
    db.duckdb.execute("CREATE TABLE colors AS SELECT * FROM __rows")
    db.duckdb.unregister("__rows")
    save_color_model(db.engine.store, "cm")
    yield db
    db.close()


def make_shop(tmp_path, per_class=12):
    """A closed database file with a table `colors` (red and blue 32 px squares) and the
    colour model `cm` in its store, ready for other processes to open."""
    import pandas as pd

    import pixql

    rows = make_color_images(tmp_path / "img", per_class=per_class, size=32)
    db_file = tmp_path / "shop.duckdb"
    with pixql.connect(str(db_file), progress=False) as db:
        db.duckdb.register("__rows", pd.DataFrame(rows, columns=["image", "label"]))
        db.duckdb.execute("CREATE TABLE colors AS SELECT * FROM __rows")
        save_color_model(db.engine.store, "cm", classes=("blue", "red"))
    return db_file


def make_sized_photos(folder, n=11):
    """n plain JPEGs of n sizes and colours (paths): batches of photos that differ."""
    from PIL import Image

    paths = []
    for i in range(n):
        path = folder / f"p{i}.jpg"
        Image.new("RGB", (80 + 7 * i, 60 + 5 * i), (20 * i, 255 - 20 * i, 90)).save(path)
        paths.append(str(path))
    return paths


class RecordingTransform:
    """A transform that notes which threads ran it (a batch's preparing threads, lanes)."""

    def __init__(self, transform):
        self.transform, self.threads = transform, set()

    def __call__(self, img):
        import threading

        self.threads.add(threading.current_thread().name)
        return self.transform(img)


def detect_in_one_stream_and_lanes(db, query, monkeypatch):
    """DETECT `query`'s rows with torch's network on one thread (one stream), then on two (lanes,
    ml/lanes.py), and the threads that ran the detector's batches the second time."""
    import threading

    import torch

    from pixql.ml import detect

    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    one = db.sql(query).df()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    threads = []
    run = detect.lanes_run
    monkeypatch.setattr(detect, "lanes_run", lambda rows, size, find, *a, **k: run(
        rows, size, lambda batch: threads.append(threading.current_thread().name) or find(batch), *a, **k))
    return one, db.sql(query).df(), threads


def assert_same_detections(one, both, boxes=True):
    """The same rows, but for fp32 sums in another order on a lane's one thread: a few ULPs, which
    DETECT's rounding (scores to 1e-4, boxes to 0.01 px) may still show as one step. `boxes`:
    compare the boxes too (not where tied scores leave the choice of boxes to rounding)."""
    import numpy as np

    assert list(both.image) == list(one.image) and list(both.label) == list(one.label)
    assert np.abs(both.score.to_numpy() - one.score.to_numpy()).max(initial=0) <= 1e-4 + 1e-6
    if not boxes:
        return
    corners = ("x1", "y1", "x2", "y2")
    boxes = [np.array([[b[k] for k in corners] for b in frame.box]).reshape(-1, 4) for frame in (one, both)]
    assert np.abs(boxes[0] - boxes[1]).max(initial=0) <= 0.01 + 1e-6
