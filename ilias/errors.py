"""The one exception family a user can act on.

Every error that a user can fix (a wrong path, an unknown encoder, a collection that does
not exist, a vector of the wrong size) is an ``IliasError`` whose message says what to do.
The CLI prints these without a traceback and exits non-zero; anything else is a bug.
"""


class IliasError(Exception):
    """Base class for errors with a message that names the fix."""


class DatasetError(IliasError):
    """A dataset path or layout that cannot be read as asked."""


class EncoderSpecError(IliasError):
    """An encoder spec that does not name a loadable model."""


class StoreError(IliasError):
    """A store spec, collection or operation that the engine refuses."""


class CollectionBusy(StoreError):
    """A collection another process holds (an Edge shard has one owner, e.g. a running load)."""


class DiskFull(StoreError):
    """Too little free disk for a write (or for opening a collection): refused before the
    engine runs out of it, so nothing stored is lost."""


class VectorValidationError(StoreError):
    """Vectors that must not reach the engine: NaN/inf, wrong dimension, not normalised."""


class AdaptationError(IliasError):
    """Training data or options that cannot train a linear adaptation layer."""


class ExtractionError(IliasError):
    """An extraction that cannot go on (its workers keep dying); stored points are kept."""


class DeviceError(IliasError):
    """A ``--device`` or ``--precision`` this machine cannot honour, or a misspelt one."""
