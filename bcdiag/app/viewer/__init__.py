"""The scan viewer of the clinician's reading view: `ScanViewer` (an anywidget) and
`viewer_controls`. Several fit on one page, each at any size (its ``layout``)."""

from bcdiag.app.viewer.controls import viewer_controls
from bcdiag.app.viewer.widget import ScanViewer

__all__ = ["ScanViewer", "viewer_controls"]
