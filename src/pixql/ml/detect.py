"""Detectors: torchvision's Faster R-CNN with a feature pyramid on a pixql backbone, trained and run.

The backbone is a timm classifier built as BUILD builds one (create_backbone: its offline ImageNet
weights), cut to its last three stages (strides 8, 16, 32; timm's forward_intermediates) under a
torchvision FeaturePyramidNetwork; torchvision's FasterRCNN does the rest (anchors, RPN, RoIAlign,
box head, losses, NMS). Sizes are set for a CPU: 128 pyramid channels, a 512-wide box head, 128
sampled boxes per image. A detector's recipe (`network` in its manifest) rebuilds it.

Images go in resized so that their shorter side is `min_size` (at most `max_size` long), through
pixql's loader (JPEG draft decoding, errors naming the file); boxes come back in the photo's pixels.
"""

import contextlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pixql.errors import DataError, TrainingError
from pixql.ml.data import ImageRows, auto_workers, make_loader, raise_failure
from pixql.ml.lanes import lane_count
from pixql.ml.lanes import run as lanes_run
from pixql.ml.runtime import progress_bar, resolve_device

DETECTOR = "fasterrcnn_fpn"
FPN_CHANNELS = 128
BOX_HEAD = 512
MIN_SIZE, MAX_SIZE = 384, 640  # the shorter side, and the longest side allowed
LEARNING_RATE = 2e-4  # AdamW, whole network; the heads start random
WARMUP_STEPS = 50
DEFAULT_EPOCHS = 12  # BUILD's default for a detector (1 is a classifier's, whose head is linear)
TRAINABLE_STAGES = 3  # of the backbone's 5 stages, the last 3 learn (torchvision's default)
# DETECT in lanes only for photos read at most this big (a batch of 4 at 384x512: ~0.3 GB a lane;
# torchvision's ResNet-50 Faster R-CNN at 800 px: ~0.5 GB a photo, so one stream)
LANES_MAX_SIDE = 640


def recipe(arch, num_classes, mean, std, image_size=None):
    """What rebuilds a detector: its backbone arch, classes (without background) and sizes."""
    min_size = int(image_size or MIN_SIZE)
    return {"arch": arch, "detector": DETECTOR, "num_classes": int(num_classes), "min_size": min_size,
            "max_size": max(MAX_SIZE, min_size), "fpn_channels": FPN_CHANNELS, "mean": list(mean), "std": list(std)}


