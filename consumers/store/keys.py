"""The deployment's key fingerprints: the first worker records its key's, the others must match."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from sada.consumers.store.base import StoreBase
from sada.consumers.tables import deployment_keys


class DeploymentKeys(StoreBase):
    """Fingerprints of the keys a deployment's workers must share."""

    def claim_key_fingerprint(self, name: str, fingerprint: str) -> str:
        """The deployment's fingerprint of key ``name``: the stored one, else ``fingerprint``."""
        stored = self.key_fingerprint(name)
        if stored is not None:
            return stored
        try:
            with self._writing("recording the key fingerprint") as conn:
                conn.execute(
                    deployment_keys.insert().values(
                        name=name, fingerprint=fingerprint, created_at=datetime.now(UTC)
                    )
                )
        except Exception as e:  # another worker recorded one first: that one holds
            if not isinstance(e.__cause__, IntegrityError):
                raise
        return self.key_fingerprint(name) or fingerprint

    def key_fingerprint(self, name: str) -> str | None:
        with self._reading("reading the key fingerprint", states=False) as conn:
            value = conn.execute(
                select(deployment_keys.c.fingerprint).where(deployment_keys.c.name == name)
            ).scalar()
        return None if value is None else str(value)
