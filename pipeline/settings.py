"""One Settings object, read from the environment (prefix ``SHELF_``, ``__`` for nesting).

Defaults point at the local stack: LocalStack on 127.0.0.1:4566 and the project's Redis
(``infra/redis/redis.conf``) on 127.0.0.1:6390. Against AWS, unset the endpoint and keys.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.core.shelf.common import ShelfTuning

REPO_ROOT = Path(__file__).resolve().parent.parent
# Where neither the settings nor a model's card say: calibrated on our detector's raw scores.
DEFAULT_FACING_SCORE = 0.25
DEFAULT_EVIDENCE_SCORE = 0.18


class AwsSettings(BaseModel):
    endpoint_url: str | None = "http://127.0.0.1:4566"
    region: str = "us-east-1"
    access_key_id: str | None = "test"
    secret_access_key: str | None = "test"
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0  # per socket read: a megabyte artifact needs far less

    @field_validator("endpoint_url", "access_key_id", "secret_access_key")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        """Blank is unset (a ConfigMap or .env cannot say None): real AWS's endpoint, and the
        credential chain (the pod's IAM role) instead of empty keys."""
        return v if v is None or v.strip() else None


class S3Settings(BaseModel):
    raw_bucket: str = "shelf-raw"
    artifacts_bucket: str = "shelf-artifacts"
    results_bucket: str = "shelf-results"
    config_bucket: str = "shelf-config"
    raw_prefix: str = "raw/"
    presign_expiry_s: int = Field(default=3600, ge=1, le=604800)  # SigV4 maximum: 7 days

    @field_validator("raw_prefix")
    @classmethod
    def _a_folder(cls, v: str) -> str:
        """A folder (``raw/``) or the whole bucket (blank): ``raw`` would make every upload's
        store ``""`` and refuse them all."""
        if v and (not v.endswith("/") or v.startswith("/")):
            raise ValueError(f"raw_prefix {v!r} is no folder: it ends in '/' and does not "
                             "start with one (raw/), or is blank for the whole bucket")
        return v


class SqsSettings(BaseModel):
    queue: str = "shelf-events"
    dead_letter_queue: str = "shelf-events-dlq"
    wait_time_s: int = Field(default=20, ge=0, le=20)  # SQS long-poll maximum
    batch_size: int = Field(default=10, ge=1, le=10)  # SQS receive maximum
    # Also how long the listener's claim on a record lasts: 0 would claim nothing, and every
    # record would be received again and again. SQS's range is 0 s to 12 hours.
    visibility_timeout_s: int = Field(default=60, ge=1, le=43_200)
    max_receive_count: int = Field(default=5, ge=1, le=1000)  # SQS redrive's range
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)  # SQS message maximum
    max_records: int = Field(default=100, ge=1)
    pollers: int = Field(default=3, ge=1, le=16)  # receive-and-handle threads per listener


class RedisSettings(BaseModel):
    # The password comes from the environment or run/shelf.env, which scripts/stack.sh
    # generates (mode 600); none is committed.
    url: str = "redis://pipeline@127.0.0.1:6390/1"
    claim_ttl_s: int = 7 * 24 * 3600  # how long an S3 object version counts as seen


