"""The two vocabularies everything else derives from: an object's status, and why a unit got
its answer.

Plain Python (no Django), so the pure bucketing engine (rules.bucketing) uses them as they
are; lab.models derives its field choices from them, decide's OFREP endpoint maps `Reason`
onto the protocol's reasons. See docs/decide.md, "What each status means for the answer".
"""

from enum import StrEnum


class Status(StrEnum):
    """The life of a product, step, experiment, variant or metric."""

    ENABLED = "enabled"
    DISABLED = "disabled"  # paused (experiment), closed to new units (variant)
    REMOVED = "removed"  # hidden; a removed variant serves nobody


class Reason(StrEnum):
    """Why a unit got its answer for one experiment.

    The first three are also what a stored assignment records as its `source` (how the row
    came to hold its variant); see `ASSIGNMENT_SOURCES`.
    """

    HASH = "hash"  # a first decision: hashed into a variant, and stored
    FORCED = "forced"  # an operator's forced assignment
    REBUCKETED = "rebucketed"  # its variant was removed: hashed again, and stored
    STORED = "stored"  # an earlier decision (hash or rebucketed), kept: sticky
    OUTSIDE = "outside"  # outside coverage, or no eligible variant: nothing stored
    OFF_SCHEDULE = "off_schedule"  # now is outside the experiment's schedule: stored kept
    OUTSIDE_LAYER = "outside_layer"  # outside the experiment's slot of its layer: nothing stored
    NOT_TARGETED = "not_targeted"  # the effective attributes fail a condition: nothing stored
    PAUSED = "paused"  # the experiment is disabled
    DISABLED = "disabled"  # the product is disabled
    UNKNOWN = "unknown"  # no such experiment (or not at the asked step)


# The values of Assignment.source.
ASSIGNMENT_SOURCES = (Reason.HASH, Reason.FORCED, Reason.REBUCKETED)


def reason_of_stored(source: str) -> Reason:
    """The reason an answer taken from a stored assignment of `source` has."""
    return Reason.FORCED if source == Reason.FORCED else Reason.STORED
