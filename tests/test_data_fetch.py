"""``bcdiag data fetch rsna640|busi256|mias``: pinned sources, SHA-256 per file, shared layout.

The upstream repositories are faked under a temporary folder laid out like
raw.githubusercontent.com (``<owner>/<repo>/<commit>/<path>``) from the shared data,
and read through ``file://``. The MIAS PGMs are made from the shared 512 px PNGs so that
each 2×2 block has the PNG's pixel as its mean rounded half up (``a-1, a-1, a, a``).
"""

from __future__ import annotations

import csv
import hashlib
import http.server
import os
import re
import shutil
import stat
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from bcdiag.cli import main
from bcdiag.datasets import mias
from bcdiag.datasets.download import download
from bcdiag.datasets.public_sets import MANIFESTS, SETS, manifest, png512_from_pgm
from bcdiag.datasets.public_sets import fetch as fetch_set
from bcdiag.errors import BcdiagError

OWN_FILES = ("labels.csv",)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shared_sums(data_dir: Path) -> dict[str, str]:
    lines = (data_dir / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in lines)}


def _fake_pgm(png: Path) -> bytes:
    """A 1024 px PGM whose 2×2 block means, rounded half up, are the pixels of `png`."""
    small = np.asarray(Image.open(png), dtype=np.int16)
    low = np.where(small > 0, small - 1, small)
    big = np.empty((1024, 1024), dtype=np.uint8)
    big[0::2, 0::2] = low
    big[1::2, 0::2] = low
    big[0::2, 1::2] = small
    big[1::2, 1::2] = small
    return b"P5\n1024 1024\n255\n" + big.tobytes()


@pytest.fixture(scope="module")
def upstream_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("upstream")


def _build_upstream(root: Path, data_dir: Path, name: str) -> str:
    """Lay out set `name`'s pinned files under `root`; returns `root` as a source URL."""
    spec = SETS[name]
    for entry in manifest(name):
        if not entry.upstream:
            continue
        target = root / spec.repository / spec.commit / entry.upstream
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix == ".pgm":
            target.write_bytes(_fake_pgm(data_dir / name / entry.file))
        else:
            shutil.copyfile(data_dir / name / entry.file, target)
    return root.as_uri()


@pytest.fixture(scope="module")
def busi_source(upstream_root: Path, data_dir: Path) -> str:
    return _build_upstream(upstream_root, data_dir, "busi256")


@pytest.fixture(scope="module")
def mias_source(upstream_root: Path, data_dir: Path) -> str:
    return _build_upstream(upstream_root, data_dir, "mias")


@pytest.fixture(scope="module")
def rsna_source(upstream_root: Path, data_dir: Path) -> str:
    return _build_upstream(upstream_root, data_dir, "rsna640")


def _assert_same_tree(fetched: Path, shared: Path) -> None:
    """Every file of `shared` lies in `fetched` byte for byte, and nothing else does."""
    names = sorted(p.relative_to(shared) for p in shared.rglob("*") if p.is_file())
    assert sorted(p.relative_to(fetched) for p in fetched.rglob("*") if p.is_file()) == names
    for name in names:
        assert (fetched / name).read_bytes() == (shared / name).read_bytes(), name


def test_packaged_sums_and_labels_are_the_shared_ones(data_dir: Path) -> None:
    sums = _shared_sums(data_dir)
    for name in SETS:
        entries = manifest(name)
        assert {f"{name}/{e.file}": e.sha256 for e in entries} == {
            key: digest
            for key, digest in sums.items()
            if key.startswith(f"{name}/") and key.split("/", 1)[1] not in OWN_FILES
        }
        for own in OWN_FILES:
            assert (
                hashlib.sha256((MANIFESTS / name / own).read_bytes()).hexdigest()
                == (sums[f"{name}/{own}"])
            )


def test_upstream_paths_follow_the_documented_names(data_dir: Path) -> None:
    with (data_dir / "rsna640" / "labels.csv").open(newline="") as stream:
        label = {row["file"]: row["label"] for row in csv.DictReader(stream)}
    folder = {"normal": "benign", "malignant": "malignant"}
    for entry in manifest("rsna640"):
        stem = Path(entry.file).stem
        if entry.upstream:  # <patient>_<image>_png.rf.<hash>.jpg, in the folder of its class
            expected = rf"data/{folder[label[entry.file]]}/{stem}_png\.rf\.[0-9a-f]{{32}}\.jpg"
            assert re.fullmatch(expected, entry.upstream), entry
    for entry in manifest("busi256"):
        kind, number = Path(entry.file).stem.split("_")
        assert entry.upstream == f"Dataset_BUSI_with_GT/{kind}/{kind} ({int(number)}).png"
    renamed = {"README.MIAS.txt": "README"}
    for entry in manifest("mias"):
        name = Path(entry.file).name
        upstream = f"{Path(name).stem}.pgm" if name.endswith(".png") else renamed.get(name, name)
        assert entry.upstream == f"all-mias/{upstream}"


def test_busi256_is_fetched_byte_identical_and_a_rerun_downloads_nothing(
    busi_source: str, data_dir: Path, tmp_path: Path
) -> None:
    fetched = fetch_set("busi256", tmp_path, source=busi_source)
    assert fetched.root == tmp_path / "busi256" and fetched.files == 663
    _assert_same_tree(fetched.root, data_dir / "busi256")
    nowhere = (tmp_path / "no-source").as_uri()  # every download would fail
    assert fetch_set("busi256", tmp_path, source=nowhere).files == 663


