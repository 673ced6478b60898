"""Data sets: labels with malignant = 1, official and patient-level splits, downloads."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bcdiag.datasets import ImageSet, breastmnist, mias
from bcdiag.datasets.download import download
from bcdiag.errors import BcdiagError


@pytest.fixture(scope="module")
def breast(data_dir: Path) -> ImageSet:
    return breastmnist.load(data_dir)


def test_breastmnist_official_split_and_malignant_is_positive(
    breast: ImageSet, data_dir: Path
) -> None:
    counts = {split: int((breast.split == split).sum()) for split in ("train", "valid", "test")}
    assert counts == {"train": 546, "valid": 78, "test": 156}
    # MedMNIST: 0 = malignant. The shared README counts 147 / 21 / 42 label-0 images.
    assert [int(breast.part(s).y.sum()) for s in ("train", "valid", "test")] == [147, 21, 42]
    with np.load(data_dir / "breastmnist" / "breastmnist.npz") as npz:
        raw = npz["train_labels"].ravel()
        np.testing.assert_array_equal(breast.part("train").y, (raw == 0).astype(np.int64))
        np.testing.assert_allclose(breast.part("train").x[0], npz["train_images"][0] / 255.0)
    assert breast.x.dtype == np.float32 and breast.x.shape[1:] == (28, 28)


def test_breastmnist_near_duplicates_are_the_fifteen_known(breast: ImageSet) -> None:
    flags = breastmnist.near_duplicates_of_train(breast)
    assert int(flags.sum()) == 15
    assert not flags[breast.split != "test"].any()
    assert flags[breast.ids.index("test-76")]  # pixel-identical to train-115


def test_mias_splits_by_patient(data_dir: Path) -> None:
    images = mias.load(data_dir, image_size=32, seed=3)
    assert len(images) == 322 and int(images.y.sum()) == 52
    split_of: dict[str, set[str]] = {}
    for group, split in zip(images.groups, images.split, strict=True):
        split_of.setdefault(group, set()).add(str(split))
    assert len(split_of) == 161
    assert all(len(splits) == 1 for splits in split_of.values())
    other = mias.load(data_dir, image_size=32, seed=4)
    assert list(other.split) != list(images.split)


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def test_download_verifies_md5_and_keeps_nothing_on_mismatch(
    http_root: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = http_root
    payload = np.arange(1000, dtype=np.uint8).tobytes()
    (root / "breastmnist.npz").write_bytes(payload)
    good = hashlib.md5(payload, usedforsecurity=False).hexdigest()
    target = tmp_path / "data" / "breastmnist" / "breastmnist.npz"
    with pytest.raises(BcdiagError, match=r"expected 0+"):
        download(f"{url}/breastmnist.npz", target, "0" * 32)
    assert not target.exists() and not list(target.parent.glob("*.part"))
    assert download(f"{url}/breastmnist.npz", target, good).read_bytes() == payload


def test_fetch_uses_official_name_and_md5(http_root: tuple[str, Path], tmp_path: Path) -> None:
    url, root = http_root
    (root / "breastmnist_64.npz").write_bytes(b"not the real file")
    with pytest.raises(BcdiagError, match="742edef2a1fd1524b2efff4bd7ba9364"):
        breastmnist.fetch(tmp_path, size=64, url_template=url + "/{file}")
    with pytest.raises(BcdiagError, match="sizes"):
        breastmnist.fetch(tmp_path, size=32)
