"""Machine-readable reasons for rejecting an input event.

This closed set is the ``reason`` label of rejection metrics and the
``sada.reason`` header of ``sada.dlq`` records, so it must stay bounded.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    INVALID_JSON = "invalid_json"
    TOO_LARGE = "too_large"
    INVALID_ENVELOPE = "invalid_envelope"
    UNKNOWN_TYPE = "unknown_type"
    WRONG_TOPIC = "wrong_topic"
    SCHEMA_VIOLATION = "schema_violation"
    INVALID_TRACKING_CODE = "invalid_tracking_code"
    SUBJECT_MISMATCH = "subject_mismatch"
    UNKNOWN_UNIT = "unknown_unit"
    UNKNOWN_SUBMISSION = "unknown_submission"
    TIME_IN_FUTURE = "time_in_future"
    DUPLICATE_SUBMISSION = "duplicate_submission"
    DUPLICATE_TRACKING_CODE = "duplicate_tracking_code"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
