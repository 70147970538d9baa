"""ONNX Runtime as PREDICT's inference engine (`OPTIONS (runtime='onnx')`, and what
runtime='auto' picks where it pays), through the EXPORT MODEL path: the model is exported once
(export.export_onnx, which checks ONNX Runtime's probabilities against torch's) into the cache
folder, keyed by everything its graph depends on, and each batch that pixql's loader prepares
runs through an ONNX Runtime session on the CPU. Decoding, errors naming files and
on_error='skip' stay pixql's.
"""

import hashlib
import json
import os
import threading

import numpy as np
import torch


# runtime='auto' hands a CPU PREDICT to ONNX Runtime from this many images in one call (or at once
# when the graph is already exported). Lite0 on a 2-core EPYC without native bf16: the network
# 2.0x torch's, PREDICT 70.1 vs 46.7 images/s, the export ~2 s: even after ~300 photos
# (BENCHMARKS.md, "ONNX Runtime").
AUTO_MIN_IMAGES = 512


def auto_prefers_onnx(device, precision):
    """runtime='auto': ONNX Runtime where it measured faster than torch: the CPU in fp32. Where
    the CPU multiplies bf16 natively, torch's bf16 autocast (2.2-2.8x fp32) stays."""
    import importlib.util

    return device.type == "cpu" and precision == "fp32" and importlib.util.find_spec("onnxruntime") is not None


def graph_path(network, state_dict, classes, preprocessing, task, root=None):
    """Where the model's ONNX file lives in `<cache>/onnx/` (there or not)."""
    import onnxruntime

    import pixql
    from pixql.ml.cache_folder import cache_root
    from pixql.ml.embedding_cache import hash_tensors

    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"network": network, "classes": list(map(str, classes)), "preprocessing": preprocessing,
                         "task": task.name, "pixql": pixql.__version__, "torch": torch.__version__,
                         "onnxruntime": onnxruntime.__version__}, sort_keys=True, default=str).encode())
    hash_tensors(h, state_dict)
    return os.path.join(root or cache_root(), "onnx", f"{h.hexdigest()}.onnx")


def cached_graph(network, state_dict, classes, preprocessing, task, root=None):
    """Path of the model's ONNX file in `<cache>/onnx/`, exported on first use."""
    from pixql.ml.export import export_onnx

    path = graph_path(network, state_dict, classes, preprocessing, task, root)
    if not os.path.isfile(path):  # export_onnx writes to a temporary name and renames: whole files only
        os.makedirs(os.path.dirname(path), exist_ok=True)
        export_onnx(network, state_dict, classes, preprocessing, path, task=task)
    return path


class OnnxForward:
    """Callable (model, x) -> probabilities for runtime.forward_rows, by an ONNX Runtime session."""

    def __init__(self, path, threads=None):
        from pixql.ml.export import _session

        self.path, self.threads = path, threads
        self.session = _session(path, threads)
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name
        self._one_thread, self._lock = None, threading.Lock()

    def on_one_thread(self):
        """The same graph in a session whose operators run on the calling thread alone, for
        ml/lanes.py: one session for all the lanes (its run() may be called from several threads
        at once). In lanes ORT's network ran 1.15-1.5x its speed on its own thread pool."""
        with self._lock:
            if self._one_thread is None:
                self._one_thread = self if self.threads == 1 else OnnxForward(self.path, threads=1)
            return self._one_thread

    def __call__(self, _model, x):
        batch = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self.session.run([self.output], {self.input: batch})[0])
