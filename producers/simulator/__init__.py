"""Realistic, repeatable Sada traffic: ``sada simulate`` and the feed of ``sada run --demo``.

:func:`simulate` yields complete, validated CloudEvents in event-time order.
Submissions of every kind arrive through every channel, weighted toward the
leaves of the unit tree, with Persian, Russian and English text built from the
seed sentences. Support is heavy-tailed: submissions are ranked at random and
draw supporters Zipf-like by rank, so a few cross the support thresholds while
most get a handful; some voters change their stance, some retract it.

Units respond in business time of the organisation's calendar: each unit a
submission reaches (on creation, referral or escalation) draws its own
behaviour: acknowledgement within hours, answer within days, now and then a
referral, a rejection, a stalled case or silence. A share of submissions is
never answered at all, so deadlines pass and the pipeline escalates them.
Every response comes from the unit that holds the submission at that instant:
the simulator follows each submission with the pipeline's own decision core,
so it knows where escalations have moved it. Closed submissions get
satisfaction ratings; a few are withdrawn.

Everything comes from one ``random.Random(seed)`` and instants derived from
``start``: the same arguments give the same events, byte for byte.

:func:`run_demo` publishes a short backfill of history ending now, then a
live trickle stamped with the wall clock, including one submission that goes
viral within a minute or two.
"""

from sada.producers.simulator.history import simulate
from sada.producers.simulator.live import run_demo
from sada.producers.simulator.world import DEFAULT_SOURCE_PREFIX

__all__ = ["DEFAULT_SOURCE_PREFIX", "run_demo", "simulate"]
