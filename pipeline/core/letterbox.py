"""Letterbox resizing (keep aspect, pad to the model's input) and its inverse for boxes."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class LetterboxInfo:
    """How original pixels map into the model input: ``input = original * scale + pad``."""

    scale: float
    pad_x: int
    pad_y: int
    size_wh: tuple[int, int]  # original image


def letterbox_info(*, size_wh: tuple[int, int], target_wh: tuple[int, int]) -> LetterboxInfo:
    w, h = size_wh
    tw, th = target_wh
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {size_wh}")
    scale = min(tw / w, th / h)
    nw, nh = round(w * scale), round(h * scale)
    return LetterboxInfo(scale, (tw - nw) // 2, (th - nh) // 2, (w, h))


def letterbox(image: npt.NDArray[np.uint8], *, target_wh: tuple[int, int], pad_value: int = 114
              ) -> tuple[npt.NDArray[np.uint8], LetterboxInfo]:
    """Resize ``image`` (H, W, 3) into ``target_wh`` keeping its aspect; pad the rest."""
    h, w = image.shape[:2]
    info = letterbox_info(size_wh=(w, h), target_wh=target_wh)
    nw, nh = round(w * info.scale), round(h * info.scale)
    interp = cv2.INTER_AREA if info.scale < 0.5 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else image
    out = np.full((target_wh[1], target_wh[0], 3), pad_value, np.uint8)
    out[info.pad_y:info.pad_y + nh, info.pad_x:info.pad_x + nw] = resized
    return out, info


def unletterbox_boxes(xyxy: npt.NDArray[np.floating], info: LetterboxInfo
                      ) -> npt.NDArray[np.float32]:
    """Boxes in model-input pixels -> boxes in original pixels, clipped to the image."""
    b = np.asarray(xyxy, np.float32).reshape(-1, 4).copy()
    b[:, [0, 2]] = (b[:, [0, 2]] - info.pad_x) / info.scale
    b[:, [1, 3]] = (b[:, [1, 3]] - info.pad_y) / info.scale
    w, h = info.size_wh
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
    return b
