"""fastai training, the saved bundle, and one preprocessing path for training and inference."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastai.callback.core import Callback
from PIL import Image

from bcdiag.datasets import ImageSet
from bcdiag.errors import BcdiagError, ConfigurationError
from bcdiag.models.architectures import build_model
from bcdiag.models.bundle import ModelBundle, rotate
from bcdiag.models.recipe import Recipe
from bcdiag.models.train import make_dataloaders, train_bundle
from bcdiag.preprocess import prepare
from bcdiag.scans import read_scan


@pytest.fixture(scope="module")
def images(breastmnist: ImageSet) -> ImageSet:
    return breastmnist


@pytest.fixture(scope="module")
def bundle(images: ImageSet) -> ModelBundle:
    """Two members, so the ensemble path is exercised."""
    return train_bundle(images, Recipe(epochs=1, members=2))


def test_bundle_has_every_member_and_a_validation_operating_point(
    bundle: ModelBundle, images: ImageSet
) -> None:
    assert len(bundle.members) == 2
    assert bundle.modality == "US" and bundle.image_size == 28
    point = bundle.operating_point
    assert 0.0 < point.threshold < 1.0 and point.rule == "youden"
    assert 0.0 <= point.sensitivity <= 1.0 and 0.0 <= point.specificity <= 1.0
    assert bundle.temperature > 0
    p = bundle.probabilities(images.part("test").x)
    assert p.shape == (156,) and ((p >= 0) & (p <= 1)).all()
    assert len(np.unique(p.round(4))) > 10  # not a constant predictor


def test_saved_bundle_reloads_identically_and_refuses_a_changed_file(
    bundle: ModelBundle, images: ImageSet, tmp_path: Path
) -> None:
    path = tmp_path / "model.pt"
    sha = bundle.save(path)
    again = ModelBundle.load(path, sha)
    x = images.part("valid").x
    np.testing.assert_allclose(again.probabilities(x), bundle.probabilities(x), rtol=1e-6)
    assert again.operating_point == bundle.operating_point
    # the scores that chose the threshold are the bundle's own on validation; not saved
    assert bundle.valid_probabilities is not None and again.valid_probabilities is None
    np.testing.assert_allclose(bundle.valid_probabilities, bundle.probabilities(x), rtol=1e-5)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BcdiagError, match="refusing to load"):
        ModelBundle.load(path, sha)


def test_rotated_views_are_averaged_saved_and_reloaded(
    bundle: ModelBundle, images: ImageSet, tmp_path: Path
) -> None:
    square = torch.arange(25.0).reshape(1, 1, 5, 5)
    torch.testing.assert_close(rotate(square, 90.0), torch.rot90(square, 1, dims=(2, 3)))
    torch.testing.assert_close(rotate(square, 0.0), square)
    assert bundle.tta_rotations == (-8.0, 8.0)  # the recipe's
    turned, upright = bundle, dataclasses.replace(bundle, tta_rotations=())
    views = turned.views(torch.zeros(3, 1, 28, 28))
    assert len(views) == 6 and all(v.shape == (3, 1, 28, 28) for v in views)
    assert len(upright.views(torch.zeros(3, 1, 28, 28))) == 2
    x = images.part("valid").x
    assert not np.allclose(turned.logits(x), upright.logits(x))  # the turned views count
    path = tmp_path / "turned.pt"
    again = ModelBundle.load(path, turned.save(path))
    assert again.tta_rotations == (-8.0, 8.0)
    np.testing.assert_allclose(again.logits(x), turned.logits(x), rtol=1e-6)


def test_same_file_gives_same_tensor_in_training_and_inference(
    images: ImageSet, data_dir: Path
) -> None:
    """A BreastMNIST test image saved as PNG, read as an upload, equals the training input."""
    with np.load(data_dir / "breastmnist" / "breastmnist.npz") as npz:
        pixels = npz["test_images"][7]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    scan = read_scan(buffer.getvalue(), "upload.png", modality="US")
    inference = prepare(scan.image, modality="US", laterality=None, size=28)
    training = images.x[images.ids.index("test-7")]
    np.testing.assert_array_equal(inference, training)
    # and through the fastai loader, which only normalises (no augmentation on valid)
    config = Recipe(epochs=1, members=1)
    dls = make_dataloaders(images, config, mean=0.3, std=0.2)
    batch_x, _ = dls.valid.one_batch()
    first_valid = images.part("valid").x[0]
    expected = (torch.from_numpy(first_valid) - 0.3) / 0.2
    torch.testing.assert_close(batch_x[0, 0].cpu().as_subclass(torch.Tensor), expected)
    assert batch_x.shape[1] == 1  # grayscale stays single-channel


@pytest.mark.parametrize(("name", "size"), [("bcnet16", 28), ("bcnet32", 28), ("resnet18", 64)])
def test_architectures_take_one_channel_and_give_two_logits(name: str, size: int) -> None:
    model = build_model(name).eval()
    with torch.inference_mode():
        assert model(torch.zeros(2, 1, size, size)).shape == (2, 2)


def test_unknown_architecture_names_the_choices() -> None:
    with pytest.raises(ConfigurationError, match="bcnet16"):
        build_model("alexnet-9000")


def test_frozen_blocks_keep_imagenet_stages_and_train_the_rest(images: ImageSet) -> None:
    recipe = Recipe(architecture="efficientnet_lite0", image_size=28, frozen_blocks=5, epochs=1)
    trained = train_bundle(images, recipe.changed(members=1)).members[0]
    imagenet = build_model("efficientnet_lite0").state_dict()
    frozen = ("conv_stem.", "bn1.", *(f"blocks.{n}." for n in range(5)))
    for name, weights in trained.items():
        same = torch.equal(weights, imagenet[name])
        if name.startswith(frozen):
            assert same, f"{name} moved although frozen"  # BN statistics too: eval mode
        elif name.endswith(("weight", "running_mean")) and not name.startswith("classifier"):
            assert not same, f"{name} did not train"


def test_frozen_blocks_need_an_efficientnet(images: ImageSet) -> None:
    with pytest.raises(ConfigurationError, match="frozen_blocks=2 needs an EfficientNet"):
        train_bundle(images, Recipe(frozen_blocks=2, epochs=1, members=1))


def test_a_mammogram_flip_view_is_upside_down(bundle: ModelBundle) -> None:
    """Preprocessing keeps the chest wall on the left; mirroring would move it right."""
    batch = torch.arange(16.0).reshape(1, 1, 4, 4)
    mammogram = dataclasses.replace(bundle, modality="MG", tta_rotations=())
    assert torch.equal(mammogram.views(batch)[1], batch.flip(2))
    ultrasound = dataclasses.replace(bundle, tta_rotations=())
    assert torch.equal(ultrasound.views(batch)[1], batch.flip(3))


class _ValidAuc(Callback):  # type: ignore[misc]  # fastai is untyped
    """The validation AUC of each epoch, read after fastai's Recorder has it."""

    order = 55  # Recorder is 50; the trackers that stop training are 60

    def __init__(self) -> None:
        self.aucs: list[float] = []

    def after_epoch(self) -> None:
        self.aucs.append(float(self.learn.recorder.values[-1][-1]))


def test_patience_stops_after_that_many_epochs_without_a_better_validation_auc(
    images: ImageSet,
) -> None:
    seen = _ValidAuc()
    train_bundle(images, Recipe(epochs=12, members=1, patience=1, lr=3e-2), cbs=[seen])
    best, stop = -1.0, len(seen.aucs)
    for epoch, auc in enumerate(seen.aucs):
        if auc > best:
            best, last_better = auc, epoch
        elif epoch - last_better >= 1:
            stop = epoch + 1
            break
    assert len(seen.aucs) == stop < 12, seen.aucs  # it stopped, and where the rule says
