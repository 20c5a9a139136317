"""The pipeline's errors: the class of an error decides whether it is retried."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class TransientError(PipelineError):
    """A fault that may pass: throttling, 5xx, timeouts, connection loss. Retried."""


class PermanentError(PipelineError):
    """A fault that retrying cannot fix: corrupt input, bad event, schema violation."""


class ModelError(PermanentError):
    """A model directory, card or graph that cannot be used as declared."""
