"""Augmentation recipes that timm's create_transform does not cover.

`KerasAffine` is the classic Keras ImageDataGenerator recipe for training a small CNN from
scratch (rotation 40 degrees, shifts of 20%, shear 0.2, zoom 0.8-1.2 per axis, horizontal
flips) with Keras' default fill_mode='nearest': the corners a rotation uncovers repeat the
border pixels instead of turning black, so the network never learns black wedges as a feature.
OpenCV's warpAffine does the warp (BORDER_REPLICATE is that fill).
"""

import math

import numpy as np
import torch
from PIL import Image


class KerasAffine:
    """PIL image -> PIL image of the same size, randomly warped; draws from torch's generator
    (seeded per DataLoader worker), so a seed repeats it."""

    def __init__(self, rotation=40.0, shift=0.2, shear=0.2, zoom=(0.8, 1.2), flip=0.5):
        self.rotation, self.shift, self.shear, self.zoom, self.flip = rotation, shift, shear, zoom, flip

    def _uniform(self, low, high):
        return low + (high - low) * torch.rand(()).item()

    def matrix(self, width, height):
        """The 2x3 map from output pixel to input pixel (Keras composes it the same way:
        rotation, shift, shear, zoom about the image centre)."""
        theta = math.radians(self._uniform(-self.rotation, self.rotation))
        tx = self._uniform(-self.shift, self.shift) * width
        ty = self._uniform(-self.shift, self.shift) * height
        shear = self._uniform(-self.shear, self.shear)  # radians, as in the classic recipe
        zx, zy = self._uniform(*self.zoom), self._uniform(*self.zoom)
        rotate = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        skew = np.array([[1.0, -math.sin(shear)], [0.0, math.cos(shear)]])
        a = rotate @ skew @ np.diag([zx, zy])
        centre = np.array([(width - 1) / 2, (height - 1) / 2])
        return np.hstack([a, (centre - a @ centre + [tx, ty])[:, None]])

    def __call__(self, image):
        import cv2

        pixels = np.asarray(image.convert("RGB"))
        height, width = pixels.shape[:2]
        warped = cv2.warpAffine(pixels, self.matrix(width, height), (width, height),
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        if torch.rand(()).item() < self.flip:
            warped = warped[:, ::-1]
        return Image.fromarray(np.ascontiguousarray(warped))

    def __repr__(self):
        return (f"KerasAffine(rotation={self.rotation}, shift={self.shift}, shear={self.shear}, "
                f"zoom={self.zoom}, flip={self.flip}, fill='nearest')")
