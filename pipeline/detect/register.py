"""Bring your own detector: read an ONNX graph, probe how it speaks, register it with a card.

``shelf model add PATH.onnx`` reads what Ultralytics writes into its exports (``names``,
``imgsz``, ``task``, ``stride``, ``end2end``), checks the input (NCHW or NHWC; float, float16
or uint8) and the output layout (YOLOv8/YOLO11 ``[1, 4+nc, N]`` or ``[1, N, 4+nc]``, YOLOv5
``[1, N, 5+nc]`` with objectness, RT-DETR ``[1, Q, 4+nc]``, NMS inside the graph ``[1, N, 6]``
as YOLOv10, YOLO26 and ``nms=True`` exports give it, our centre-heatmap pair), runs the graph
once on a probe image to learn whether boxes come out in pixels or normalized to [0, 1], and
writes ``models/<name>/<version>/`` atomically. A graph whose outputs cannot be read is refused
with the reason; nothing is half-registered.
"""

from __future__ import annotations

import ast
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from pipeline.core.decode import Format
from pipeline.errors import ModelRejectedError

Boxes = Literal["auto", "pixels", "normalized"]
DEFAULT_SIZE = 640
MIN_INPUT_SIDE, MAX_INPUT_SIDE = 32, 4096  # a detector's input, whatever a file claims
# One probe image, run in a child process: a graph that takes longer, or more memory, than
# any shelf detector would is refused before a worker ever loads it (workers keep what a run
# took in ONNX Runtime's arena, photo after photo).
PROBE_TIMEOUT_S = 120.0
PROBE_MAX_RSS_MB = 2048
PROBE_MAX_ADDRESS_MB = 16384  # a hard stop for the child: it cannot map more than this
STRIDES = (8, 16, 32)  # YOLOv8/YOLO11 detection heads
YOLOV5_ANCHORS = 3  # boxes per cell and stride in a YOLOv5 head
RTDETR_MAX_QUERIES = 1000



@dataclass
class Inspection:
    """What was learnt about a graph, and from where."""

    format: Format
    input_name: str
    layout: Literal["NCHW", "NHWC"]
    size_wh: tuple[int, int]
    dtype: str
    labels: list[str]
    normalized_boxes: bool
    dynamic: bool  # height and width are free: photos keep their aspect
    task: Literal["product", "sku"]
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def parse_names(text: str) -> list[str]:
    """Ultralytics ``names``: a Python dict literal ``{0: 'product', ...}`` (or a list)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ModelRejectedError(f"metadata 'names' is not a dict of class names: {text[:80]!r}"
                                 ) from exc
    if isinstance(value, dict):
        try:
            keys = sorted(int(k) for k in value)
        except (TypeError, ValueError) as exc:
            raise ModelRejectedError(f"metadata 'names' has keys that are not class indices: "
                                     f"{text[:80]!r}") from exc
        if keys != list(range(len(keys))):
            raise ModelRejectedError("metadata 'names' must cover class indices 0..N-1")
        return [str(value[k]) for k in keys]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    raise ModelRejectedError(f"metadata 'names' is not a dict of class names: {text[:80]!r}")


def parse_imgsz(text: str) -> tuple[int, int] | None:
    """Ultralytics ``imgsz`` ``[h, w]`` (or one int) -> ``(w, h)``."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, list | tuple) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return int(value[1]), int(value[0])
    return None  # unreadable: the graph or the default decides


def _dims(value_info: Any) -> list[int | str]:
    return [d.dim_value if d.dim_value > 0 else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]


def _input_geometry(inp: Any, meta_size: tuple[int, int] | None, notes: list[str]
                    ) -> tuple[Literal["NCHW", "NHWC"], tuple[int, int]]:
    shape = _dims(inp)
    if len(shape) != 4:
        raise ModelRejectedError(f"input {inp.name!r} has shape {shape}; an image input is "
                                 "4-D (NCHW or NHWC)")
    if shape[1] in (1, 3) and shape[3] not in (1, 3):
        layout: Literal["NCHW", "NHWC"] = "NCHW"
        hw = shape[2:4]
    elif shape[3] in (1, 3):
        layout, hw = "NHWC", shape[1:3]
    else:
        raise ModelRejectedError(f"input {inp.name!r} {shape} has no 3-channel axis: neither "
                                 "NCHW nor NHWC")
    if all(isinstance(v, int) for v in hw):
        size = (int(hw[1]), int(hw[0]))
        notes.append(f"input {layout} {size[0]}x{size[1]} from the graph")
    elif meta_size is not None:
        size = meta_size
        notes.append(f"dynamic input; size {size[0]}x{size[1]} from metadata imgsz")
    else:
        size = (DEFAULT_SIZE, DEFAULT_SIZE)
        notes.append(f"dynamic input, no imgsz metadata: size {DEFAULT_SIZE}x{DEFAULT_SIZE}")
    return layout, size


