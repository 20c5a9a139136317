"""Per-process resources of a worker: clients and detectors, created after fork, on first use."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.routing import HEAVY, RouteRules
from pipeline.detect.detector import Detector
from pipeline.settings import Settings, get_settings
from pipeline.storage.redis import make_redis
from pipeline.storage.s3 import ObjectStore, make_client


@dataclass
class Runtime:
    settings: Settings
    store: ObjectStore
    redis: Any
    pid: int
    _detectors: dict[str, Detector] = field(default_factory=dict)

    def detector(self, route: str) -> Detector:
        m = self.settings.models
        name = m.heavy if route == HEAVY else m.light
        if name not in self._detectors:
            self._detectors[name] = Detector.from_dir(
                m.root, name, device=m.device, intra_op_threads=m.intra_op_threads)
        return self._detectors[name]

    @property
    def rules(self) -> RouteRules:
        r = self.settings.routing
        return RouteRules(r.heavy_store_formats, r.heavy_display_types, r.heavy_cameras,
                          r.dark_luminance, r.low_contrast)


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The current process's runtime; rebuilt in a forked child (clients are not fork-safe)."""
    global _runtime
    if _runtime is None or _runtime.pid != os.getpid():
        s = get_settings()
        _runtime = Runtime(s, ObjectStore(make_client(s.aws, "s3")), make_redis(s.redis.url),
                           os.getpid())
    return _runtime
