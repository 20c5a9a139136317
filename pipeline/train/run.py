"""Train a default detector from its recipe and export it to ``models/<name>/<version>/``.

Usage: ``python -m pipeline.train.run --model gondola-light [--steps N] [--threads T]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.synth.catalog import LABELS
from pipeline.train.data import make_batch
from pipeline.train.loss import focal_loss, giou_loss
from pipeline.train.net import STRIDE, ExportWrapper, ShelfNet
from pipeline.train.recipe import RECIPES, Recipe


def train(recipe: Recipe, steps: int, log_every: int = 50) -> tuple[ShelfNet, dict[str, object]]:
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    net = ShelfNet(len(LABELS), recipe.widths, recipe.neck)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=1e-4)
    warmup = min(200, steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return recipe.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return recipe.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    start = time.monotonic()
    images_seen = 0
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        imgs, hm, dist, w = (torch.from_numpy(a) for a in make_batch(rng, recipe, len(LABELS)))
        net.train()
        logits, pred = net(imgs)
        l_hm = focal_loss(logits, hm)
        l_box = giou_loss(pred, dist, w)
        loss = l_hm + 2.0 * l_box
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        images_seen += imgs.shape[0]
        if step % log_every == 0 or step == steps - 1:
            el = time.monotonic() - start
            print(f"[{recipe.name}] step {step}/{steps} loss {loss.item():.3f} "
                  f"hm {l_hm.item():.3f} box {l_box.item():.3f} lr {lr_at(step):.2e} "
                  f"{images_seen / el:.1f} img/s {el / 60:.1f} min", flush=True)
    info: dict[str, object] = {"steps": steps, "images_seen": images_seen,
            "minutes": round((time.monotonic() - start) / 60, 1),
            "parameters": sum(p.numel() for p in net.parameters())}
    return net, info


def export(net: ShelfNet, recipe: Recipe, out_dir: Path, info: dict[str, object],
           command: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    net.eval()
    wrapper = ExportWrapper(net)
    dummy = torch.zeros(1, 3, recipe.input_size, recipe.input_size)
    onnx_path = out_dir / "model.onnx"
    torch.onnx.export(wrapper, (dummy,), str(onnx_path), input_names=["images"],
                      output_names=["scores", "boxes"], opset_version=17, dynamo=False)
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    (out_dir / "labels.json").write_text(json.dumps(dict(enumerate(LABELS)), indent=1) + "\n")
    card = {
        "name": recipe.name,
        "version": recipe.version,
        "format": "centernet",
        "input": {"name": "images", "size": [recipe.input_size, recipe.input_size],
                  "layout": "NCHW", "channels": "RGB", "scale": 1 / 255, "pad_value": 114},
        "output": {"scores": "scores [1, C, H/4, W/4] sigmoid per class",
                   "boxes": "boxes [1, 4, H/4, W/4] x1 y1 x2 y2 in input pixels",
                   "stride": STRIDE},
        "postprocess": {"score_threshold": 0.25, "iou_threshold": 0.6, "max_detections": 300},
        "tiling": None,
        "training": {"command": command, "seed": recipe.seed, "recipe": recipe.to_json(),
                     "data": "pipeline.synth.world.make_sample: scenes rendered on the fly at "
                             "0.85-1.15x the input size, JPEG q60-95 on half, lighting "
                             "normalized (gray world + CLAHE) as the pipeline does, random "
                             "square crops; display mix as in recipe.displays",
                     **info},
        "metrics": {},
        "sha256": sha,
        "size_bytes": onnx_path.stat().st_size,
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    return onnx_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, choices=sorted(RECIPES))
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's step count")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("models"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.model]
    steps = args.steps or recipe.steps
    net, info = train(recipe, steps)
    cmd = "python -m pipeline.train.run " + " ".join(argv if argv is not None else sys.argv[1:])
    path = export(net, recipe, args.out / recipe.name / recipe.version, info, cmd)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
