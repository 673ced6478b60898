"""Scan intake: read DICOM, PNG and JPEG uploads into validated float32 images.

`read_scan` reads and validates in this process; `judge` does the same in a guarded
child process (time and memory limits), also checks that the image looks like its
modality (`bcdiag.scans.modality_check`), and never raises for bad input.
"""

from bcdiag.scans.guard import judge, start_reader
from bcdiag.scans.reader import read_scan
from bcdiag.scans.types import Scan, ScanMetadata, Verdict

__all__ = ["Scan", "ScanMetadata", "Verdict", "judge", "read_scan", "start_reader"]
