"""EXIF orientation: pixels and boxes for all eight orientations, checked against OpenCV and
Pillow's own EXIF handling and against the synthetic phone photos."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageOps

from pipeline.core.orientation import (
    ORIENTATIONS,
    apply_orientation,
    check_orientation,
    invert_orientation,
    orient_boxes,
    oriented_size,
)
from pipeline.synth import world
from pipeline.synth.exif import TAG_ORIENTATION, PhotoExif, exif_bytes, insert_app1

Image8 = npt.NDArray[np.uint8]
ORIENTATION_IDS = [f"o{o}" for o in ORIENTATIONS]

# An upright 20 x 12 image: every background pixel is unique (B = x, G = y, R = 0) and three
# solid rectangles carry colours the background never has (R = 250).
UPRIGHT_WH = (20, 12)
MARKS: tuple[tuple[tuple[int, int, int], tuple[int, int, int, int]], ...] = (
    ((200, 0, 250), (1, 1, 4, 3)),
    ((0, 200, 250), (10, 2, 19, 5)),
    ((100, 100, 250), (3, 8, 7, 12)),
)
UPRIGHT_BOXES = np.array([box for _, box in MARKS], np.float64)


def upright_image() -> Image8:
    w, h = UPRIGHT_WH
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx, yy, np.zeros_like(xx)], axis=2).astype(np.uint8)
    for colour, (x1, y1, x2, y2) in MARKS:
        img[y1:y2, x1:x2] = colour
    return img


def colour_box(image: Image8, colour: tuple[int, int, int]) -> tuple[list[float], int]:
    """Bounding box (pixel edges) of the pixels of exactly ``colour``, and how many there are."""
    ys, xs = np.nonzero(np.all(image == np.array(colour, np.uint8), axis=2))
    assert xs.size, f"colour {colour} not found"
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    return box, int(xs.size)


def decode(buf: npt.NDArray[np.uint8], flags: int) -> Image8:
    image = cv2.imdecode(buf, flags)
    assert image is not None
    return np.asarray(image, np.uint8)


def size_of(image: Image8) -> tuple[int, int]:
    return int(image.shape[1]), int(image.shape[0])


@pytest.mark.parametrize("orientation", ORIENTATIONS, ids=ORIENTATION_IDS)
def test_stored_image_turns_back_upright(orientation: int) -> None:
    # Given the upright image stored as a phone with this orientation would write it
    upright = upright_image()
    stored = apply_orientation(upright, invert_orientation(orientation))

    # When the orientation is applied to the stored pixels
    shown = apply_orientation(stored, orientation)

    # Then the upright image comes back exactly, and the stored frame had the rotated size
    assert size_of(stored) == oriented_size(UPRIGHT_WH, orientation)
    assert shown.dtype == np.uint8
    assert shown.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(shown, upright)


@pytest.mark.parametrize("orientation", ORIENTATIONS, ids=ORIENTATION_IDS)
def test_orient_boxes_follows_the_pixels(orientation: int) -> None:
    # Given the marked rectangles' boxes carried into the stored frame by the inverse transform
    upright = upright_image()
    inverse = invert_orientation(orientation)
    stored = apply_orientation(upright, inverse)
    stored_boxes = orient_boxes(UPRIGHT_BOXES, UPRIGHT_WH, inverse)

    # Then each stored box is exactly where its colour lies in the stored pixels, solid
    for (colour, _), box in zip(MARKS, stored_boxes, strict=True):
        found, count = colour_box(stored, colour)
        assert found == box.tolist()
        assert count == (box[2] - box[0]) * (box[3] - box[1])

    # And mapping the stored boxes with the orientation gives the upright boxes back
    back = orient_boxes(stored_boxes, size_of(stored), orientation)
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, UPRIGHT_BOXES)


@pytest.mark.parametrize("orientation", ORIENTATIONS, ids=ORIENTATION_IDS)
def test_orient_boxes_on_float_boxes_preserves_area(orientation: int) -> None:
    boxes = np.array([[0.5, 1.25, 7.75, 3.5], [0.0, 0.0, 20.0, 12.0]], np.float32)

    out = orient_boxes(boxes, UPRIGHT_WH, orientation)

    w, h = oriented_size(UPRIGHT_WH, orientation)
    assert out.shape == (2, 4)
    np.testing.assert_allclose(out[1], [0, 0, w, h])  # the whole frame stays the whole frame
    assert np.all(out[:, 2] > out[:, 0])
    assert np.all(out[:, 3] > out[:, 1])
    area = (out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1])
    np.testing.assert_allclose(area, [7.25 * 2.25, 240.0])


def test_all_eight_orientations_give_different_views() -> None:
    views = [apply_orientation(upright_image(), o) for o in ORIENTATIONS]

    for i, a in enumerate(views):
        for b in views[i + 1:]:
            assert a.shape != b.shape or not np.array_equal(a, b)


def small_jpeg_with_orientation(orientation: int) -> bytes:
    """A 48 x 32 JPEG of coarse coloured blocks carrying the EXIF orientation."""
    img = np.zeros((32, 48, 3), np.uint8)
    img[:16, :16] = (0, 0, 255)
    img[:16, 32:] = (0, 255, 0)
    img[16:, 8:24] = (255, 0, 0)
    img[24:, 40:] = (255, 255, 255)
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    meta = PhotoExif(orientation, "Test", "Cam", "SN1", "2026:01:01 00:00:00", (1.0, 2.0))
    return insert_app1(enc.tobytes(), exif_bytes(meta))


@pytest.mark.parametrize("orientation", ORIENTATIONS, ids=ORIENTATION_IDS)
def test_apply_orientation_agrees_with_opencv_and_pillow(orientation: int) -> None:
    # Given a JPEG whose EXIF says how to turn its stored pixels upright
    jpeg = small_jpeg_with_orientation(orientation)
    buf = np.frombuffer(jpeg, np.uint8)

    # When OpenCV decodes it raw and honouring the tag, and Pillow transposes it by the tag
    raw = decode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    by_opencv = decode(buf, cv2.IMREAD_COLOR)
    with Image.open(BytesIO(jpeg)) as pil:
        assert pil.getexif()[TAG_ORIENTATION] == orientation
        pil_raw = np.asarray(pil.convert("RGB"))
        by_pillow = np.asarray(ImageOps.exif_transpose(pil).convert("RGB"))

    # Then our transform gives the same pixels as both libraries
    np.testing.assert_array_equal(apply_orientation(raw, orientation), by_opencv)
    np.testing.assert_array_equal(apply_orientation(pil_raw, orientation), by_pillow)


@pytest.mark.parametrize(("orientation", "expected"), [
    (1, (20, 12)), (2, (20, 12)), (3, (20, 12)), (4, (20, 12)),
    (5, (12, 20)), (6, (12, 20)), (7, (12, 20)), (8, (12, 20)),
], ids=ORIENTATION_IDS)
def test_oriented_size(orientation: int, expected: tuple[int, int]) -> None:
    assert oriented_size((20, 12), orientation) == expected


@pytest.mark.parametrize(("orientation", "inverse"), [
    (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 8), (7, 7), (8, 6),
], ids=ORIENTATION_IDS)
def test_invert_orientation(orientation: int, inverse: int) -> None:
    assert invert_orientation(orientation) == inverse
    assert invert_orientation(inverse) == orientation
    assert check_orientation(orientation) == orientation


BOX = np.zeros((1, 4))
INVALID_CALLS: list[Callable[[int], Any]] = [
    check_orientation,
    invert_orientation,
    lambda o: apply_orientation(upright_image(), o),
    lambda o: orient_boxes(BOX, (4, 4), o),
    lambda o: oriented_size((4, 4), o),
]


@pytest.mark.parametrize("orientation", [0, 9, -1, 66], ids=["zero", "nine", "negative", "big"])
@pytest.mark.parametrize("call", INVALID_CALLS,
                         ids=["check", "invert", "apply", "orient_boxes", "oriented_size"])
def test_invalid_orientation_raises(call: Callable[[int], Any], orientation: int) -> None:
    with pytest.raises(ValueError, match=r"orientation must be 1\.\.8"):
        call(orientation)


SYNTH_SEED = 0
SYNTH_MAX_INDEX = 300


@dataclass(frozen=True)
class SynthCase:
    photo: world.Photo
    rendered: Image8  # the upright scene before it was rotated, encoded and stored


_synth_cases: dict[int, SynthCase] = {}
_synth_next = [0]


def synth_case(orientation: int) -> SynthCase:
    """The first photo of run ``SYNTH_SEED`` (max_long_side=1600) drawn with ``orientation``.

    Photos are scanned in index order once for all eight orientations (about a dozen renders),
    so the tests follow changes to the synthetic world instead of pinning indices.
    """
    captured: list[Image8] = []
    make_scene = world.make_scene

    def spy(*args: Any, **kwargs: Any) -> Any:
        scene, truth, image = make_scene(*args, **kwargs)
        captured.append(image)
        return scene, truth, image

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(world, "make_scene", spy)
        while orientation not in _synth_cases and _synth_next[0] < SYNTH_MAX_INDEX:
            photo = world.make_photo(SYNTH_SEED, _synth_next[0], max_long_side=1600)
            _synth_next[0] += 1
            drawn = int(photo.truth["exif"]["orientation"])  # type: ignore[index]
            _synth_cases.setdefault(drawn, SynthCase(photo, captured[-1]))
    assert orientation in _synth_cases, f"no photo with orientation {orientation}"
    return _synth_cases[orientation]


def mean_abs_diff(a: Image8, b: Image8) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize("orientation", ORIENTATIONS, ids=ORIENTATION_IDS)
def test_synth_photo_turns_upright(orientation: int) -> None:
    # Given a synthetic phone photo drawn with this orientation, and its upright render
    case = synth_case(orientation)
    truth: dict[str, Any] = case.photo.truth

    # When the JPEG is decoded raw and the EXIF orientation read from it is applied
    buf = np.frombuffer(case.photo.jpeg, np.uint8)
    stored = decode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    with Image.open(BytesIO(case.photo.jpeg)) as pil:
        tag = pil.getexif()[TAG_ORIENTATION]
    upright = apply_orientation(stored, tag)

    # Then the tag is the truth's, the sizes are the truth's, OpenCV agrees pixel for pixel
    assert tag == truth["exif"]["orientation"] == orientation
    assert list(size_of(stored)) == truth["stored_size"]
    assert list(size_of(upright)) == truth["upright_size"]
    np.testing.assert_array_equal(upright, decode(buf, cv2.IMREAD_COLOR))

    # And the result is the rendered scene up to JPEG loss, far from any other orientation
    err = mean_abs_diff(upright, case.rendered)
    assert err < 6.0
    for other in ORIENTATIONS:
        view = apply_orientation(stored, other)
        if other != orientation and view.shape == case.rendered.shape:
            assert mean_abs_diff(view, case.rendered) > max(8.0, 2.5 * err), other
