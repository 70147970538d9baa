"""Inference in lanes (ml/lanes.py): on a CPU of a few cores, each of the network's threads
prepares and computes whole batches on its own, torch on one thread in each: the same outputs in
row order, unreadable photos named or skipped, and the process's torch threads as they were."""

import multiprocessing
import threading

import pytest
import torch
from conftest import RecordingTransform, make_sized_photos

from pixql.errors import DataError
from pixql.ml import lanes
from pixql.ml.data import eval_transform
from pixql.ml.runtime import cpu_autocast_dtype, forward_rows

PRE = {"input_size": [3, 64, 64], "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
       "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
CPU = torch.device("cpu")


@pytest.fixture
def photos(tmp_path):
    return make_sized_photos(tmp_path)


@pytest.fixture
def fresh_lanes(monkeypatch):
    """Lanes started by this test (not left by an earlier one), stopped after it."""
    monkeypatch.setattr(lanes, "_pools", {})
    yield
    for pool in lanes._pools.values():
        if pool is not None:
            pool.shutdown(wait=True)


def new_thread_default():
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch._C.get_num_threads()))
    thread.start()
    thread.join(30)
    return seen[0]


def network_threads(monkeypatch, n):
    """torch's network on n threads, as pixql reads it (the CPU's cores stay as they are)."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: n)


def recording_transform():
    """The eval transform, noting which threads ran it."""
    return RecordingTransform(eval_transform(PRE))


def mean_colour(seen=None):
    """fn(model, x) for forward_rows: each image's mean per channel; `seen` gets, per call, the
    torch threads, inference mode and autocast of the thread that ran it."""
    def fn(model, x):
        if seen is not None:
            seen.append((torch._C.get_num_threads(), torch.is_inference_mode_enabled(), cpu_autocast_dtype()))
        return model(x).mean(dim=(2, 3))
    return fn


def run(photos, transform=None, fn=None, **kw):
    return forward_rows(torch.nn.Identity(), photos, PRE, transform or eval_transform(PRE), fn or mean_colour(),
                        device=CPU, precision=kw.pop("precision", "fp32"), batch_size=kw.pop("batch_size", 4),
                        progress=False, **kw)


def test_lanes_give_the_one_streams_outputs_in_row_order(photos, monkeypatch):
    network_threads(monkeypatch, 1)
    one, one_rows = run(photos)
    network_threads(monkeypatch, 2)
    recording = recording_transform()
    out, rows = run(photos, recording)
    assert rows.tolist() == one_rows.tolist() == list(range(len(photos)))
    assert torch.equal(out, one)
    assert recording.threads and all(name.startswith("pixql-lane") for name in recording.threads)


def test_with_one_network_thread_the_batches_are_prepared_in_this_thread(photos, monkeypatch):
    network_threads(monkeypatch, 1)
    recording = recording_transform()
    run(photos, recording)
    assert recording.threads == {threading.current_thread().name}


def test_a_lane_runs_torch_on_one_thread_in_inference_mode_and_autocast(photos, monkeypatch, fresh_lanes):
    before, default = torch._C.get_num_threads(), new_thread_default()
    network_threads(monkeypatch, 2)
    seen = []
    run(photos, fn=mean_colour(seen), precision="bf16")
    assert lanes._pools[2] is not None  # started here
    assert seen and all(threads == 1 and inference and autocast == torch.bfloat16
                        for threads, inference, autocast in seen)
    assert torch._C.get_num_threads() == before  # this thread's
    assert new_thread_default() == default  # and what a thread started afterwards gets


def test_lanes_started_inside_threadpoolctls_limits_leave_the_process_default(photos, monkeypatch, fresh_lanes):
    from threadpoolctl import threadpool_limits

    default = new_thread_default()
    network_threads(monkeypatch, 2)
    with threadpool_limits(limits=default + 1, user_api="openmp"):  # this thread's own, for a while
        run(photos)
    assert new_thread_default() == default


def test_where_a_lane_cannot_have_one_thread_the_batches_run_in_one_stream(photos, monkeypatch, fresh_lanes):
    """A torch without OpenMP ignores set_num_threads once work has started: no lanes then."""
    network_threads(monkeypatch, 2)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    recording = recording_transform()
    out, rows = run(photos, recording)
    assert lanes._pools[2] is None and rows.tolist() == list(range(len(photos)))
    assert not any(name.startswith("pixql-lane") for name in recording.threads)


def test_fewer_photos_than_a_batch_per_lane_run_in_one_stream(photos, monkeypatch):
    """Nine photos in batches of 8 would leave one lane with 8 on one thread and the other idle."""
    network_threads(monkeypatch, 2)
    recording = recording_transform()
    out, rows = run(photos, recording, batch_size=8)  # 11 photos < 2 lanes x 8
    assert rows.tolist() == list(range(len(photos)))
    assert recording.threads and not any(name.startswith("pixql-lane") for name in recording.threads)
    assert any(name.startswith("pixql-prepare") for name in recording.threads)  # a batch's photos by threads


def test_after_a_failure_no_lane_is_left_running(photos, monkeypatch):
    """A linear BUILD's frozen_layers block puts the network's layers back as the error leaves
    it: no lane may still be running the network then."""
    import time

    network_threads(monkeypatch, 2)
    running, calls = [0], [0]
    lock = threading.Lock()

    def slow(model, x):
        with lock:
            running[0] += 1
            calls[0] += 1
            first = calls[0] == 1
        try:
            if first:
                raise ValueError("the first batch broke")
            time.sleep(0.3)
            return model(x).mean(dim=(2, 3))
        finally:
            with lock:
                running[0] -= 1

    with pytest.raises(ValueError, match="first batch broke"):
        run(photos, fn=slow, batch_size=2)
    assert running[0] == 0


def test_two_statements_at_once_share_the_lanes(photos, monkeypatch):
    network_threads(monkeypatch, 2)
    expected = run(photos)[0]
    results = [None] * 4

    def one(k):
        results[k] = run(photos)[0]

    threads = [threading.Thread(target=one, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(r is not None and torch.equal(r, expected) for r in results)


def test_an_unreadable_photo_in_a_lane_is_named_or_skipped(photos, tmp_path, monkeypatch):
    network_threads(monkeypatch, 2)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    paths = photos[:5] + [str(broken)] + photos[5:]
    with pytest.raises(DataError) as e:
        run(paths)
    assert e.value.path == str(broken)
    skipped = set()
    out, rows = run(paths, on_error="skip", skipped=skipped)
    assert skipped == {5} and rows.tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    network_threads(monkeypatch, 1)
    assert torch.equal(out, run(photos)[0])


def test_a_failing_network_raises_its_error_and_the_lanes_go_on(photos, monkeypatch):
    network_threads(monkeypatch, 2)

    def broken(model, x):
        raise ValueError("the network broke")

    with pytest.raises(ValueError, match="the network broke"):
        run(photos, fn=broken)
    out, rows = run(photos)
    assert rows.tolist() == list(range(len(photos)))


@pytest.mark.parametrize("device, workers, threads, images, expected", [
    ("cpu", 0, 2, None, 2),
    ("cpu", 0, 4, None, 4),
    ("cpu", 0, 2, 16, 2),
    ("cpu", 0, 2, 15, 1),  # not a whole batch of 8 for each lane
    ("cpu", 0, 4, 31, 1),
    ("cpu", 0, 1, None, 1),
    ("cpu", 0, 8, None, 1),  # many cores: one stream, loader processes decode
    ("cpu", 2, 2, None, 1),  # loader processes prepare the photos
    ("cuda", 0, 2, None, 1),
])
def test_lanes_only_on_a_cpu_of_few_cores(monkeypatch, device, workers, threads, images, expected):
    network_threads(monkeypatch, threads)
    assert lanes.lane_count(torch.device(device), workers, images, 8) == expected


def test_onnx_runtime_runs_in_lanes_on_a_session_of_one_thread(tmp_path, monkeypatch, fp32_cpu):
    """ONNX Runtime's session has its own thread pool: in lanes each run() uses the calling
    thread alone (one such session shared by the lanes), with the one stream's probabilities."""
    import numpy as np
    import pandas as pd
    from conftest import make_color_images

    import pixql
    from pixql.ml.onnx_runtime import OnnxForward

    monkeypatch.setenv("PIXQL_CACHE", str(tmp_path / "cache"))  # its own export (others count theirs)
    calls = []
    call = OnnxForward.__call__
    monkeypatch.setattr(OnnxForward, "__call__", lambda self, m, x: calls.append(
        (self.threads, threading.current_thread().name)) or call(self, m, x))
    db = pixql.connect(str(tmp_path / "x.duckdb"), progress=False)
    db.duckdb.register("frame", pd.DataFrame(make_color_images(tmp_path / "img", per_class=12, size=40),
                                             columns=["image", "label"]))
    db.sql("CREATE TABLE photos AS SELECT * FROM frame")
    db.sql("BUILD MODEL m USING EfficientNet_Lite0 AS SELECT * FROM photos")
    query = "PREDICT USING m OPTIONS (probabilities=true, runtime='onnx') AS SELECT * FROM photos ORDER BY image"
    network_threads(monkeypatch, 1)
    one = db.sql(query).df()
    assert calls and all(threads is None and not name.startswith("pixql-lane") for threads, name in calls)
    calls.clear()
    network_threads(monkeypatch, 2)
    both = db.sql(query).df()
    assert calls and all(threads == 1 and name.startswith("pixql-lane") for threads, name in calls)
    assert list(both.predicted) == list(one.predicted)
    assert np.abs(both[["prob_blue", "prob_red"]].to_numpy() - one[["prob_blue", "prob_red"]].to_numpy()).max() < 1e-5


