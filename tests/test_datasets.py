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
from own_folder import MAMMOGRAM_FOLDER, mammogram_folder
from test_inference import breastmnist_png

from bcdiag.datasets import ImageSet, breastmnist, folder, mias, near_duplicates_of_train
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


def test_breastmnist_near_duplicates_are_the_known_fifteen_and_the_same_frames(
    breast: ImageSet,
) -> None:
    """The shared data README's 15 (within 2 grey levels) and 4 more with a training
    image's pHash."""
    flags = near_duplicates_of_train(breast)
    assert int(flags.sum()) == 19
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


def test_folder_of_own_scans_keeps_labels_patients_and_given_splits(
    data_dir: Path, tmp_path: Path
) -> None:
    images = folder.load(mammogram_folder(data_dir, tmp_path / "own"), image_size=32)
    assert (images.name, images.modality, len(images)) == ("own", "MG", len(MAMMOGRAM_FOLDER))
    assert images.x.shape == (20, 32, 32) and images.x.dtype == np.float32
    malignant = {i for i, y in zip(images.ids, images.y, strict=True) if y == 1}
    assert malignant == {
        "films/mdb023.png", "films/mdb028.png", "films/mdb058.png", "films/mdb090.png",
        "films/mdb072.png",
        "films/cbisddsm_Mass-Test_P_00820_LEFT_CC_malignant_quarter.dcm",
    }  # fmt: skip
    assert list(images.split) == [split for _, _, split in MAMMOGRAM_FOLDER]
    assert images.groups[-1] == "P_00820"


def test_folder_without_split_column_is_split_by_patient(data_dir: Path, tmp_path: Path) -> None:
    own = mammogram_folder(data_dir, tmp_path / "own", with_split=False)
    images = folder.load(own, image_size=16, seed=1)
    split_of: dict[str, set[str]] = {}
    for group, split in zip(images.groups, images.split, strict=True):
        split_of.setdefault(group, set()).add(str(split))
    assert len(split_of) == 11 and all(len(s) == 1 for s in split_of.values())
    assert {str(s) for s in images.split} == {"train", "valid", "test"}


def test_folder_names_every_unusable_row(data_dir: Path, tmp_path: Path) -> None:
    own = mammogram_folder(data_dir, tmp_path / "own")
    (own / "films" / "notes.png").write_text("not an image")
    (tmp_path / "outside.png").write_bytes((own / "films" / "mdb001.png").read_bytes())
    with (own / "labels.csv").open("a") as stream:
        stream.write("films/notes.png,benign,p900,MG,train\n")
        stream.write("films/mdb002.png,probably benign,p001,MG,train\n")
        stream.write("../outside.png,benign,p901,MG,train\n")
        stream.write("films/missing.png,benign,p902,MG,train\n")
    with pytest.raises(folder.FolderDataError) as error:
        folder.load(own, image_size=16)
    message = str(error.value)
    assert "4 problem(s)" in message
    assert "line 22: " in message and "notes.png" in message
    assert "line 23: label 'probably benign' is not one of" in message
    assert "line 24: ../outside.png is outside" in message
    assert "line 25: " in message and "missing.png" in message


def test_folder_refuses_mixed_modalities_split_patients_and_missing_labels(
    data_dir: Path, tmp_path: Path
) -> None:
    own = mammogram_folder(data_dir, tmp_path / "own")
    (own / "us.png").write_bytes(breastmnist_png(data_dir, 0))
    original = (own / "labels.csv").read_text()
    (own / "labels.csv").write_text(original + "us.png,benign,u1,US,train\n")
    with pytest.raises(folder.FolderDataError, match=r"mix modalities \['MG', 'US'\]"):
        folder.load(own, image_size=16)
    (own / "labels.csv").write_text(original.replace("p001,MG,train", "p001,MG,valid", 1))
    with pytest.raises(folder.FolderDataError, match=r"patient\(s\) p001 appear in two splits"):
        folder.load(own, image_size=16)
    (own / "labels.csv").unlink()
    with pytest.raises(folder.FolderDataError, match=r"labels\.csv is missing"):
        folder.load(own, image_size=16)


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
        download(f"{url}/breastmnist.npz", target, "0" * 32, algorithm="md5")
    assert not target.exists() and not list(target.parent.glob("*.part"))
    assert download(f"{url}/breastmnist.npz", target, good, algorithm="md5").read_bytes() == payload


def test_fetch_uses_official_name_and_md5(http_root: tuple[str, Path], tmp_path: Path) -> None:
    url, root = http_root
    (root / "breastmnist_64.npz").write_bytes(b"not the real file")
    with pytest.raises(BcdiagError, match="742edef2a1fd1524b2efff4bd7ba9364"):
        breastmnist.fetch(tmp_path, size=64, url_template=url + "/{file}")
    with pytest.raises(BcdiagError, match="sizes"):
        breastmnist.fetch(tmp_path, size=32)
