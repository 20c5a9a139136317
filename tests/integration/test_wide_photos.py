"""Wide bays and panoramas: kept large enough to see, tiled along, and refused past a bay."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.core.metrics import Truth, evaluate_detections
from pipeline.detect.detector import Detector
from pipeline.errors import CorruptImageError
from pipeline.image import decode_upright, inspect_image, prepare_photo
from pipeline.settings import get_settings
from pipeline.synth.world import make_photo


@pytest.fixture(scope="module")
def light() -> Detector:
    s = get_settings()
    return Detector.from_dir(s.models.root, s.models.light, device="cpu")


@pytest.mark.parametrize("bays", [1, 3, 5])
def test_products_of_bays_photographed_side_by_side_are_found_as_in_one(
        light: Detector, bays: int) -> None:
    # Given one generated bay, and a photo of that bay repeated side by side (a wide
    # fixture, or a phone panorama along an aisle), 2048 pixels tall
    photo = make_photo(3, 7, "gondola", max_long_side=2048)
    bay, _ = decode_upright(photo.jpeg, 4096, resize=False)
    wide = np.concatenate([bay] * bays, axis=1)
    data = bytes(cv2.imencode(".jpg", wide, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    boxes = np.array([o["box"] for o in photo.truth["objects"]], np.float32)
    shift = np.array([bay.shape[1], 0, bay.shape[1], 0], np.float32)
    truth = np.concatenate([boxes + i * shift for i in range(bays)])
    s = get_settings()

    # When it is prepared and detected on as the pipeline does
    prepared = prepare_photo(data, long_side=s.ingest.working_long_side,
                             jpeg_quality=s.ingest.jpeg_quality)
    found = light.detect(prepared.normalized)

    # Then its products are found as on the single bay
    scores = evaluate_detections(
        [found.take(np.nonzero(found.scores >= light.facing_scores(s.compliance)[0])[0])],
        [Truth(truth * prepared.scale, np.zeros(len(truth), np.int64))])
    assert scores.recall50 >= 0.95 and scores.precision50 >= 0.95, scores


def test_a_panorama_of_many_bays_is_refused_saying_so() -> None:
    cfg = get_settings().ingest
    strip = np.full((400, 400 * 7, 3), 128, np.uint8)
    data = bytes(cv2.imencode(".jpg", strip)[1].tobytes())
    with pytest.raises(CorruptImageError, match="a panorama of several bays"):
        inspect_image(data, max_pixels=cfg.max_pixels, min_side=cfg.min_side,
                      max_side=cfg.max_side, max_aspect=cfg.max_aspect)
