"""The exception hierarchy: every error Sada raises on purpose is a ``SadaError``.

Library errors (Kafka clients, SQLAlchemy, jsonschema, TOML) are translated at
the boundary where they occur, with ``raise ... from e``, so callers handle one
family and the original cause stays visible in tracebacks.
"""

from __future__ import annotations


class SadaError(Exception):
    """Root of all errors Sada raises on purpose."""


class SettingsError(SadaError):
    """A ``SADA_*`` environment variable (or its command-line twin) is invalid."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class ConfigError(SadaError):
    """The TOML configuration file is invalid; ``key`` names the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key {key!r}: {message}")
        self.key = key


class EventRejectedError(SadaError):
    """An input event was rejected; ``reason`` is a machine-readable code.

    Reasons are the members of :class:`sada.pipeline.domain.reasons.Reason`; ``detail`` is a
    human-readable explanation (for example the schema path that failed).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BrokerError(SadaError):
    """The Kafka broker could not be started, reached or used."""


class StoreError(SadaError):
    """The database (read model, archive, checkpoints) could not be used."""


class FencedError(StoreError):
    """A partition's batch was refused: another owner has written past this writer's checkpoint."""


class NotFoundError(SadaError):
    """A looked-up thing (tracking code, submission) does not exist."""


class AuditError(SadaError):
    """The archive's hash chain does not verify."""


class ProofError(SadaError):
    """A Merkle proof cannot be made for the sizes or indexes asked, or a node is missing."""


class SignatureError(SadaError):
    """A signed note, checkpoint or key is malformed, or a signature does not verify."""


class UnknownKeyError(SignatureError):
    """A well-formed note that no known key signed (it may be signed by keys not trusted here)."""


class SigningKeyError(SadaError):
    """The signing key cannot be read or created, or is not the deployment's."""


class QueryError(SadaError):
    """A query parameter (work queue, report) is invalid; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
