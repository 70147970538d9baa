"""Pretrained detectors whose weights are here: transformers' YOLOS and torchvision's detection models.

Names (the prefix in any case): `yolos` (hustvl/yolos-small, COCO's classes), `yolos:<hub id>`
(e.g. yolos:valentinafeve/yolos-fashionpedia), and `torchvision:<model>`, a model of
torchvision.models.detection (fasterrcnn_resnet50_fpn, retinanet_resnet50_fpn, fcos_resnet50_fpn,
ssdlite320_mobilenet_v3_large, ...) with its COCO weights.

pixql downloads nothing. YOLOS comes from a folder that save_pretrained wrote (OPTIONS
(weights='folder')) or from the local Hugging Face cache (ml/hub.py); a torchvision model from a
state dict file (OPTIONS (weights='file.pth' or '.safetensors')) or from torch's hub cache, where
`torchvision.models.get_model(name, weights='DEFAULT')` leaves its weights. Otherwise a
WeightsUnavailableError says where pixql looked, how to provide the weights, and what works offline.

`detect()` keeps the contract of pixql's own detector (ml/detect.py): per photo (boxes [n, 4] in
the photo's pixels, scores [n], class indices [n]), best first. Photos come through pixql's loader
(JPEG draft decoding, errors naming the file); a batch runs its photos of one input size together,
so that a photo's boxes do not depend on which photos share its batch (YOLOS would read padding as
part of the picture).
"""

import os

from pixql.errors import CatalogError, TrainingError, WeightsUnavailableError

YOLOS_DEFAULT = "hustvl/yolos-small"
NAMES = ("yolos", "yolos:<hub id>", "torchvision:<model>")
BATCH_SIZE = 4
# COCO's label ids keep gaps for classes it dropped ('N/A') and 0 for the background: the class
# list keeps them so that indices stay the model's label ids, and their boxes are dropped.
NO_OBJECT = ("__background__", "N/A")
TRAIN_ONE = ("train one: BUILD MODEL d USING EfficientNet_Lite0 OPTIONS (task='detection', box_col='box', "
             "label_col='label') AS ...")


def _split(name):
    kind, _, rest = str(name).partition(":")
    return kind.strip().lower(), rest.strip()


def is_pretrained(name):
    return _split(name)[0] in ("yolos", "torchvision")


def load(name, weights=None, device="auto"):
    """The detector `name` names, its weights from `weights` (a folder or file) or the local caches."""
    kind, rest = _split(name)
    if kind == "yolos":
        return Yolos(rest or YOLOS_DEFAULT, weights, device)
    if kind == "torchvision":
        return TorchvisionDetector(rest.lower(), weights, device)
    raise CatalogError(f"no pretrained detector '{name}': the names are {', '.join(NAMES)}")


