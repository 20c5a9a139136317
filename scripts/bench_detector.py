"""Detector and recognition latency on the same working images, ratios within one run.

Per detector: model call + pre/post-processing (p50, p95), the model call alone, and the
ratio of every model to the first one (the baseline) measured in the same run. Then naming:
the time to sign 100 product crops (embedder in batches, colour and shape) and rank them
against the catalog's packshots, as the detect stage does.

    python scripts/bench_detector.py [--models product-light product-heavy] [--threads 2]
                                     [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from pipeline.core.letterbox import letterbox
from pipeline.detect.detector import Detector
from pipeline.detect.embedder import Embedder
from pipeline.detect.recognizer import (
    View,
    crop_signatures,
    crop_views,
    gallery_from_packshots,
    rank_crops,
    weights_from,
)
from pipeline.eval.synthetic import prepare
from pipeline.image import PreparedPhoto
from pipeline.settings import get_settings
from pipeline.synth.enrol import catalog_images, catalog_sizes
from pipeline.synth.world import make_photo

CROPS = 100


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def bench_detectors(images: list[np.ndarray], names: list[str], threads: int, repeats: int
                    ) -> list[dict[str, object]]:
    root = get_settings().models.root
    out: list[dict[str, object]] = []
    for name in names:
        det = Detector.from_dir(root, name, intra_op_threads=threads)
        g = det.geometry()
        for img in images[:2]:  # warm-up
            det.detect(img)
        total, model_ms = [], []
        for _ in range(repeats):
            for img in images:
                t0 = time.perf_counter()
                det.detect(img)
                total.append((time.perf_counter() - t0) * 1000)
                tensor = det.to_tensor(letterbox(img, target_wh=g.size_wh)[0])
                sess = det.session.get()
                t1 = time.perf_counter()
                sess.run(None, {g.name: tensor})
                model_ms.append((time.perf_counter() - t1) * 1000)
        out.append({"model": det.ref, "input": list(g.size_wh),
                    "p50_ms": round(statistics.median(total), 1),
                    "p95_ms": round(_p95(total), 1),
                    "model_call_p50_ms": round(statistics.median(model_ms), 1)})
    base = float(out[0]["p50_ms"])  # type: ignore[arg-type]
    for row in out:
        row["ratio_to_first"] = round(float(row["p50_ms"]) / base, 2)  # type: ignore[arg-type]
    return out


def bench_naming(photos: list[PreparedPhoto], detector: str, threads: int, repeats: int
                 ) -> dict[str, object]:
    s = get_settings()
    det = Detector.from_dir(s.models.root, detector, intra_op_threads=threads)
    crops: list[View] = []
    boxes = []
    for p in photos:
        found = det.detect(p.normalized).xyxy
        crops += crop_views(p.normalized, p.photographed, found)
        boxes.append(found)
    crops = (crops * (CROPS // max(1, len(crops)) + 1))[:CROPS]
    xyxy = np.concatenate(boxes * (CROPS // max(1, len(boxes)) + 1))[:CROPS]
    embedder = Embedder.from_dir(s.models.root, s.recognition.embedder,
                                 intra_op_threads=threads)
    gallery = gallery_from_packshots(embedder, catalog_images(), catalog_sizes())
    weights = weights_from(s.recognition)
    crop_signatures(embedder, crops[:8])  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rank_crops(embedder, crops, gallery, weights, s.recognition.candidates, boxes=xyxy)
        times.append((time.perf_counter() - t0) * 1000)
    return {"embedder": embedder.ref, "crops": len(crops), "gallery": len(gallery),
            "p50_ms": round(statistics.median(times), 1), "p95_ms": round(_p95(times), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["product-light", "product-heavy"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    long_side = get_settings().ingest.working_long_side
    photos = [prepare(make_photo(args.seed, i, None, 4000).jpeg) for i in range(args.photos)]
    images = [p.normalized for p in photos]
    detectors = bench_detectors(images, args.models, args.threads, args.repeats)
    naming = bench_naming(photos, args.models[0], args.threads, args.repeats)
    if args.json:
        print(json.dumps({"threads": args.threads, "images": len(images),
                          "detectors": detectors, "naming": naming}))
        return
    print(f"{len(images)} working images as the detect stage gets them (long side "
          f"{long_side}, normalized), {args.threads} ORT threads, {args.repeats} repeats")
    for d in detectors:
        print(f"{d['model']:20} input {d['input'][0]}x{d['input'][1]}  "  # type: ignore[index]
              f"total p50 {d['p50_ms']:6.1f} ms  p95 {d['p95_ms']:6.1f} ms  "
              f"model call p50 {d['model_call_p50_ms']:6.1f} ms  x{d['ratio_to_first']} of "
              f"{args.models[0]}")
    print(f"naming {naming['crops']} crops against {naming['gallery']} packshots "
          f"({naming['embedder']}): p50 {naming['p50_ms']} ms, p95 {naming['p95_ms']} ms")


if __name__ == "__main__":
    main()
