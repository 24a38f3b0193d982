"""``exchange-tls audit export`` and ``audit verify`` (product.md section 3), as functions.

The CLI wiring stays in :mod:`bot.cli`; these do the work and return what it prints:

- :func:`audit_export` writes the trail (or one request's events) as JSON lines, each event
  with its sequence, hashes and every field, in sequence order;
- :func:`audit_verify` checks the chain in the database (against the chain head too, so
  deleting the last events is detected) or in an export file, and returns the exit code
  (0 intact, 1 broken, 2 could not check) and a message naming the first broken sequence.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.audit import AuditEvent, AuditLog, VerifyResult, verify_chain
from bot.storage.schema import create_engine_from_url

EXIT_INTACT = 0
EXIT_BROKEN = 1
EXIT_UNCHECKED = 2


class _MalformedLine(ValueError):
    def __init__(self, line_number: int, problem: str) -> None:
        super().__init__(f"line {line_number}: {problem}")
        self.line_number = line_number


def _engine(engine_or_url: Engine | str) -> tuple[Engine, bool]:
    if isinstance(engine_or_url, Engine):
        return engine_or_url, False
    return create_engine_from_url(engine_or_url), True


def audit_export(engine_or_url: Engine | str, out: IO[str], *,
                 request_id: str | None = None) -> int:
    """Write the audit events (only ``request_id``'s when given) to ``out`` as JSON lines;
    returns how many were written. The database is only read."""
    engine, owned = _engine(engine_or_url)
    try:
        return AuditLog(engine).export_jsonl(out, request_id=request_id)
    finally:
        if owned:
            engine.dispose()


def _events_of(lines: IO[str], counter: list[int]) -> Iterator[AuditEvent]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as error:
            raise _MalformedLine(number, f"not JSON ({error})") from None
        if not isinstance(data, dict):
            raise _MalformedLine(number, "not a JSON object")
        try:
            event = AuditEvent(**data)
        except TypeError:
            raise _MalformedLine(number, "not an audit event (fields missing or unknown)") \
                from None
        counter[0] = event.sequence if isinstance(event.sequence, int) else counter[0]
        yield event


def _message(result: VerifyResult, source: str) -> tuple[int, str]:
    if result.ok:
        return EXIT_INTACT, f"{source}: {result.reason}"
    return EXIT_BROKEN, (f"{source}: audit chain broken at sequence "
                         f"{result.first_broken_sequence}: {result.reason}")


def audit_verify(engine_or_url: Engine | str | None = None, *,
                 jsonl_path: str | Path | None = None) -> tuple[int, str]:
    """Verify the hash chain in the database or in a JSONL export (exactly one of them).

    Returns ``(exit code, message)``: 0 when the chain is intact; 1 when it is broken, and the
    message names the first broken sequence number; 2 when it could not be checked (no such
    file, database unreachable). An export holds no chain head: events deleted from its end
    are detected only in the database. A per-request export is not a chain and fails.
    """
    if (engine_or_url is None) == (jsonl_path is None):
        return EXIT_UNCHECKED, "give either the database or an export file (--file), not both"
    if jsonl_path is not None:
        return _verify_file(Path(jsonl_path))
    assert engine_or_url is not None
    try:
        engine, owned = _engine(engine_or_url)
    except (SQLAlchemyError, ValueError) as error:
        return EXIT_UNCHECKED, f"cannot open the database: {error}"
    try:
        result = AuditLog(engine).verify()
    except SQLAlchemyError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return EXIT_UNCHECKED, f"cannot read the audit trail from the database: {first}"
    finally:
        if owned:
            engine.dispose()
    return _message(result, "database")


def _verify_file(path: Path) -> tuple[int, str]:
    last_sequence = [0]
    try:
        with path.open(encoding="utf-8") as lines:
            result = verify_chain(_events_of(lines, last_sequence))
    except OSError as error:
        return EXIT_UNCHECKED, f"cannot read {path}: {error.strerror or error}"
    except UnicodeDecodeError:
        return EXIT_UNCHECKED, f"cannot read {path}: not UTF-8 text"
    except _MalformedLine as error:
        return EXIT_BROKEN, (f"{path}: audit chain broken at sequence {last_sequence[0] + 1}: "
                             f"{error}")
    return _message(result, str(path))
