"""Camera effects: exposure, colour cast, vignetting, glare, blur and sensor noise.

Every effect is sized relative to the frame so one recipe serves 640-pixel training renders
and 12-megapixel photos alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class CameraEffects:
    gain: float
    gamma: float
    cast: tuple[float, float, float]  # BGR multipliers
    vignette: float
    glare: tuple[tuple[float, float, float, float], ...]  # cx, cy, radius (fractions), strength
    blur: str  # none | motion | defocus
    blur_amount: float  # fraction of the frame width
    blur_angle: float
    noise: float  # sigma in 8-bit levels
    low_light: bool

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def draw_effects(rng: np.random.Generator, strength: float = 1.0) -> CameraEffects:
    """Random effects as a store photographer's phone or a fixed camera produces them."""
    low = bool(rng.random() < 0.25 * strength)
    gain = float(rng.uniform(0.35, 0.6) if low else rng.uniform(0.85, 1.15))
    gamma = float(rng.uniform(1.0, 1.4) if low else rng.uniform(0.9, 1.1))
    cast = (1.0, 1.0, 1.0)
    if rng.random() < 0.5 * strength:
        t = float(rng.uniform(0.06, 0.18))
        cast = (1 - t, 1.0, 1 + t * 0.7) if rng.random() < 0.5 else (1 + t * 0.7, 1.0, 1 - t)
    vignette = float(rng.uniform(0.15, 0.5)) if rng.random() < 0.5 * strength else 0.0
    glare = tuple(
        (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9)),
         float(rng.uniform(0.02, 0.07)), float(rng.uniform(80, 200)))
        for _ in range(int(rng.integers(1, 4)) if rng.random() < 0.35 * strength else 0)
    )
    blur, amount = "none", 0.0
    r = rng.random()
    if r < 0.2 * strength:
        blur, amount = "motion", float(rng.uniform(0.002, 0.006))
    elif r < 0.35 * strength:
        blur, amount = "defocus", float(rng.uniform(0.0008, 0.0025))
    return CameraEffects(gain, gamma, cast, vignette, glare, blur, amount,
                         float(rng.uniform(0, 180)), float(rng.uniform(1.0, 7.0 if low else 4.0)),
                         low)


def apply_effects(image: Image, fx: CameraEffects, rng: np.random.Generator) -> Image:
    """Apply ``fx`` to a BGR image ``(H, W, 3)``; returns a new image."""
    H, W = image.shape[:2]
    img = image
    if fx.blur == "motion":
        k = max(3, int(round(fx.blur_amount * W)) | 1)
        kern = np.zeros((k, k), np.float32)
        kern[k // 2, :] = 1.0
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), fx.blur_angle, 1.0)
        kern = np.asarray(cv2.warpAffine(kern, rot, (k, k)), np.float32)
        img = np.asarray(cv2.filter2D(img, -1, kern / max(float(kern.sum()), 1e-6)), np.uint8)
    elif fx.blur == "defocus":
        img = np.asarray(cv2.GaussianBlur(img, (0, 0), max(0.5, fx.blur_amount * W)), np.uint8)
    # One gain map at low resolution carries exposure and vignetting.
    gh, gw = 48, 64
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    r2 = ((xx / (gw - 1) - 0.5) ** 2 + (yy / (gh - 1) - 0.5) ** 2) / 0.5
    gain = fx.gain * (1.0 - fx.vignette * r2)
    glare = np.zeros((gh, gw), np.float32)
    for cx, cy, rad, strength in fx.glare:
        d2 = (xx / gw - cx) ** 2 + (yy / gh - cy) ** 2 * (H / W) ** 2
        glare += strength * np.exp(-d2 / (2 * rad**2))
    gain_full = cv2.resize(gain, (W, H), interpolation=cv2.INTER_LINEAR)
    glare_full = cv2.resize(glare, (W, H), interpolation=cv2.INTER_LINEAR)
    f = img.astype(np.float32)
    f *= gain_full[:, :, None]
    f *= np.array(fx.cast, np.float32)
    f += glare_full[:, :, None]
    if fx.noise > 0:
        nh, nw = max(1, H // 2), max(1, W // 2)
        noise = rng.standard_normal((nh, nw, 3), dtype=np.float32) * fx.noise
        f += cv2.resize(noise, (W, H), interpolation=cv2.INTER_NEAREST)
    np.clip(f, 0, 255, out=f)
    out = f.astype(np.uint8)
    if abs(fx.gamma - 1.0) > 1e-3:
        lut = (255.0 * (np.arange(256) / 255.0) ** fx.gamma).astype(np.uint8)
        out = np.asarray(cv2.LUT(out, lut), np.uint8)
    return out
