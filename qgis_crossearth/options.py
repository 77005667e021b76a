"""The CrossEarth page of Settings > Options: backend Python, device, threads, models, run mode, a
"Set up the backend" button that makes the backend's Python environment (a background task with progress
and cancel), and a "Check environment" button that says what is missing and how to fix it."""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import QgsApplication, QgsTask
from qgis.gui import QgsFileWidget, QgsOptionsPageWidget, QgsOptionsWidgetFactory
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtGui import QFont, QIcon
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from qgis_crossearth import paths
from qgis_crossearth.backend_setup import SetupResult, default_backend_dir, setup_backend
from qgis_crossearth.environment import EnvironmentReport, check_environment
from qgis_crossearth.runner import IN_PROCESS, SUBPROCESS, torch_in_qgis_python
from qgis_crossearth.settings import DEVICES, PluginSettings, backend_config, load_settings, save_settings

PAGE_OBJECT_NAME = "crossearthOptions"


class CrossEarthOptionsFactory(QgsOptionsWidgetFactory):
    def __init__(self, on_applied: Callable[[], None]) -> None:
        super().__init__("CrossEarth", QIcon(paths.icon_path("crossearth.svg")))
        self.on_applied = on_applied

    def createWidget(self, parent: QWidget) -> QgsOptionsPageWidget:
        return CrossEarthOptionsPage(parent, self.on_applied)


class CrossEarthOptionsPage(QgsOptionsPageWidget):
    def __init__(self, parent: QWidget | None, on_applied: Callable[[], None]) -> None:
        super().__init__(parent)
        self.setObjectName(PAGE_OBJECT_NAME)
        self.on_applied = on_applied
        self.check_task: EnvironmentTask | None = None
        self.setup_task: BackendSetupTask | None = None
        self.build(load_settings())

    def build(self, settings: PluginSettings) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()

        self.python_widget = QgsFileWidget(self)
        self.python_widget.setStorageMode(QgsFileWidget.GetFile)
        self.python_widget.setFilePath(settings.python)
        self.python_widget.lineEdit().setPlaceholderText(
            paths.default_python() or "not set up yet: press “Set up the backend”"
        )
        self.python_widget.setToolTip(
            "The Python that has the backend's packages (torch, timm, rasterio…); empty: the environment "
            "“Set up the backend” makes"
        )
        form.addRow("Backend Python", self.python_widget)

        self.device_combo = QComboBox(self)
        self.device_combo.addItems(DEVICES)
        self.device_combo.setCurrentText(settings.device)
        self.device_combo.setToolTip("auto: the GPU when torch sees one, else the CPU")
        form.addRow("Device", self.device_combo)

        self.threads_spin = QSpinBox(self)
        self.threads_spin.setRange(0, 256)
        self.threads_spin.setSpecialValueText("All cores")
        self.threads_spin.setValue(settings.threads)
        form.addRow("CPU threads", self.threads_spin)

        self.models_widget = QgsFileWidget(self)
        self.models_widget.setStorageMode(QgsFileWidget.GetDirectory)
        self.models_widget.setFilePath(settings.model_folder)
        self.models_widget.lineEdit().setPlaceholderText(str(paths.default_model_folder()))
        form.addRow("Model folder", self.models_widget)

        self.mode_combo = QComboBox(self)
        self.mode_combo.addItem("Separate process (recommended)", SUBPROCESS)
        self.mode_combo.addItem("Inside QGIS (needs torch in QGIS's Python)", IN_PROCESS)
        if not torch_in_qgis_python():
            self.mode_combo.model().item(1).setEnabled(False)
        self.mode_combo.setCurrentIndex(max(self.mode_combo.findData(settings.run_mode), 0))
        form.addRow("Run the backend", self.mode_combo)
        layout.addLayout(form)

        buttons = QHBoxLayout()
        self.setup_button = QPushButton("Set up the backend", self)
        self.setup_button.setToolTip(
            f"Creates a Python environment in {default_backend_dir()} and installs the backend's packages "
            "(torch, timm, rasterio…: a few GB, minutes)"
        )
        self.setup_button.clicked.connect(self.set_up)
        buttons.addWidget(self.setup_button)
        self.find_links_widget = QgsFileWidget(self)
        self.find_links_widget.setStorageMode(QgsFileWidget.GetDirectory)
        self.find_links_widget.lineEdit().setPlaceholderText("from the package index (or choose a folder of wheels)")
        self.find_links_widget.setToolTip("A folder of wheels, for a machine without a package index (--find-links)")
        buttons.addWidget(self.find_links_widget, 1)
        layout.addLayout(buttons)
        self.setup_progress = QProgressBar(self)
        self.setup_progress.setRange(0, 100)
        self.setup_progress.setVisible(False)
        layout.addWidget(self.setup_progress)

        self.check_button = QPushButton("Check environment", self)
        self.check_button.clicked.connect(self.check)
        layout.addWidget(self.check_button)
        self.report_view = QPlainTextEdit(self)
        self.report_view.setReadOnly(True)
        self.report_view.setFont(QFont("monospace"))
        self.report_view.setPlaceholderText("Press “Check environment” to test the backend Python.")
        layout.addWidget(self.report_view, 1)
        note = QLabel(
            "Packages are installed only by “Set up the backend”, into its own environment; "
            "the same runs in a terminal: python3 -m qgis_crossearth.backend_setup [--find-links DIR]",
            self,
        )
        note.setWordWrap(True)
        layout.addWidget(note)

    def current_settings(self) -> PluginSettings:
        settings = load_settings()
        settings.python = self.python_widget.filePath().strip()
        settings.device = self.device_combo.currentText()
        settings.threads = self.threads_spin.value()
        settings.model_folder = self.models_widget.filePath().strip()
        settings.run_mode = self.mode_combo.currentData()
        return settings

    def apply(self) -> None:
        save_settings(self.current_settings())
        self.on_applied()

    def check(self) -> None:
        """Runs in a task: importing torch in the backend Python takes seconds."""
        if self.check_task is not None:
            return
        self.check_button.setEnabled(False)
        self.report_view.setPlainText("Checking… (the first torch import can take half a minute)")
        self.check_task = EnvironmentTask(self.current_settings())
        self.check_task.done.connect(self.show_report)
        QgsApplication.taskManager().addTask(self.check_task)

    def set_up(self) -> None:
        """Start the set-up task, or cancel the running one (the button says which)."""
        if self.setup_task is not None:
            self.setup_task.cancel()
            return
        self.setup_task = BackendSetupTask(self.find_links_widget.filePath().strip() or None)
        self.setup_task.progressChanged.connect(lambda value: self.setup_progress.setValue(int(value)))
        self.setup_task.message.connect(self.report_view.setPlainText)
        self.setup_task.done.connect(self.setup_done)
        self.setup_button.setText("Cancel set-up")
        self.setup_progress.setValue(0)
        self.setup_progress.setVisible(True)
        self.report_view.setPlainText("Setting up the backend…")
        QgsApplication.taskManager().addTask(self.setup_task)

    def setup_done(self, result: SetupResult) -> None:
        self.setup_task = None
        self.setup_button.setText("Set up the backend")
        self.setup_progress.setVisible(False)
        self.report_view.setPlainText(result.message)
        if result.ok:
            self.python_widget.lineEdit().setPlaceholderText(paths.default_python() or result.python)

    def show_report(self, report: EnvironmentReport) -> None:
        self.check_task = None
        self.check_button.setEnabled(True)
        headline = "Ready to run." if report.ok else "Not ready: see the lines marked ✘."
        self.report_view.setPlainText(headline + "\n\n" + report.as_text())