def _lanes_in_child(photos, queue):
    out, rows = run(photos)
    queue.put(rows.tolist())


def test_a_forked_child_starts_its_own_lanes(photos, monkeypatch):
    network_threads(monkeypatch, 2)
    run(photos)  # the parent's lanes, whose threads a forked child does not have
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_lanes_in_child, args=(photos, queue))
    child.start()
    child.join(120)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0
    assert queue.get(timeout=10) == list(range(len(photos)))


def test_real_photos_get_the_same_probabilities_in_lanes(data_root, monkeypatch):
    """Lite0's ImageNet classifier on real cats and dogs photos, as PREDICT runs it."""
    from conftest import cat_and_dog_photos

    from pixql.ml.infer import imagenet_classifier

    photos = cat_and_dog_photos(data_root, 12)
    classifier = imagenet_classifier(device="cpu", precision="fp32")
    network_threads(monkeypatch, 1)
    one = classifier.predict_proba(photos, progress=False)
    network_threads(monkeypatch, 2)
    seen = []
    forward = classifier.forward
    monkeypatch.setattr(classifier, "forward", lambda m, x: seen.append(threading.current_thread().name) or forward(m, x))
    both = classifier.predict_proba(photos, progress=False)
    assert seen and all(name.startswith("pixql-lane") for name in seen)
    assert abs(both - one).max() < 1e-5
    assert (both.argmax(1) == one.argmax(1)).all()
