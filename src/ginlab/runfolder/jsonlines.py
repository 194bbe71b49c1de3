"""JSON-lines files that are appended while others read them: history.jsonl, steps.jsonl, submissions.jsonl.

The rule, defined here once for the writer and for every reader (docs/run-folder.md, "Atomic writes"):
- the writer appends one whole line per write (`append_line`), so a crash can cut or garble only
  the last line;
- a reader drops a last line that has no newline or is not a JSON object: a write in progress, or a crash
  mid-append. It is never read as a wrong number (`{"loss": 0.5` cut to `{"loss": 0`);
- any other line that is not a JSON object cannot come from a crash: the file was damaged after it was written
  (an edit, a bad copy, a disk error). That is an error naming the file and the line (`JsonLinesError`), never
  a skipped line: skipping it would silently lose a row, and shift every row after it on a reload's cut.
Blank lines carry nothing and are ignored.

This module is plain Python (no pyarrow, no torch): the training side uses it as it is, and
ginlab.analysis.jsonl adds a pyarrow fast path that keeps the same rule by calling `complete_part`.
"""

from __future__ import annotations

import json
import os

from ginlab.runfolder.atomic import atomic_write_text


class JsonLinesError(ValueError):
    """A line before the last one of a JSON-lines file is not a JSON object."""


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one whole line with a single write, so a crash can cut at most the last line."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def rewrite(path: str | os.PathLike, records: list[dict]) -> None:
    """Replace the file atomically by these records, one line each."""
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in records))


def read_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes; b"" when it does not exist (e.g. a run that has not finished its first epoch)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def complete_part(data: bytes) -> tuple[bytes, dict | None]:
    """The part of `data` a reader may use, and the record its last line holds.

    The part ends after the newline of the last line kept: the last line is dropped when it has no newline
    or is not a JSON object (trailing blank lines are dropped with it). The record is None when nothing is
    kept, or when the last kept line is itself damaged: then `parse_records` on the part reports it, since
    only one line, the last, may be cut.
    """
    end = data.rfind(b"\n") + 1  # what follows the last newline is a line still being written, or cut
    if not data[end:].strip():
        end = _end_of_last_line(data, end)
        if end == 0:
            return b"", None
        start = data.rfind(b"\n", 0, end - 1) + 1
        record = _loads_object(data[start:end])
        if record is not None:
            return data[:end], record
        end = start  # a whole last line that is not an object: garbled by a crash, dropped
    end = _end_of_last_line(data, end)
    if end == 0:
        return b"", None
    return data[:end], _loads_object(data[data.rfind(b"\n", 0, end - 1) + 1 : end])


def _end_of_last_line(data: bytes, end: int) -> int:
    """Where the last non-blank line of data[:end] ends, newline included (0 when there is none).

    `end` is 0 or just after a newline.
    """
    while end > 0:
        start = data.rfind(b"\n", 0, end - 1) + 1
        if data[start:end].strip():
            return end
        end = start
    return 0


def _loads_object(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def parse_records(data: bytes, name: str = "<bytes>") -> list[dict]:
    """Parse the lines `complete_part` kept, one record per non-blank line.

    Raises:
        JsonLinesError: a line is not a JSON object; the message names `name`, the line and how to fix it.
    """
    records = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise JsonLinesError(_damaged(name, number, line, f"is not valid JSON ({error})")) from None
        if not isinstance(record, dict):
            raise JsonLinesError(_damaged(name, number, line, "is not a JSON object"))
        records.append(record)
    return records


def _damaged(name: str, number: int, line: bytes, problem: str) -> str:
    return (
        f"{name} line {number} {problem}: {line[:80]!r}. Expected one JSON object per line; only the last "
        f"line can be cut by a crash, so this file was damaged after it was written. Restore it from a copy, "
        f"or repair line {number} by hand (deleting it loses that row)."
    )


def read_records(path: str | os.PathLike) -> list[dict]:
    """All records of a JSON-lines file under the rule above ([] when the file does not exist).

    Raises:
        JsonLinesError: a line before the last one is damaged.
    """
    data, _ = complete_part(read_bytes(path))
    return parse_records(data, os.fspath(path))
