"""ONNX Runtime as PREDICT's inference engine (`OPTIONS (runtime='onnx')`), through the EXPORT
MODEL path: the model is exported once (export.export_onnx, which checks ONNX Runtime's
probabilities against torch's) into the cache folder, keyed by everything its graph depends
on, and each batch that pixql's loader prepares runs through an ONNX Runtime session on the CPU.
Decoding, errors naming files and on_error='skip' stay pixql's.
"""

import hashlib
import json
import os

import numpy as np
import torch


def cached_graph(network, state_dict, classes, preprocessing, task, root=None):
    """Path of the model's ONNX file in `<cache>/onnx/`, exported on first use."""
    import onnxruntime

    import pixql
    from pixql.ml.embedding_cache import cache_root, hash_tensors
    from pixql.ml.export import export_onnx

    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"network": network, "classes": list(map(str, classes)), "preprocessing": preprocessing,
                         "task": task.name, "pixql": pixql.__version__, "torch": torch.__version__,
                         "onnxruntime": onnxruntime.__version__}, sort_keys=True, default=str).encode())
    hash_tensors(h, state_dict)
    folder = os.path.join(root or cache_root(), "onnx")
    path = os.path.join(folder, f"{h.hexdigest()}.onnx")
    if not os.path.isfile(path):  # export_onnx writes to a temporary name and renames: whole files only
        os.makedirs(folder, exist_ok=True)
        export_onnx(network, state_dict, classes, preprocessing, path, task=task)
    return path


class OnnxForward:
    """Callable (model, x) -> probabilities for runtime.forward_rows, by an ONNX Runtime session."""

    def __init__(self, path):
        from pixql.ml.export import _session

        self.path = path
        self.session = _session(path)
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name

    def __call__(self, _model, x):
        batch = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self.session.run([self.output], {self.input: batch})[0])
