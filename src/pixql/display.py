"""Pictures for people: PRINT IMAGE contact sheets (and, later, curves and matrices).

Rendering only; where a picture goes (a PNG file, a notebook cell) is the front end's call.
"""

import functools
import math
import textwrap

from PIL import Image, ImageDraw, ImageFont, ImageOps

from pixql.errors import DataError

_PAD = 8
_LINE = 1.3  # caption line height as a multiple of the font size


def _font(px):
    """DejaVu Sans, which matplotlib ships (Latin, Greek, Cyrillic: 'ü' in a file name or a
    label), found without importing matplotlib; else Pillow's own font, which has ASCII only."""
    path = _dejavu()
    if path is not None:
        try:
            return ImageFont.truetype(path, px)
        except OSError:  # (no FreeType in this Pillow)
            pass
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


@functools.lru_cache(maxsize=1)
def _dejavu():
    import importlib.util
    import os

    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(folder, "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
        if os.path.isfile(path):
            return path
    return None


def _caption_lines(caption, width_chars, max_lines=3, most_parts=6):
    """A tile's caption lines: every part (a column's "name: value") gets a line, up to
    `most_parts` of them, before any part wraps onto a second one (a long product name must not
    push the colour after it out); lines cut short end in '…'."""
    parts = [textwrap.wrap(part, width_chars) or [""] for part in caption]
    budget = max(max_lines, min(len(parts), most_parts))
    spare = budget - min(len(parts), budget)  # lines beyond the first of each part shown
    lines = []
    for wrapped in parts[:budget]:
        take = 1 + min(len(wrapped) - 1, spare)
        spare -= take - 1
        shown = wrapped[:take]
        if len(wrapped) > take:
            shown[-1] = shown[-1][: width_chars - 1] + "…"
        lines.extend(shown)
    return lines + (["…"] if len(parts) > budget else [])


def _thumbnail(item, size):
    """A path's image (a large JPEG decodes at a fraction of its size), a Region's crop, or a
    picture drawn already, made at most size x size."""
    from pixql.ml.images import load_image  # one decoder for training and display

    img = item.copy() if isinstance(item, Image.Image) else load_image(item, draft_size=size)
    img.thumbnail((size, size))
    return img


_BOX_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")


def boxes_drawn(path, regions, labels, shown=None):
    """The photo at `path` with each region's box (and its mask as a tint) drawn, labelled.
    `shown`: the side the picture will be shown at (a sheet's tile): lines and labels are drawn
    to be read there, white on a tag of the box's colour, kept inside the photo."""
    from pixql.ml.images import read_image

    img = read_image(path)
    scale = min(1.0, shown / max(img.size)) if shown else 1.0  # what the tile will shrink it by
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    font_px = max(10, round(max(12, (shown or img.height) // 20) / scale))
    font = _font(font_px)
    line = max(2, round(2 / scale))
    tags = []
    for k, (region, label) in enumerate(zip(regions, labels)):
        colour = _BOX_COLOURS[k % len(_BOX_COLOURS)]
        x1, y1, x2, y2 = region.pixel_box(img.width, img.height)
        if region.mask is not None:
            from pixql.ml.images import read_mask

            tint = Image.new("RGBA", img.size, colour)
            tint.putalpha(read_mask(region.mask, img.size, path, region.normalized).convert("L").point(lambda v: 90 if v else 0))
            overlay = Image.alpha_composite(overlay, tint)
            draw = ImageDraw.Draw(overlay)
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=colour, width=line)
        if label is not None:
            tags.append((x1, y1, x2, str(label), colour))
    for x1, y1, x2, text, colour in tags:  # (over every box and tint)
        # as wide as the box or half the photo, whichever is wider: a long name does not cover the photo
        text = _fit(text, font, min(img.width, max(x2 - x1, img.width // 2)) - 2 * line)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        w, h = right - left + 2 * line, bottom - top + 2 * line
        x = min(max(0, x1), max(0, img.width - w))
        y = y1 - h if y1 - h >= 0 else min(y1, max(0, img.height - h))  # above the box, else inside it
        draw.rectangle((x, y, x + w, y + h), fill=colour)
        draw.text((x + line - left, y + line - top), text, fill="white", font=font)
    return Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")


def contact_sheet(paths, captions, size=240, columns=None, skipped=None, keep_places=False):
    """A grid of images `size` px square, each with its caption lines below it.

    `paths[i]` is a file path, a Region (its crop), a PIL image, or a DataError (a picture that
    could not be made: it is raised, or skipped as an unreadable file is); `captions[i]` a list of
    strings (e.g. "label: cat"). Unreadable images raise DataError naming the file, unless
    `skipped` is a list: their tiles are then left out (`keep_places`: drawn blank, so that the
    grid's columns keep their meaning) and (index, error) put in it; None when none is left (the
    caller names the rows).
    """
    thumbs = []
    for i, path in enumerate(paths):
        try:
            if isinstance(path, DataError):
                raise path
            thumbs.append(_thumbnail(path, size))
        except DataError as exc:
            if skipped is None:
                raise
            skipped.append((i, exc))
            thumbs.append(None)
    if skipped and len(skipped) == len(paths):
        return None
    if keep_places:
        captions = [c if t is not None else c + ["(could not be read)"] for c, t in zip(captions, thumbs)]
        thumbs = [Image.new("RGB", (size, size), "#eeeeee") if t is None else t for t in thumbs]
    captions = [c for c, t in zip(captions, thumbs) if t is not None]
    paths = [t for t in thumbs if t is not None]
    n = len(paths)
    if n == 0 and skipped:
        return None
    if n == 0:
        raise DataError("PRINT IMAGE: the query returned no rows")
    columns = min(columns or 5, n)  # (more columns than pictures would only widen the sheet)
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
        thumb = ImageOps.pad(path, (size, size), color="white")  # (read above)
        sheet.paste(thumb, (x, y))
        for j, line in enumerate(lines):
            draw.text((x, y + size + 2 + j * font_px * _LINE), _fit(line, font, size), fill="black", font=font)
    return sheet


def _fit(line, font, width):
    """`line` cut short ('…') to `width` pixels: wrapping counts characters, and wide letters
    (W, M, capitals) would run into the next tile."""
    if not hasattr(font, "getlength") or font.getlength(line) <= width:
        return line
    line = line.rstrip("…")
    while line and font.getlength(line + "…") > width:
        line = line[:-1]
    return line + "…"


# -- training curves ---------------------------------------------------------------------

def has_history(history):
    # a detector's epochs record their training loss as `loss`
    return bool(history) and any(h.get("train_loss", h.get("loss")) is not None for h in history)


# The second panel: the first of these a history has, the metric that chose the kept epoch (a
# multi-label model's micro F1, before the exact-set accuracy it also records; a classifier's
# accuracy; a detector's mAP)
_SCORES = (("micro_f1", "Micro F1"), ("accuracy", "Accuracy"), ("map_50", "mAP@0.5"))


def training_curves_figure(history, title=None, kept=None):
    """Loss and accuracy (a multi-label model's: micro F1; a detector's: mAP@0.5) per epoch,
    training and validation, as a matplotlib Figure; `kept`: the epoch whose weights the model
    kept (the best validated one), marked on both panels.

    `history` is a model's per-epoch list of dicts (epoch, train_loss, train_accuracy,
    val_loss, val_accuracy; val_* may be None; a detector's: loss, val_map_50). A bare `Figure` with an Agg canvas: no
    pyplot, so nothing leaks into the caller's global plotting state or backend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not has_history(history):
        raise DataError("the model has no training history to plot")
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]

    def series(key):
        values = [h.get(key, h.get("loss") if key == "train_loss" else None) for h in history]
        return None if all(v is None for v in values) else [float("nan") if v is None else v for v in values]

    score, score_label = next(((key, label) for key, label in _SCORES
                               if any(h.get(f"train_{key}") is not None or h.get(f"val_{key}") is not None
                                      for h in history)), ("accuracy", "no accuracy or mAP recorded"))

    fig = Figure(figsize=(9, 3.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    marker = "o" if len(epochs) <= 30 else None
    for ax, what, label in zip(fig.subplots(1, 2), ("loss", score), ("Loss", score_label)):
        for split, style, color in (("train", "-", "tab:blue"), ("val", "--", "tab:orange")):
            values = series(f"{split}_{what}")
            if values is not None:
                ax.plot(epochs, values, style, color=color, marker=marker,
                        label="training" if split == "train" else "validation")
        if kept is not None and len(epochs) > 1:
            ax.axvline(kept, color="tab:gray", linestyle=":", label=f"kept: epoch {kept}")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        if len(epochs) <= 15:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        if what == score:
            low = min([v for h in history for v in (h.get(f"train_{score}"), h.get(f"val_{score}"))
                       if v is not None] or [0.0])
            ax.set_ylim(max(0.0, low - 0.05), 1.01)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def figure_png(fig, dpi=100, tight=False):
    """PNG bytes of a matplotlib Figure; `tight`: cropped to what is drawn, with a margin (a
    heat-map's size follows its classes, and constrained layout leaves a long axis title or tick
    label past the edge at some sizes)."""
    import io

    from pixql.ml.images import ignoring

    buffer = io.BytesIO()
    # a label's emoji or CJK letters are boxes in DejaVu Sans, the one font sure to be here: the
    # picture shows it; matplotlib's warning (its source line) would only reach the terminal
    with ignoring(UserWarning, r"Glyph \d+ .*missing from font"):
        fig.savefig(buffer, format="png", dpi=dpi, facecolor="white", **(
            {"bbox_inches": "tight", "pad_inches": 0.1} if tight else {}))
    return buffer.getvalue()


def training_curves(history, title=None, dpi=100, kept=None):
    """The training curves (see `training_curves_figure`) as a PIL image."""
    import io

    data = figure_png(training_curves_figure(history, title, kept), dpi=dpi)
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def png_bytes(image):
    """PNG bytes of a PIL image."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- confusion matrix ----------------------------------------------------------------------
def confusion_matrix_arrays(frame):
    """(labels, [n, n] counts) from EVALUATE's confusion rows (actual, predicted, count).

    Labels keep the order in which they first appear (EVALUATE lists them in the model's
    class order), actual labels first."""
    import numpy as np

    missing = {"actual", "predicted", "count"} - set(frame.columns)
    if missing:
        raise DataError(f"a confusion matrix needs the columns actual, predicted and count; "
                        f"missing: {', '.join(sorted(missing))}")
    labels = list(dict.fromkeys([str(v) for v in frame["actual"]] + [str(v) for v in frame["predicted"]]))
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for actual, predicted, count in zip(frame["actual"], frame["predicted"], frame["count"]):
        matrix[index[str(actual)], index[str(predicted)]] += int(count)
    return labels, matrix


def confusion_heatmap_figure(frame, title=None):
    """The confusion matrix as a heat-map (a matplotlib Figure, no pyplot state): rows are the
    actual classes, columns the predicted ones; each cell is coloured by its share of the
    actual class (recall on the diagonal) and labelled with its count."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels, matrix = confusion_matrix_arrays(frame)
    if not labels:
        raise DataError("the confusion matrix is empty")
    n = len(labels)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals != 0)
    side = min(max(4.0, 0.45 * n + 2.5), 24.0)
    fig = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    shown = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of the actual class")
    ticks = range(n)
    font = "small" if n <= 20 else "x-small"
    names = _shorts(labels, 20)
    ax.set_xticks(list(ticks), labels=names, rotation=45, ha="right",
                  fontsize=font)
    ax.set_yticks(list(ticks), labels=names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=font,
                        color="white" if share[i, j] > 0.5 else "black")
    total = int(matrix.sum())
    correct = int(np.trace(matrix))
    accuracy = f"accuracy {correct / total:.3f} ({correct}/{total})" if total else "no rows"
    ax.set_title(f"{title}\n{accuracy}" if title else accuracy, fontsize="medium")
    return fig


MOST_LABEL_PANELS = 48  # a multi-label model's panels: the labels with most true rows first


def multilabel_confusion_figure(frame, title=None):
    """A multi-label model's confusion: one 2x2 panel per label (actual no / yes by predicted no /
    yes), each row coloured by its share of the actual rows and labelled with its count, the
    labels with most true rows first (at most MOST_LABEL_PANELS), as a matplotlib Figure."""
    import math

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = list(dict.fromkeys(frame["class"]))
    if not labels:
        raise DataError("the confusion matrix is empty")
    cells = {(c, bool(a), bool(p)): int(n) for c, a, p, n in frame[["class", "actual", "predicted", "count"]]
             .itertuples(index=False)}
    matrices = {c: np.array([[cells.get((c, a, p), 0) for p in (False, True)] for a in (False, True)])
                for c in labels}
    shown = sorted(labels, key=lambda c: -matrices[c][1].sum())[:MOST_LABEL_PANELS]
    columns = min(len(shown), 6)
    rows = math.ceil(len(shown) / columns)
    fig = Figure(figsize=(1.9 * columns + 0.6, 1.9 * rows + 0.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax, label, name in zip(axes, shown, _shorts(shown, 22)):
        matrix = matrices[label]
        totals = matrix.sum(axis=1, keepdims=True)
        share = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals != 0)
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize="small",
                        color="white" if share[i, j] > 0.5 else "black")
        ax.set_xticks([0, 1], labels=["no", "yes"], fontsize="x-small")
        ax.set_yticks([0, 1], labels=["no", "yes"], fontsize="x-small")
        ax.set_title(name, fontsize="small")
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    more = f" (the {len(shown)} of {len(labels)} labels with most true rows)" if len(shown) < len(labels) else ""
    fig.supxlabel("predicted", fontsize="small")
    fig.supylabel("actual", fontsize="small")
    fig.suptitle(f"{title}: confusion per label{more}" if title else f"confusion per label{more}",
                 fontsize="medium")
    return fig


def confusion_heatmap(frame, title=None, dpi=100):
    """The confusion heat-map (see `confusion_heatmap_figure`; a multi-label model's rows, with a
    `class` column: `multilabel_confusion_figure`) as a PIL image."""
    import io

    draw = multilabel_confusion_figure if "class" in frame.columns else confusion_heatmap_figure
    data = figure_png(draw(frame, title), dpi=dpi, tight=True)
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def _short(text, n):
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def _shorts(labels, n):
    """`labels` cut to `n` characters each, kept apart: where two would read alike cut at the end
    ('Felis catus domesti…' twice), they keep their start and end ('Felis cat…r the cat')."""
    cut = [_short(label, n) for label in labels]
    if len(set(cut)) == len(cut):
        return cut
    head = (n - 1) // 2
    return [str(label) if len(str(label)) <= n else f"{str(label)[:head]}…{str(label)[-(n - 1 - head):]}"
            for label in labels]
