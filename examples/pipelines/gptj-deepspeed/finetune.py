"""Fine-tune a causal language model (GPT-J 6B by default) with Ray Train and DeepSpeed ZeRO-3.

GPU recipe, not run in this repository's tests (see README.md). Every worker trains on its
shard of a small public text dataset; DeepSpeed shards parameters, gradients and optimizer state
across the GPUs and offloads the optimizer to CPU memory. Each epoch ends with a checkpoint under
``<output_dir>/checkpoints/checkpoint_<epoch>`` holding the Hugging Face model files plus
``meta.json`` with the epoch: the generation step picks the highest epoch.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer


def parse_kwargs() -> dict[str, str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kwargs", nargs="*", default=[])
    return dict(item.split("=", 1) for item in parser.parse_args().kwargs)


def deepspeed_config(batch_per_gpu: int) -> dict[str, Any]:
    return {
        "train_micro_batch_size_per_gpu": batch_per_gpu,
        "gradient_accumulation_steps": 1,
        "bf16": {"enabled": True},
        "optimizer": {"type": "AdamW", "params": {"lr": 5e-6, "weight_decay": 0.0}},
        "zero_optimization": {
            "stage": 3,
            "offload_optimizer": {"device": "cpu", "pin_memory": True},
            "overlap_comm": True,
            "contiguous_gradients": True,
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "gradient_clipping": 1.0,
    }


def train_loop(config: dict[str, Any]) -> None:
    import deepspeed
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    tokenizer = AutoTokenizer.from_pretrained(config["model"])
    tokenizer.pad_token = tokenizer.eos_token
    text = load_dataset("karpathy/tiny_shakespeare", split="train", trust_remote_code=True)
    lines = [line for line in text[0]["text"].split("\n\n") if line.strip()]
    shard = lines[rank::world]
    model = AutoModelForCausalLM.from_pretrained(config["model"], torch_dtype=torch.bfloat16)
    model.gradient_checkpointing_enable()
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=config["deepspeed"]
    )
    batch = config["batch_per_gpu"]
    for epoch in range(1, config["epochs"] + 1):
        steps, loss_sum = 0, 0.0
        for start in range(0, len(shard), batch):
            if steps >= config["max_steps"]:
                break
            enc = tokenizer(
                shard[start : start + batch], return_tensors="pt", padding=True,
                truncation=True, max_length=256,
            ).to(engine.device)
            out = engine(**enc, labels=enc["input_ids"])
            engine.backward(out.loss)
            engine.step()
            loss_sum += float(out.loss)
            steps += 1
        metrics = {"epoch": epoch, "loss": loss_sum / max(steps, 1), "steps": steps}
        with tempfile.TemporaryDirectory() as tmp:
            # ZeRO-3 holds a shard of the weights on each rank: gather them to rank 0 to save.
            state = engine._zero3_consolidated_16bit_state_dict()
            checkpoint = None
            if rank == 0:
                engine.module.save_pretrained(tmp, state_dict=state)
                tokenizer.save_pretrained(tmp)
                (Path(tmp) / "meta.json").write_text(json.dumps(metrics))
                checkpoint = Checkpoint.from_directory(tmp)
            ray.train.report(
                metrics, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint_{epoch:05d}"
            )


def main() -> None:
    params = parse_kwargs()
    output_dir = Path(params["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    batch = int(params.get("batch_per_gpu", "4"))
    ray.init()
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "model": params.get("model", "EleutherAI/gpt-j-6B"),
            "epochs": int(params.get("epochs", "1")),
            "max_steps": int(params.get("max_steps", "200")),
            "batch_per_gpu": batch,
            "deepspeed": deepspeed_config(batch),
        },
        scaling_config=ScalingConfig(
            num_workers=int(params.get("num_workers", "5")),
            use_gpu=True,
            resources_per_worker={"GPU": 1, "CPU": 8},
        ),
        run_config=RunConfig(name="checkpoints", storage_path=str(output_dir)),
    )
    result = trainer.fit()
    print(f"fine-tuned: {result.metrics}; checkpoint {getattr(result.checkpoint, 'path', None)}")


if __name__ == "__main__":
    main()