class _Pyramid(nn.Module):
    """A timm network's last three stages under a feature pyramid: the backbone interface that
    torchvision's detectors take (`out_channels`; forward -> OrderedDict of feature maps)."""

    def __init__(self, body, channels):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        if not hasattr(body, "forward_intermediates") or not hasattr(body, "feature_info"):
            raise TrainingError(f"task='detection' needs a timm backbone with feature stages; "
                                f"{type(body).__name__} has none (use EfficientNet_Lite0 or a timm: name)")
        self.stages = list(range(len(body.feature_info)))[-3:]
        body.prune_intermediate_layers(self.stages, prune_head=True)
        self.body = body
        self.fpn = FeaturePyramidNetwork([body.feature_info[i]["num_chs"] for i in self.stages], channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = channels

    def forward(self, x):
        features = self.body.forward_intermediates(x, indices=self.stages, intermediates_only=True)
        return self.fpn(OrderedDict((str(k), f) for k, f in enumerate(features)))


def create_detector(net, body=None):
    """The detector of recipe `net`; `body`: its timm backbone with weights (new detectors),
    else a bare one (weights come from the store)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    from pixql.ml.networks import create_network

    if net.get("detector") != DETECTOR:
        raise TrainingError(f"unknown detector {net.get('detector')!r} in the model's recipe")
    if body is None:
        body = create_network({"arch": net["arch"], "num_classes": 0})
    channels = int(net["fpn_channels"])
    backbone = _Pyramid(body, channels)
    # One anchor size per level (strides 8, 16, 32, and the pooled 64), three shapes each.
    anchors = AnchorGenerator(((32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 4)
    return FasterRCNN(
        backbone, num_classes=None, min_size=int(net["min_size"]), max_size=int(net["max_size"]),
        image_mean=list(net["mean"]), image_std=list(net["std"]), rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], 7, 2),
        box_head=TwoMLPHead(channels * 7 * 7, BOX_HEAD),
        box_predictor=FastRCNNPredictor(BOX_HEAD, int(net["num_classes"]) + 1),  # + background
        rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=300,
        box_batch_size_per_image=128, box_detections_per_img=100)


def new_detector(base, num_classes, pretrained=True, weights=None, image_size=None):
    """(detector, recipe, where the backbone's weights came from) for BUILD MODEL."""
    import timm.layers

    from pixql.ml.bases import create_backbone

    body, network, pre, source = create_backbone(base, 0, pretrained, weights)
    # Batches of a few photos make batch statistics noise: the backbone keeps ImageNet's, and
    # its first stages stay as they are (torchvision's detectors do the same).
    body = timm.layers.freeze_batch_norm_2d(body)
    net = recipe(network["arch"], num_classes, pre["mean"], pre["std"], image_size)
    model = create_detector(net, body)
    _freeze_early_stages(model.backbone.body)
    return model, net, source


def _freeze_early_stages(body):
    stages = getattr(body, "blocks", None)
    if stages is None:
        return
    frozen = len(stages) - TRAINABLE_STAGES
    for name, param in body.named_parameters():
        if not name.startswith("blocks.") or int(name.split(".")[1]) < frozen:
            param.requires_grad_(False)


# -- images in -------------------------------------------------------------------------------------
class _Resize:
    """A photo as the detector's input: RGB float 0..1, shorter side min_size (longest at most
    max_size); the scale goes with it so that boxes map back to the photo's pixels."""

    def __init__(self, net):
        self.min_size, self.max_size = int(net["min_size"]), int(net["max_size"])

    def scale(self, width, height):
        return min(self.min_size / min(width, height), self.max_size / max(width, height))

    def __call__(self, img):
        from torchvision.transforms.functional import pil_to_tensor

        width, height = img.size  # after any JPEG draft: pixql's loader decoded it at least this big
        s = self.scale(width, height)
        size = (max(1, round(width * s)), max(1, round(height * s)))
        return pil_to_tensor(img.resize(size, resample=2)).float().div_(255)  # 2 = bilinear


def _scales(x, size):
    """[sx, sy, sx, sy]: from the photo's pixels (`size`: width, height upright; None: unknown)
    to its input `x`'s, each side by its own (the resize rounds each: 40 px x 0.2133 is 9 px,
    not 8.53, and one scale for both put a wide photo's boxes 5% lower, past its bottom edge)."""
    if not size:
        return torch.ones(4)
    sx, sy = x.shape[-1] / size[0], x.shape[-2] / size[1]
    return torch.tensor([sx, sy, sx, sy], dtype=torch.float32)


def _photo_sizes(items):
    from pixql.regions import upright_size

    return [upright_size(getattr(item, "path", item)) for item in items]


def _rows(items, net):
    return ImageRows(items, list(range(len(items))), _Resize(net), draft=int(net["min_size"]))


def _loader(items, net, batch_size, device, shuffle=False, seed=0, num_workers=None):
    return make_loader(_rows(items, net), batch_size, device, shuffle=shuffle, num_workers=num_workers, seed=seed,
                       collate_fn=lambda batch: batch)


def _photos(items):
    """ImageRows items -> ([(input, item index)] of the readable ones, None, item indices, errors),
    as lanes.run takes a batch: photos of several sizes stay a list."""
    good = [(x, i) for x, _target, i, error in items if error is None]
    return good, None, [i for _x, _target, i, _error in items], [
        (i, error) for _x, _target, i, error in items if error is not None]


def found_in_batches(rows, batch_size, device, find, on_error, skipped=None):
    """(find(batch), the batch's row count) for each batch of `rows` (ImageRows of photos; a batch
    is [(input, item index)] of its readable photos, a batch of none gives ([], its count)), in row
    order: in lanes on a CPU of a few cores (ml/lanes.py: Faster R-CNN ran 1.5x as fast in two),
    else in one stream. `find` runs in a lane's thread there, so it sets its own grad mode. Each
    lane holds a batch's activations: photos read at a shorter side over LANES_MAX_SIDE (or at
    an unknown one) stay in one stream. Close the generator when done: on an error or an early
    close, its running batches are waited for."""
    def found(batch):
        return find(batch) if batch else []

    side = rows.draft
    lanes = 1 if side is None or side > LANES_MAX_SIDE else lane_count(
        device, auto_workers(len(rows), None, device.type), len(rows), batch_size)
    if lanes > 1:
        batches = lanes_run(rows, batch_size, found, lanes, on_error, skipped, collate=_photos)
        try:
            for kept, idx in batches:
                yield kept, len(idx)
        finally:
            batches.close()
        return
    for batch in make_loader(rows, batch_size, device, collate_fn=list):
        yield found(next(loaded_batches([batch], on_error, skipped), [])), len(batch)


def loaded_batches(loader, on_error, skipped=None):
    """Lists of (input, item index) from a loader of ImageRows made with collate_fn=list; an
    unreadable image raises its DataError, or with on_error='skip' its index goes to `skipped`."""
    for batch in loader:
        good = []
        for x, _target, i, error in batch:
            if error is None:
                good.append((x, i))
            elif on_error != "skip":
                raise_failure(error)
            elif skipped is not None:
                skipped.add(i)
        if good:
            yield good


# -- training ----------------------------------------------------------------------------------------
@dataclass
class DetectorRun:
    """What train_detector gives back for the model store."""
    network: dict
    state_dict: dict
    history: list
    metrics: dict
    seconds: float
    images_per_second: float
    skipped: list = field(default_factory=list)
    source: str = ""


def train_detector(items, boxes, labels, net_args, epochs=12, batch_size=4, learning_rate=None, seed=0,
                   device="auto", progress=True, on_error="fail", num_workers=None, init=None, validate=None):
    """Train on photos `items` whose objects are `boxes` ([n, 4] float arrays, the photo's pixels)
    of class indices `labels` ([n] int arrays). `net_args`: new_detector's (base, num_classes,
    pretrained, weights, image_size); `init`: (recipe, state_dict) to continue (FIT MODEL).
    `validate(model_state) -> metrics` is called after each epoch when given."""
    from pixql.ml.train import _seed_everything

    _seed_everything(seed)
    dev = resolve_device(device)
    if init is not None:
        net = dict(init[0])
        model = create_detector(net)
        model.load_state_dict(init[1])
        import timm.layers

        timm.layers.freeze_batch_norm_2d(model.backbone.body)
        _freeze_early_stages(model.backbone.body)
        source = "parent"
    else:
        model, net, source = new_detector(*net_args)
    model.to(dev)
    sizes = _photo_sizes(items)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate or LEARNING_RATE, weight_decay=1e-4)
    steps = epochs * math.ceil(len(items) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / WARMUP_STEPS) * 0.5 * (
        1 + math.cos(math.pi * min(step, steps) / max(1, steps))))
    generator = np.random.default_rng(seed)
    history, skipped, seen, started = [], set(), 0, time.perf_counter()
    best = None  # with validation: (mAP@0.5, mAP@0.5:0.95, -loss), epoch, its weights (None: the model's own)
    for epoch in range(1, epochs + 1):
        # -- train one epoch: photos shuffled, half of them flipped left to right
        model.train()
        loader = _loader(items, net, batch_size, dev, shuffle=True, seed=seed + epoch, num_workers=num_workers)
        bar = progress_bar(len(items), f"detector epoch {epoch}/{epochs}", progress)
        total, count, epoch_start = 0.0, 0, time.perf_counter()
        for batch in loaded_batches(loader, on_error, skipped):
            images, targets = [], []
            for x, i in batch:
                b = torch.as_tensor(boxes[i], dtype=torch.float32).reshape(-1, 4) * _scales(x, sizes[i])
                if generator.random() < 0.5:
                    x = x.flip(-1)
                    b = torch.stack([x.shape[-1] - b[:, 2], b[:, 1], x.shape[-1] - b[:, 0], b[:, 3]], dim=1)
                images.append(x.to(dev))
                targets.append({"boxes": b.to(dev), "labels": torch.as_tensor(labels[i], dtype=torch.int64).to(dev) + 1})
            losses = model(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise TrainingError(f"the detector's loss became {loss.item()} in epoch {epoch}: lower "
                                    "OPTIONS (learning_rate=...)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
            count += len(batch)
            bar.update(len(batch))
            bar.set_postfix(loss=f"{total / count:.3f}")
        bar.close()
        if not count:
            raise DataError("no training photo could be read")
        seen += count
        record = {"epoch": epoch, "loss": round(total / count, 5), "seconds": round(time.perf_counter() - epoch_start, 2)}
        # -- validate: the caller's metrics of this epoch's weights
        if validate is not None:
            model.eval()
            record.update(validate(model, net))
            # the best validated epoch is the one kept, as fine-tuning a classifier keeps its own
            key = (record.get("val_map_50", 0.0), record.get("val_map_50_95", 0.0), -record["loss"])
            if best is None or key > best[0]:
                best = (key, epoch, _weights(model) if epoch < epochs else None)
        history.append(record)
    seconds = time.perf_counter() - started
    kept = epochs if best is None else best[1]
    state = _weights(model) if best is None or best[2] is None else best[2]
    metrics = {k: v for k, v in history[kept - 1].items() if k not in ("epoch", "seconds")}
    if best is not None:
        metrics["saved_epoch"] = kept
    return DetectorRun(net, state, history, metrics, seconds, seen / max(seconds, 1e-9),
                       [items[i] for i in sorted(skipped)], source)


def _weights(model):
    """A copy of the model's weights on the CPU, as stored (and kept while later epochs change them)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


# -- inference -----------------------------------------------------------------------------------------
class Detector:
    """A stored detector, ready to find boxes in photos (DETECT, EVALUATE)."""

    def __init__(self, net, state_dict, classes, device="auto"):
        self.network = dict(net)
        self.classes = list(classes)
        self.device = resolve_device(device)
        self.model = create_detector(self.network)
        self.model.load_state_dict(state_dict)
        self.model.to(self.device).eval()

    def detect(self, items, threshold=0.5, max_boxes=100, batch_size=None, progress=True, on_error="fail",
               classes=None):
        """Per photo: (boxes [n, 4] float32 in the photo's pixels, scores [n], class indices [n]),
        best first, scores at least `threshold`, at most `max_boxes` of the class indices `classes`
        (None: all); None for an unreadable photo (on_error='skip')."""
        return run_detector(self.model, self.network, items, threshold, max_boxes, batch_size, progress,
                            on_error, self.device, classes)


UNCAPPED = 1 << 30  # "every box": torchvision's detections_per_img slices its kept boxes by it


def same_size(pairs, shape):
    """(input, item index) pairs grouped by shape(input), in order of first appearance: a detector
    pads a batch's photos to its largest, which moves what it finds in the smaller ones, so a
    photo's boxes would depend on the photos beside it in the query."""
    groups = {}
    for x, i in pairs:
        groups.setdefault(tuple(shape(x)), []).append((x, i))
    return list(groups.values())


def class_mask(count, classes):
    """A [count] bool tensor: True for the class indices `classes` (None: every class)."""
    if classes is None:
        return torch.ones(count, dtype=torch.bool)
    mask = torch.zeros(count, dtype=torch.bool)
    mask[list(classes)] = True
    return mask


@torch.inference_mode()
def run_detector(model, net, items, threshold, max_boxes, batch_size, progress, on_error, device, classes=None):
    from torchvision.ops import clip_boxes_to_image

    items = list(items)
    out = [None] * len(items)
    if not items:
        return out
    sizes = _photo_sizes(items)
    model.eval()
    model.roi_heads.score_thresh = min(0.05, threshold)  # torchvision's default floor, lower if asked
    # torchvision keeps its best boxes over every class (after its score floor and NMS) before
    # `classes` picks some: with classes asked for, no such cap, so that theirs are not cut first
    model.roi_heads.detections_per_img = max(100, max_boxes) if classes is None else UNCAPPED
    skipped = set()
    batch_size = batch_size or 4

    wanted = None if classes is None else class_mask(int(net["num_classes"]), classes)

    def found(batch):  # [(input, item index)] -> [(item index, (boxes, scores, class indices))]
        with torch.inference_mode():  # (per thread: a lane sets its own)
            groups = same_size(batch, lambda x: x.shape)
            answers = [f for group in groups for f in model([x.to(device) for x, _ in group])]
        kept = []
        for (x, i), f in zip([pair for group in groups for pair in group], answers):
            keep = f["scores"] >= threshold
            if wanted is not None:
                keep &= wanted[(f["labels"] - 1).cpu()].to(keep.device)
            boxes = (f["boxes"].float().cpu() / _scales(x, sizes[i]))
            if sizes[i]:  # the network clipped to the resized photo: rounding there can pass the edge
                boxes = clip_boxes_to_image(boxes, (sizes[i][1], sizes[i][0]))
            keep &= ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).to(keep.device)  # none of no area
            order = torch.argsort(f["scores"][keep], descending=True)[:max_boxes]
            kept.append((i, (boxes[keep.cpu()][order.cpu()].numpy(), f["scores"][keep][order].float().cpu().numpy(),
                             (f["labels"][keep][order] - 1).cpu().numpy())))  # 0 is the background
        return kept

    batches = found_in_batches(_rows(items, net), batch_size, device, found, on_error, skipped)
    # `progress` may be the caller's bar (DETECT streaming a long query: one bar over its chunks)
    owned = not hasattr(progress, "update")
    bar = progress_bar(len(items), "detect", progress) if owned else progress
    try:
        with contextlib.closing(batches):
            for kept, count in batches:
                for i, answer in kept:
                    out[i] = answer
                bar.update(count)
    finally:
        if owned:
            bar.close()
    return out
