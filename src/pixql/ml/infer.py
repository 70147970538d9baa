"""Applying a trained (or the ready ImageNet) classifier to image files."""

import contextlib
import os

import numpy as np
import torch

from pixql.errors import OptionError, StoreError
from pixql.tasks import as_task
from pixql.ml.batchnorm_folding import fold_batchnorm
from pixql.ml.data import eval_transform
from pixql.ml.fused_activations import inference_layers
from pixql.ml.networks import create_network
from pixql.ml.runtime import (auto_batch_size, forward_rows, progress_bar, resolve_device, resolve_precision,
                              to_device)


def inference_network(network, state_dict, classes):
    """The network rebuilt from its recipe and weights for inference only (PREDICT, EXPORT MODEL):
    eval mode, its frozen batch norms folded into the convolutions once."""
    model = create_network(network)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise StoreError(f"Saved weights do not fit the {network.get('arch')} network: {e}") from e
    if int(network["num_classes"]) != len(classes):
        raise StoreError(f"The network has {network['num_classes']} outputs but {len(classes)} classes are listed")
    return fold_batchnorm(model.eval())


def logits(model, x):
    """The network's outputs: its body in the statement's precision (autocast), its head (the
    pooling and classifier) in fp32. bf16 logits hold ~3 significant digits: PREDICT's scores
    then came in steps, different photos sharing one score exactly."""
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        return model(x)  # a network without timm's split: as it is
    features = model.forward_features(x)
    if not isinstance(features, torch.Tensor):  # e.g. CrossViT's list of branches
        return model.forward_head(features).float()
    with torch.autocast(x.device.type, enabled=False):
        return model.forward_head(features.float())


ONNX_NOTE = "runtime='auto' ran the network on ONNX Runtime (faster than torch on this CPU in fp32)"


