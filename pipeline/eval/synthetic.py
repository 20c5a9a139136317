"""``shelf eval``: detectors measured on unseen generated photos, per display kind."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.detections import Detections
from pipeline.core.metrics import DetectionScores, Truth, evaluate_detections
from pipeline.core.recognition import Gallery, Weights, name_crop
from pipeline.core.shelf import Detected
from pipeline.detect.detector import Detector
from pipeline.detect.embedder import Embedder
from pipeline.detect.recognizer import crop_views, gallery_from_packshots, rank_crops
from pipeline.image import PreparedPhoto, decode_upright, prepare_photo
from pipeline.synth.catalog import LABELS, UNKNOWN_SKU
from pipeline.synth.enrol import catalog_images, catalog_sizes
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


def _truth(objects: list[dict[str, object]]) -> Truth:
    index = {sku: i for i, sku in enumerate(LABELS)}
    boxes = [o["box"] for o in objects if o["sku"] in index]
    cls = [index[str(o["sku"])] for o in objects if o["sku"] in index]
    return Truth(np.array(boxes, np.float32).reshape(-1, 4), np.array(cls, np.int64))


class SyntheticNamer:
    """Names a detector's boxes with the synthetic world's SKU ids, as the pipeline would:
    a product detector's boxes through recognition against the enrolled packshots (the
    photo's planogram first), an SKU detector's through its labels."""

    def __init__(self, embedder: Embedder | None, weights: Weights, candidates: int) -> None:
        self.embedder = embedder
        self.weights = weights
        self.k = candidates
        self.gallery: Gallery | None = None
        if embedder is not None:
            self.gallery = gallery_from_packshots(embedder, catalog_images(), catalog_sizes())

    def name(self, det: Detector, photo: PreparedPhoto, found: Detections, planned: set[str]
             ) -> Detections:
        """``found`` on ``photo``, named from its normalized and photographed images, as the
        detect stage names products."""
        index = {sku: i for i, sku in enumerate(LABELS)}
        ids = [index.get(d.sku, index[UNKNOWN_SKU])
               for d in self.detected(det, photo, found, planned, margin=0.0)]
        return Detections(found.xyxy, found.scores, np.array(ids, np.int64).reshape(-1))

    def detected(self, det: Detector, photo: PreparedPhoto, found: Detections,
                 planned: set[str], *, margin: float, floor: float | None = None
                 ) -> list[Detected]:
        """``found`` as the comply stage reads it: each box with its SKU and the SKUs it is
        nearly as like (within ``margin``; for an unknown one, above ``floor``)."""
        boxes = [(float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in found.xyxy]
        if not det.files.finds_products:
            return [Detected(box=b, sku=det.labels[int(c)], score=float(s))
                    for b, s, c in zip(boxes, found.scores, found.class_ids, strict=True)]
        if self.embedder is None or self.gallery is None:
            raise ValueError(f"{det.ref} finds products: naming them needs an embedder")
        ranked = rank_crops(self.embedder,
                            crop_views(photo.normalized, photo.photographed, found.xyxy),
                            self.gallery, self.weights, self.k, boxes=found.xyxy)
        out = []
        for b, s, cands in zip(boxes, found.scores, ranked, strict=True):
            sku, alternatives = name_crop(cands, planned=planned, margin=margin, floor=floor,
                                          threshold=self.weights.threshold)
            out.append(Detected(box=b, sku=sku, score=float(s), alternatives=alternatives))
        return out


def evaluate(detectors: list[Detector], *, count: int, seed: int, max_long_side: int,
             namer: SyntheticNamer, normalized: bool = True, progress: bool = True
             ) -> dict[str, list[KindReport]]:
    """Run every detector on the same ``count`` photos of each display kind, prepared as the
    pipeline prepares them (upright, working size, lighting normalized) unless
    ``normalized`` is false (upright only); boxes named as ``namer`` does."""
    results: dict[str, dict[str, tuple[list[Detections], list[Truth], list[float]]]] = {
        d.ref: {k: ([], [], []) for k in DISPLAYS} for d in detectors}
    for k_i, kind in enumerate(DISPLAYS):
        for i in range(count):
            photo = make_photo(seed, k_i * 1_000_000 + i, kind, max_long_side)
            if normalized:
                prepared = prepare(photo.jpeg)
                image, scale = prepared.normalized, prepared.scale
            else:
                image, scale = decode_upright(photo.jpeg, _long_side(), resize=False)
                prepared = PreparedPhoto(image, image, scale)
            objects = photo.truth["objects"]
            assert isinstance(objects, list)
            objects = [{**o, "box": [v * scale for v in o["box"]]} for o in objects]
            plan = photo.truth["planogram"]
            assert isinstance(plan, dict)
            planned = {p["sku"] for shelf in plan["shelves"] for p in shelf["positions"]}
            for det in detectors:
                t0 = time.perf_counter()
                found = det.detect(image)
                elapsed = (time.perf_counter() - t0) * 1000
                dets, truths, lat = results[det.ref][kind]
                dets.append(namer.name(det, prepared, found, planned))
                truths.append(_truth(objects))
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


def _long_side() -> int:
    from pipeline.settings import get_settings

    return get_settings().ingest.working_long_side


def prepare(data: bytes) -> PreparedPhoto:
    """A generated photo as the detect stage receives it (see ``prepare_photo``)."""
    from pipeline.settings import get_settings

    cfg = get_settings().ingest
    return prepare_photo(data, long_side=cfg.working_long_side, jpeg_quality=cfg.jpeg_quality)


@dataclass
class _Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, predicted: set[Any], truth: set[Any]) -> None:
        self.tp += len(predicted & truth)
        self.fp += len(predicted - truth)
        self.fn += len(truth - predicted)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@dataclass
class ComplianceScores:
    errors: dict[str, list[float]]  # points, per display kind
    oos: dict[str, _Counts]
    misplaced: dict[str, _Counts]

    def rows(self) -> dict[str, dict[str, float]]:
        """Per display kind and ``all``: photos, error p50/p90 (points), out-of-stock and
        misplaced precision and recall."""
        out = {}
        for kind in [*self.errors, "all"]:
            if kind == "all":
                errs = [e for v in self.errors.values() for e in v]
                oos, mis = _Counts(), _Counts()
                for c in self.oos.values():
                    oos.tp, oos.fp, oos.fn = oos.tp + c.tp, oos.fp + c.fp, oos.fn + c.fn
                for c in self.misplaced.values():
                    mis.tp, mis.fp, mis.fn = mis.tp + c.tp, mis.fp + c.fp, mis.fn + c.fn
            else:
                errs, oos, mis = self.errors[kind], self.oos[kind], self.misplaced[kind]
            out[kind] = {"photos": float(len(errs)),
                         "error_p50": float(np.percentile(errs, 50)),
                         "error_p90": float(np.percentile(errs, 90)),
                         "oos_precision": oos.precision, "oos_recall": oos.recall,
                         "misplaced_precision": mis.precision, "misplaced_recall": mis.recall}
        return out

    def format(self) -> str:
        lines = [f"  {'display':8} {'photos':>6} {'err p50':>8} {'err p90':>8} {'OOS P':>6} "
                 f"{'OOS R':>6} {'misp P':>7} {'misp R':>7}"]
        for kind, r in self.rows().items():
            lines.append(
                f"  {kind:8} {int(r['photos']):6d} {r['error_p50']:8.2f} {r['error_p90']:8.2f} "
                f"{r['oos_precision']:6.3f} {r['oos_recall']:6.3f} "
                f"{r['misplaced_precision']:7.3f} {r['misplaced_recall']:7.3f}")
        return "\n".join(lines)


def evaluate_compliance(detectors: dict[str, Detector], *, count: int, seed: int,
                        max_long_side: int, namer: SyntheticNamer, progress: bool = True
                        ) -> ComplianceScores:
    """Photos -> the pipeline's preparation -> routed detector -> shelf compliance, against
    the generator's truth: compliance error in points, out-of-stock gaps and misplaced SKUs."""
    from pipeline.core.detections import box_iou
    from pipeline.core.planogram import Planogram
    from pipeline.core.shelf import evaluate_shelves, split_by_score
    from pipeline.settings import get_settings

    cfg, rec = get_settings().compliance, get_settings().recognition

    scores = ComplianceScores({k: [] for k in DISPLAYS}, {k: _Counts() for k in DISPLAYS},
                              {k: _Counts() for k in DISPLAYS})
    for i in range(count):
        kind = DISPLAYS[i % len(DISPLAYS)]
        photo = make_photo(seed, 2_000_000 + i, kind, max_long_side)
        truth = photo.truth
        prepared = prepare(photo.jpeg)
        image, scale = prepared.normalized, prepared.scale
        det = detectors["heavy" if kind == "endcap" else "light"]
        facing, evidence = det.facing_scores(cfg)
        found = det.detect(image, score_threshold=evidence)
        plan = Planogram.model_validate(truth["planogram"])
        planned = {p.sku for shelf in plan.shelves for p in shelf.positions}
        detected = namer.detected(det, prepared, found, planned, margin=rec.position_margin,
                                  floor=rec.position_floor)
        firm, weak = split_by_score(detected, facing)
        report = evaluate_shelves(planogram=plan, detections=firm, evidence=weak,
                                  tuning=cfg.tuning, image_wh=(image.shape[1], image.shape[0]))
        expected = truth["expected"]
        assert isinstance(expected, dict)
        scores.errors[kind].append(abs(report.compliance - float(expected["compliance"])) * 100)
        scores.oos[kind].add(
            {(s.index, j) for s in report.shelves for j in s.out_of_stock_positions},
            {(s["index"], j) for s in expected["shelves"] for j in s["gap_positions"]})
        objects = truth["objects"]
        assert isinstance(objects, list)
        true_mis = [o for o in objects if o["status"] == "misplaced"]
        pred_mis = [it for it in report.items if it.status == "misplaced"]
        matched: set[int] = set()
        if true_mis and pred_mis:
            iou = box_iou(np.array([it.box for it in pred_mis], np.float32),
                          np.array([o["box"] for o in true_mis], np.float32) * scale)
            for p in range(len(pred_mis)):
                j = int(np.argmax(iou[p]))
                if iou[p, j] >= 0.5 and j not in matched:
                    matched.add(j)
        c = scores.misplaced[kind]
        c.tp += len(matched)
        c.fp += len(pred_mis) - len(matched)
        c.fn += len(true_mis) - len(matched)
        if progress and (i + 1) % 20 == 0:
            print(f"  {i + 1}/{count}", flush=True)
    return scores
