"""Data-parallel training through fastai's own distributed support (Accelerate + torch DDP).

`train_bundle_distributed` launches ``torch.distributed.run`` with N processes of
this module; each joins the process group (NCCL on GPUs, gloo on CPUs), trains
every ensemble member data-parallel with fastai's ``Learner.distrib_ctx``, and
rank 0 writes the weights. Calibration and the threshold are then fitted on
validation in the calling process, exactly as for single-process training.

fastai's `DistributedDL` broadcasts its shuffle order through a CUDA tensor;
`CpuDistributedDL` is the same loader with that broadcast on CPU tensors, so
gloo works too (the only change to fastai's behaviour).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import fastai.distributed  # noqa: F401  (adds Learner.distrib_ctx)
import torch
from accelerate import PartialState
from fastai.distributed import DistributedDL, rank_distrib
from fastai.learner import Learner

from bcdiag.datasets import ImageSet
from bcdiag.errors import BcdiagError
from bcdiag.models.bundle import ModelBundle
from bcdiag.models.recipe import Recipe
from bcdiag.models.tracking import MLflowCallback, Tracker
from bcdiag.models.train import finish_bundle, fit_member, training_stats
from bcdiag.processes import free_port
from bcdiag.settings import get_settings


class CpuDistributedDL(DistributedDL):  # type: ignore[misc]  # fastai is untyped
    """fastai's DistributedDL with its index broadcast on CPU tensors (gloo)."""

    def _broadcast(self, t: list[int], rank: int) -> list[int]:
        tensor = torch.LongTensor(t)
        torch.distributed.broadcast(tensor, rank)
        result: list[int] = tensor.tolist()
        return result


def fit_data_parallel(learner: Learner, epochs: int, lr: float) -> None:
    """One-cycle fit of `learner` across the launched process group."""
    cpu = not torch.cuda.is_available()
    if cpu:
        learner.dls.loaders = [CpuDistributedDL(dl) for dl in learner.dls.loaders]
    with learner.distrib_ctx(sync_bn=False, cpu=cpu):
        learner.fit_one_cycle(epochs, lr)


def train_bundle_distributed(
    images: ImageSet, config: Recipe, processes: int, run_id: str | None = None
) -> ModelBundle:
    """Train on `processes` data-parallel processes on this machine; bundle in this one.

    Args:
        run_id: an MLflow run that rank 0 logs per-epoch metrics to.
    """
    with tempfile.TemporaryDirectory() as folder:
        shared, weights = Path(folder) / "images.npz", Path(folder) / "members.pt"
        images.save(shared)
        command = [
            sys.executable, "-m", "torch.distributed.run",
            f"--nproc_per_node={processes}", "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            "-m", "bcdiag.models.distributed",
            "--images", str(shared), "--recipe", json.dumps(config.as_dict()),
            "--out", str(weights), *(("--run-id", run_id) if run_id else ()),
        ]  # fmt: skip
        if subprocess.run(command, check=False).returncode != 0:
            raise BcdiagError(f"distributed training on {processes} processes failed (see above)")
        payload = torch.load(weights, map_location="cpu", weights_only=True)
    info = {"world_size": int(payload["world_size"]), "backend": str(payload["backend"])}
    return finish_bundle(images, config, payload["members"], training_stats(images), info)


def _worker(argv: list[str] | None = None) -> None:
    """One rank: train every member data-parallel; rank 0 saves the weights."""
    parser = argparse.ArgumentParser()
    for name in ("--images", "--recipe", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--run-id")
    args = parser.parse_args(argv)
    torch.set_num_threads(get_settings().torch_threads)
    PartialState(cpu=not torch.cuda.is_available())  # joins the group torchrun set up
    config = Recipe.parse(json.loads(args.recipe), "--recipe")
    images = ImageSet.load(Path(args.images))
    stats = training_stats(images)
    rank_zero_logs = args.run_id and rank_distrib() == 0
    cbs = [MLflowCallback(Tracker(run_id=args.run_id))] if rank_zero_logs else []
    fit = fit_data_parallel
    members = [fit_member(images, config, m, stats, cbs, fit=fit) for m in range(config.members)]
    if rank_distrib() == 0:
        payload = {
            "members": members,
            "world_size": torch.distributed.get_world_size(),
            "backend": torch.distributed.get_backend(),
        }
        torch.save(payload, args.out)


if __name__ == "__main__":
    _worker()
