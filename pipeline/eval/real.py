"""``shelf eval-real``: a detector on real labelled photos, class-agnostic.

Each photo is prepared as the detect stage receives it (working size; lighting normalized
unless the model's card asks for the photo's own);
the detector runs once with a low threshold so mAP@0.5 sees the whole precision-recall curve,
and recall and precision are read at the model's own threshold. A photo that does not
decode is left out, named on stderr and counted in ``skipped``, rather than ending the run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.core.detections import Detections
from pipeline.core.metrics import Truth, evaluate_detections
from pipeline.datasets import Format, load_dataset
from pipeline.detect.detector import Detector
from pipeline.errors import DatasetError
from pipeline.eval import read_photo

CURVE_THRESHOLD = 0.05  # lowest score kept for the precision-recall curve


@dataclass(frozen=True)
class RealReport:
    model: str
    images: int
    truths: int
    map50: float
    recall50: float
    precision: float
    threshold: float
    p50_ms: float
    p95_ms: float
    skipped: int = 0

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    def format(self) -> str:
        return (f"{self.model}: {self.images} images, {self.truths} products\n"
                f"  mAP@0.5 {self.map50:.3f}  recall@0.5 {self.recall50:.3f}  "
                f"precision {self.precision:.3f} (score >= {self.threshold:.2f})\n"
                f"  latency p50 {self.p50_ms:.1f} ms  p95 {self.p95_ms:.1f} ms "
                "(model + pre/post on the working image)"
                + (f"\n  {self.skipped} unreadable photos left out" if self.skipped else ""))


def evaluate_real(detector: Detector, data: Path, fmt: Format = "auto", *,
                  long_side: int, jpeg_quality: int, limit: int | None = None) -> RealReport:
    items = load_dataset(data, fmt)[:limit]
    thr = detector.card.postprocess.score_threshold
    curve: list[Detections] = []
    at_thr: list[Detections] = []
    truths: list[Truth] = []
    latency: list[float] = []
    skipped = 0
    for item in items:
        # Labels are on the stored pixels (no EXIF rotation) unless they say otherwise.
        photo = read_photo(item.path, "eval-real", long_side=long_side,
                           jpeg_quality=jpeg_quality, orientation=None if item.upright else 1,
                           normalize=detector.files.normalized_lighting)
        if photo is None:
            skipped += 1
            continue
        image, scale = photo
        t0 = time.perf_counter()
        found = detector.detect(image, score_threshold=min(CURVE_THRESHOLD, thr))
        latency.append((time.perf_counter() - t0) * 1000)
        agnostic = Detections(found.xyxy, found.scores, np.zeros(len(found), np.int64))
        curve.append(agnostic)
        at_thr.append(agnostic.take(np.nonzero(agnostic.scores >= thr)[0]))
        truths.append(Truth(item.boxes * scale, np.zeros(len(item.boxes), np.int64)))
    if not curve:
        raise DatasetError(f"{data}: none of its {len(items)} labelled photos decodes")
    full = evaluate_detections(curve, truths)
    firm = evaluate_detections(at_thr, truths)
    return RealReport(detector.ref, len(items), full.truths, full.map50, firm.recall50,
                      firm.precision50, thr, float(np.percentile(latency, 50)),
                      float(np.percentile(latency, 95)), skipped)
