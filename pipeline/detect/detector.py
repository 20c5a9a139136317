"""A detector: letterbox -> ONNX Runtime -> decode -> class-aware NMS -> original pixels."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pipeline import metrics
from pipeline.core.decode import decode_centernet, decode_rows
from pipeline.core.detections import Detections, damp_small_boxes, nms
from pipeline.core.letterbox import letterbox, unletterbox_boxes
from pipeline.core.tiling import merge_tiles, strip_grid, tile_windows
from pipeline.detect.card import ModelFiles, TilingSpec, load_model
from pipeline.detect.session import LazySession
from pipeline.errors import ModelError
from pipeline.settings import ComplianceSettings


@dataclass(frozen=True)
class InputGeometry:
    name: str
    layout: str  # NCHW | NHWC
    size_wh: tuple[int, int]
    dtype: str  # tensor(float) | tensor(uint8)


class Detector:
    """Runs one model on BGR images of any size; boxes come back in the image's pixels."""

    def __init__(self, files: ModelFiles, *, device: str = "auto", intra_op_threads: int = 1,
                 inter_op_threads: int = 1) -> None:
        self.files = files
        self.card = files.card
        self.labels = files.labels
        self.session = LazySession(files.onnx_path, device, intra_op_threads, inter_op_threads)
        self._geometry: InputGeometry | None = None

    @classmethod
    def from_dir(cls, root: Path, name: str, version: str | None = None, *, device: str = "auto",
                 intra_op_threads: int = 1) -> Detector:
        return cls(load_model(root, name, version), device=device,
                   intra_op_threads=intra_op_threads)

    @property
    def ref(self) -> str:
        return self.files.ref

    def facing_scores(self, compliance: ComplianceSettings) -> tuple[float, float]:
        """(facing, evidence) on this model's score scale: the settings', else its card's."""
        post = self.card.postprocess
        return compliance.scores(post.facing_score, post.evidence_score)

    def geometry(self) -> InputGeometry:
        """Input name, layout and size, read from the graph; the card fills dynamic axes."""
        if self._geometry is None:
            inp = self.session.get().get_inputs()[0]
            spec = self.card.input
            shape = list(inp.shape)
            if len(shape) != 4:
                raise ModelError(f"{self.ref}: input must be 4-D, got {shape}")
            layout = spec.layout or ("NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3)
                                     else "NCHW")
            hw = shape[2:4] if layout == "NCHW" else shape[1:3]
            if spec.size is not None:
                size = (int(spec.size[0]), int(spec.size[1]))
            elif all(isinstance(v, int) and v > 0 for v in hw):
                size = (int(hw[1]), int(hw[0]))
            else:
                raise ModelError(f"{self.ref}: dynamic input size; set input.size in the card")
            self._geometry = InputGeometry(spec.name or inp.name, layout, size, inp.type)
        return self._geometry

    def to_tensor(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.generic]:
        """A letterboxed image (H, W, 3) BGR -> the model's input tensor."""
        g, spec = self.geometry(), self.card.input
        img = image[:, :, ::-1] if spec.channels == "RGB" else image
        if g.dtype == "tensor(uint8)":
            t: npt.NDArray[np.generic] = np.ascontiguousarray(img)[None]
        elif g.dtype not in ("tensor(float)", "tensor(float16)"):
            raise ModelError(f"{self.ref}: input type {g.dtype} is not supported")
        else:
            f = img.astype(np.float32) * np.float32(spec.scale)
            if spec.mean != (0.0, 0.0, 0.0) or spec.std != (1.0, 1.0, 1.0):
                f = ((f - np.array(spec.mean, np.float32))
                     / np.array(spec.std, np.float32)).astype(np.float32)
            t = f[None].astype(np.float16) if g.dtype == "tensor(float16)" else f[None]
        if g.layout == "NCHW":
            t = t.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(t)

    def input_wh(self, image_wh: tuple[int, int]) -> tuple[int, int]:
        """The model input for an image of ``image_wh``: the card's size, or with
        ``keep_aspect`` the image's aspect fitted inside it, sides rounded up to the stride."""
        g, spec = self.geometry(), self.card.input
        if not spec.keep_aspect:
            return g.size_wh
        w, h = image_wh
        scale = min(g.size_wh[0] / w, g.size_wh[1] / h)
        s = spec.stride
        return (min(g.size_wh[0], -(-round(w * scale) // s) * s),
                min(g.size_wh[1], -(-round(h * scale) // s) * s))

    def _raw(self, image: npt.NDArray[np.uint8], score_threshold: float) -> Detections:
        """Detections on one view (whole image or tile), in that view's pixels."""
        post = self.card.postprocess
        g = self.geometry()
        target = self.input_wh((image.shape[1], image.shape[0]))
        boxed, info = letterbox(image, target_wh=target, pad_value=self.card.input.pad_value)
        tensor = self.to_tensor(boxed)
        t0 = time.perf_counter()
        raw = self.session.get().run(None, {g.name: tensor})
        outputs = [np.asarray(o, np.float32) for o in raw]
        metrics.INFERENCE_SECONDS.labels(self.ref, self.session.provider).observe(
            time.perf_counter() - t0)
        nc = len(self.labels)
        fmt = self.card.format
        if fmt == "centernet":
            if len(outputs) < 2:
                raise ModelError(f"{self.ref}: centernet needs scores and boxes outputs")
            if outputs[0].ndim == 4 and outputs[0].shape[1] != nc:
                raise ModelError(f"{self.ref}: its scores have {outputs[0].shape[1]} classes, "
                                 f"its labels.json names {nc}")
            det = decode_centernet(scores=outputs[0], boxes=outputs[1],
                                   score_threshold=score_threshold,
                                   agreement=post.box_agreement)
        else:
            det = decode_rows(fmt, output=outputs[0], num_classes=nc,
                              score_threshold=score_threshold, input_wh=target,
                              normalized=post.normalized_boxes)
        if post.small_boxes is not None:
            det = damp_small_boxes(det, px=post.small_boxes.px, power=post.small_boxes.power,
                                   score_threshold=score_threshold)
        keep = nms(xyxy=det.xyxy, scores=det.scores, class_ids=det.class_ids,
                   iou_threshold=post.iou_threshold)[:post.max_detections]
        det = det.take(keep)
        return Detections(unletterbox_boxes(det.xyxy, info), det.scores, det.class_ids)

    def detect(self, image: npt.NDArray[np.uint8], *, score_threshold: float | None = None
               ) -> Detections:
        """Detect on an upright BGR image ``(H, W, 3)``; tiled when the card asks for it, or
        along a photo more than twice as long as wide (:func:`strip_grid`).

        ``score_threshold`` overrides the card's, e.g. to also see weak evidence."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a BGR image (H, W, 3), got {image.shape}")
        thr = self.card.postprocess.score_threshold if score_threshold is None else score_threshold
        h, w = image.shape[:2]
        tiling = self.card.tiling
        if tiling is None:
            strips = strip_grid((w, h))
            if strips is None:
                return self._raw(image, thr)
            tiling = TilingSpec(grid=strips, overlap=0.2, whole_image=False)
        windows = tile_windows(size_wh=(w, h), grid=tiling.grid, overlap=tiling.overlap)
        parts = [(win, self._raw(image[win[1]:win[3], win[0]:win[2]], thr)) for win in windows]
        if tiling.whole_image:
            parts.append(((0, 0, w, h), self._raw(image, thr)))
        merged = merge_tiles(parts, iou_threshold=self.card.postprocess.iou_threshold)
        # Each window may hold as many products as a photo: a panorama of three bays holds
        # more than one bay's cap, and what is cut is products, in no result.
        cap = self.card.postprocess.max_detections * len(windows)
        order = np.argsort(-merged.scores, kind="stable")[:cap]
        return merged.take(order)