class Classifier:
    """A network rebuilt from its recipe and weights, ready to label image files."""

    def __init__(self, network, state_dict, classes, preprocessing, device="auto", precision="auto",
                 task="classification", runtime="torch"):
        """`task`: a pixql task or its name; it turns the network's outputs into probabilities
        (softmax; multi-label: a sigmoid per class). `runtime`: 'torch'; 'onnx' (ONNX Runtime
        on the CPU, the model exported once into the cache: ml/onnx_runtime.py); 'auto': torch,
        handing over to ONNX Runtime where that measured faster (onnx_runtime.auto_prefers_onnx)
        once a call brings enough images to pay for the export."""
        self.task = as_task(task)
        self.network = dict(network)
        self.classes = list(classes)
        self.preprocessing = dict(preprocessing)
        self.device = resolve_device(device)
        self.transform = eval_transform(self.preprocessing)
        self.runtime, self.note = "torch", None  # note: what 'auto' chose, for the statement's messages
        self._auto_onnx = None  # the state dict while 'auto' may still hand over to ONNX Runtime
        if runtime == "onnx":
            if self.device.type != "cpu":
                raise OptionError("runtime='onnx' runs on the CPU (ONNX Runtime's CPU provider); "
                                  "use device='cpu', or runtime='torch' on a GPU", option="runtime")
            self._use_onnx(state_dict, export=True)
            return
        self.precision = resolve_precision(precision, self.device)
        if runtime == "auto":
            from pixql.ml.onnx_runtime import auto_prefers_onnx

            if auto_prefers_onnx(self.device, self.precision):
                self._use_onnx(state_dict, export=False)  # a graph exported before costs nothing
                if self.runtime == "onnx":
                    self.note = ONNX_NOTE
                    return  # no torch network to build
                self._auto_onnx = state_dict
        self.model = to_device(inference_network(self.network, state_dict, self.classes), self.device)
        inference_layers(self.model, self.preprocessing["input_size"])  # static padding, fused activations
        # (not `self` in it: a Classifier in a reference cycle, weights and all, waits for a full
        # garbage collection once dropped, which a Ray worker idle between statements seldom runs)
        probabilities = self.task.probabilities
        self.forward = lambda model, x: probabilities(logits(model, x))

    def _use_onnx(self, state_dict, export):
        """Run on ONNX Runtime from now on; with export=False only if the graph is cached."""
        from pixql.ml.onnx_runtime import OnnxForward, cached_graph, graph_path

        args = (self.network, state_dict, self.classes, self.preprocessing, self.task)
        path = cached_graph(*args) if export else graph_path(*args)
        if not os.path.isfile(path):
            return
        try:
            forward = OnnxForward(path)
        except Exception:  # noqa: BLE001 - a damaged file in the cache (cut short, overwritten): made again
            with contextlib.suppress(OSError):
                os.remove(path)
            if not export:
                return  # torch for now; 'auto' exports when a call pays for it
            forward = OnnxForward(cached_graph(*args))
        self.precision, self.model, self.runtime = "fp32", None, "onnx"
        self.forward = forward

    def _maybe_hand_over(self, n_images, progress):
        """runtime='auto': export and switch once a call is large enough; a graph that does not
        export (or does not match torch's outputs) leaves the model on torch, which then says
        what is wrong with it (e.g. NaN weights) in its own words."""
        from pixql.ml.onnx_runtime import AUTO_MIN_IMAGES

        if self._auto_onnx is None or n_images < AUTO_MIN_IMAGES:
            return
        state_dict, self._auto_onnx = self._auto_onnx, None
        try:
            with progress_bar(1, "export for ONNX Runtime", progress, unit="graph") as bar:  # a few seconds
                self._use_onnx(state_dict, export=True)
                bar.update(1)
        except Exception as e:  # noqa: BLE001  (any export failure: torch answers instead)
            self.note = f"runtime='auto' stayed on torch: the ONNX export failed ({type(e).__name__}: {e})"
        else:
            self.note = ONNX_NOTE

    def predict_proba(self, paths, batch_size=None, progress=True, num_workers=None, on_error="fail"):
        """[n, n_classes] float32 class probabilities (multi-label: per-class sigmoid), one row
        per path in order.

        on_error='skip': the rows of unreadable images are NaN instead of raising DataError."""
        paths = list(paths)
        if not paths:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        self._maybe_hand_over(len(paths), progress)
        probs, rows = forward_rows(
            self.model, paths, self.preprocessing, self.transform, self.forward,
            device=self.device, precision=self.precision,
            batch_size=batch_size or auto_batch_size(self.device, training=False),
            num_workers=num_workers, progress=progress, desc="predict", on_error=on_error,
        )
        broken = ~torch.isfinite(probs).all(dim=1) if len(probs) else torch.zeros(0, dtype=torch.bool)
        if broken.any():  # the network's fault, not the image's: NaN rows must not read as "unreadable"
            first = paths[int(rows[broken.nonzero()[0, 0]])]
            raise StoreError(
                f"the model's outputs are not numbers (NaN or infinite) for {int(broken.sum())} of {len(rows)} "
                f"image(s), e.g. {first}: its weights are broken (trained with too high a learning_rate?); "
                "drop it and build it again")
        if on_error == "skip":
            full = torch.full((len(paths), len(self.classes)), float("nan"))
            if len(rows):
                full[rows] = probs
            probs = full
        return probs.numpy()

    def predict(self, paths, batch_size=None, progress=True):
        """(predicted label, its probability, full probability matrix [n, n_classes])."""
        probs = self.predict_proba(paths, batch_size=batch_size, progress=progress)
        best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
        labels = [self.classes[i] for i in best]
        scores = probs[np.arange(len(best)), best].astype(float).tolist()
        return labels, scores, probs


def imagenet_classifier_parts():
    """(network, state_dict, classes, preprocessing) of EfficientNet-Lite0 on the 1000 ImageNet
    classes, weights from the efficientnet-lite0 package. Classes are in ImageNet index order."""
    from pixql.ml.imagenet import imagenet_class_names
    from pixql.ml.weights import LITE0_ARCH, lite0_imagenet_state_dict
    from pixql.ml.data import preprocessing_for

    network = {"arch": LITE0_ARCH, "num_classes": 1000}
    state_dict = dict(lite0_imagenet_state_dict())
    preprocessing = preprocessing_for(create_network(network))
    return network, state_dict, imagenet_class_names(), preprocessing


def imagenet_classifier(device="auto", precision="auto", runtime="torch"):
    network, state_dict, classes, preprocessing = imagenet_classifier_parts()
    return Classifier(network, state_dict, classes, preprocessing, device=device, precision=precision,
                      runtime=runtime)