class _Detector:
    """What both kinds share: loading photos, batching them by input size, keeping the best boxes.
    A subclass sets classes, device, draft (the least side a JPEG may be decoded at), `_prepare`
    (PIL image -> input tensor, in the loader) and `_forward`."""

    classes = ()
    draft = None

    def detect(self, items, threshold=0.5, max_boxes=100, batch_size=None, progress=True, on_error="fail",
               classes=None):
        """Per photo: (boxes [n, 4] float32 x1, y1, x2, y2 in the photo's pixels, scores [n] float32,
        class indices [n] int64), best first, scores at least `threshold`, at most `max_boxes` of the
        class indices `classes` (None: all); None for an unreadable photo with on_error='skip' (with
        'fail' a DataError names it)."""
        import contextlib

        import torch

        from pixql.ml.data import ImageRows
        from pixql.ml.detect import UNCAPPED, class_mask, found_in_batches, same_size
        from pixql.ml.runtime import progress_bar

        items = list(items)
        out = [None] * len(items)
        if not items:
            return out
        photo_sizes = [_photo_size(item) for item in items]
        usable = torch.tensor([c not in NO_OBJECT for c in self.classes], dtype=torch.bool) & class_mask(
            len(self.classes), classes)
        rows = ImageRows(items, None, self._prepare, draft=self.draft)

        def found(good):  # [(input, item index)] -> [(item index, (boxes, scores, class indices))]
            kept = []
            with torch.inference_mode():  # (per thread: a lane sets its own)
                for group in same_size(good, lambda x: x[0].shape):
                    pixels = [x[0] for x, _ in group]
                    decoded = [x[1] for x, _ in group]
                    photos = [photo_sizes[i] or x[1] for x, i in group]  # (width, height)
                    answers = self._forward(pixels, decoded, photos, threshold)
                    for (_, i), (width, height), (boxes, scores, labels) in zip(group, photos, answers):
                        boxes, scores, labels = boxes.float().cpu(), scores.float().cpu(), labels.long().cpu()
                        # YOLOS's boxes (a centre and a size) may reach past the photo's edges: a box is
                        # a region of the photo, as SEGMENT and PRINT IMAGE read it
                        boxes = torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                                             boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], dim=1)
                        keep = (scores >= threshold) & usable[labels]
                        order = torch.argsort(scores[keep], descending=True, stable=True)[:max_boxes]
                        kept.append((i, (boxes[keep][order].numpy(), scores[keep][order].numpy(),
                                         labels[keep][order].numpy())))
            return kept

        # with classes asked for, no cap of the detector's own on boxes over every class (before
        # they are picked), so that theirs are not cut first
        self._configure(threshold, max_boxes if classes is None else UNCAPPED)
        # `progress` may be a bar that the caller owns (DETECT streaming a long query: one bar over its chunks)
        bar = contextlib.nullcontext(progress) if hasattr(progress, "update") else progress_bar(
            len(items), "detect", progress)
        batches = found_in_batches(rows, batch_size or BATCH_SIZE, self.device, found, on_error)
        with bar as bar, contextlib.closing(batches):
            for kept, count in batches:
                for i, answer in kept:
                    out[i] = answer
                bar.update(count)
        return out

    def _configure(self, threshold, max_boxes):
        pass


def _photo_size(item):
    """(width, height) of a photo as shown, from its header: boxes come back in these pixels even
    when the JPEG was decoded smaller. None for a Region (read whole) or an unreadable file."""
    from pixql.ml.images import Region
    from pixql.regions import upright_size

    return None if isinstance(item, Region) else upright_size(item)


# -- YOLOS (transformers) ----------------------------------------------------------------------------
class Yolos(_Detector):
    def __init__(self, hub_id=YOLOS_DEFAULT, weights=None, device="auto"):
        import functools

        from pixql.ml import hub
        from pixql.ml.runtime import resolve_device

        source = weights or hub_id
        self.model, self.processor = hub.load("YolosForObjectDetection", "YolosImageProcessor", source, "YOLOS",
                                              TRAIN_ONE)
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.name = f"yolos:{source}"
        config = self.model.config
        # label ids index the classifier's outputs (its last one is "no object"); gaps get a name
        self.classes = [str(config.id2label.get(k, f"LABEL_{k}")) for k in range(config.num_labels)]
        size = self.processor.size
        self.draft = getattr(size, "shortest_edge", None) or (size.get("shortest_edge") if isinstance(size, dict)
                                                               else None)
        self._prepare = functools.partial(_yolos_input, self.processor)

    def _forward(self, pixels, decoded, photos, threshold):
        import torch

        outputs = self.model(pixel_values=torch.stack(pixels).to(self.device))
        sizes = torch.tensor([(h, w) for w, h in photos], dtype=torch.float32)
        # post-processing keeps scores over its threshold; pixql keeps those at least `threshold`
        found = self.processor.post_process_object_detection(outputs, threshold=threshold - 1e-6,
                                                             target_sizes=sizes)
        return [(f["boxes"], f["scores"], f["labels"]) for f in found]


def _yolos_input(processor, img):
    # one photo at a time: unpadded, at the size YOLOS resizes it to
    return processor(images=img, return_tensors="pt")["pixel_values"][0], img.size


