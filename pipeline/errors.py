"""Every error the pipeline raises on purpose, in one hierarchy: the class decides the fate.

``TransientError`` is retried (exponential backoff, jitter, a finite count); a
``PermanentError`` goes to a dead letter with its reason. Adapters translate vendor errors
(botocore, redis, kombu, onnxruntime) into these; nothing else catches vendor errors.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class TransientError(PipelineError):
    """A fault that may pass: throttling, 5xx, timeouts, connection loss. Retried."""


class PermanentError(PipelineError):
    """A fault that retrying cannot fix: corrupt input, bad event, schema violation."""


class StageTimeoutError(PermanentError):
    """A stage ran past its soft time limit: dead-lettered with that reason, not retried at
    once (beat sends it round later, a few times: a slow S3 may have been the cause)."""


class StageTimeLimitExceeded(BaseException):
    """Raised into a step that runs past its soft time limit. A ``BaseException``, as
    ``KeyboardInterrupt`` is, so that no ``except Exception`` inside a step (an adapter
    translating vendor errors, say) swallows it; the stage records a ``StageTimeoutError``."""


# -- transient ----------------------------------------------------------------------------

class LockHeldError(TransientError):
    """Another worker is running this stage for the same photo."""


class InFlightElsewhereError(TransientError):
    """Another listener is enqueueing the same object version right now."""


class UrlRejectedError(TransientError):
    """The URL was refused (403): expired or signed by expired credentials. Mint a new one."""


# -- permanent: input ----------------------------------------------------------------------

class MalformedEventError(PermanentError):
    """An SQS body that is not an S3 event notification."""


class InvalidKeyError(PermanentError):
    """An object key the pipeline refuses: control characters, broken Unicode, too long."""


class CorruptImageError(PermanentError):
    """The photo is not a decodable JPEG, PNG, HEIC or WebP within the configured bounds."""


class TooLargeError(PermanentError):
    """The object is larger than the configured cap."""


class PlanogramError(PermanentError):
    """The photo's planogram exists but cannot be used: unreadable, too large, another bay's."""


class CatalogError(PermanentError):
    """A catalog entry or index that cannot be read or written as asked."""


class ObjectNotFoundError(PermanentError):
    """The object or bucket does not exist."""


class ArtifactLostError(ObjectNotFoundError):
    """An earlier stage's artifact is gone from S3 although the ledger marks that stage done
    (a purge of the artifacts bucket, a restore of Redis from an older snapshot). Retrying
    the stage cannot bring it back; the photo's chain starts again from ingest."""

    def __init__(self, message: str, sha256: str) -> None:
        super().__init__(message)
        self.sha256 = sha256


class DatasetError(PermanentError):
    """A folder that is not a readable labelled dataset."""


# -- permanent: forged or foreign ----------------------------------------------------------

class ForgedMessageError(PermanentError):
    """A stage message that points outside the pipeline's own buckets."""


class ForgedUrlError(PermanentError):
    """A URL that is not a pre-signed GET of the raw bucket on the configured endpoint."""


# -- permanent: models ---------------------------------------------------------------------

class ModelError(PermanentError):
    """A model directory, card or graph that cannot be used as declared."""


class ModelRejectedError(ModelError):
    """The graph cannot be registered: its inputs or outputs are not a readable detector."""


class DecodeError(ModelError):
    """Model outputs do not have the shape their declared format needs."""
