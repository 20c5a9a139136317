"""Lighting normalisation and quality figures, on working-size images."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Quality:
    """Figures of the photo as taken (before normalisation)."""

    mean_luminance: float  # 0-255, L of LAB
    contrast: float  # standard deviation of L
    clipped_highlights: float  # share of pixels with L >= 250
    blur_variance: float  # variance of the Laplacian of gray; low = blurred
    width: int
    height: int

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def measure_quality(image: Image) -> Quality:
    lab_l = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)[:, :, 0]
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    return Quality(
        mean_luminance=round(float(lab_l.mean()), 2),
        contrast=round(float(lab_l.std()), 2),
        clipped_highlights=round(float((lab_l >= 250).mean()), 4),
        blur_variance=round(float(lap.var()), 2),
        width=int(image.shape[1]),
        height=int(image.shape[0]),
    )


def gray_world(image: Image) -> Image:
    """Scale each channel so the image's mean colour is gray (through a LUT: cheap)."""
    means = np.array(cv2.mean(image)[:3], np.float64)
    if np.any(means < 1.0):
        return image
    gains = means.mean() / means
    lut = np.clip(np.arange(256)[:, None] * gains[None, :], 0, 255).astype(np.uint8)
    channels = [cv2.LUT(image[:, :, c], lut[:, c]) for c in range(3)]
    return np.asarray(cv2.merge(channels), np.uint8)


def clahe_lab(image: Image, clip_limit: float = 2.0, tiles: int = 8) -> Image:
    """Contrast-limited adaptive histogram equalisation on L of LAB."""
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
    lab[:, :, 0] = clahe.apply(lab[:, :, 0])
    return np.asarray(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR), np.uint8)


def normalize_lighting(image: Image) -> Image:
    """Gray-world white balance, then CLAHE on L."""
    return clahe_lab(gray_world(image))


def resize_long_side(image: Image, long_side: float, *, min_side: int = 1) -> Image:
    """Downscale so the long side is at most ``long_side``, neither side under ``min_side``
    pixels; never upscale."""
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(min_side, round(w * scale)), max(min_side, round(h * scale)))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
