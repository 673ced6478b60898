"""The two calls a model makes on a scan, at its operating point (torch-free: the app
shows them without loading a model)."""

SUSPICIOUS, NOT_SUSPICIOUS = "suspicious", "not suspicious"
