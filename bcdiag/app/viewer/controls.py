"""`viewer_controls`: the overlay, opacity and window/level controls of a `ScanViewer`.

The controls are linked to the viewer in the browser (``jslink``), so they act at once
even while the kernel is busy; only the overlay mode goes through the kernel.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from bcdiag.app.viewer.widget import ScanViewer

_STEP = 0.05
_SHORT = {"description_width": "initial"}  # labels as wide as their text, no wider
_NUMBER = {"width": "150px"}
_SLIDER = {"width": "210px"}
_BUTTON = {"width": "auto"}


def viewer_controls(viewer: ScanViewer) -> widgets.Widget:
    """One wrapping row of controls for ``viewer``; the overlay's wait for a heat map."""
    low, high = viewer.value_range
    span = max(high - low, 1e-6)
    level = widgets.FloatText(description="Level", step=span / 100, style=_SHORT, layout=_NUMBER)
    window = widgets.BoundedFloatText(
        description="Window", min=span / 1e6, max=1e12, step=span / 100, style=_SHORT,
        layout=_NUMBER,
    )  # fmt: skip
    invert = widgets.ToggleButton(
        description="Invert", tooltip="Show the image inverted", layout=_BUTTON
    )
    reset = widgets.Button(
        description="Reset", tooltip="The whole image in its own window", layout=_BUTTON
    )
    reset.on_click(lambda _: viewer.reset())
    overlay = widgets.ToggleButtons(
        options=[("Off", "off"), ("Outline", "outline"), ("Heat", "heat")],
        tooltips=["No overlay", "Outline of the hot region", "Heat map"],
        style={"button_width": "70px"},
    )
    opacity = widgets.FloatSlider(
        description="Opacity", min=0, max=1, step=_STEP, readout_format=".2f", style=_SHORT,
        layout=_SLIDER,
    )  # fmt: skip
    outline_at = widgets.FloatSlider(
        description="Outline at", min=_STEP, max=1 - _STEP, step=_STEP, readout_format=".2f",
        style=_SHORT, layout=_SLIDER,
    )  # fmt: skip
    links = {
        "opacity": opacity, "outline_level": outline_at,
        "window_center": level, "window_width": window, "invert": invert,
    }  # fmt: skip
    for name, control in links.items():
        control.value = getattr(viewer, name)
        widgets.jslink((viewer, name), (control, "value"))
    # ToggleButtons sync an index, not the value: linked through the kernel.
    widgets.link((viewer, "overlay"), (overlay, "value"))
    overlay_controls = (overlay, opacity, outline_at)

    def heat_arrived(_: Any = None) -> None:
        for control in overlay_controls:
            control.disabled = not viewer.has_heatmap

    heat_arrived()
    viewer.observe(heat_arrived, names="has_heatmap")
    return widgets.HBox(
        [*overlay_controls, level, window, invert, reset],
        layout={"flex_flow": "row wrap", "align_items": "center"},
    )
