"""Public data sets fetched from pinned GitHub commits: ``rsna640``, ``busi256``, ``mias``.

Each set has a manifest kept in the package, ``manifests/<set>.csv``, one row per file:
``file`` (its path in ``<data dir>/<set>/``), ``sha256`` (of the file as it must lie
there) and ``upstream`` (its path in the set's repository at the pinned commit). Files of
our own, such as the fixed split in ``labels.csv``, are shipped in ``manifests/<set>/``
and written out as they are. The layout produced is the one of the shared data folder
(``../shared/data/README.md``), byte for byte, so ``BCDIAG_DATA_DIR`` can point at it.

Files are read from ``<source>/<owner>/<repo>/<commit>/<upstream>``: by default
raw.githubusercontent.com, or a mirror laid out the same way (``file://`` works). Upstream
files are copied as they are, except the MIAS PGMs, which become the shared 512 px PNGs
(`png512_from_pgm`; byte-identical with the Pillow pinned in requirements.lock).
"""

from __future__ import annotations

import csv
import io
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from bcdiag.datasets.download import download
from bcdiag.errors import BcdiagError

GITHUB_RAW = "https://raw.githubusercontent.com"
THREADS = 8
MANIFESTS = resources.files("bcdiag.datasets") / "manifests"
MIAS_SIDE = 1024