class CelerySettings(BaseModel):
    # A message taken by a worker that then died whole comes back after this: minutes, not an
    # hour. Above the worst stage runtime and the largest countdown (celery#5306, kombu#337).
    visibility_timeout_s: int = 300
    # Transient faults: 10 retries with base 2 s and cap 60 s wait 3 to 6 minutes in all (an
    # S3 brownout); a photo still failing is dead-lettered, and sent round again by beat
    # (reconcile) auto_replays times, auto_replay_after_s after it failed, before a person.
    max_retries: int = 10
    backoff_base_s: float = 2.0
    backoff_max_s: float = 60.0
    auto_replays: int = Field(default=3, ge=0)
    auto_replay_after_s: float = 600.0
    max_deliveries: int = 5  # a message redelivered more often than this is dead-lettered
    # A pool process is replaced after this many tasks, or once its resident memory passes the
    # cap; a new one loads the models again (seconds), so not every few hundred photos.
    max_tasks_per_child: int = 10_000
    max_memory_per_child_mb: int = 1_500  # a child peaks near 1.1 GB on 24 MP photos
    stage_time_limit_s: int = 120
    eta_task_limit: int = Field(default=4, ge=1)  # retries a worker holds, waiting to run
    # Beat's own tasks (rollups, recompute, reconcile, replays) read more as the data grows:
    # limited apart from the stages, and acknowledged on receipt (the next tick runs again),
    # so a long run is never redelivered past the visibility timeout and run twice.
    maintenance_time_limit_s: int = Field(default=1800, ge=60)
    aggregate_every_s: int = 300  # beat: rebuild today's and yesterday's rollups
    aggregate_debounce_s: float = 30.0  # a finished photo asks for its day's rebuild this soon
    recompute_every_s: int = 60  # beat: uploads waiting for a planogram, complied once it is there
    reconcile_every_s: int = 600  # beat: uploads with neither result nor dead letter
    reconcile_window_s: int = 2 * 24 * 3600  # how far back reconciliation looks
    reconcile_grace_s: float = 900.0  # younger uploads may still be in flight
    # Prepended to every broker key (kombu ``global_keyprefix``): deployments, or test runs,
    # sharing one Redis database never take each other's messages.
    key_prefix: str = ""


class IngestSettings(BaseModel):
    max_bytes: int = 40 * 1024 * 1024
    download_timeout_s: float = 30.0  # each wait on the socket
    download_deadline_s: float = 60.0  # the whole download (under the stage's soft limit)
    max_pixels: int = 50_000_000  # decompression-bomb guard
    min_side: int = 320
    max_side: int = 12_000
    working_long_side: int = 1280  # what later stages need; larger photos are downscaled
    # A photo longer than this many times its short side is a panorama of several bays:
    # refused (one planogram is one bay)
    max_aspect: float = Field(default=6.0, ge=1.0)
    jpeg_quality: int = 92
    # An EXIF capture time counts if at most this many days before the upload (else the
    # upload's day: a camera with a reset clock says 2000-01-01)
    max_capture_age_days: int = Field(default=30, ge=0)


class ModelSettings(BaseModel):
    root: Path = REPO_ROOT / "models"
    light: str = "product-light"
    heavy: str = "product-heavy"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = Field(default=1, ge=1)
    inter_op_threads: int = Field(default=1, ge=1)


class RecognitionSettings(BaseModel):
    """Naming products from the catalog (see ``pipeline.core.recognition``)."""

    embedder: str = "sku-embed"
    embed_weight: float = 1.0
    colour_weight: float = Field(default=0.35, ge=0)
    aspect_weight: float = Field(default=0.25, ge=0)
    # Near ties (within layout_margin of a product's best score) reordered by where on the
    # pack its colours are, layout_weight per unit of chroma distance (0: off; see
    # recognition.rerank_by_layout). Tuned on `shelf eval --seed 7` endcap crops.
    layout_weight: float = Field(default=0.004, ge=0)
    layout_margin: float = Field(default=0.05, ge=0, le=1)
    # Near ties (within size_margin of a product's best score) reordered by how well its box
    # fits each SKU's size in the catalog against the products around it, size_weight per
    # unit of |log| size mismatch (0: off; see recognition.rerank_by_size).
    size_weight: float = Field(default=0.6, ge=0)
    size_margin: float = Field(default=0.1, ge=0, le=1)
    # Best similarity below this: unknown. scripts/calibrate_recognition.py, sku-embed/7
    # with colour layouts: 0.959 of synthetic shelf crops named right (0.957 at 0.55, 0.954
    # at 0.7), and 0.113 of real products the catalog lacks named as one of its SKUs (0.250
    # at 0.55, 0.062 at 0.7). A store whose catalog covers few of its products is better
    # served higher.
    threshold: float = 0.65
    candidates: int = Field(default=8, ge=1, le=50)  # kept per product for per-bay naming
    # A product that the planogram would have misplaced, but that scores within this of its
    # best candidate for the SKU planned where it stands, is named that SKU (0: never; see
    # recognition.nearly_as_like). Tuned with `shelf eval-compliance --count 40 --seed 7`
    # (compliance error p90 at 0.1 / 0.15 / 0.2 / 0.25 / 0.3: 7.54 / 5.06 / 4.54 / 3.53 /
    # 3.53 points, misplaced recall 0.886 throughout); see the README's figures.
    position_margin: float = Field(default=0.25, ge=0, le=1)
    # A product scoring under the threshold (too small or blurred to be named surely) whose
    # best candidates, above this floor and within the margin, hold the SKU planned where it
    # stands is named that SKU too. At or above the threshold: never. At 0.45, 0.021 of real
    # products the catalog lacks would be named so were the planned SKU drawn at random from
    # a catalog of 26 (0.006 at 0.55): a store whose catalog covers few of its products is
    # better served higher. See the README's figures.
    position_floor: float = Field(default=0.45, ge=0, le=1)
    catalog_refresh_s: float = Field(default=5.0, ge=0)  # a worker re-checks the catalog


