"""One Settings object, read from the environment (prefix ``SHELF_``, ``__`` for nesting).

Defaults point at a local stack: LocalStack on 127.0.0.1:4566 and Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class AwsSettings(BaseModel):
    endpoint_url: str | None = "http://127.0.0.1:4566"
    region: str = "us-east-1"
    access_key_id: str | None = "test"
    secret_access_key: str | None = "test"


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"


class ModelSettings(BaseModel):
    root: Path = REPO_ROOT / "models"
    light: str = "gondola-light"
    heavy: str = "endcap-heavy"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = Field(default=1, ge=1)
    inter_op_threads: int = Field(default=1, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHELF_", env_nested_delimiter="__",
                                      extra="ignore")

    aws: AwsSettings = AwsSettings()
    redis: RedisSettings = RedisSettings()
    models: ModelSettings = ModelSettings()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