def probe_image(size_wh: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """A deterministic shelf-like picture: rows of coloured packs on boards."""
    w, h = size_wh
    rng = np.random.default_rng(0)
    img = np.full((h, w, 3), 60, np.uint8)
    row_h = max(8, h // 5)
    for y in range(0, h, row_h):
        x = 0
        while x < w:
            pw = int(rng.integers(max(4, row_h // 3), max(5, row_h)))
            colour = tuple(int(v) for v in rng.integers(30, 255, 3))
            cv2.rectangle(img, (x + 1, y + row_h // 6), (x + pw - 1, y + row_h - 4), colour, -1)
            x += pw
        cv2.rectangle(img, (0, y + row_h - 4), (w, y + row_h), (220, 220, 220), -1)
    return img


def _tensor(image: npt.NDArray[np.uint8], layout: str, dtype: str) -> npt.NDArray[Any]:
    rgb = image[:, :, ::-1]
    if dtype == "tensor(uint8)":
        t: npt.NDArray[Any] = np.ascontiguousarray(rgb)[None]
    elif dtype == "tensor(float16)":
        t = (rgb.astype(np.float32) / 255.0).astype(np.float16)[None]
    elif dtype == "tensor(float)":
        t = (rgb.astype(np.float32) / 255.0)[None]
    else:
        raise ModelRejectedError(f"input element type {dtype} is not supported (float, float16 "
                                 "or uint8)")
    return np.ascontiguousarray(t.transpose(0, 3, 1, 2) if layout == "NCHW" else t)


def _anchors(size_wh: tuple[int, int]) -> int:
    w, h = size_wh
    return sum((w // s) * (h // s) for s in STRIDES)


def _box_convention(boxes: npt.NDArray[np.float32], size_wh: tuple[int, int], boxes_opt: Boxes,
                    notes: list[str]) -> bool:
    """True when the ``cx, cy, w, h`` columns are normalized to [0, 1]."""
    if not np.isfinite(boxes).all():
        raise ModelRejectedError("the graph returns NaN or infinite box coordinates")
    if boxes_opt != "auto":
        notes.append(f"boxes {boxes_opt} (given)")
        return boxes_opt == "normalized"
    if not boxes.size:
        notes.append("no box on the probe image: boxes taken as input pixels, as Ultralytics "
                     "writes them (pass --boxes normalized if they are not)")
        return False
    centres = np.abs(boxes[:, :2])
    q = float(np.percentile(centres, 99)) if centres.size else 0.0
    if q <= 1.5:
        notes.append(f"boxes normalized to [0, 1] (probe: 99th percentile of centres {q:.3f})")
        return True
    if q > 2.0:
        if q > 4 * max(size_wh):
            raise ModelRejectedError(f"box centres reach {q:.0f}, far outside a "
                                     f"{size_wh[0]}x{size_wh[1]} input: not boxes in pixels "
                                     "or normalized; pass --boxes if you know better")
        notes.append(f"boxes in input pixels (probe: 99th percentile of centres {q:.1f})")
        return False
    raise ModelRejectedError(f"cannot tell pixels from normalized boxes (centres up to {q:.2f}); "
                             "pass --boxes pixels or --boxes normalized")


SEVEN_BIT = 64  # |int8 weight| at most this: no uint8 x int8 pair sum overflows int16


def widest_int8_weight(proto: onnx.ModelProto) -> int:
    """The largest magnitude among the graph's int8 initializers (0 when it has none)."""
    return max((int(np.abs(onnx.numpy_helper.to_array(i).astype(np.int32)).max())
                for i in proto.graph.initializer
                if i.data_type == onnx.TensorProto.INT8 and np.prod(i.dims) > 0), default=0)


def saturation_note(proto: onnx.ModelProto) -> str | None:
    """A warning when the graph's int8 weights use all 8 bits. On x86 CPUs without VNNI
    (AVX2; AMD before Zen 4) ONNX Runtime adds each pair of uint8 x int8 products into a
    saturating 16-bit integer, so such a model computes differently there, and finds less,
    than on the CPU it was checked on; 7-bit weights cannot overflow."""
    widest = widest_int8_weight(proto)
    if widest <= SEVEN_BIT:
        return None
    return (f"int8 weights up to {widest}: on CPUs without VNNI (AVX2) ONNX Runtime's uint8 x "
            "int8 products can saturate and the model may find less there than here; "
            "quantize with 7-bit weights (onnxruntime quantize_static(..., reduce_range=True)) "
            "or register the float model")


def inspect_model(path: Path, *, boxes: Boxes = "auto", size_wh: tuple[int, int] | None = None
                  ) -> Inspection:
    """Read, check and probe ``path``; raises :class:`ModelRejectedError` with the reason."""
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError and its own errors
        raise ModelRejectedError(f"{path} is not an ONNX model: {exc}") from exc
    meta = read_metadata(proto)
    notes: list[str] = []
    if (warning := saturation_note(proto)) is not None:
        notes.append(warning)
    names = parse_names(meta["names"]) if "names" in meta else None
    if names is not None:
        notes.append(f"{len(names)} class names from metadata")
    if meta.get("task") not in (None, "detect"):
        raise ModelRejectedError(f"metadata task is {meta['task']!r}; only detection models "
                                 "(task 'detect') can be registered")
    init = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in init]
    if len(inputs) != 1:
        raise ModelRejectedError(f"the graph takes {len(inputs)} inputs; a detector takes one "
                                 "image")
    layout, size = _input_geometry(inputs[0], size_wh or parse_imgsz(meta.get("imgsz", "")),
                                   notes)
    if size_wh is not None:
        size = size_wh
    if not all(MIN_INPUT_SIDE <= v <= MAX_INPUT_SIDE for v in size):
        raise ModelRejectedError(f"input size {size[0]}x{size[1]} is outside "
                                 f"{MIN_INPUT_SIDE}..{MAX_INPUT_SIDE} pixels a side")
    elem = inputs[0].type.tensor_type.elem_type
    dtype = {1: "tensor(float)", 2: "tensor(uint8)", 10: "tensor(float16)"}.get(
        elem, f"element type {elem}")
    outputs = probe(proto.SerializeToString(), inputs[0].name,
                    _tensor(probe_image(size), layout, dtype), f"{size[0]}x{size[1]} {layout}")
    shapes = [tuple(np.asarray(o).shape) for o in outputs]
    fmt, nc, box_cols = _output_layout(outputs, names, size, notes, nms_in_graph(meta))
    if names is not None and len(names) != nc:
        raise ModelRejectedError(f"metadata names {len(names)} classes but the output {shapes} "
                                 f"carries {nc}")
    labels = names or (["product"] if nc == 1 else [f"class-{i}" for i in range(nc)])
    if fmt == "centernet":
        normalized = False
        notes.append("centre heatmap + box maps in input pixels")
    else:
        normalized = _box_convention(box_cols, size, boxes, notes)
    task: Literal["product", "sku"] = "product" if nc == 1 else "sku"
    dims = _dims(inputs[0])
    dynamic = not all(isinstance(v, int) for v in (dims[2:4] if layout == "NCHW" else dims[1:3]))
    return Inspection(fmt, inputs[0].name, layout, size, dtype, labels, normalized, dynamic,
                      task, meta, notes)


def _probe_child(conn: Connection, model: bytes, input_name: str, tensor: npt.NDArray[Any],
                 address_mb: int) -> None:
    """In the child: run ``model`` once on ``tensor``; send back the outputs and the peak
    resident memory, or the error."""
    import resource

    limit = address_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(model, sess_options=opts,
                                       providers=["CPUExecutionProvider"])
        outputs = [np.asarray(o) for o in session.run(None, {input_name: tensor})]
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        conn.send(("ok", outputs, peak_mb))
    except BaseException as exc:  # onnxruntime raises untyped errors; MemoryError too
        conn.send(("error", f"{type(exc).__name__}: {exc}", 0.0))
    finally:
        conn.close()


def probe(model: bytes, input_name: str, tensor: npt.NDArray[Any], what: str, *,
          timeout_s: float = PROBE_TIMEOUT_S, max_rss_mb: int = PROBE_MAX_RSS_MB,
          address_mb: int = PROBE_MAX_ADDRESS_MB) -> list[npt.NDArray[Any]]:
    """The graph's outputs on one probe image, run in a child process that may take at most
    ``timeout_s`` and whose memory is bounded; :class:`ModelRejectedError` when it fails,
    hangs or takes more than ``max_rss_mb``."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_probe_child, args=(theirs, model, input_name, tensor,
                                                   address_mb), daemon=True)
    child.start()
    theirs.close()
    try:
        if not ours.poll(timeout_s):
            raise ModelRejectedError(f"the graph did not finish one {what} image in "
                                     f"{timeout_s:g} s")
        status, payload, peak_mb = ours.recv()
    except EOFError as exc:  # the child died without a word (killed for its memory)
        raise ModelRejectedError(f"the graph's run on a {what} image died (exit code "
                                 f"{child.exitcode}): it takes more memory than allowed") from exc
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        ours.close()
    if status != "ok":
        raise ModelRejectedError(f"the graph does not run on a {what} image: {payload}")
    if peak_mb > max_rss_mb:
        raise ModelRejectedError(f"the graph took {peak_mb:,.0f} MB for one {what} image (at "
                                 f"most {max_rss_mb:,} MB): a worker would keep that, photo "
                                 "after photo")
    return list(payload)


def nms_in_graph(meta: dict[str, str]) -> bool | None:
    """What an Ultralytics export's metadata says of NMS inside its graph: its ``end2end``
    flag (YOLOv10, YOLO26) or ``nms`` among its export ``args``; None when it says nothing."""
    try:
        args = ast.literal_eval(meta.get("args", "{}"))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        args = {}
    if isinstance(args, dict) and args.get("nms") is True:
        return True
    return {"True": True, "False": False}.get(meta.get("end2end", ""))


def _rows_look_end2end(rows: npt.NDArray[np.float32]) -> bool:
    """``[N, 6]`` rows whose last column holds class ids and whose scores come best first."""
    cls, score = rows[:, 5], rows[:, 4]
    return bool(np.isfinite(rows).all() and (cls == np.rint(cls)).all() and (cls >= 0).all()
                and (np.diff(score) <= 1e-6).all())


def _end2end(out: npt.NDArray[Any], names: list[str] | None, notes: list[str]
             ) -> tuple[int, npt.NDArray[np.float32]]:
    rows = out[0].astype(np.float32)
    if not np.isfinite(rows).all():
        raise ModelRejectedError("the graph returns NaN or infinite box coordinates")
    real = rows[(rows[:, 2] > rows[:, 0]) & (rows[:, 3] > rows[:, 1]) & (rows[:, 4] > 0)]
    _probabilities(real[:, 4], "scores")
    top = int(real[:, 5].max()) if real.size else 0
    if names is not None and top >= len(names):
        raise ModelRejectedError(f"class ids reach {top} but metadata names {len(names)} "
                                 "classes")
    nc = len(names) if names is not None else top + 1
    notes.append(f"output {out.shape}: up to {out.shape[1]} boxes after the graph's own NMS "
                 f"(x1 y1 x2 y2 score class), {len(real)} on the probe image")
    if names is None:
        notes.append(f"no class names in the metadata: {nc} class(es) from the class ids "
                     "seen on the probe image")
    xyxy = real[:, :4]
    cxcywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    return nc, cxcywh.astype(np.float32)


def _probabilities(scores: npt.NDArray[np.float32], what: str) -> None:
    if scores.size and (scores.min() < -1e-3 or scores.max() > 1 + 1e-3):
        raise ModelRejectedError(
            f"{what} range {scores.min():.2f}..{scores.max():.2f}: not probabilities "
            "(export with the sigmoid in the graph)")


def _yolov5(out: npt.NDArray[Any], notes: list[str]) -> tuple[int, npt.NDArray[np.float32]]:
    rows = out[0].astype(np.float32)
    _probabilities(rows[:, 4:], "objectness and class scores")
    nc = rows.shape[1] - 5
    notes.append(f"output {out.shape}: {rows.shape[0]} anchors x (4 + objectness + {nc}), "
                 "YOLOv5 style")
    return nc, rows[:, :4]


def _output_layout(outputs: list[Any], names: list[str] | None, size: tuple[int, int],
                   notes: list[str], end2end: bool | None = None
                   ) -> tuple[Format, int, npt.NDArray[np.float32]]:
    arrays = [np.asarray(o) for o in outputs]
    shapes = [a.shape for a in arrays]
    if (len(arrays) >= 2 and arrays[0].ndim == 4 and arrays[1].ndim == 4
            and arrays[1].shape[1] == 4 and arrays[0].shape[2:] == arrays[1].shape[2:]):
        notes.append(f"outputs {shapes}: centre heatmap [1, C, h, w] + boxes [1, 4, h, w]")
        return "centernet", int(arrays[0].shape[1]), np.zeros((0, 4), np.float32)
    out = arrays[0]
    if out.ndim != 3 or out.shape[0] != 1:
        raise ModelRejectedError(f"output {out.shape} is not a detection layout: expected "
                                 "[1, 4+nc, N] (YOLOv8/YOLO11), [1, N, 5+nc] (YOLOv5), "
                                 "[1, Q, 4+nc] (RT-DETR) or [1, N, 6] (NMS in the graph)")
    a, b = int(out.shape[1]), int(out.shape[2])
    if end2end and b != 6:
        raise ModelRejectedError(f"the metadata says NMS is inside the graph, but the output "
                                 f"{out.shape} is not [1, N, 6] (x1 y1 x2 y2 score class)")
    if end2end or (end2end is None and b == 6 and a != 6
                   and _rows_look_end2end(out[0].astype(np.float32))):
        nc, boxes = _end2end(out, names, notes)
        return "end2end", nc, boxes
    if a == YOLOV5_ANCHORS * _anchors(size) and b > 5 and (names is None
                                                         or b == 5 + len(names)):
        return "yolov5", *_yolov5(out, notes)
    if names is not None:
        want = 4 + len(names)
        if a == want and b != want:
            rows = out[0].T
        elif b == want:
            rows = out[0]
        else:
            raise ModelRejectedError(f"output {out.shape} does not carry 4 box values + "
                                     f"{len(names)} class scores per candidate")
    else:
        if min(a, b) <= 4:
            raise ModelRejectedError(f"output {out.shape} has no room for 4 box values and "
                                     "class scores")
        rows = out[0].T if a < b else out[0]
    rows = rows.astype(np.float32)
    nc = rows.shape[1] - 4
    _probabilities(rows[:, 4:], "class scores")
    n = rows.shape[0]
    transposed = a != 4 + nc
    if transposed and n != _anchors(size) and n <= RTDETR_MAX_QUERIES:
        fmt: Format = "rtdetr"
        notes.append(f"output {out.shape}: {n} queries x (4 + {nc}), RT-DETR style")
    else:
        fmt = "yolov8"
        notes.append(f"output {out.shape}: {n} candidates x (4 + {nc}), YOLOv8/YOLO11 style")
    return fmt, nc, rows[:, :4]


def _safe_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")
    return name[:64] or "model"


def next_version(root: Path, name: str) -> str:
    base = root / name
    numbers = [int(p.name) for p in base.iterdir() if p.name.isdigit()] if base.is_dir() else []
    return str(max(numbers, default=0) + 1)


def register_model(path: Path, *, models: Path, name: str | None = None,
                   version: str | None = None, boxes: Boxes = "auto",
                   size_wh: tuple[int, int] | None = None) -> tuple[Path, Inspection]:
    """Inspect ``path`` and write ``models/<name>/<version>/`` in one rename."""
    info = inspect_model(path, boxes=boxes, size_wh=size_wh)
    model_name = _safe_name(name or path.stem)
    ver = version or next_version(models, model_name)
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", ver):
        raise ModelRejectedError(f"version {ver!r} must be letters, digits, '.', '_' or '-'")
    dest = models / model_name / ver
    if dest.exists():
        raise ModelRejectedError(f"{dest} already exists; choose another --version")
    data = path.read_bytes()
    card = {
        "name": model_name, "version": ver, "format": info.format, "task": info.task,
        "input": {"name": info.input_name, "size": list(info.size_wh), "layout": info.layout,
                  "channels": "RGB", "scale": 1 / 255, "pad_value": 114,
                  "keep_aspect": info.dynamic, "lighting": "original"},
        # Ultralytics' own NMS overlap (0.7): at 0.5 the neighbours of a dense shelf, whose
        # boxes overlap, suppress one another. Dense shelf photos show up to 700 products.
        "postprocess": {"score_threshold": 0.25, "iou_threshold": 0.7, "max_detections": 1000,
                        "normalized_boxes": info.normalized_boxes},
        "tiling": None,
        "registered": {"source": path.name, "bytes": len(data), "metadata": info.metadata,
                       "inspection": {k: v for k, v in asdict(info).items()
                                      if k not in ("metadata", "labels")}},
        "metrics": {},
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    (models / model_name).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ver}-", dir=models / model_name))
    try:
        (tmp / "model.onnx").write_bytes(data)
        (tmp / "labels.json").write_text(json.dumps(dict(enumerate(info.labels)), indent=1)
                                         + "\n")
        (tmp / "card.json").write_text(json.dumps(card, indent=1) + "\n")
        _check_loads(tmp, model_name, ver)
        os.rename(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest, info


def _check_loads(mdir: Path, name: str, version: str) -> None:
    """The written directory loads and detects through the same code the pipeline uses."""
    from pipeline.detect.card import load_model
    from pipeline.detect.detector import Detector

    files = load_model(mdir.parent.parent, name, mdir.name, verify_sha256=True)
    det = Detector(files, device="cpu")
    w, h = det.geometry().size_wh
    det.detect(probe_image((w, h)))
