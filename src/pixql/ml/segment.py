"""A mask for a box of a photo, without training: OpenCV's GrabCut seeded by the box, or, for a
product on a white backdrop, the pixels the backdrop does not reach. SEGMENT's methods:

    grabcut    GrabCut (Rother et al. 2004) with the box as its rectangle: colour models of the
               inside and outside refined by graph cuts; any background
    threshold  inside the box, near-white pixels connected to the box's edge are backdrop and
               everything else is the object (`backdrop_mask`): studio product photos
    auto       threshold where the box's edge is nearly all white, else grabcut
    sam        Segment Anything prompted by the box (ml/sam.py), when its weights are here

`segmenter(method)` gives an object whose `masks(rgb, boxes)` returns one mask per box, so that a
photo is decoded (and, for SAM, encoded) once for all its boxes.
"""

import numpy as np

METHODS = ("auto", "grabcut", "threshold", "sam")
# Darkest channel at or above this, after a slight blur, is backdrop: the studio backdrop is 255
# (244 at worst in a corner) and white garments are shaded 240-250 (at 235 the fill leaks into them).
NEAR_WHITE = 250
WHITE_EDGE = 0.9  # share of near-white pixels on a box's edge for 'auto' to call it a white backdrop
GRABCUT_ITERATIONS = 5
# GrabCut starts its colour models from k-means with OpenCV's random generator, which is per
# thread and moves on with each call: seeded before each, a box's mask no longer depends on
# which masks that thread computed before (nor on which thread: SEGMENT runs photos in lanes).
GRABCUT_SEED = 0


class Classic:
    """The methods that need no weights: grabcut, threshold, auto."""

    thread_safe = True  # photos may be segmented on several threads at once (ml/lanes.py)

    def __init__(self, method):
        self.name = method

    def masks(self, rgb, boxes):
        return [segment(rgb, box, self.name) for box in boxes]


def segmenter(method="auto", weights=None, device="auto"):
    """The segmenter that SEGMENT USING `method` names: 'sam[:hub id]' or a Classic method;
    'auto' is SAM where its weights are in the local Hugging Face cache (with a `note` saying
    so), else the Classic one."""
    from pixql.errors import PixqlError
    from pixql.ml.sam import DEFAULT, Sam, cached, is_sam

    if is_sam(method):
        return Sam(method, weights, device)
    if method == "auto" and cached():
        try:
            chosen = Sam("sam", None, device)
            chosen.note = (f"auto segmented with SAM ({DEFAULT}, found in the local Hugging Face cache); USING "
                           "grabcut or threshold segments without it")
        except PixqlError as exc:  # (a damaged download: the offline methods still work)
            chosen = Classic(method)
            chosen.note = f"auto segmented with threshold and GrabCut: SAM's weights in the local cache failed ({exc})"
        return chosen
    return Classic(method)


def segment(rgb, box, method="auto"):
    """A bool mask (height x width of `rgb`, a uint8 array) of the object in `box` (x1, y1, x2,
    y2 pixels, clipped to the image); False outside the box."""
    x1, y1, x2, y2 = box
    if method == "auto":
        method = "threshold" if white_edge(rgb, box) >= WHITE_EDGE else "grabcut"
    inner = _grabcut(rgb, box) if method == "grabcut" else backdrop_mask(rgb[y1:y2, x1:x2])
    mask = np.zeros(rgb.shape[:2], dtype=bool)
    mask[y1:y2, x1:x2] = inner if method == "threshold" else inner[y1:y2, x1:x2]
    return mask


def white_edge(rgb, box):
    """Share of near-white pixels along the box's edge."""
    x1, y1, x2, y2 = box
    crop = rgb[y1:y2, x1:x2].min(axis=2)
    edge = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])
    return float((edge >= NEAR_WHITE).mean()) if edge.size else 0.0


def _grabcut(rgb, box):
    import cv2

    x1, y1, x2, y2 = box
    height, width = rgb.shape[:2]
    if x2 - x1 < 3 or y2 - y1 < 3 or (x1 == 0 and y1 == 0 and x2 == width and y2 == height):
        # GrabCut needs some outside to learn the background from: a box over the whole photo
        # (or a sliver) is taken whole
        full = np.zeros((height, width), dtype=bool)
        full[y1:y2, x1:x2] = True
        return full
    labels = np.zeros((height, width), np.uint8)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    cv2.setRNGSeed(GRABCUT_SEED)
    cv2.grabCut(bgr, labels, (int(x1), int(y1), int(x2 - x1), int(y2 - y1)), background, foreground,
                GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_RECT)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def backdrop_mask(rgb):
    """The object (bool array) in a photo on a white backdrop: everything but the near-white
    pixels 4-connected to the photo's edge, so a white collar inside a dark shirt stays object.
    Empty or near-full where the backdrop is not white."""
    import cv2

    darkest = rgb.min(axis=2)
    dark = cv2.GaussianBlur(darkest, (0, 0), 1) < NEAR_WHITE  # the blur is against JPEG noise
    # Closing seals 1-2 px gaps in a white garment's outline, which the fill would leak through.
    closed = _erode(_dilate(dark, 5), 5)
    edge = np.zeros_like(closed)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    mask = ~_reached(~closed, edge)
    # Drop specks: keep the parts that hold a 7x7 square somewhere (thin straps attached stay).
    mask = _reached(mask, _erode(mask, 7))
    # The blur and closing leave a light 1-2 px rim, a halo on dark backgrounds: trim its
    # near-white pixels only, so thin dark parts (chains, spectacle arms) survive.
    rim = mask & ~_erode(mask, 5)
    return mask & ~(rim & (darkest >= NEAR_WHITE - 15))


def _reached(free, seed):
    """The `free` pixels 4-connected through `free` pixels to a `seed` pixel (a flood fill)."""
    import cv2

    count, labels = cv2.connectedComponents(free.astype(np.uint8), connectivity=4)
    hit = np.zeros(count, dtype=bool)
    hit[np.unique(labels[seed & free])] = True
    hit[0] = False  # label 0 is everything not free
    return hit[labels]


def _dilate(mask, k):
    import cv2

    return cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)


def _erode(mask, k):
    """Min over k x k squares; outside the image counts as mask, so the edge does not erode."""
    import cv2

    return cv2.erode(mask.astype(np.uint8), np.ones((k, k), np.uint8), borderType=cv2.BORDER_CONSTANT,
                     borderValue=1).astype(bool)
