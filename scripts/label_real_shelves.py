"""Box the products of real shelf photos with a public dense-shelf detector, for local
evaluation with ``shelf eval-real --format yolo``.

The detector is a YOLOv8 exported to TFLite by Ultralytics (one class, output ``(1, 5, N)``,
boxes normalized or in input pixels), run with LiteRT (``pip install ai-edge-litert``; it is
not a dependency of the pipeline). Photos are split by their sorted order into ``tune``
(every fourth, for choosing checkpoints and thresholds), ``val`` (the next, for figures) and
``rest``, each a YOLO folder (``images/``, hard links, and ``labels/``).

These boxes are another model's output, not human labels: they stand in for labels where no
labelled dense-shelf set may be kept. Nothing made with this script is trained on or shipped.

    python scripts/label_real_shelves.py --photos DIR --model best_int8.tflite --out DIR
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.detections import nms
from pipeline.core.letterbox import letterbox, unletterbox_boxes

SIZE = 640  # the detector's square input
CONF, IOU, MAX_BOXES = 0.25, 0.7, 1000  # Ultralytics' prediction defaults, 1,000 boxes


def box_photo(run: Callable[[np.ndarray], np.ndarray], image: np.ndarray) -> np.ndarray:
    """``(N, 4)`` x1 y1 x2 y2 in the photo's stored pixels."""
    canvas, info = letterbox(image, target_wh=(SIZE, SIZE))  # Ultralytics' grey 114
    x = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32)[None] / 255.0
    y = run(x)
    y = y[0] if y.shape[1] == 5 else y[0].T
    cx, cy, bw, bh, score = y
    if cx.max() <= 2.0:  # normalized boxes
        cx, cy, bw, bh = cx * SIZE, cy * SIZE, bw * SIZE, bh * SIZE
    keep = score >= CONF
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)[keep]
    order = nms(xyxy=boxes, scores=score[keep], iou_threshold=IOU)[:MAX_BOXES]
    return unletterbox_boxes(boxes[order], info)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, required=True, help="folder of shelf JPEGs")
    ap.add_argument("--model", type=Path, required=True, help="a YOLOv8 TFLite export")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(args.model), num_threads=args.threads)
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]

    def run(x: np.ndarray) -> np.ndarray:
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return np.asarray(interp.get_tensor(outp["index"]))

    photos = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    readable = [(p, img) for p in photos if (img := cv2.imread(str(p), cv2.IMREAD_COLOR
                                                             | cv2.IMREAD_IGNORE_ORIENTATION))
                is not None]
    counts: dict[str, list[int]] = {}
    for k, (path, image) in enumerate(readable):
        split = ("tune", "val", "rest", "rest")[k % 4]
        h, w = image.shape[:2]
        boxes = box_photo(run, image)
        dest = args.out / split
        (dest / "images").mkdir(parents=True, exist_ok=True)
        (dest / "labels").mkdir(exist_ok=True)
        link = dest / "images" / path.name
        if not link.exists():
            os.link(path, link)
        rows = [f"0 {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} "
                f"{(y2 - y1) / h:.6f}" for x1, y1, x2, y2 in boxes]
        (dest / "labels" / f"{path.stem}.txt").write_text("\n".join(rows) + "\n")
        counts.setdefault(split, []).append(len(boxes))
    for split, n in sorted(counts.items()):
        print(f"{split}: {len(n)} photos, {sum(n)} boxes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
