"""Out-of-memory back-off: a batch that does not fit is run in smaller chunks, with a warning.

CI has no GPU, so the out-of-memory error is raised by hand for batches above a size; the
code path is the one a CUDA OOM takes.
"""

import pytest
import torch
from conftest import make_color_images

from pixql.ml import runtime, train
from pixql.ml.runtime import BatchSplitter, is_out_of_memory

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def _limit_device_batch(monkeypatch, most):
    """Make moving more than `most` images to the device fail as CUDA would."""
    real = runtime.to_input
    seen = []

    def to_input(x, device):
        seen.append(len(x))
        if len(x) > most:
            raise OOM(f"CUDA out of memory. Tried to allocate {len(x)} images")
        return real(x, device)

    monkeypatch.setattr(runtime, "to_input", to_input)
    monkeypatch.setattr(train, "to_input", to_input)
    return seen


def test_is_out_of_memory_knows_cuda_and_cpu_allocator_errors():
    assert is_out_of_memory(OOM("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_splitter_halves_until_it_fits_and_keeps_the_order():
    calls = []

    def fn(x):
        calls.append(len(x))
        if len(x) > 3:
            raise OOM("CUDA out of memory")
        return x * 2

    splitter = BatchSplitter("predict")
    with pytest.warns(UserWarning) as warned:
        out = splitter.run(fn, torch.arange(10))
    messages = [str(w.message) for w in warned]
    assert len(messages) == 2 and "predict with 10 images at a time; going on with 5" in messages[0]
    assert "going on with 3" in messages[1]
    assert torch.equal(torch.cat(out), torch.arange(10) * 2) and splitter.parts == 4
    calls.clear()
    splitter.run(fn, torch.arange(10))  # later batches start at the size that worked
    assert max(calls) <= 3


def test_splitter_gives_up_at_one_image_and_passes_other_errors_through():
    def always_oom(x):
        raise OOM("CUDA out of memory")

    with pytest.warns(UserWarning), pytest.raises(OOM):
        BatchSplitter("predict").run(always_oom, torch.arange(4))

    def broken(x):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        BatchSplitter("predict").run(broken, torch.arange(4))


def test_predict_backs_off_and_gives_the_same_probabilities(tmp_path, monkeypatch):
    from pixql.ml.infer import imagenet_classifier

    paths = [p for p, _ in make_color_images(tmp_path, per_class=5, size=40)]
    classifier = imagenet_classifier(device="cpu")
    expected = classifier.predict_proba(paths, batch_size=8, progress=False, num_workers=0)
    seen = _limit_device_batch(monkeypatch, 3)
    with pytest.warns(UserWarning, match="out of memory during predict with 8 images"):
        got = classifier.predict_proba(paths, batch_size=8, progress=False, num_workers=0)
    assert max(n for n in seen if n <= 3) <= 3
    assert torch.allclose(torch.from_numpy(got), torch.from_numpy(expected), atol=1e-5)


def test_finetuning_backs_off_to_smaller_chunks_and_still_learns(tmp_path, monkeypatch):
    from pixql.ml.infer import Classifier

    rows = make_color_images(tmp_path, per_class=12, size=32)
    paths, labels = [p for p, _ in rows], [label for _, label in rows]
    seen = _limit_device_batch(monkeypatch, 4)
    config = train.TrainConfig(train_mode="finetune", epochs=2, batch_size=8, num_workers=0, progress=False)
    with pytest.warns(UserWarning, match="out of memory during training with 8 images at a time; going on with 4"):
        model = train.train_classifier(paths, labels, config)
    assert model.train_rows == 24 and len(model.history) == 2
    assert seen.count(8) == 1  # one failed try, then chunks of 4 for the rest of the run
    monkeypatch.undo()
    predicted, _, _ = Classifier(model.network, model.state_dict, model.classes,
                                 model.preprocessing).predict(paths, progress=False)
    assert sum(p == t for p, t in zip(predicted, labels)) / len(labels) >= 0.9


def test_auto_precision_is_bf16_only_where_the_cpu_has_it(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert runtime.resolve_precision("auto", cpu) == "bf16"
    assert runtime.resolve_precision("fp32", cpu) == "fp32"
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert runtime.resolve_precision("auto", cpu) == "fp32"


def test_memory_format_is_channels_last_on_the_cpu_and_nchw_on_a_gpu():
    """The rule runtime.memory_format states (BENCHMARKS.md, "On a GPU"); CI has no GPU, so the
    rule itself is what is checked there."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert runtime.memory_format(cpu) is torch.channels_last
    assert runtime.memory_format(cuda) is torch.contiguous_format
    model = runtime.to_device(torch.nn.Conv2d(3, 8, 3), cpu)
    assert model.weight.is_contiguous(memory_format=torch.channels_last)
    assert runtime.to_input(torch.zeros(2, 3, 8, 8), cpu).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("capabilities, native", [
    ({"amx_bf16": True, "avx512_bf16": False}, True),   # Intel Sapphire Rapids and later
    ({"amx_bf16": False, "avx512_bf16": True}, True),   # AMD Zen 4, Intel Cooper Lake
    ({"amx_bf16": False, "avx512_bf16": False, "avx512_f": True}, False),
    ({}, False),
])
def test_native_bf16_means_amx_or_avx512_bf16(monkeypatch, capabilities, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert runtime.cpu_has_native_bf16() is native
