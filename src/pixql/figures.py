"""Pictures a statement's result carries, typed, for front ends to render as they can: the
CLI writes PNG files, Jupyter shows them inline, Python callers call `.picture()`.

    Sheet      PRINT IMAGE's contact sheet (always shown)
    Curves     DESCRIBE MODEL's training curves (always shown)
    Confusion  EVALUATE's confusion matrix as a heat-map (Jupyter; the CLI with --plot)
"""

from dataclasses import dataclass


@dataclass
class Sheet:
    image: object  # a PIL image, drawn already
    kind = "sheet"
    stem = "print_image"

    def picture(self):
        return self.image


@dataclass
class Curves:
    history: list
    model: str
    kept: int = None  # the epoch whose weights the model kept
    kind = "curves"

    @property
    def stem(self):
        return f"training_curves_{self.model}"

    def picture(self):
        from pixql import display

        return display.training_curves(self.history, title=f"model {self.model}", kept=self.kept)


@dataclass
class Confusion:
    frame: object  # EVALUATE's confusion rows: actual, predicted, count
    model: str
    kind = "confusion"

    @property
    def stem(self):
        return f"confusion_{self.model}"

    def picture(self):
        from pixql import display

        return display.confusion_heatmap(self.frame, title=f"model {self.model}")
