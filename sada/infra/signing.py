"""The signing key of the archive's checkpoints: read from its file, or made on first start.

``SADA_SIGNING_KEY_FILE`` names a file holding one signer key text
(``PRIVATE+KEY+<name>+<key ID>+<base64>``, Go's ``sumdb/note`` format, so
``note.GenerateKey`` output works too). Without it, the embedded default uses
``signing.key`` in the data directory, created with mode 0600 on first start.
The key never reaches the database, logs or any output: only the verifier
key (public) is stored and shown.
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path

from sada.infra.settings import Settings
from sada.pipeline.domain.errors import SignatureError, SigningKeyError
from sada.pipeline.domain.note import Signer


def default_key_name(deployment: str, now: datetime | None = None) -> str:
    """A name for a new key of ``deployment``: dated, so that a rotated key gets a new one."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{deployment}/{moment:%Y-%m-%d}"


def read_signer(path: Path) -> Signer:
    """The signer in the key file ``path``; one line naming the file if it is not one."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise SigningKeyError(f"cannot read the signing key file {path}: {reason}") from e
    try:
        return Signer.parse(text)
    except SignatureError as e:
        # The reason names the field, never the file's content.
        raise SigningKeyError(f"{path} holds no signing key: {e}") from e


def write_signer(path: Path, signer: Signer) -> None:
    """Write ``signer`` to a new file ``path`` (mode 0600); an existing file is never replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (signer.secret_text() + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        # A hard link is a create that fails if the name exists: no race with another starter.
        os.link(tmp, path)
    except FileExistsError as e:
        raise SigningKeyError(f"{path} exists already; it is not overwritten") from e
    except OSError as e:
        raise SigningKeyError(f"cannot write the signing key file {path}: {e.strerror}") from e
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def load_signer(settings: Settings) -> Signer:
    """The deployment's signer: the named key file, else the data directory's (made if absent).

    A named file must exist: a missing production key is an error, never a
    silently generated one.
    """
    if settings.signing_key_file is not None:
        return read_signer(settings.signing_key_file)
    path = settings.effective_signing_key_file
    if not path.exists():
        try:
            write_signer(path, Signer.generate(default_key_name(settings.deployment)))
        except SigningKeyError:
            if not path.exists():  # another process made it first: read theirs
                raise
    return read_signer(path)
