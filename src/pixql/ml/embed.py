"""Images as vectors: a network's pooled features before its head, L2-normalised.

An Embedder wraps a backbone (a trained pixql model's, the ImageNet classifier's, or a base
network with its pretrained weights) and fills and reuses the on-disk embedding cache
(embedding_cache.py), keyed by the backbone's weights: CONVERT, SEARCH IMAGE, embedding()
and a linear-mode BUILD on the same backbone compute each image once.
"""

import numpy as np
import torch

from pixql.ml.batchnorm_folding import fold_batchnorm
from pixql.ml.data import eval_transform
from pixql.ml.embedding_cache import EmbeddingCache, cached_forward
from pixql.ml.fused_activations import inference_layers
from pixql.ml.networks import create_network, linear_head
from pixql.ml.runtime import auto_batch_size, forward_rows, resolve_device, resolve_precision, to_device


def pre_logits(model, x):
    """The pooled features a classification head reads (timm's forward_head(pre_logits=True))."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def normalized(vectors):
    """Rows scaled to unit length (a zero row stays zero), float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


class Embedder:
    """A network ready to turn image files into unit vectors of `dim` numbers: `features(model,
    x)` on batches preprocessed as `preprocessing` says (pixql's loader, decoding and batch
    splitting). `head`: the layer the cache key leaves out (a classifier's head)."""

    kind = "image"  # what it embeds; a CLIP embedder embeds text too (clip.py)

    def __init__(self, model, preprocessing, features=pre_logits, head=None, device="auto", precision="auto",
                 cache=True, fold=True):
        self.preprocessing = dict(preprocessing)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        model = to_device(model.eval(), self.device)
        # Keyed on the unfolded weights, as a linear-mode BUILD keys them: the two share entries.
        self.cache = EmbeddingCache.for_backbone(model, head, self.preprocessing, self.precision,
                                                 self.device) if cache else None
        # the head over the features, as numbers: a classifier's logits from cached features (logits())
        self.head = None if head is None else (head.weight.detach().float().cpu().numpy(),
                                               head.bias.detach().float().cpu().numpy()
                                               if head.bias is not None else 0.0)
        self.model = fold_batchnorm(model) if fold else model
        inference_layers(self.model, self.preprocessing["input_size"])  # as PREDICT's network (ml/infer.py)
        self.features = features
        self.transform = eval_transform(self.preprocessing)
        self.cache_hits = 0
        with torch.inference_mode():
            probe = torch.zeros(1, *self.preprocessing["input_size"][-3:], device=self.device)
            self.dim = int(self.features(self.model, probe).shape[1])

    classes = None  # a classifier's, whose `head` (logits()) scores them; None for a base network

    @classmethod
    def from_network(cls, network, state_dict, preprocessing, device="auto", precision="auto", cache=True,
                     classes=None):
        """The backbone of a pixql network recipe (a trained model's, with its `classes`, or a base's)."""
        model = create_network(network)
        model.load_state_dict(state_dict, strict=True)
        embedder = cls(model, preprocessing, pre_logits, linear_head(model), device, precision, cache)
        embedder.classes = None if classes is None else list(classes)
        return embedder

    def embed(self, paths, batch_size=None, progress=True, on_error="fail"):
        """float32 [n, dim] unit vectors, one row per path in order; with on_error='skip' the
        rows of unreadable images are NaN."""
        return self._features(paths, batch_size, progress, on_error, normalized, self.dim)

    def logits(self, paths, batch_size=None, progress=True, on_error="fail"):
        """float32 [n, classes]: the head of a classifier's network over the features, as its
        PREDICT computes them, but from the cache where it holds them (SEARCH by keyword); NaN rows
        as `embed`. Only for an Embedder made with a linear head."""
        weight, bias = self.head
        return self._features(paths, batch_size, progress, on_error, lambda f: f @ weight.T + bias, len(weight))

    def _features(self, paths, batch_size, progress, on_error, finish, width):
        """`finish(features)` [n, width] of the computed or cached features, NaN rows for those skipped."""
        paths = list(paths)  # file paths, or Regions (ml.images)
        full = np.full((len(paths), width), np.nan, dtype=np.float32)
        if not paths:
            return full

        def compute(some, skipped):
            return forward_rows(
                self.model, some, self.preprocessing, self.transform, self.features, device=self.device,
                precision=self.precision, batch_size=batch_size or auto_batch_size(self.device, training=False),
                progress=progress, desc="embed", on_error=on_error, skipped=skipped)

        if self.cache is None:
            feats, rows = compute(paths, set())
        else:
            feats, rows, _skipped, hits = cached_forward(self.cache, paths, compute)
            self.cache_hits += hits
        if len(rows):
            full[rows.numpy()] = finish(feats.float().numpy())
        return full


def base_parts(name, weights=None):
    """(network recipe, state_dict, preprocessing) of a base network with its pretrained weights
    (or a local `weights` file): what `USING <base>` embeds with."""
    from pixql.errors import WeightsUnavailableError
    from pixql.ml.bases import create_backbone

    model, network, preprocessing, source = create_backbone(name, num_classes=1, pretrained=True, weights=weights)
    if source == "random":
        raise WeightsUnavailableError(
            f"{name} has no pretrained weights, and embeddings of random weights mean nothing: embed with a "
            "model trained on your photos (BUILD MODEL ...), a pretrained base, or OPTIONS (weights='file')")
    return network, model.state_dict(), preprocessing
