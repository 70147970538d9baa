"""Segment Anything (transformers' SamModel): a mask for each box of a photo, prompted by the box.

Names: `sam` (facebook/sam-vit-base) or `sam:<hub id>` (e.g. sam:facebook/sam-vit-huge); weights
from the local Hugging Face cache or a folder (OPTIONS (weights='folder') holding a SamModel and
its SamProcessor, as save_pretrained writes them). The photo is encoded once for all its boxes.
"""

import numpy as np

from pixql.ml import hub

DEFAULT = "facebook/sam-vit-base"


def is_sam(name):
    return str(name).lower().split(":")[0] == "sam"


def hub_id(name):
    _, _, rest = str(name).partition(":")
    return rest or DEFAULT


def cached(name="sam"):
    """Whether SAM checkpoint `name`'s config and weights are in the local Hugging Face cache
    (nothing loaded, nothing fetched): SEGMENT's `auto` then segments with it."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False

    def there(filename):
        return isinstance(try_to_load_from_cache(hub_id(name), filename), str)  # (a path: in the cache)

    return there("config.json") and (there("model.safetensors") or there("pytorch_model.bin"))


class Sam:
    """`masks(rgb, boxes)`: one bool mask (the photo's size) per box."""

    def __init__(self, name="sam", weights=None, device="auto"):
        import torch

        from pixql.ml.runtime import resolve_device

        source = weights or hub_id(name)
        self.model, self.processor = hub.load("SamModel", "SamProcessor", source, "SAM",
                                              "SEGMENT USING grabcut (or threshold, for studio photos)")
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.name = f"sam:{source}"
        self._torch = torch

    def masks(self, rgb, boxes):
        if not boxes:
            return []
        torch = self._torch
        inputs = self.processor(images=np.array(rgb),  # a writable copy for torch
                                input_boxes=[[list(map(float, b)) for b in boxes]], return_tensors="pt")
        with torch.inference_mode():
            out = self.model(pixel_values=inputs["pixel_values"].to(self.device),
                             input_boxes=inputs["input_boxes"].to(self.device), multimask_output=False)
        masks = self.processor.image_processor.post_process_masks(
            out.pred_masks.float().cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"])[0]
        found = masks[:, 0].numpy().astype(bool)
        # SAM may mark pixels outside its prompt box; a region's mask stays inside its box.
        inside = np.zeros_like(found)
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            inside[k, y1:y2, x1:x2] = True
        return list(found & inside)
