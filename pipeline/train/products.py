"""Product imagery for training scenes: real packshots, real label textures, drawn packs.

A :class:`ProductBank` holds what scenes are built from:

- packshots: real product photos on a plain background (GroceryStoreDataset's iconic images,
  MIT), cut out by their background;
- textures: real in-store photos (GroceryStoreDataset's train split) whose random crops become
  the printed faces of procedurally shaped packs (boxes, bottles, cans, pouches, jars);
- drawn packs: the synthetic world's SKUs and random unknown products.

Nothing here reads the evaluation splits.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.core.packshot import Cutout, cut_out
from pipeline.synth.catalog import CATALOG, draw_packshot, random_unknown

Image = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.uint8]
SHAPES = ("box", "box", "box", "bottle", "can", "pouch", "jar")
MASTER_HEIGHT = 128  # pixels of a product's master image; scenes resize from it


def _resize_height(image: Image, height: int) -> Image:
    h, w = image.shape[:2]
    width = max(4, round(w * height / h))
    interp = cv2.INTER_AREA if height < h else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, (width, height), interpolation=interp), np.uint8)


class ProductBank:
    """Packshots and label textures loaded once; :meth:`draw` makes one product type."""

    def __init__(self, packshots: list[Cutout], textures: list[Image]):
        self.packshots = packshots
        self.textures = textures

    @classmethod
    def from_grocery_store(cls, root: Path, *, max_textures: int = 900, texture_side: int = 320,
                           seed: int = 0) -> ProductBank:
        """``root`` is a GroceryStoreDataset checkout (``dataset/classes.csv`` inside)."""
        data = root / "dataset"
        if not (data / "classes.csv").is_file():
            raise FileNotFoundError(f"{root} is not a GroceryStoreDataset checkout "
                                    "(dataset/classes.csv missing)")
        packshots = []
        with (data / "classes.csv").open() as fh:
            for row in csv.DictReader(fh):
                img = cv2.imread(str(data / row["Iconic Image Path (str)"].lstrip("/")))
                if img is None:
                    continue
                cut = cut_out(_resize_height(np.asarray(img, np.uint8), 2 * MASTER_HEIGHT))
                if cut is not None:
                    packshots.append(cut)
        # Packaged goods: their print is what shelves are covered with (loose produce sits
        # in bins, not in rows of facings).
        train = [line.split(",")[0].strip() for line in (data / "train.txt").read_text()
                 .splitlines() if "/Packages/" in line]
        rng = np.random.default_rng(seed)
        textures = []
        for rel in rng.permutation(train)[:max_textures]:
            img = cv2.imread(str(data / rel))
            if img is not None:
                h, w = img.shape[:2]
                s = texture_side / max(h, w)
                textures.append(np.asarray(cv2.resize(img, (round(w * s), round(h * s)),
                                                      interpolation=cv2.INTER_AREA), np.uint8))
        if not packshots or not textures:
            raise FileNotFoundError(f"no usable packshots or photos under {data}")
        return cls(packshots, textures)

    def draw(self, rng: np.random.Generator) -> Cutout:
        """One product type's master front, ``MASTER_HEIGHT`` tall."""
        r = rng.random()
        if r < 0.3:
            cut = self.packshots[int(rng.integers(len(self.packshots)))]
            cut = _stretch(rng, cut, 0.8, 1.25)
            out = Cutout(_resize_height(cut.image, MASTER_HEIGHT),
                         _resize_height(cut.mask, MASTER_HEIGHT))
            return Cutout(_jitter_colour(rng, out.image, hue=rng.random() < 0.5), out.mask)
        if r < 0.8:
            return self._textured_pack(rng)
        sku = CATALOG[int(rng.integers(len(CATALOG)))] if rng.random() < 0.5 \
            else random_unknown(rng)
        img, mask = draw_packshot(sku, MASTER_HEIGHT)
        return Cutout(_jitter_colour(rng, img, hue=False), mask)

    def _textured_pack(self, rng: np.random.Generator) -> Cutout:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        aspect = {"box": (0.3, 1.6), "bottle": (0.22, 0.5), "can": (0.45, 0.9),
                  "pouch": (0.5, 1.0), "jar": (0.6, 1.1)}[shape]
        h = MASTER_HEIGHT
        w = max(8, round(h * rng.uniform(*aspect)))
        tex = self.textures[int(rng.integers(len(self.textures)))]
        th, tw = tex.shape[:2]
        if rng.random() < 0.8:
            # The photo's centre, where the shopper holds the product: one product's print,
            # not a shelf of them.
            ch = max(8, int(th * rng.uniform(0.3, 0.55)))
            cw = max(8, min(tw, int(ch * w / h)))
            ch = max(8, min(th, int(cw * h / w)))
            y0 = int(np.clip(th / 2 - ch / 2 + rng.normal(0, 0.05) * th, 0, th - ch))
            x0 = int(np.clip(tw / 2 - cw / 2 + rng.normal(0, 0.05) * tw, 0, tw - cw))
        else:  # a small patch anywhere: print texture without whole shelves in it
            ch = max(8, int(th * rng.uniform(0.1, 0.25)))
            cw = max(8, min(tw, int(ch * w / h)))
            ch = max(8, min(th, int(cw * h / w)))
            y0, x0 = int(rng.integers(0, th - ch + 1)), int(rng.integers(0, tw - cw + 1))
        face = np.asarray(cv2.resize(tex[y0:y0 + ch, x0:x0 + cw], (w, h),
                                     interpolation=cv2.INTER_AREA), np.uint8).copy()
        if rng.random() < 0.5:  # a printed band or panel in a flat colour
            b0 = int(rng.integers(0, h - h // 5))
            b1 = min(h, b0 + int(rng.integers(h // 10, h // 3)))
            face[b0:b1] = rng.integers(0, 256, 3).astype(np.uint8)
            if rng.random() < 0.6:
                _text(rng, face, b0, b1)
        if shape == "bottle":
            cap = max(3, h // 10)
            face[:cap] = rng.integers(0, 256, 3).astype(np.uint8)
        xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)
        curve = 0.4 if shape in ("bottle", "can", "jar") else float(rng.uniform(0.0, 0.15))
        shade = 1.0 - curve * xs**2
        face = np.clip(face.astype(np.float32) * shade[None, :, None], 0, 255).astype(np.uint8)
        return Cutout(_jitter_colour(rng, face, hue=rng.random() < 0.3), _mask(shape, w, h))


def _text(rng: np.random.Generator, face: Image, y0: int, y1: int) -> None:
    letters = "ABCDEFGHIKLMNOPRSTUVWXYZ0123456789"
    word = "".join(letters[int(i)] for i in rng.integers(0, len(letters),
                                                         int(rng.integers(2, 8))))
    w = face.shape[1]
    font = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX)[
        int(rng.integers(3))]
    (tw, th), _ = cv2.getTextSize(word, font, 1.0, 2)
    scale = min(0.95 * w / tw, 0.8 * max(1, y1 - y0) / th)
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    cv2.putText(face, word, (int(w * 0.03), y1 - max(1, (y1 - y0) // 6)), font, scale, colour,
                max(1, round(scale * 2)), cv2.LINE_AA)


def _mask(shape: str, w: int, h: int) -> Mask:
    mask = np.full((h, w), 255, np.uint8)
    if shape == "bottle":
        neck = int(w * 0.32)
        shoulder = int(h * 0.25)
        mask[:shoulder, :neck] = 0
        mask[:shoulder, w - neck:] = 0
        tri = np.array([[0, shoulder], [neck, int(h * 0.1)], [neck, shoulder]], np.int32)
        cv2.fillConvexPoly(mask, tri, 255)
        cv2.fillConvexPoly(mask, np.array([[w - 1, shoulder], [w - 1 - neck, int(h * 0.1)],
                                           [w - 1 - neck, shoulder]], np.int32), 255)
    elif shape in ("can", "jar"):
        r = max(1, h // 16)
        mask[:r] = 0
        mask[h - r:] = 0
        cv2.ellipse(mask, (w // 2, r), (w // 2, r), 0, 0, 360, 255, -1)
        cv2.ellipse(mask, (w // 2, h - 1 - r), (w // 2, r), 0, 0, 360, 255, -1)
    elif shape == "pouch":
        inset = max(1, int(w * 0.06))
        mask[:] = 0
        cv2.fillConvexPoly(mask, np.array([[inset, 0], [w - 1 - inset, 0], [w - 1, h - 1],
                                           [0, h - 1]], np.int32), 255)
    return mask


def _stretch(rng: np.random.Generator, cut: Cutout, lo: float, hi: float) -> Cutout:
    h, w = cut.mask.shape
    nw = max(4, round(w * rng.uniform(lo, hi)))
    return Cutout(np.asarray(cv2.resize(cut.image, (nw, h)), np.uint8),
                  np.asarray(cv2.resize(cut.mask, (nw, h)), np.uint8))


def _jitter_colour(rng: np.random.Generator, image: Image, *, hue: bool) -> Image:
    """Brightness/contrast jitter; with ``hue``, a rotated hue (a variant of the line)."""
    out = image
    if hue:
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int16) + int(rng.integers(10, 170))) % 180
                        ).astype(np.uint8)
        out = np.asarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR), np.uint8)
    a, b = rng.uniform(0.8, 1.2), rng.uniform(-25, 25)
    return np.asarray(np.clip(out.astype(np.float32) * a + b, 0, 255), np.uint8)
