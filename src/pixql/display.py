"""Pictures for people: PRINT IMAGE contact sheets (and, later, curves and matrices).

Rendering only; where a picture goes (a PNG file, a notebook cell) is the front end's call.
"""

import math
import textwrap

from PIL import Image, ImageDraw, ImageFont, ImageOps

from pixql.errors import DataError

_PAD = 8
_LINE = 1.3  # caption line height as a multiple of the font size


def _font(px):
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _caption_lines(caption, width_chars, max_lines=3):
    lines = []
    for part in caption:
        lines.extend(textwrap.wrap(part, width_chars) or [""])
    return lines[:max_lines] + (["…"] if len(lines) > max_lines else [])


def _thumbnail(path, size):
    from pixql.ml.images import read_image  # one decoder for training and display

    img = read_image(path)
    img.thumbnail((size, size))
    return img


def contact_sheet(paths, captions, size=240, columns=None):
    """A grid of images `size` px square, each with its caption lines below it.

    `captions[i]` is a list of strings (e.g. "label: cat") for image i.
    Unreadable images raise DataError naming the file.
    """
    n = len(paths)
    if n == 0:
        raise DataError("PRINT IMAGE: the query returned no rows")
    columns = columns or min(n, 5)
    rows = math.ceil(n / columns)
    font_px = max(10, size // 16)
    font = _font(font_px)
    width_chars = max(8, int(size / (font_px * 0.55)))
    wrapped = [_caption_lines(c, width_chars) for c in captions]
    caption_h = int(max((len(w) for w in wrapped), default=0) * font_px * _LINE)
    cell_w, cell_h = size + _PAD, size + caption_h + _PAD
    sheet = Image.new("RGB", (columns * cell_w + _PAD, rows * cell_h + _PAD), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (path, lines) in enumerate(zip(paths, wrapped)):
        x = _PAD + (i % columns) * cell_w
        y = _PAD + (i // columns) * cell_h
        thumb = ImageOps.pad(_thumbnail(path, size), (size, size), color="white")
        sheet.paste(thumb, (x, y))
        for j, line in enumerate(lines):
            draw.text((x, y + size + 2 + j * font_px * _LINE), line, fill="black", font=font)
    return sheet
