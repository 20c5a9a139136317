"""Which detector sees a photo: a pure, configurable rule set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.settings import RoutingSettings

LIGHT = "light"
HEAVY = "heavy"


@dataclass(frozen=True)
class RouteRules:
    """The rules as configured (``Settings.routing``); no defaults of their own."""

    heavy_store_formats: tuple[str, ...]
    heavy_display_types: tuple[str, ...]
    heavy_cameras: tuple[str, ...]
    dark_luminance: float
    low_contrast: float

    @classmethod
    def from_settings(cls, r: RoutingSettings) -> RouteRules:
        return cls(r.heavy_store_formats, r.heavy_display_types, r.heavy_cameras,
                   r.dark_luminance, r.low_contrast)


@dataclass(frozen=True)
class Route:
    path: str  # light | heavy
    reason: str


def choose_route(*, rules: RouteRules, store_format: str, display_type: str, camera: str,
                 mean_luminance: float, contrast: float) -> Route:
    """First matching rule wins; the reason names it."""
    if store_format.lower() in {f.lower() for f in rules.heavy_store_formats}:
        return Route(HEAVY, f"store format {store_format}")
    if display_type.lower() in {d.lower() for d in rules.heavy_display_types}:
        return Route(HEAVY, f"display type {display_type}")
    if camera in rules.heavy_cameras:
        return Route(HEAVY, f"camera {camera}")
    if mean_luminance < rules.dark_luminance:
        return Route(HEAVY, f"poor light: mean luminance {mean_luminance:.0f}")
    if contrast < rules.low_contrast:
        return Route(HEAVY, f"poor light: contrast {contrast:.0f}")
    return Route(LIGHT, "standard gondola in good light")
