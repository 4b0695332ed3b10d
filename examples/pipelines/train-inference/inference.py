"""Step 2: predict the held-out data with the newest checkpoint of the training step.

"Newest" is decided by the epoch each checkpoint records in its ``meta.json`` (checkpoint
order), never by the order a directory listing or glob happens to return. Writes
``predictions.csv`` and ``metrics.json`` to ``<output_dir>`` and, when ``data_bucket`` is given,
to ``s3://<data_bucket>/<run_id>/<step>/`` (the standard AWS chain gives the credentials;
``AWS_ENDPOINT_URL`` points it at an S3-compatible server).

Parameters (``--kwargs key=value``): ``input_dir``, ``output_dir``, ``data_bucket``, ``run_id``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn


def parse_kwargs() -> dict[str, str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kwargs", nargs="*", default=[], help="key=value parameters")
    args = parser.parse_args()
    return dict(item.split("=", 1) for item in args.kwargs)


def build_model() -> nn.Module:
    # Same architecture as train.py (each step is a self-contained script).
    return nn.Sequential(
        nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)
    )


def newest_checkpoint(root: Path) -> tuple[Path, dict[str, float]]:
    """The checkpoint directory with the highest recorded epoch under ``root``."""
    found = []
    for meta in root.rglob("meta.json"):
        if (meta.parent / "model.pt").is_file():
            info = json.loads(meta.read_text())
            found.append((int(info["epoch"]), meta.parent, info))
    if not found:
        raise SystemExit(f"no checkpoint (meta.json beside model.pt) under {root}")
    epoch, path, info = max(found, key=lambda item: item[0])
    return path, info


def main() -> None:
    params = parse_kwargs()
    input_dir = Path(params["input_dir"])
    output_dir = Path(params["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)

    checkpoint, info = newest_checkpoint(input_dir / "checkpoints")
    model = build_model()
    model.load_state_dict(torch.load(checkpoint / "model.pt", weights_only=True))
    model.eval()

    data = np.load(input_dir / "data" / "heldout.npz")
    with torch.no_grad():
        predicted = model(torch.from_numpy(data["x"])).argmax(1).numpy()
    labels = data["y"]
    accuracy = float((predicted == labels).mean())
    # A trivial baseline: always answer the most frequent class.
    baseline = float(max(np.mean(labels == 0), np.mean(labels == 1)))

    lines = ["x0,x1,label,predicted"] + [
        f"{a:.6f},{b:.6f},{int(t)},{int(p)}"
        for (a, b), t, p in zip(data["x"], labels, predicted, strict=True)
    ]
    (output_dir / "predictions.csv").write_text("\n".join(lines) + "\n")
    metrics = {
        "accuracy": accuracy,
        "baseline_accuracy": baseline,
        "heldout_samples": int(len(labels)),
        "checkpoint": str(checkpoint),
        "checkpoint_epoch": int(info["epoch"]),
    }
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"accuracy {accuracy:.3f} (baseline {baseline:.3f}) with {checkpoint}")

    bucket = params.get("data_bucket", "")
    if bucket:
        import boto3

        prefix = f"{params.get('run_id', 'run')}/{output_dir.name}"
        s3 = boto3.client("s3")
        for name in ("predictions.csv", "metrics.json"):
            s3.upload_file(str(output_dir / name), bucket, f"{prefix}/{name}")
        print(f"uploaded predictions.csv and metrics.json to s3://{bucket}/{prefix}/")


if __name__ == "__main__":
    main()
