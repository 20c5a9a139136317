"""Per-process resources of a worker: clients and detectors, created after fork, on first use."""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from redis import Redis

from pipeline.core.routing import HEAVY, RouteRules
from pipeline.detect.card import load_model
from pipeline.detect.detector import Detector
from pipeline.detect.embedder import Embedder, load_embedder
from pipeline.detect.recognizer import Recognizer, weights_from
from pipeline.settings import Settings, get_settings
from pipeline.storage.catalog import CatalogStore
from pipeline.storage.ledger import Ledger, RedisLedger
from pipeline.storage.redis import make_redis
from pipeline.storage.s3 import ObjectStore, make_client

IMAGES_KEPT = 4  # decoded working images kept for the next stage in the same process


@dataclass
class Runtime:
    settings: Settings
    store: ObjectStore
    redis: Redis
    pid: int
    ledger: Ledger
    # Ingest's upright image, by photo hash: normalize in the same process skips the
    # artifact's download and decode (it is written all the same).
    images: OrderedDict[str, npt.NDArray[np.uint8]] = field(default_factory=OrderedDict)
    _detectors: dict[str, Detector] = field(default_factory=dict)
    _recognizer: Recognizer | None = None
    _catalog: CatalogStore | None = None

    def detector(self, route: str) -> Detector:
        m = self.settings.models
        name = m.heavy if route == HEAVY else m.light
        if name not in self._detectors:
            self._detectors[name] = Detector(
                load_model(m.root, name, verify_sha256=True), device=m.device,
                intra_op_threads=m.intra_op_threads)
        return self._detectors[name]

    def recognizer(self) -> Recognizer:
        if self._recognizer is None:
            m, r = self.settings.models, self.settings.recognition
            embedder = Embedder(load_embedder(m.root, r.embedder, verify_sha256=True),
                                device=m.device, intra_op_threads=m.intra_op_threads)
            self._recognizer = Recognizer(embedder, self.catalog, weights_from(r))
        return self._recognizer

    @property
    def catalog(self) -> CatalogStore:
        if self._catalog is None:
            self._catalog = CatalogStore(self.store, self.settings.s3.config_bucket,
                                         self.settings.recognition.catalog_refresh_s)
        return self._catalog

    @property
    def rules(self) -> RouteRules:
        return RouteRules.from_settings(self.settings.routing)

    def keep_image(self, sha: str, image: npt.NDArray[np.uint8]) -> None:
        self.images[sha] = image
        self.images.move_to_end(sha)
        while len(self.images) > IMAGES_KEPT:
            self.images.popitem(last=False)


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The current process's runtime; rebuilt in a forked child (clients are not fork-safe)."""
    global _runtime
    if _runtime is None or _runtime.pid != os.getpid():
        s = get_settings()
        redis = make_redis(s.redis.url)
        _runtime = Runtime(s, ObjectStore(make_client(s.aws, "s3")), redis, os.getpid(),
                           RedisLedger(redis))
    return _runtime


def check_models(settings: Settings) -> list[str]:
    """What a worker needs before it takes work: both detectors and the embedder readable
    and matching the sha256 of their cards, and CUDA where the device asks for it. Returns
    the problems (empty when ready)."""
    import onnxruntime as ort

    from pipeline.errors import ModelError

    m = settings.models
    problems = []
    for name in (m.light, m.heavy):
        try:
            load_model(m.root, name, verify_sha256=True)
        except ModelError as exc:
            problems.append(str(exc))
    try:
        load_embedder(m.root, settings.recognition.embedder, verify_sha256=True)
    except ModelError as exc:
        problems.append(str(exc))
    if m.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        problems.append("SHELF_MODELS__DEVICE=cuda but this onnxruntime has no CUDA provider "
                        f"({ort.get_available_providers()})")
    return problems
