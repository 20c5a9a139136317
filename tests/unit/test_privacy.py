"""Faces of shoppers are blurred: checked on a real public-domain portrait (scikit-image's
astronaut, a NASA photo), placed as a shopper would stand in a shelf photo."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from skimage import data

from pipeline.privacy import blur_faces, find_faces


def portrait() -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def shelf_with_shopper(face_scale: float, size_wh: tuple[int, int] = (1280, 960)
                       ) -> npt.NDArray[np.uint8]:
    """A shelf-coloured frame (1280x960) with the portrait pasted at ``face_scale``."""
    rng = np.random.default_rng(0)
    w, h = size_wh
    frame = np.empty((h, w, 3), np.uint8)
    for x in range(0, w, 40):  # rows of packs
        frame[:, x:x + 40] = rng.integers(40, 220, 3)
    side = int(512 * face_scale)
    if side:
        frame[100:100 + side, 600:600 + side] = cv2.resize(portrait(), (side, side))
    return frame


@pytest.mark.parametrize(("scale", "size_wh"), [
    (1.0, (1280, 960)), (0.75, (1280, 960)),
    (0.6, (2560, 640)),  # a bay seen whole: a wide photo's working image
    (0.75, (1280, 720)),
], ids=["near", "farther", "wide-photo", "16:9"])
def test_the_face_is_found_and_made_unrecognisable(scale: float, size_wh: tuple[int, int]
                                                   ) -> None:
    image = shelf_with_shopper(scale, size_wh)
    faces = find_faces(image)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0]

    blurred, count = blur_faces(image)

    assert count == 1
    assert find_faces(blurred) == []  # the detector no longer sees a face
    before = cv2.Laplacian(cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY),
                           cv2.CV_64F).var()
    after = cv2.Laplacian(cv2.cvtColor(blurred[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY),
                          cv2.CV_64F).var()
    assert after < 0.05 * before  # the face's detail is gone
    outside = np.ones(image.shape[:2], bool)
    outside[max(0, y1 - 60):y2 + 60, max(0, x1 - 60):x2 + 60] = False
    assert np.array_equal(blurred[outside], image[outside])  # the shelf is untouched


def test_no_face_no_change() -> None:
    image = shelf_with_shopper(0.0)
    out, count = blur_faces(image)
    assert count == 0 and out is image
