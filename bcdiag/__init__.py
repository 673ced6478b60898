"""bcdiag: breast-cancer decision support centred on Jupyter."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bcdiag")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