@pytest.mark.slow
def test_mias_pngs_are_derived_byte_identical_and_load(
    mias_source: str, data_dir: Path, tmp_path: Path
) -> None:
    fetched = fetch_set("mias", tmp_path, source=mias_source)
    assert fetched.files == 326
    _assert_same_tree(fetched.root, data_dir / "mias")
    images = mias.load(tmp_path, image_size=32, seed=3)
    assert len(images) == 322 and int(images.y.sum()) == 52


def test_a_corrupted_upstream_file_is_refused_by_name_and_the_rest_stays_verified(
    busi_source: str, upstream_root: Path, data_dir: Path, tmp_path: Path
) -> None:
    spec = SETS["busi256"]
    source = tmp_path / "source"
    shutil.copytree(upstream_root / spec.repository, source / spec.repository)
    entries = manifest("busi256")
    bad = entries[len(entries) // 2]
    upstream = source / spec.repository / spec.commit / bad.upstream
    corrupted = bytearray(upstream.read_bytes())
    corrupted[100] ^= 0xFF
    upstream.write_bytes(bytes(corrupted))
    with pytest.raises(BcdiagError) as raised:
        fetch_set("busi256", tmp_path / "data", source=source.as_uri())
    message = str(raised.value)
    actual = hashlib.sha256(bytes(corrupted)).hexdigest()
    assert f"{Path(bad.file).name}: " in message and actual in message and bad.sha256 in message
    root = tmp_path / "data" / "busi256"
    assert not (root / bad.file).exists()
    assert not list(root.rglob("*.part")) and not (root / "labels.csv").exists()
    verified, missing = map(int, re.search(r"(\d+) of 662 .* (\d+) are missing", message).groups())
    on_disk = sorted(root.rglob("*.png"))
    assert len(on_disk) == verified and verified + missing == 662 and missing >= 1
    assert all(_sha256(p) == _sha256(data_dir / "busi256" / p.relative_to(root)) for p in on_disk)


def test_rsna640_fetches_the_pinned_files_and_names_what_lacks_an_upstream_path(
    rsna_source: str, data_dir: Path, tmp_path: Path
) -> None:
    pinned = [e for e in manifest("rsna640") if e.upstream]
    with pytest.raises(BcdiagError) as raised:
        fetch_set("rsna640", tmp_path, source=rsna_source)
    unpinned = len(manifest("rsna640")) - len(pinned)
    assert f"{unpinned} files have no upstream path" in str(raised.value)
    assert f"{len(pinned)} of 2871 files are verified under {tmp_path / 'rsna640'}" in str(
        raised.value
    )
    root = tmp_path / "rsna640"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == sorted(
        e.file for e in pinned
    )
    for entry in pinned:
        assert (root / entry.file).read_bytes() == (data_dir / "rsna640" / entry.file).read_bytes()


def test_cli_prints_the_licence_before_fetching_and_where_the_set_lies(
    busi_source: str, rsna_source: str, tmp_path: Path, bcdiag_home: Path
) -> None:
    runner = CliRunner()
    args = ["data", "fetch", "busi256", "--data-dir", str(tmp_path), "--source", busi_source]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("busi256 licence: CC BY 4.0")
    assert lines[-1] == f"busi256: 663 files verified at {tmp_path / 'busi256'}"

    args = ["data", "fetch", "rsna640", "--data-dir", str(tmp_path), "--source", rsna_source]
    result = runner.invoke(main, args)
    assert result.exit_code == 1
    assert result.stdout.startswith("rsna640 licence: DbCL 1.0")
    assert "research use only" in result.stdout.splitlines()[1]
    assert "files have no upstream path" in result.output

    result = runner.invoke(main, ["data", "fetch", "mias", "--size", "64"])
    assert result.exit_code == 2 and "--size is for breastmnist" in result.output
    result = runner.invoke(main, ["data", "fetch", "breastmnist", "--source", busi_source])
    assert result.exit_code == 2 and "--source is for rsna640, busi256 and mias" in result.output


def _first_busi_url(source: str) -> tuple[str, str]:
    """The URL of busi256's first file under `source`, and its SHA-256."""
    spec, entry = SETS["busi256"], manifest("busi256")[0]
    return f"{source}/{spec.repository}/{spec.commit}/{urllib.parse.quote(entry.upstream)}", (
        entry.sha256
    )


def test_downloaded_files_are_as_readable_as_the_umask_allows(
    busi_source: str, tmp_path: Path
) -> None:
    url, sha256 = _first_busi_url(busi_source)
    previous = os.umask(0o022)
    try:
        path = download(url, tmp_path / "shared" / "benign_001.png", sha256, progress=False)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # a shared data folder stays readable


def test_a_file_that_cannot_be_converted_is_refused_by_name(
    busi_source: str, tmp_path: Path
) -> None:
    url, _ = _first_busi_url(busi_source)
    target = tmp_path / "mias" / "png512" / "mdb001.png"
    with pytest.raises(BcdiagError, match=r"mdb001\.png: .* could not be converted: expected"):
        download(url, target, "0" * 64, convert=png512_from_pgm, progress=False)
    assert not list(target.parent.iterdir())


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Announces 1,000 bytes, sends 400, and closes the connection."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 400)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def truncating_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TruncatingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/file.png"
    server.shutdown()


def test_a_download_cut_short_leaves_no_file_and_names_the_url(
    truncating_url: str, tmp_path: Path
) -> None:
    target = tmp_path / "set" / "file.png"
    with pytest.raises(BcdiagError, match=r"could not download .*file\.png"):
        download(truncating_url, target, "0" * 64, progress=False)
    assert not list(target.parent.iterdir())