# -- torchvision's detection models ------------------------------------------------------------------
class TorchvisionDetector(_Detector):
    def __init__(self, model_name, weights=None, device="auto"):
        import torchvision

        from pixql.ml.runtime import resolve_device

        names = sorted(torchvision.models.list_models(module=torchvision.models.detection))
        if model_name not in names:
            what = f"no torchvision detector '{model_name}'" if model_name else "name the model"
            raise CatalogError(f"{what}: torchvision:<model> takes one of {', '.join(names)}")
        default = torchvision.models.get_model_weights(model_name).DEFAULT  # its url and classes; nothing fetched
        self.classes = [str(c) for c in default.meta["categories"]]
        if weights is None:
            model = _from_hub_cache(model_name, default)
        else:
            model = _from_file(model_name, weights, len(self.classes))
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.name = f"torchvision:{model_name}" + (f" ({weights})" if weights else "")
        self.draft = min(getattr(self.model.transform, "min_size", None) or (0,)) or None
        # the floors on score and count that torchvision applies after NMS, as built
        self._limits = [(part, part.score_thresh, part.detections_per_img)
                        for part in (self.model, getattr(self.model, "roi_heads", None))
                        if part is not None and hasattr(part, "score_thresh")]

    @staticmethod
    def _prepare(img):
        from torchvision.transforms.functional import pil_to_tensor

        return pil_to_tensor(img).float().div_(255), img.size

    def _configure(self, threshold, max_boxes):
        # torchvision drops scores under its own floor (0.05; SSD 0.01) and keeps 100-300 boxes:
        # a lower threshold or more boxes asked for lowers and raises them
        for part, floor, count in self._limits:
            part.score_thresh = min(floor, threshold)
            part.detections_per_img = max(count, max_boxes)

    def _forward(self, pixels, decoded, photos, threshold):
        import torch

        found = self.model([x.to(self.device) for x in pixels])
        out = []
        for f, (dw, dh), (pw, ph) in zip(found, decoded, photos):
            # boxes come in the decoded image's pixels; a JPEG draft decodes it smaller than the photo
            scale = torch.tensor([pw / dw, ph / dh, pw / dw, ph / dh], dtype=torch.float32)
            out.append((f["boxes"].float().cpu() * scale, f["scores"], f["labels"]))
        return out


def _from_hub_cache(name, default):
    import torch
    import torchvision

    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(default.url))
    if not os.path.isfile(path):
        raise WeightsUnavailableError(
            f"torchvision:{name}'s weights are not in torch's hub cache (pixql looked for {path}), and pixql "
            f"downloads nothing. To provide them: where there is internet run python -c \"import torchvision; "
            f"torchvision.models.get_model('{name}', weights='DEFAULT')\" and copy ~/.cache/torch/hub/checkpoints "
            f"here (to {os.path.dirname(path)}; TORCH_HOME moves it), or give the file with OPTIONS "
            f"(weights='file.pth'). Offline: {TRAIN_ONE}", path=path)
    try:
        # torchvision builds it as with its weights (frozen batch norms, their eps); the file is there,
        # so torch.hub reads it and fetches nothing
        return torchvision.models.get_model(name, weights="DEFAULT")
    except Exception as exc:
        from pixql.ml.weights import read_weights_file

        try:  # a whole file of tensors that do not fit is another model's; else it is damaged
            read_weights_file(path)
            why = f"it holds another model's weights, or other classes': put {name}'s own file there"
        except TrainingError:
            why = "the file may be truncated; copy it again"
        raise WeightsUnavailableError(
            f"cannot load torchvision:{name}'s weights from {path} ({type(exc).__name__}: {_short(exc)}): "
            f"{why}", path=path) from None


def _from_file(name, weights, num_classes):
    import torchvision

    from pixql.ml.weights import read_weights_file

    path = os.path.expanduser(str(weights))
    try:  # (one reader of a user's checkpoint: wrappers, DDP prefixes, a folder, a pickled model said as such)
        state = read_weights_file(path)
    except TrainingError as exc:
        raise WeightsUnavailableError(f"torchvision:{name}: {exc}", path=path) from None
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=num_classes)
    try:
        model.load_state_dict(state)
    except Exception as exc:
        raise WeightsUnavailableError(
            f"{path} does not hold the weights of torchvision:{name} with its {num_classes} COCO classes "
            f"(another model, or other classes?): {_short(exc)}", path=path) from None
    return model


def _short(exc, n=300):
    text = " ".join(str(exc).split())
    return text if len(text) <= n else text[:n] + " ..."