class BackendSetupTask(QgsTask):
    """``backend_setup.setup_backend`` in the background: progress in the task manager and the page, cancel."""

    message = pyqtSignal(str)
    done = pyqtSignal(object)

    def __init__(self, find_links: str | None = None) -> None:
        super().__init__("CrossEarth: set up the backend", QgsTask.CanCancel)
        self.find_links = find_links
        self.result = SetupResult(False, "the set-up did not run")

    def run(self) -> bool:
        def progress(fraction: float, text: str) -> None:
            self.setProgress(100.0 * fraction)
            self.message.emit(text)

        try:
            self.result = setup_backend(paths.requirements_file(), None, self.find_links, progress, self.isCanceled)
        except Exception as error:  # a result, never an exception, for QGIS
            self.result = SetupResult(False, f"set-up failed: {type(error).__name__}: {error}")
        return self.result.ok or self.result.cancelled  # a cancel is no failure

    def finished(self, ok: bool) -> None:
        self.done.emit(self.result)


class EnvironmentTask(QgsTask):
    done = pyqtSignal(object)

    def __init__(self, settings: PluginSettings) -> None:
        super().__init__("CrossEarth: check environment", QgsTask.Flags())
        self.settings = settings
        self.report = EnvironmentReport()

    def run(self) -> bool:
        try:
            self.report = check_environment(
                backend_config(self.settings),
                paths.requirements_file(),
                self.settings.effective_model_folder,
                self.settings.device,
            )
        except Exception as error:
            self.report.add(False, f"the check itself failed: {type(error).__name__}: {error}")
        return True

    def finished(self, ok: bool) -> None:
        self.done.emit(self.report)
