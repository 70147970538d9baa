"""A mask for a box of a photo, without training: OpenCV's GrabCut seeded by the box, or, for a
product on a white backdrop, the pixels the backdrop does not reach. SEGMENT's methods:

    grabcut    GrabCut (Rother et al. 2004) with the box as its rectangle: colour models of the
               inside and outside refined by graph cuts; any background
    threshold  inside the box, near-white pixels connected to the box's edge are backdrop and
               everything else is the object (holes in it filled): studio product photos
    auto       threshold where the box's edge is nearly all white, else grabcut
"""

import numpy as np

METHODS = ("auto", "grabcut", "threshold")
NEAR_WHITE = 245  # darkest channel at or above this, after a slight blur, is backdrop
WHITE_EDGE = 0.9  # share of near-white pixels on a box's edge for 'auto' to call it a white backdrop
GRABCUT_ITERATIONS = 5


def segment(rgb, box, method="auto"):
    """A bool mask (height x width of `rgb`, a uint8 array) of the object in `box` (x1, y1, x2,
    y2 pixels, clipped to the image); False outside the box."""
    x1, y1, x2, y2 = box
    if method == "auto":
        method = "threshold" if white_edge(rgb, box) >= WHITE_EDGE else "grabcut"
    inner = _grabcut(rgb, box) if method == "grabcut" else _threshold(rgb[y1:y2, x1:x2])
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
    cv2.grabCut(bgr, labels, (int(x1), int(y1), int(x2 - x1), int(y2 - y1)), background, foreground,
                GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_RECT)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def _threshold(crop):
    """Everything in the crop but the near-white pixels connected to its edge."""
    import cv2

    darkest = cv2.GaussianBlur(crop.min(axis=2), (3, 3), 0)
    backdrop = (darkest >= NEAR_WHITE).astype(np.uint8)
    h, w = backdrop.shape
    # Flood the backdrop from every edge pixel that is backdrop: what it reaches is outside.
    reached = np.zeros((h + 2, w + 2), np.uint8)
    flood = backdrop.copy()
    for y, x in [(y, x) for x in range(w) for y in (0, h - 1)] + [(y, x) for y in range(h) for x in (0, w - 1)]:
        if flood[y, x] == 1:
            cv2.floodFill(flood, reached, (x, y), 2)
    return flood != 2
