"""Synthetic shelf world: SKU catalog, planograms, scenes and camera effects with known truth."""
