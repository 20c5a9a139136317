"""``shelf eval``: detectors measured on unseen generated photos, per display kind."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pipeline.core.detections import Detections
from pipeline.core.metrics import DetectionScores, Truth, evaluate_detections
from pipeline.core.orientation import apply_orientation
from pipeline.detect.detector import Detector
from pipeline.image import WORKING_LONG_SIDE, decode_reduced, read_orientation
from pipeline.synth.planogram import DISPLAYS
from pipeline.synth.world import make_photo


@dataclass(frozen=True)
class KindReport:
    display: str
    scores: DetectionScores
    latency_ms_median: float
    latency_ms_p95: float

    def to_json(self) -> dict[str, object]:
        return {"display": self.display, **asdict(self.scores),
                "latency_ms_median": self.latency_ms_median, "latency_ms_p95": self.latency_ms_p95}


def upright_from_jpeg(data: bytes, min_long_side: int = WORKING_LONG_SIDE
                      ) -> tuple[npt.NDArray[np.uint8], float]:
    """Decode stored pixels at the smallest DCT scale keeping ``min_long_side``, then apply
    their EXIF orientation, as ingest does. Returns the image and its scale from full size."""
    arr, scale = decode_reduced(data, min_long_side)
    return apply_orientation(arr, read_orientation(data)), scale


def _truth(objects: list[dict[str, object]], labels: tuple[str, ...]) -> Truth:
    index = {sku: i for i, sku in enumerate(labels)}
    boxes = [o["box"] for o in objects if o["sku"] in index]
    cls = [index[str(o["sku"])] for o in objects if o["sku"] in index]
    return Truth(np.array(boxes, np.float32).reshape(-1, 4), np.array(cls, np.int64))


def evaluate(detectors: list[Detector], *, count: int, seed: int, max_long_side: int,
             normalized: bool = True, progress: bool = True) -> dict[str, list[KindReport]]:
    """Run every detector on the same ``count`` photos of each display kind, prepared as the
    pipeline prepares them (upright, working size, lighting normalized) unless
    ``normalized`` is false (upright only)."""
    results: dict[str, dict[str, tuple[list[Detections], list[Truth], list[float]]]] = {
        d.ref: {k: ([], [], []) for k in DISPLAYS} for d in detectors}
    for k_i, kind in enumerate(DISPLAYS):
        for i in range(count):
            photo = make_photo(seed, k_i * 1_000_000 + i, kind, max_long_side)
            image, scale = (working_image(photo.jpeg, WORKING_LONG_SIDE) if normalized
                            else upright_from_jpeg(photo.jpeg))
            objects = photo.truth["objects"]
            assert isinstance(objects, list)
            objects = [{**o, "box": [v * scale for v in o["box"]]} for o in objects]
            for det in detectors:
                t0 = time.perf_counter()
                found = det.detect(image)
                elapsed = (time.perf_counter() - t0) * 1000
                dets, truths, lat = results[det.ref][kind]
                dets.append(found)
                truths.append(_truth(objects, det.labels))
                lat.append(elapsed)
            if progress and (i + 1) % 20 == 0:
                print(f"  {kind}: {i + 1}/{count}", flush=True)
    out: dict[str, list[KindReport]] = {}
    for ref, per_kind in results.items():
        out[ref] = [KindReport(kind, evaluate_detections(d, t), float(np.median(lat)),
                               float(np.percentile(lat, 95)))
                    for kind, (d, t, lat) in per_kind.items()]
    return out


def format_report(ref: str, reports: list[KindReport]) -> str:
    lines = [f"{ref}",
             f"  {'display':8} {'images':>6} {'mAP@.5':>7} {'mAP@.5:.95':>10} {'recall':>7} "
             f"{'precision':>9} {'p50 ms':>7} {'p95 ms':>7}"]
    for r in reports:
        s = r.scores
        lines.append(f"  {r.display:8} {s.images:6d} {s.map50:7.3f} {s.map50_95:10.3f} "
                     f"{s.recall50:7.3f} {s.precision50:9.3f} {r.latency_ms_median:7.1f} "
                     f"{r.latency_ms_p95:7.1f}")
    return "\n".join(lines)


def write_card_metrics(model_dir: Path, reports: list[KindReport], *, seed: int, count: int,
                       threads: int, command: str) -> None:
    card_path = model_dir / "card.json"
    card = json.loads(card_path.read_text())
    card["metrics"] = {
        "command": command, "eval_seed": seed, "scenes_per_display": count,
        "ort_threads": threads, "per_display": [r.to_json() for r in reports],
    }
    card_path.write_text(json.dumps(card, indent=1) + "\n")


def working_image(data: bytes, long_side: int) -> tuple[npt.NDArray[np.uint8], float]:
    """What the detect stage sees: upright, at the working size, lighting normalized."""
    from pipeline.core.lighting import normalize_lighting, resize_long_side

    image, scale = upright_from_jpeg(data, long_side)
    small = resize_long_side(image, long_side)
    return normalize_lighting(small), scale * small.shape[1] / image.shape[1]
