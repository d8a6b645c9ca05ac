"""How the read queries join the ledger (``events``) to the archive and to responses.

The author's view, the audit timeline and the operations view all read an
event's archived record or a response's place in the log; they join the same
way, so the join is spelled once here.
"""

from __future__ import annotations

from sqlalchemy import and_

from sada.consumers.tables import archive, events, responses

# An applied event and its archived record: the same (partition, offset).
EVENT_RECORD = and_(archive.c.partition == events.c.partition, archive.c.offset == events.c.offset)
# A response and the ledger entry of the event that posted it.
RESPONSE_EVENT = responses.c.key == events.c.key
# Responses in log order: by instant, then by offset (ties in one instant), then key.
RESPONSE_LOG_ORDER = (responses.c.at, events.c.offset, responses.c.key)
