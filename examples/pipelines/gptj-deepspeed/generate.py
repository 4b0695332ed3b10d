"""Generate text with the newest fine-tuned checkpoint (highest epoch in its ``meta.json``).

GPU recipe, not run in this repository's tests. Writes ``generations.json`` to ``output_dir``
and, when ``data_bucket`` is given, to ``s3://<data_bucket>/<run_id>/<step>/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def parse_kwargs() -> dict[str, str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kwargs", nargs="*", default=[])
    return dict(item.split("=", 1) for item in parser.parse_args().kwargs)


def newest_checkpoint(root: Path) -> Path:
    found = [
        (int(json.loads(meta.read_text())["epoch"]), meta.parent)
        for meta in root.rglob("meta.json")
        if (meta.parent / "config.json").is_file()
    ]
    if not found:
        raise SystemExit(f"no checkpoint (meta.json beside config.json) under {root}")
    return max(found, key=lambda item: item[0])[1]


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    params = parse_kwargs()
    checkpoint = newest_checkpoint(Path(params["input_dir"]) / "checkpoints")
    output_dir = Path(params["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(
        checkpoint, torch_dtype=torch.float16, device_map="auto"
    )
    prompts = params.get("prompt", "Romeo and Juliet").split("|")
    generations = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").to(model.device)
        out = model.generate(**ids, max_new_tokens=64, do_sample=True, temperature=0.9)
        generations.append({"prompt": prompt, "text": tokenizer.decode(out[0])})
    result = output_dir / "generations.json"
    result.write_text(json.dumps({"checkpoint": str(checkpoint), "generations": generations}))
    print(json.dumps(generations, indent=2))
    if params.get("data_bucket"):
        import boto3

        key = f"{params.get('run_id', 'run')}/{output_dir.name}/generations.json"
        boto3.client("s3").upload_file(str(result), params["data_bucket"], key)
        print(f"uploaded s3://{params['data_bucket']}/{key}")


if __name__ == "__main__":
    main()
