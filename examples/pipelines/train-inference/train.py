"""Step 1: train a small classifier with Ray Train (PyTorch DDP on CPU workers).

The dataset is generated (two interleaved spirals, a problem a linear model cannot solve), so the
example needs no download. Rank 0 writes one checkpoint per epoch under
``<output_dir>/checkpoints``: ``model.pt`` plus ``meta.json`` holding the epoch, which is how the
inference step finds the newest one. The held-out split goes to ``<output_dir>/data/heldout.npz``
for the next step.

Parameters (``--kwargs key=value``): ``output_dir`` (given by the pipeline), ``epochs``,
``num_workers``, ``samples``, ``seed``, ``lr``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, prepare_data_loader, prepare_model
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def parse_kwargs() -> dict[str, str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kwargs", nargs="*", default=[], help="key=value parameters")
    args = parser.parse_args()
    # Split at the first '=' only: values may contain '=' themselves.
    return dict(item.split("=", 1) for item in args.kwargs)


def make_spirals(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved noisy spirals: ``samples`` points in 2-D, labels 0 and 1."""
    rng = np.random.default_rng(seed)
    n = samples // 2
    theta = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi
    arm = np.stack([theta * np.cos(theta), theta * np.sin(theta)], axis=1) / (3 * np.pi)
    x = np.concatenate([arm, -arm]) + rng.normal(0, 0.03, (2 * n, 2))
    y = np.concatenate([np.zeros(n), np.ones(n)]).astype(np.int64)
    order = rng.permutation(2 * n)
    return x[order].astype(np.float32), y[order]


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)
    )


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker; gradients are averaged by DDP (gloo on CPU)."""
    torch.manual_seed(config["seed"])
    torch.set_num_threads(1)  # one CPU per worker: do not oversubscribe
    data = np.load(config["train_file"])
    dataset = TensorDataset(torch.from_numpy(data["x"]), torch.from_numpy(data["y"]))
    loader = prepare_data_loader(DataLoader(dataset, batch_size=64, shuffle=True))
    model = prepare_model(build_model())
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loss_fn = nn.CrossEntropyLoss()
    rank = ray.train.get_context().get_world_rank()
    for epoch in range(1, config["epochs"] + 1):
        if ray.train.get_context().get_world_size() > 1:
            loader.sampler.set_epoch(epoch)  # type: ignore[union-attr]
        total, correct, loss_sum = 0, 0, 0.0
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            out = model(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss) * len(yb)
            correct += int((out.argmax(1) == yb).sum())
            total += len(yb)
        metrics = {"epoch": epoch, "loss": loss_sum / total, "train_accuracy": correct / total}
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                # The unwrapped module's weights: loadable without DDP.
                inner = model.module if hasattr(model, "module") else model
                torch.save(inner.state_dict(), Path(tmp) / "model.pt")
                (Path(tmp) / "meta.json").write_text(json.dumps(metrics))
                checkpoint = Checkpoint.from_directory(tmp)
            ray.train.report(
                metrics, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint_{epoch:05d}"
            )


def main() -> None:
    params = parse_kwargs()
    output_dir = Path(params["output_dir"])
    epochs = int(params.get("epochs", "8"))
    num_workers = int(params.get("num_workers", "2"))
    samples = int(params.get("samples", "4000"))
    seed = int(params.get("seed", "7"))
    (output_dir / "data").mkdir(parents=True, exist_ok=True)

    x, y = make_spirals(samples, seed)
    cut = int(len(x) * 0.8)
    train_file = output_dir / "data" / "train.npz"
    np.savez(train_file, x=x[:cut], y=y[:cut])
    np.savez(output_dir / "data" / "heldout.npz", x=x[cut:], y=y[cut:])

    ray.init()
    started = time.monotonic()
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "epochs": epochs,
            "seed": seed,
            "lr": float(params.get("lr", "0.01")),
            "train_file": str(train_file),
        },
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=False),
        run_config=RunConfig(
            name="checkpoints",
            storage_path=str(output_dir),
            checkpoint_config=CheckpointConfig(num_to_keep=3),
        ),
    )
    result = trainer.fit()
    print(
        f"trained {epochs} epochs on {num_workers} workers in {time.monotonic() - started:.1f}s: "
        f"{result.metrics}; newest checkpoint {getattr(result.checkpoint, 'path', None)}"
    )


if __name__ == "__main__":
    main()
