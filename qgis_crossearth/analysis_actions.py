"""After a run, the dock offers the next steps on its class raster: polygons, class areas, accuracy.

Each button opens the Processing dialog of the analysis algorithm with the run's class raster (and
confidence) filled in, so the user sees and can change every option before running it.
"""

from __future__ import annotations

from collections.abc import Callable

from qgis.PyQt.QtWidgets import QHBoxLayout, QPushButton, QWidget

ACTIONS = (
    ("Polygons…", "crossearth:vectorize", "One polygon per region of the classes, in their colours"),
    ("Class areas…", "crossearth:classareas", "Hectares and percent of each class, per zone if you like"),
    ("Accuracy…", "crossearth:accuracy", "Compare the classes with reference points, polygons or a raster"),
)


def parameters_for(algorithm_id: str, outputs: dict[str, str]) -> dict[str, str]:
    """The dialog's pre-filled inputs from a run's outputs (``OUTPUT``: classes, ``CONFIDENCE``)."""
    values = {"INPUT": outputs.get("OUTPUT", "")}
    if algorithm_id == "crossearth:vectorize" and outputs.get("CONFIDENCE"):
        values["CONFIDENCE"] = outputs["CONFIDENCE"]
    return values


def open_dialog(algorithm_id: str, outputs: dict[str, str]) -> None:
    import processing

    processing.execAlgorithmDialog(algorithm_id, parameters_for(algorithm_id, outputs))


class AnalysisButtons(QWidget):
    """A row of buttons, enabled once ``outputs()`` names a class raster."""

    def __init__(
        self,
        outputs: Callable[[], dict[str, str]],
        parent: QWidget | None = None,
        opener: Callable[[str, dict[str, str]], None] = open_dialog,
    ) -> None:
        super().__init__(parent)
        self.outputs = outputs
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.buttons: dict[str, QPushButton] = {}
        for label, algorithm_id, tip in ACTIONS:
            button = QPushButton(label, self)
            button.setToolTip(tip)
            button.clicked.connect(lambda _=False, a=algorithm_id: opener(a, self.outputs()))
            layout.addWidget(button)
            self.buttons[algorithm_id] = button
        self.refresh()

    def refresh(self) -> None:
        ready = bool(self.outputs().get("OUTPUT"))
        for button in self.buttons.values():
            button.setEnabled(ready)