class ComplianceSettings(BaseModel):
    # A detection counts as a facing at ``min_score``; between ``evidence_score`` and it, it
    # is neither a facing nor a gap. Scores are each model's own: unset, they are the routed
    # model card's (``postprocess.facing_score`` / ``evidence_score``), else the defaults.
    min_score: float | None = Field(default=None, ge=0, le=1)
    evidence_score: float | None = Field(default=None, ge=0, le=1)
    # The shelf core's thresholds and alignment scores, one env var per field, e.g.
    # SHELF_COMPLIANCE__TUNING__HOLE_MIN=0.7; defaults and checks are ShelfTuning's own.
    tuning: ShelfTuning = ShelfTuning()

    def scores(self, card_facing: float | None, card_evidence: float | None
               ) -> tuple[float, float]:
        """(facing, evidence) for a model whose card gives ``card_*`` (None: not given)."""
        facing = next(v for v in (self.min_score, card_facing, DEFAULT_FACING_SCORE)
                      if v is not None)
        evidence = next(v for v in (self.evidence_score, card_evidence,
                                    DEFAULT_EVIDENCE_SCORE) if v is not None)
        return facing, min(evidence, facing)


class RoutingSettings(BaseModel):
    heavy_store_formats: tuple[str, ...] = ("flagship", "hypermarket")
    heavy_display_types: tuple[str, ...] = ("endcap", "promo")
    heavy_cameras: tuple[str, ...] = ()
    dark_luminance: float = 60.0  # mean L (0-255) below which light is "poor"
    low_contrast: float = 25.0


class QuerySettings(BaseModel):
    """Bounds of one ``shelf query`` (DuckDB): an analyst's query cannot take the host."""

    memory_mb: int = Field(default=2048, ge=64)
    threads: int = Field(default=2, ge=1)
    timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    # Rows one query may return: the answer is copied into Python, outside DuckDB's memory
    # limit (aggregate, or LIMIT it).
    max_rows: int = Field(default=100_000, ge=1)


class MetricsSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=9808, ge=1, le=65535)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHELF_", env_nested_delimiter="__",
                                      extra="ignore", env_file=REPO_ROOT / "run" / "shelf.env")

    aws: AwsSettings = AwsSettings()
    s3: S3Settings = S3Settings()
    sqs: SqsSettings = SqsSettings()
    redis: RedisSettings = RedisSettings()
    celery: CelerySettings = CelerySettings()
    ingest: IngestSettings = IngestSettings()
    models: ModelSettings = ModelSettings()
    routing: RoutingSettings = RoutingSettings()
    recognition: RecognitionSettings = RecognitionSettings()
    metrics: MetricsSettings = MetricsSettings()
    query: QuerySettings = QuerySettings()
    compliance: ComplianceSettings = ComplianceSettings()
    run_dir: Path = REPO_ROOT / "run"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
