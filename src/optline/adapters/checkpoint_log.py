"""The checkpoint log: an append-only file (put it on other storage) or an HTTP endpoint that receives
each checkpoint. Kept away from the database so that whoever can rewrite the database cannot rewrite it."""

from __future__ import annotations

import os
from pathlib import Path

from optline.domain.checkpoint import Checkpoint, CheckpointError, parse


class CheckpointLogError(RuntimeError):
    """The checkpoint could not be appended; the message names the log (never a URL's credentials)."""


def is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def shown(target: str) -> str:
    """The log's name for messages: a URL without user:password@."""
    if not is_url(target):
        return target
    import httpx  # only for a URL: a file log, and every CLI start, need not load it (~0.1 s)

    url = httpx.URL(target)
    return str(url.copy_with(username=None, password=None)) if url.userinfo else target


def append(target: str, checkpoint: Checkpoint) -> None:
    """One line per checkpoint, written and fsynced (file), or POSTed as JSON (URL, 2xx required)."""
    line = checkpoint.to_json()
    if is_url(target):
        import httpx  # only for a URL: a file log, and every CLI start, need not load it (~0.1 s)

        try:
            response = httpx.post(
                target, content=line.encode(), headers={"content-type": "application/json"}, timeout=10.0
            )
        except httpx.HTTPError as exc:
            raise CheckpointLogError(f"could not send the checkpoint to {shown(target)}: {exc}") from None
        if not response.is_success:
            raise CheckpointLogError(f"the checkpoint log {shown(target)} answered {response.status_code}")
        return
    path = Path(target).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise CheckpointLogError(f"could not append to the checkpoint log {path}: {exc.strerror}") from None


def read(path: Path) -> list[tuple[str, Checkpoint]]:
    """Every checkpoint in a log file as (``file:line``, checkpoint); CheckpointError names a bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CheckpointError(f"cannot read the checkpoint log {path}: {exc.strerror}") from None
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            where = f"{path.name}:{number}"
            found.append((where, parse(line, where)))
    return found
