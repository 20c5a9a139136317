"""Which detector sees a photo: a pure, configurable rule set."""

from __future__ import annotations

from dataclasses import dataclass

LIGHT = "light"
HEAVY = "heavy"


@dataclass(frozen=True)
class RouteRules:
    heavy_store_formats: tuple[str, ...] = ("flagship",)
    heavy_display_types: tuple[str, ...] = ("endcap", "promo")
    heavy_cameras: tuple[str, ...] = ()
    dark_luminance: float = 60.0
    low_contrast: float = 25.0


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
