"""Lighting figures and normalisation on small synthetic images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.core.lighting import (
    Image,
    clahe_lab,
    gray_world,
    measure_quality,
    normalize_lighting,
    resize_long_side,
)


def flat(value: int | tuple[int, int, int], h: int = 64, w: int = 96) -> Image:
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = value
    return img


def checkerboard(h: int = 64, w: int = 96, cell: int = 4) -> Image:
    yy, xx = np.indices((h, w))
    board = (((yy // cell) + (xx // cell)) % 2 * 255).astype(np.uint8)
    return np.repeat(board[:, :, None], 3, axis=2)


def l_channel(image: Image) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2LAB)[:, :, 0]


def test_dark_image_has_low_luminance() -> None:
    dark = measure_quality(flat(20))
    bright = measure_quality(flat(200))

    assert dark.mean_luminance < 60  # below the default "dark" routing threshold
    assert bright.mean_luminance > 180
    assert dark.clipped_highlights == 0.0


def test_flat_image_has_no_contrast_and_no_edges() -> None:
    q = measure_quality(flat((90, 120, 150)))

    assert q.contrast == 0.0
    assert q.blur_variance == 0.0


def test_checkerboard_is_sharp_and_contrasted() -> None:
    board = measure_quality(checkerboard())
    blurred = measure_quality(np.asarray(cv2.GaussianBlur(checkerboard(), (9, 9), 3), np.uint8))

    assert board.contrast > 100
    assert board.blur_variance > 1000
    # blurring the same pattern lowers the Laplacian variance a lot
    assert blurred.blur_variance < board.blur_variance / 4


@pytest.mark.parametrize(("white_rows", "share"), [
    (0, 0.0),
    (16, 0.25),
    (32, 0.5),
    (64, 1.0),
], ids=["none", "quarter", "half", "all"])
def test_clipped_highlights_share(white_rows: int, share: float) -> None:
    img = flat(100)
    img[:white_rows] = 255

    assert measure_quality(img).clipped_highlights == pytest.approx(share)


def test_quality_reports_size_and_serialises() -> None:
    q = measure_quality(flat(128, h=30, w=70))

    assert (q.width, q.height) == (70, 30)
    assert set(q.to_json()) == {"mean_luminance", "contrast", "clipped_highlights",
                                "blur_variance", "width", "height"}


def test_gray_world_removes_a_colour_cast() -> None:
    # Given a textured scene under a strong warm (orange) cast: BGR means far apart
    rng = np.random.default_rng(0)
    scene = rng.integers(60, 180, size=(64, 96, 1)).astype(np.float64)
    cast = np.array([0.55, 0.9, 1.3])
    img = np.clip(scene * cast, 0, 255).astype(np.uint8)
    before = img.reshape(-1, 3).mean(axis=0)
    assert before.max() - before.min() > 50

    # When gray-world balanced
    out = gray_world(img)

    # Then the channel means are nearly equal, keeping shape and dtype
    after = out.reshape(-1, 3).mean(axis=0)
    assert out.shape == img.shape
    assert out.dtype == np.uint8
    assert after.max() - after.min() < 2.0


def test_gray_world_leaves_an_image_with_an_empty_channel_alone() -> None:
    img = flat((0, 120, 200))

    out = gray_world(img)

    np.testing.assert_array_equal(out, img)


def test_clahe_raises_contrast_of_a_low_contrast_gradient() -> None:
    # Given a dull horizontal gradient spanning only gray 100..140
    row = np.linspace(100, 140, 128).astype(np.uint8)
    img = np.repeat(np.repeat(row[None, :, None], 96, axis=0), 3, axis=2)

    # When CLAHE is applied on L
    out = clahe_lab(img)

    # Then L spreads out clearly, and the image stays a BGR uint8 of the same size
    assert out.shape == img.shape
    assert out.dtype == np.uint8
    l_in, l_out = l_channel(img), l_channel(out)
    assert l_out.std() > 1.25 * l_in.std()
    assert int(l_out.max()) - int(l_out.min()) > 1.25 * (int(l_in.max()) - int(l_in.min()))


def test_normalize_lighting_keeps_shape() -> None:
    img = checkerboard()

    assert normalize_lighting(img).shape == img.shape


@pytest.mark.parametrize(("h", "w", "long_side", "expected_hw"), [
    (400, 1000, 500, (200, 500)),
    (1000, 400, 500, (500, 200)),
    (300, 300, 100, (100, 100)),
    (333, 1000, 100, (33, 100)),
    (2, 1000, 100, (1, 100)),
], ids=["landscape", "portrait", "square", "rounded", "never-zero"])
def test_resize_long_side_downscales_keeping_aspect(h: int, w: int, long_side: int,
                                                    expected_hw: tuple[int, int]) -> None:
    img = np.zeros((h, w, 3), np.uint8)

    out = resize_long_side(img, long_side)

    assert out.shape == (*expected_hw, 3)
    assert max(out.shape[:2]) == long_side


@pytest.mark.parametrize(("h", "w", "long_side"), [
    (100, 200, 200),
    (100, 200, 1280),
], ids=["exactly-long-side", "smaller-than-long-side"])
def test_resize_long_side_never_upscales(h: int, w: int, long_side: int) -> None:
    img = checkerboard(h, w)

    out = resize_long_side(img, long_side)

    assert out.shape == img.shape
    np.testing.assert_array_equal(out, img)
