"""Where no loader process prepares the images, threads of the main one prepare a batch's at once
(data.ImageRows.__getitems__): same tensors, same order, errors still naming the file."""

import subprocess
import sys

import pytest
import torch
from conftest import RecordingTransform, make_sized_photos

from pixql.errors import DataError
from pixql.ml.data import ImageRows, batches, eval_transform, make_loader

PRE = {"input_size": [3, 64, 64], "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
       "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def two_threads(monkeypatch):
    """torch's network on two threads, as on the 2-core CPU the threads were measured on."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)


@pytest.fixture
def photos(tmp_path):
    return make_sized_photos(tmp_path)


def _tensors(loader):
    return [(x, idx) for x, _, idx in batches(loader)]


def test_threads_prepare_the_same_batches_in_row_order(photos):
    serial = _tensors(make_loader(ImageRows(photos, None, eval_transform(PRE)), 4, CPU))
    recording = RecordingTransform(eval_transform(PRE))
    threaded = _tensors(make_loader(ImageRows(photos, None, recording), 4, CPU, threaded=True))
    assert [idx.tolist() for _, idx in threaded] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(serial, threaded))
    assert any(name.startswith("pixql-prepare") for name in recording.threads)


def test_loader_processes_prepare_alone(photos):
    rows = ImageRows(photos, None, eval_transform(PRE))
    make_loader(rows, 4, CPU, num_workers=2, threaded=True)
    assert rows.threads == 1  # each process prepares its own batches; no threads inside them


def test_an_unreadable_photo_among_threads_is_named(photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    rows = ImageRows(photos[:5] + [str(broken)] + photos[5:], None, eval_transform(PRE))
    with pytest.raises(DataError) as e:
        _tensors(make_loader(rows, 8, CPU, threaded=True))
    assert e.value.path == str(broken)
    skipped = set()
    loader = make_loader(ImageRows(photos[:5] + [str(broken)] + photos[5:], None, eval_transform(PRE)), 8, CPU,
                         threaded=True)
    kept = [i for _, _, idx in batches(loader, "skip", skipped) for i in idx.tolist()]
    assert skipped == {5} and kept == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]


@pytest.mark.parametrize("network_threads, preparing", [(1, 1), (2, 2), (3, 3), (4, 4), (5, 1), (64, 1)])
def test_threads_only_where_the_network_has_few(monkeypatch, network_threads, preparing):
    """Each preparing thread's resize runs an OpenMP team of the network's size: on many cores
    threads x team would swamp the CPU, so there a batch is prepared one photo at a time."""
    from pixql.ml.data import preparing_threads

    monkeypatch.setattr(torch, "get_num_threads", lambda: network_threads)
    assert preparing_threads() == preparing


def test_resize_crop_warns_of_nothing():
    """PIL's read-only buffer goes to torch without a copy; torch's warning about it is silenced
    (once per process: threads share the warnings filters)."""
    code = ("from PIL import Image\nfrom pixql.ml.data import eval_transform\n"
            f"t = eval_transform({PRE!r})\n"
            "for size in ((100, 90), (70, 200)):\n    t(Image.new('RGB', size))\n")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_threads_reading_photos_leave_the_warning_filters_as_they_were(photos):
    """read_image silences PIL's decompression-bomb warning around Image.open; warnings contexts
    of several threads interleaving used to leave one thread's filter in the process for good."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from pixql.ml.images import read_image

    before = list(warnings.filters)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: read_image(photos[i % len(photos)]), range(3000)))
    assert warnings.filters == before


def _read_one(path):
    from pixql.ml.images import read_image

    read_image(path)


def test_a_child_forked_while_a_thread_silenced_warnings_can_still_read(photos):
    """A loader process forked while another thread was inside images.ignoring() inherited its
    lock held, and hung at its first photo."""
    import multiprocessing

    from pixql.ml import images

    with images._WARNING_FILTERS:  # another thread's read_image, between its lock and release
        child = multiprocessing.get_context("fork").Process(target=_read_one, args=(photos[0],))
        child.start()
    child.join(60)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0
