"""Detector latency: model call + pre/post-processing, per model, on the same working images.

Prints medians and p95 in milliseconds, each model's split into preprocessing (letterbox and
tensor), the ONNX Runtime call and postprocessing (decode, NMS, mapping back), and the ratio of
every model to the first one (the baseline) measured in the same run.

    python scripts/bench_detector.py [--models gondola-light endcap-heavy] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from pipeline.core.letterbox import letterbox
from pipeline.detect.detector import Detector
from pipeline.evaluation import working_image
from pipeline.image import WORKING_LONG_SIDE
from pipeline.settings import get_settings
from pipeline.synth.world import make_photo


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["gondola-light", "endcap-heavy"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=4242)
    args = ap.parse_args()

    root = get_settings().models.root
    images = [working_image(make_photo(args.seed, i, None, 4000).jpeg, WORKING_LONG_SIDE)[0]
              for i in range(args.photos)]
    print(f"{len(images)} working images as the detect stage gets them (long side "
          f"{max(images[0].shape)}, normalized), {args.threads} ORT threads, "
          f"{args.repeats} repeats")
    baseline = None
    for name in args.models:
        det = Detector.from_dir(root, name, intra_op_threads=args.threads)
        g = det.geometry()
        for img in images[:2]:  # warm-up
            det.detect(img)
        total, model_ms = [], []
        for _ in range(args.repeats):
            for img in images:
                t0 = time.perf_counter()
                det.detect(img)
                total.append((time.perf_counter() - t0) * 1000)
                boxed, _ = letterbox(img, target_wh=g.size_wh)
                tensor = det.to_tensor(boxed)
                sess = det.session.get()
                t1 = time.perf_counter()
                sess.run(None, {g.name: tensor})
                model_ms.append((time.perf_counter() - t1) * 1000)
        med = statistics.median(total)
        baseline = baseline or med
        print(f"{det.ref:20} input {g.size_wh[0]}x{g.size_wh[1]}"
              f" tiling={det.card.tiling is not None}  total p50 {med:6.1f} ms"
              f"  p95 {_p95(total):6.1f} ms  model call p50 {statistics.median(model_ms):6.1f} ms"
              f"  x{med / baseline:.2f} of {args.models[0]}")


if __name__ == "__main__":
    main()