def png512_from_pgm(pgm: bytes) -> bytes:
    """A 1024 px mini-MIAS PGM as the shared 512 px PNG.

    2×2 block mean rounded half up, ``(a+b+c+d+2) // 4``, saved as 8-bit greyscale PNG
    by Pillow with ``optimize=True``.

    Raises:
        ValueError: `pgm` is not an 8-bit greyscale 1024×1024 PGM.
    """
    with Image.open(io.BytesIO(pgm)) as image:
        if image.format != "PPM" or image.mode != "L" or image.size != (MIAS_SIDE, MIAS_SIDE):
            raise ValueError(
                f"expected an 8-bit greyscale {MIAS_SIDE}×{MIAS_SIDE} PGM, "
                f"got {image.format} {image.mode} {image.size}"
            )
        pixels = np.asarray(image, dtype=np.uint16)
    half = MIAS_SIDE // 2
    sums = pixels.reshape(half, 2, half, 2).sum(axis=(1, 3))
    buffer = io.BytesIO()
    Image.fromarray(((sums + 2) // 4).astype(np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class PublicSet:
    """Where a set comes from and on what terms.

    Attributes:
        repository: ``owner/name`` on GitHub.
        commit: the pinned commit.
        notice: licence and use lines, printed before downloading.
        derive: upstream file suffix → how such a file becomes ours; others are copied.
    """

    name: str
    repository: str
    commit: str
    notice: tuple[str, ...]
    derive: Mapping[str, Callable[[bytes], bytes]] = field(default_factory=dict)


SETS = {
    spec.name: spec
    for spec in (
        PublicSet(
            "rsna640",
            "kodekloudhub/PyTorch",
            "8ff8dd4ff1e0ad72f222b325114115bf54e2a37b",
            (
                "rsna640 licence: DbCL 1.0 as redistributed (Kaggle "
                "hayder17/breast-cancer-detection, a Roboflow export, via kodekloudhub/PyTorch).",
                "rsna640 is very likely RSNA Screening Mammography Breast Cancer Detection (2023) "
                "data, whose non-commercial research terms apply: research use only.",
            ),
        ),
        PublicSet(
            "busi256",
            "TongxinWang0405/BMI702_project",
            "922c9469dff20e816d3144880eadd28cdad8efa2",
            (
                "busi256 licence: CC BY 4.0 (BUSI: Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A, "
                "Data in Brief 28 (2020) 104863); cite the authors.",
            ),
        ),
        PublicSet(
            "mias",
            "monabiyan/CNN_Breast_Cancer_Detection_MIAS",
            "d4f5b7fc1e3c8e4034de298c913305eb15f6cf74",
            (
                "mias licence: the MIAS licence agreement (Licence.txt): for research purposes "
                "ONLY, no renting, leasing or selling, publications must reference the database.",
                "mias: research use only; do not publish these files in a package, container "
                "image or public repository.",
            ),
            {".pgm": png512_from_pgm},
        ),
    )
}


@dataclass(frozen=True)
class Entry:
    """One file of a set: where it lies, its SHA-256, its path upstream ("" if unknown)."""

    file: str
    sha256: str
    upstream: str


@dataclass(frozen=True)
class FetchedSet:
    """A set whose every file is verified under `root`."""

    root: Path
    files: int


def public_set(name: str) -> PublicSet:
    """The set called `name`."""
    if name not in SETS:
        raise BcdiagError(f"unknown public data set {name!r}; choose one of {', '.join(SETS)}")
    return SETS[name]


def manifest(name: str) -> list[Entry]:
    """The packaged manifest of set `name`."""
    text = (MANIFESTS / f"{public_set(name).name}.csv").read_text(encoding="utf-8")
    return [
        Entry(row["file"], row["sha256"], row["upstream"])
        for row in csv.DictReader(io.StringIO(text))
    ]


def fetch(
    name: str, data_dir: Path, source: str = GITHUB_RAW, threads: int = THREADS
) -> FetchedSet:
    """Download set `name` into ``data_dir/name`` and verify every file against the manifest.

    Files already there with the right SHA-256 are kept, so a re-run resumes. Our own
    files (``labels.csv``) are written only once every other file is verified.

    Args:
        source: base URL laid out as ``<source>/<owner>/<repo>/<commit>/<path>``.
        threads: parallel downloads.

    Raises:
        BcdiagError: a file could not be fetched or verified, or has no known upstream
            path; the message says how many files are verified and how many are missing.
    """
    spec = public_set(name)
    entries = manifest(name)
    root = data_dir / name
    base = f"{source.rstrip('/')}/{spec.repository}/{spec.commit}/"
    pinned = [entry for entry in entries if entry.upstream]
    verified, error = _download_all(spec, base, pinned, root, threads)
    missing = len(entries) - verified
    if missing:
        reasons = [str(error)] if error else []
        if len(pinned) < len(entries):
            reasons.append(
                f"{len(entries) - len(pinned)} files have no upstream path in the packaged "
                f"manifest (bcdiag/datasets/manifests/{name}.csv) yet"
            )
        again = "; run the command again to fetch them" if error else ""
        reasons.append(
            f"{name}: {verified} of {len(entries)} files are verified under {root}, "
            f"{missing} are missing{again}"
        )
        raise BcdiagError("\n".join(reasons))
    return FetchedSet(root, len(entries) + _write_own_files(name, root))


def _download_all(
    spec: PublicSet, base: str, entries: list[Entry], root: Path, threads: int
) -> tuple[int, BcdiagError | None]:
    """Fetch `entries` in parallel; stop at the first failure. Returns (verified, failure)."""
    with (
        ThreadPoolExecutor(threads) as pool,
        tqdm(total=len(entries), unit="file", desc=spec.name) as bar,
    ):
        futures = [pool.submit(_download_one, spec, base, entry, root) for entry in entries]
        try:
            for future in as_completed(futures):
                future.result()
                bar.update()
        except BcdiagError as error:
            pool.shutdown(cancel_futures=True)  # downloads under way finish, verified
            return sum(map(_succeeded, futures)), error
    return len(entries), None


def _succeeded(future: Future[Path]) -> bool:
    """Whether a finished download left its file verified."""
    return not future.cancelled() and future.exception() is None


def _download_one(spec: PublicSet, base: str, entry: Entry, root: Path) -> Path:
    return download(
        base + urllib.parse.quote(entry.upstream),
        root / entry.file,
        entry.sha256,
        convert=spec.derive.get(PurePosixPath(entry.upstream).suffix),
        progress=False,
    )


def _write_own_files(name: str, root: Path) -> int:
    """Write the files shipped in ``manifests/<name>/``; returns how many there are."""
    own = list((MANIFESTS / name).iterdir())
    for item in own:
        data, target = item.read_bytes(), root / item.name
        if not target.is_file() or target.read_bytes() != data:
            target.write_bytes(data)
    return len(own)
