"""`ScanViewer`: one scan at full resolution in the browser, with zoom, pan,
window/level and the model's heat map as an overlay the clinician controls.

The kernel keeps the full-resolution values (and the heat map); the browser draws on a
canvas (``viewer.js``) and asks, in custom messages, for the box it shows at the number
of canvas pixels it covers. First the whole image at the canvas's size (the overview);
after each zoom or pan has settled, the visible box. Each answer is one message with two
binary buffers: the image as uint16 levels (`regions.Quantisation`, its offset and scale
in the message) and the heat map as uint8; `regions.plan_region` bounds both by the
pixels asked for, so no message carries more than about 3 bytes per canvas pixel,
whatever the size of the original. Window/level, inversion and the overlay are applied
in the browser, without asking the kernel again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as widgets
import numpy as np
import traitlets
from numpy.typing import NDArray

from bcdiag.app.viewer.regions import Box, Pyramid, Quantisation, heat_levels, plan_region
from bcdiag.scans.display import DisplayImage

log = logging.getLogger(__name__)

OVERLAYS = ("off", "outline", "heat")
DEFAULT_HEIGHT = "600px"
_HERE = Path(__file__).resolve().parent


class ScanViewer(anywidget.AnyWidget):  # type: ignore[misc]
    """A zoomable, pannable view of one scan with window/level and a heat-map overlay.

    In the browser: the wheel zooms around the cursor; dragging pans; a right-drag or a
    Shift-drag sets window (horizontal) and level (vertical); a double-click resets the
    view; when focused, + and - zoom, the arrows pan, Shift+arrows set window and level
    (2 % of the value range a press) and 0 resets. Size it with
    ``layout`` (it fills its width and is `DEFAULT_HEIGHT` high unless told otherwise).

    Args:
        image: the scan (`bcdiag.scans.display.display_pixels`).
        heatmap: the model's heat in [0, 1], any shape, covering the whole image.
    """

    _esm = _HERE / "viewer.js"
    _css = _HERE / "viewer.css"

    window_center = traitlets.Float(help="Window centre, in the image's units.").tag(sync=True)
    window_width = traitlets.Float(1.0, help="Window width (> 0).").tag(sync=True)
    window_function = traitlets.Enum(
        ("LINEAR", "LINEAR_EXACT", "SIGMOID"),
        "LINEAR",
        read_only=True,
        help="DICOM VOI LUT Function the window is applied with.",
    ).tag(sync=True)
    invert = traitlets.Bool(False, help="Show inverted (bright = low values).").tag(sync=True)
    overlay = traitlets.Enum(
        OVERLAYS, "off", help="The heat map drawn over the image: off, its outline, or heat."
    ).tag(sync=True)
    opacity = traitlets.Float(0.5, min=0.0, max=1.0, help="Opacity of the overlay.").tag(sync=True)
    outline_level = traitlets.Float(
        0.5, min=0.0, max=1.0, help="The heat level whose contour the outline draws."
    ).tag(sync=True)
    view = traitlets.Dict(
        read_only=True,
        help="Set by the browser once a zoom or pan settles: zoom (1 = whole image fits), "
        "x and y (image pixel at the canvas centre), canvas_width and canvas_height.",
    ).tag(sync=True)
    image_shape = traitlets.Tuple(
        traitlets.Int(), traitlets.Int(), default_value=(0, 0), read_only=True,
        help="The image's (rows, columns).",
    ).tag(sync=True)  # fmt: skip
    value_range = traitlets.Tuple(
        traitlets.Float(), traitlets.Float(), default_value=(0.0, 0.0), read_only=True,
        help="The image's lowest and highest value.",
    ).tag(sync=True)  # fmt: skip
    has_heatmap = traitlets.Bool(False, read_only=True).tag(sync=True)
    revision = traitlets.Int(
        0, read_only=True, help="Counts heat map changes; the browser asks afresh on each."
    ).tag(sync=True)
    transfer = traitlets.Dict(
        read_only=True,
        help="What the kernel has sent: answers, largest_bytes (one message's buffers) "
        "and largest_pixels (one message's image or heat map, whichever holds more).",
    ).tag(sync=True)

    def __init__(
        self, image: DisplayImage, heatmap: NDArray[np.floating] | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("layout", widgets.Layout(width="100%", height=DEFAULT_HEIGHT))
        super().__init__(**kwargs)
        self.image = image
        self._pyramid = Pyramid(image.values)
        self._quantisation = Quantisation.covering(image.values)
        self._heat: Pyramid | None = None
        rows, columns = self._pyramid.shape
        self.set_trait("image_shape", (rows, columns))
        self.set_trait("value_range", (float(image.values.min()), float(image.values.max())))
        self.set_trait("window_function", image.window_function)
        self.set_trait("transfer", {"answers": 0, "largest_bytes": 0, "largest_pixels": 0})
        self.reset_window()
        if heatmap is not None:
            self.set_heatmap(heatmap)
        self.on_msg(self._received)

    @traitlets.validate("window_width")
    def _positive_width(self, proposal: dict[str, Any]) -> float:
        width = float(proposal["value"])
        if not width > 0:
            raise traitlets.TraitError(f"the window width must be positive, not {width}")
        return width

    def set_heatmap(self, heatmap: NDArray[np.floating]) -> None:
        """Show ``heatmap`` (float in [0, 1], any shape, over the whole image) from now on.

        Raises:
            ValueError: not a 2-D array of finite values in [0, 1].
        """
        heat = np.asarray(heatmap, dtype=np.float32)
        if heat.ndim != 2 or heat.size == 0:
            raise ValueError(f"a heat map is a 2-D array, not shape {heat.shape}")
        if not np.isfinite(heat).all() or heat.min() < 0 or heat.max() > 1:
            raise ValueError("a heat map holds finite values in [0, 1]")
        self._heat = Pyramid(heat)
        self.set_trait("has_heatmap", True)
        self.set_trait("revision", self.revision + 1)

    def reset_window(self) -> None:
        """The image's own window and inversion again."""
        self.window_center = self.image.window_center
        self.window_width = self.image.window_width
        self.invert = self.image.invert

    def reset(self) -> None:
        """The whole image and its own window again."""
        self.reset_window()
        self.send({"type": "reset"})

    def answer(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        """The reply to a browser's ``region`` request: header and binary buffers.

        Raises:
            ValueError: the request is malformed or asks for no part of the image.
        """
        box = Box(*(float(request[key]) for key in ("top", "left", "bottom", "right")))
        plan = plan_region(self._pyramid.shape, box, int(request["width"]), int(request["height"]))
        image = self._quantisation.levels(self._pyramid.region(plan.image_box, plan.image_size))
        reply: dict[str, Any] = {
            "type": "region",
            "id": str(request.get("id", "")),
            "image_box": _box_list(plan.image_box),
            "image_size": list(plan.image_size),
            "offset": self._quantisation.offset,
            "scale": self._quantisation.scale,
            "heat_box": None,
            "heat_size": None,
        }
        buffers = [image.tobytes()]
        if self._heat is not None:
            rows, columns = self._pyramid.shape
            heat_rows, heat_columns = self._heat.shape
            heat_box = plan.heat_box.scaled(heat_rows / rows, heat_columns / columns)
            buffers.append(heat_levels(self._heat.region(heat_box, plan.heat_size)).tobytes())
            reply["heat_box"], reply["heat_size"] = _box_list(plan.heat_box), list(plan.heat_size)
        return reply, buffers

    def _received(self, _: object, content: dict[str, Any], __: list[bytes]) -> None:
        if content.get("type") != "region":
            log.warning("scan viewer: unknown message type %r", content.get("type"))
            return
        try:
            reply, buffers = self.answer(content)
        except (KeyError, TypeError, ValueError) as error:
            log.warning("scan viewer: malformed region request (%s)", error)
            return
        self.send(reply, buffers)
        sizes = [reply["image_size"], reply["heat_size"] or (0, 0)]
        pixels = max(rows * columns for rows, columns in sizes)
        sent = self.transfer
        self.set_trait(
            "transfer",
            {
                "answers": sent["answers"] + 1,
                "largest_bytes": max(sent["largest_bytes"], sum(map(len, buffers))),
                "largest_pixels": max(sent["largest_pixels"], pixels),
            },
        )


def _box_list(box: Box) -> list[float]:
    return [box.top, box.left, box.bottom, box.right]
