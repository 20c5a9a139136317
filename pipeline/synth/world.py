"""Whole synthetic photos: scene + camera + phone rotation + EXIF, with a truth record."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.core.lighting import normalize_lighting
from pipeline.core.orientation import apply_orientation, invert_orientation
from pipeline.synth.camera import apply_effects, draw_effects
from pipeline.synth.exif import draw_exif, exif_bytes, insert_app1
from pipeline.synth.planogram import DISPLAYS, expected_compliance, make_planogram, realise
from pipeline.synth.scene import Scene, frame_size, render_scene

LONG_SIDES = (1600, 2048, 2592, 3264, 4000)
TRUTH_VERSION = 1


@dataclass(frozen=True)
class Photo:
    jpeg: bytes  # stored pixels (rotated as the phone wrote them) with EXIF
    truth: dict[str, object]


@dataclass(frozen=True)
class Sample:
    """A training sample: upright image at working resolution, boxes ``(N, 4)``, labels ``(N,)``."""

    image: npt.NDArray[np.uint8]
    boxes: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]


def scene_seed(seed: int, index: int) -> np.random.Generator:
    """Independent, reproducible stream for scene ``index`` of a run seeded with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def _display(rng: np.random.Generator, display: str | None) -> str:
    if display is None:
        return DISPLAYS[int(rng.integers(0, len(DISPLAYS)))]
    if display not in DISPLAYS:
        raise ValueError(f"display must be one of {DISPLAYS}, got {display!r}")
    return display


def make_scene(rng: np.random.Generator, display: str, long_side: int, planogram_id: str,
               effects_strength: float = 1.0
               ) -> tuple[Scene, dict[str, object], npt.NDArray[np.uint8]]:
    plan = make_planogram(rng, display, planogram_id)
    real = realise(rng, plan, deviation_rate=float(rng.uniform(0.1, 0.4)))
    scene = render_scene(rng, plan, real, frame_size(plan, real, long_side))
    fx = draw_effects(rng, effects_strength)
    image = apply_effects(scene.image, fx, rng)
    truth: dict[str, object] = {
        "truth_version": TRUTH_VERSION,
        "display": display,
        "planogram": plan.to_json(),
        "deviations": real.deviations,
        "expected": expected_compliance(plan, real),
        "objects": [o.to_json() for o in scene.objects],
        "shelf_lines": [list(v) for v in scene.shelf_lines],
        "camera": fx.to_json(),
    }
    return scene, truth, image


def make_photo(seed: int, index: int, display: str | None = None,
               max_long_side: int = 4000, taken_at: datetime | None = None) -> Photo:
    """Photo ``index`` of the run ``seed``: JPEG bytes as a camera uploads them, plus truth.

    ``taken_at`` overrides the drawn capture time (DateTimeOriginal), e.g. "now" for a demo.
    """
    rng = scene_seed(seed, index)
    disp = _display(rng, display)
    sides = [s for s in LONG_SIDES if s <= max_long_side] or [max_long_side]
    long_side = int(sides[int(rng.integers(0, len(sides)))])
    _, truth, upright = make_scene(rng, disp, long_side, f"PG-{seed}-{index:06d}")
    meta = draw_exif(rng)
    if taken_at is not None:
        meta = replace(meta, datetime_original=taken_at.strftime("%Y:%m:%d %H:%M:%S"))
    stored = apply_orientation(upright, invert_orientation(meta.orientation))
    quality = int(rng.integers(70, 96))
    ok, enc = cv2.imencode(".jpg", stored, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    jpeg = insert_app1(enc.tobytes(), exif_bytes(meta))
    h, w = upright.shape[:2]
    truth.update({
        "seed": seed, "index": index, "jpeg_quality": quality,
        "upright_size": [w, h], "stored_size": [stored.shape[1], stored.shape[0]],
        "exif": meta.to_json(),
    })
    return Photo(jpeg, truth)


def make_sample(rng: np.random.Generator, display: str, long_side: int,
                normalize: bool = True) -> Sample:
    """An upright training image rendered straight at the detector's working scale, lighting
    normalized as the pipeline's preprocessing stage does before detection."""
    scene, _, image = make_scene(rng, display, long_side, "train")
    if rng.random() < 0.5:  # JPEG artefacts as the photos will carry them
        q = int(rng.integers(60, 96))
        enc = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, q])[1]
        image = np.asarray(cv2.imdecode(enc, cv2.IMREAD_COLOR), np.uint8)
    if normalize:  # the detect stage sees lighting-normalized images
        image = normalize_lighting(image)
    boxes = np.array([o.box for o in scene.objects], np.float32).reshape(-1, 4)
    labels = np.array([o.label for o in scene.objects], np.int64)
    return Sample(image, boxes, labels)
