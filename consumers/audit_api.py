"""The HTTP API of the archive's proofs: checkpoints, the verifier key, RFC 9162 proofs, receipts.

- ``GET /api/v1/audit/key``: the deployment's verifier keys, the current one first
  (``?format=text``: just the current verifier key line);
- ``GET /api/v1/audit/checkpoint``: the latest signed checkpoint of each partition
  (``?partition=P&format=text``: that one signed note as plain text);
- ``GET /api/v1/audit/checkpoints?since=S``: every signed checkpoint after ``S``, a
  sequence number (``next`` of the previous page) or an RFC 3339 instant;
- ``GET /api/v1/audit/proof/inclusion?partition=P&index=I&size=N`` and
  ``GET /api/v1/audit/proof/consistency?partition=P&from=M&to=N``: audit paths,
  hashes in base64 as in checkpoints;
- ``GET /api/v1/submissions/{code}/receipt``: the author's receipt, JSON, or the
  printable page (``?format=html`` or a browser's ``Accept: text/html``).

A receipt needs a signed checkpoint covering its record; when none does yet
(the record is younger than the last checkpoint), one is signed on the spot.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from sada.consumers.receipt_page import render
from sada.consumers.store import SqlStore
from sada.pipeline.domain.errors import NotFoundError, ProofError, SadaError
from sada.pipeline.domain.model import parse_time
from sada.pipeline.domain.tracking import parse_tracking_code

SignNow = Callable[[], Awaitable[Any]]
_PAGE_LIMIT = 1000


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


class _QueryError(SadaError):
    pass


def _int(request: web.Request, name: str, default: int | None = None, minimum: int = 0) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        if default is None:
            raise _QueryError(f"query parameter {name!r} is required")
        return default
    if not raw.isascii() or not raw.isdigit():
        raise _QueryError(f"{name}={raw!r} is not a whole number")
    value = int(raw)
    if value < minimum:
        raise _QueryError(f"{name} must be at least {minimum}")
    return value


def _text_wanted(request: web.Request) -> bool:
    return request.query.get("format") == "text"


class AuditApi:
    def __init__(self, store: SqlStore, sign_now: SignNow | None) -> None:
        self.store = store
        self.sign_now = sign_now

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def key(self, request: web.Request) -> web.Response:
        keys = await self._call(self.store.signing_keys)
        if not keys:
            return _error(404, "no_key", "no signing key is registered yet (start a worker)")
        current = keys[0]
        if _text_wanted(request):
            return web.Response(text=current["verifier_key"] + "\n")
        return web.json_response({**current, "keys": keys})

    async def checkpoint(self, request: web.Request) -> web.Response:
        try:
            partition = _int(request, "partition", -1) if "partition" in request.query else None
        except _QueryError as e:
            return _error(400, "bad_request", str(e))
        latest = await self._call(self.store.latest_checkpoints)
        if partition is not None:
            latest = [c for c in latest if c.partition == partition]
            if not latest:
                return _error(404, "not_found", f"no signed checkpoint of partition {partition}")
            if _text_wanted(request):
                return web.Response(text=latest[0].note)
        return web.json_response({"checkpoints": [c.as_json() for c in latest]})

    async def checkpoints(self, request: web.Request) -> web.Response:
        since = request.query.get("since", "")
        seq: int | None = None
        after: datetime | None = None
        if since.isascii() and since.isdigit():
            seq = int(since)
        elif since:
            try:
                after = parse_time(since)
            except ValueError:
                return _error(
                    400, "bad_request", f"since={since!r}: a sequence number or an RFC 3339 instant"
                )
        try:
            limit = min(_int(request, "limit", _PAGE_LIMIT, minimum=1), _PAGE_LIMIT)
        except _QueryError as e:
            return _error(400, "bad_request", str(e))
        items = await self._call(self.store.signed_checkpoints, seq, after, limit)
        nxt = items[-1].seq if len(items) == limit else None
        return web.json_response({"items": [c.as_json() for c in items], "next": nxt})

    async def inclusion(self, request: web.Request) -> web.Response:
        try:
            partition = _int(request, "partition")
            index = _int(request, "index")
            head = await self._call(self.store.tree_head, partition)
            size = _int(request, "size", head.size if head else 0, minimum=1)
            proof, leaf = await self._call(self.store.inclusion_proof, partition, index, size)
        except _QueryError as e:
            return _error(400, "bad_request", str(e))
        except ProofError as e:
            return _error(400, "bad_proof_request", str(e))
        signed = await self._call(self.store.checkpoint_of_size, partition, size)
        return web.json_response(
            {
                "partition": partition,
                "leaf_index": index,
                "tree_size": size,
                "leaf_hash": _b64(leaf),
                "inclusion_proof": [_b64(h) for h in proof],
                "checkpoint": signed.note if signed else None,
            }
        )

    async def consistency(self, request: web.Request) -> web.Response:
        try:
            partition = _int(request, "partition")
            old = _int(request, "from", minimum=1)
            head = await self._call(self.store.tree_head, partition)
            new = _int(request, "to", head.size if head else 0, minimum=1)
            proof = await self._call(self.store.consistency_proof, partition, old, new)
            roots = await self._call(self.store.roots_at, partition, (old, new))
        except _QueryError as e:
            return _error(400, "bad_request", str(e))
        except ProofError as e:
            return _error(400, "bad_proof_request", str(e))
        return web.json_response(
            {
                "partition": partition,
                "from": old,
                "to": new,
                "from_root": _b64(roots[0]),
                "to_root": _b64(roots[1]),
                "consistency_proof": [_b64(h) for h in proof],
            }
        )

    async def receipt(self, request: web.Request) -> web.Response:
        raw = request.match_info["code"]
        code = parse_tracking_code(raw)
        if code is None:
            return _error(400, "malformed_tracking_code", f"{raw!r} is not a tracking code")
        try:
            receipt = await self._call(self.store.receipt, code)
            if receipt is None and self.sign_now is not None:
                await self.sign_now()  # the record is newer than the last checkpoint
                receipt = await self._call(self.store.receipt, code)
        except NotFoundError as e:
            return _error(404, "not_found", str(e))
        if receipt is None:
            return _error(
                503, "not_yet_signed", "no signed checkpoint covers this record yet; retry shortly"
            )
        fmt = request.query.get("format")
        accept = request.headers.get("Accept", "")
        if fmt == "html" or (fmt is None and "text/html" in accept):
            keys = await self._call(self.store.signing_keys)
            vkey = next((k["verifier_key"] for k in keys if k["key"] == receipt["key"]), None)
            return web.Response(text=render(receipt, vkey), content_type="text/html")
        return web.json_response(
            receipt, headers={"Content-Disposition": f'inline; filename="receipt-{code}.json"'}
        )


def routes(store: SqlStore, sign_now: SignNow | None = None) -> Callable[[web.Application], None]:
    """The installer of the proof routes; ``sign_now`` signs the current heads (the notary's)."""
    api = AuditApi(store, sign_now)

    def install(app: web.Application) -> None:
        app.router.add_get("/api/v1/audit/key", api.key)
        app.router.add_get("/api/v1/audit/checkpoint", api.checkpoint)
        app.router.add_get("/api/v1/audit/checkpoints", api.checkpoints)
        app.router.add_get("/api/v1/audit/proof/inclusion", api.inclusion)
        app.router.add_get("/api/v1/audit/proof/consistency", api.consistency)
        app.router.add_get("/api/v1/submissions/{code}/receipt", api.receipt)

    return install
