"""What may be answered from the memory of known units, and so what is worth remembering.

An answer from memory must be a read of what the database said, that no other worker's
decision can have changed meanwhile:

- a stored assignment (sticky, forced or rebucketed), or
- a null answer that the config alone decides: paused, unknown, product disabled, off
  schedule, outside coverage, outside the layer's slot.

Anything else goes to the database, which has the last word: a decision that would store a
variant (new unit, new experiment, re-bucketing), a stored variant the config does not know,
and any decision that tests a condition, since conditions read the unit's stored attributes,
which the memory does not keep (decide.memory.entries), and their null answer depends on the
attributes sent. So the memory can delay what a unit is told by at most the staleness bound,
and can never be the reason a variant is stored.
"""

from rules.vocabulary import Reason

# Null answers that the config alone decides, whatever the attributes sent and whatever
# another worker stored meanwhile without an operator.
CONFIG_ONLY_NULLS = frozenset(
    {
        Reason.OUTSIDE,
        Reason.OFF_SCHEDULE,
        Reason.OUTSIDE_LAYER,
        Reason.PAUSED,
        Reason.DISABLED,
        Reason.UNKNOWN,
    }
)


class AttributesNotKept(Exception):
    """A decision from memory needed the unit's stored attributes: the database answers."""


def answerable(plan) -> bool:
    """True when a plan (decide.decisions) stores nothing, tested no condition, and each of
    its answers is a stored assignment or a null that the config alone decides."""
    if plan.writes or plan.config_disagrees or plan.attributes_used:
        return False
    for decisions in plan.decisions.values():
        for answer in decisions.values():
            if answer.variant is None and answer.reason not in CONFIG_ONLY_NULLS:
                return False
    return True
