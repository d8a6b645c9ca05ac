"""The SQL store behind the projector: read model, archive and checkpoints in one database.

:class:`SqlStore` implements :class:`sada.pipeline.domain.ports.ProjectionStore`: a
projector batch (archive records, ledger entries, states, stances, responses,
escalations and the partition checkpoint) is written in ONE transaction, so a
crash leaves either all of it or none. It also answers the read queries of the
HTTP API and the audit commands.

SQLite (the embedded default) runs in WAL mode and write transactions take the
write lock up front (``BEGIN IMMEDIATE``), so several processes can share one
file without failing on lock upgrades. PostgreSQL is the production database.
Every SQLAlchemy error leaves as :class:`sada.pipeline.domain.errors.StoreError`.

The class is put together from one part per concern, all standing on
:class:`~.base.StoreBase` (the database handle, and the connection each call
uses, rebuild mode's included):

- :mod:`.projection`: the projector's loads, lookups, batch write and outbox;
- :mod:`.notifications`: followers, the notification outbox, webhook deliveries;
- :mod:`.author`: what an author sees for a tracking code;
- :mod:`.audit`: timelines, the archive and its chains, dumps;
- :mod:`.operations`: the queries behind /metrics and /dashboard;
- :mod:`.texts`: titles, bodies and their search key, kept up with the archive;
- :mod:`.queue`: the work queue (filters, urgency order, pages);
- :mod:`.history`: totals and instants for the dashboard's cards and charts;
- :mod:`.keys`: the fingerprints of the deployment's pseudonym key.

Beneath them: :mod:`.engine` (opening the database, SQLite's tuning, the WAL
checkpointer), :mod:`.rows` and :mod:`.statements` (a batch in stored form,
and the per-dialect statements that write it), :mod:`.rebuild` (replay's
rebuild mode), :mod:`.joins` (how the reads join the ledger to the archive
and to responses).
"""

from __future__ import annotations

from sada.consumers.store.audit import Audit
from sada.consumers.store.author import AuthorView
from sada.consumers.store.history import History
from sada.consumers.store.keys import DeploymentKeys
from sada.consumers.store.notifications import NotificationStore
from sada.consumers.store.operations import Operations
from sada.consumers.store.projection import Projection
from sada.consumers.store.queue import WorkQueue
from sada.consumers.store.signed import SignedHeads
from sada.consumers.store.texts import Texts

__all__ = ["SqlStore"]


class SqlStore(
    Projection,
    SignedHeads,
    NotificationStore,
    AuthorView,
    Audit,
    Operations,
    Texts,
    WorkQueue,
    History,
    DeploymentKeys,
):
    """The read model, archive and checkpoints in one SQLite or PostgreSQL database."""
