"""The program's vocabulary, as the tables store it: defined once, in rules/enums.py.

Re-exported here for the layers above (tasks, flows, the CLI), which have always taken it
from `models.enums`; `rules/` never imports `models` (tests/test_layering.py).
"""

from rules.enums import (
    REASON_STAGE,
    Allocation,
    LedgerStatus,
    MessageStatus,
    Outcome,
    PendingReason,
    ReasonCode,
    Stage,
    State,
    WaveStatus,
    reasons_of,
    stage_of_reason,
)

__all__ = [
    "REASON_STAGE",
    "Allocation",
    "LedgerStatus",
    "MessageStatus",
    "Outcome",
    "PendingReason",
    "ReasonCode",
    "Stage",
    "State",
    "WaveStatus",
    "reasons_of",
    "stage_of_reason",
]
