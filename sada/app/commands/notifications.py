"""``sada notifications list|retry|disable|enable``: webhook endpoints and their deliveries.

``list`` shows each configured endpoint (enabled or disabled, and why) and
its deliveries by state, then the failed ones; ``retry`` makes failed
deliveries due again (of one endpoint, or all); ``disable`` / ``enable`` stop
or resume an endpoint (a running ``sada run`` sees it within a second).
"""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import UTC, datetime
from typing import TextIO

from sada.app.commands.common import add_connection_arguments, resolve_config, resolve_settings
from sada.consumers.store import SqlStore
from sada.pipeline.domain.errors import NotFoundError

HELP = "webhook endpoints and deliveries: list, retry failed ones, disable or enable one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("action", choices=["list", "retry", "disable", "enable"])
    parser.add_argument("endpoint", nargs="?", help="a webhook id (retry: all when omitted)")


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    settings = resolve_settings(args)
    config = resolve_config(settings)
    configured = [h.id for h in config.webhooks]
    if args.endpoint is not None and args.endpoint not in configured:
        raise NotFoundError(f"no webhook {args.endpoint!r} in the configuration")
    store = SqlStore(settings.effective_database_url)
    store.migrate()
    now = datetime.now(UTC)
    try:
        if args.action == "list":
            _list(store, configured, stdout)
        elif args.action == "retry":
            n = store.retry_deliveries(args.endpoint, now)
            print(f"{n} failed deliveries due again", file=stdout)
        else:
            if args.endpoint is None:
                raise NotFoundError(f"{args.action} needs a webhook id")
            at = now if args.action == "disable" else None
            store.set_endpoint_disabled(args.endpoint, at, f"{args.action}d by an operator")
            print(f"{args.endpoint} {args.action}d", file=stdout)
    finally:
        store.close()
    return 0


def _list(store: SqlStore, configured: list[str], stdout: TextIO) -> None:
    states = store.endpoint_states()
    rows = store.deliveries_list()
    counts = Counter((r["endpoint"], r["state"]) for r in rows)
    for endpoint in configured:
        disabled_at, reason = states.get(endpoint, (None, ""))
        status = "enabled" if disabled_at is None else f"disabled ({reason})"
        tally = ", ".join(
            f"{counts[(endpoint, s)]} {s}" for s in ("pending", "delivered", "failed")
        )
        print(f"{endpoint}  {status}  {tally}", file=stdout)
    for r in rows:
        if r["state"] == "failed":
            print(
                f"  failed  {r['endpoint']}  {r['notification_id']}  {r['type']}  "
                f"{r['recipient']}  attempts={r['attempts']}  last={r['last_error']}",
                file=stdout,
            )
