"""Reading many JSON-lines files fast (history.jsonl), under the one rule of ginlab.runfolder.jsonlines.

The rule (docs/run-folder.md, "Atomic writes"; defined in ginlab.runfolder.jsonlines): a last line that does not end
in a newline or is not a JSON object is dropped (a run writing it, or a crash mid-write), so it is never read
as a wrong number; a damaged line before it is an error naming the file and line.

Two paths give the same rows:
- `read_records(path)` (from ginlab.runfolder.jsonlines): the json module, line by line; names the line of any damage.
- `read_tables(paths)`: all files' bytes parsed in one pass by pyarrow (2,000 files x 100 lines in about
  0.4 s instead of 1.4 s for one call per file), with the rows given back to their files by counting lines
  and checking that each file's last row is the record that file ends with. Whatever the fast pass cannot
  vouch for is parsed file by file, which reports damage as the rule says.
"""

from __future__ import annotations

import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

from ginlab.runfolder.jsonlines import JsonLinesError, complete_part, parse_records, read_bytes, read_records

__all__ = ["JsonLinesError", "Tables", "read_last_record", "read_records", "read_tables"]

logger = logging.getLogger(__name__)

# Files are parsed together in chunks of about this many bytes, so that one damaged file sends only its
# chunk to the slow path.
CHUNK_BYTES = 16 << 20
TAIL_BYTES = 16 << 10


@dataclass
class Tables:
    """Rows of many JSON-lines files: `table` holds `counts[i]` rows of `paths[i]`, in order."""

    table: pa.Table
    counts: list[int]
    errors: dict[str, str]  # path -> why it could not be read (its count is 0)


def read_last_record(path: str | os.PathLike) -> dict | None:
    """The last complete record of a JSON-lines file, reading only its tail (None when there is none).

    Raises:
        JsonLinesError: the line before a dropped last line is damaged.
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            length = TAIL_BYTES
            while True:
                start = max(0, size - length)
                f.seek(start)
                data = f.read(size - start)
                if start > 0:
                    data = data[data.find(b"\n") + 1 :] if b"\n" in data else b""  # its first line may be cut
                whole, last = complete_part(data)
                if whole or start == 0:  # a line to keep, or the whole file seen
                    break
                length *= 4
    except FileNotFoundError:
        return None
    if whole and last is None:  # the line kept last is damaged: reading the whole file names its line
        records = read_records(path)
        return records[-1] if records else None
    return last


def read_tables(paths: list[str]) -> Tables:
    """Read many JSON-lines files into one table (see the module docstring).

    Files are read in chunks; pyarrow parses a chunk (without holding the GIL) while the next is read.
    """
    counts = [0] * len(paths)
    errors: dict[str, str] = {}
    tables: list[pa.Table] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        parsing = [
            (chunk, pool.submit(_parse, b"".join(data for _, data, _ in chunk))) for chunk in _chunks(paths)
        ]
        for chunk, future in parsing:
            tables += _vouch_or_reread(chunk, future.result(), paths, counts, errors)
    return Tables(_concat(tables), counts, errors)


def _chunks(paths: list[str]):
    """Lists of (index, whole lines, last record) of the non-empty files, about CHUNK_BYTES each."""
    chunk, size = [], 0
    for index, path in enumerate(paths):
        data, last = complete_part(read_bytes(path))
        if data:
            chunk.append((index, data, last))
            size += len(data)
        if size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _vouch_or_reread(chunk, table, paths, counts, errors) -> list[pa.Table]:
    """The chunk's table when its rows line up with the files; else the files parsed one by one."""
    if table is not None:
        chunk_counts = [data.count(b"\n") for _, data, _ in chunk]
        if _rows_belong(table, chunk_counts, [last for _, _, last in chunk]):
            for (index, _, _), count in zip(chunk, chunk_counts, strict=True):
                counts[index] = count
            return [table]
        logger.debug("rows of a chunk of %d files do not line up; reading them one by one", len(chunk))
    tables = []
    for index, data, _ in chunk:
        try:
            records = parse_records(data, paths[index])
            table = _parse(data)
            if table is None or table.num_rows != len(records):
                table = pa.Table.from_pylist(records)
        except (JsonLinesError, pa.ArrowException) as error:
            errors[paths[index]] = str(error)
            continue
        counts[index] = len(records)
        tables.append(table)
    return tables


def _parse(data: bytes) -> pa.Table | None:
    try:
        return pa_json.read_json(io.BytesIO(data), read_options=pa_json.ReadOptions(block_size=1 << 20))
    except pa.ArrowException:
        return None


def _rows_belong(table: pa.Table, counts: list[int], lasts: list[dict | None]) -> bool:
    """True when the table has the counted rows and each file's last row is that file's last record.

    Blank lines or two objects on one line would shift rows between files; the check on the last rows'
    epochs catches that, so a row is never given to the wrong run.
    """
    if table.num_rows != sum(counts) or "epoch" not in table.column_names:
        return table.num_rows == sum(counts) and len(counts) == 1
    expected = [last.get("epoch") if last else None for last in lasts]
    if not all(isinstance(epoch, int) for epoch in expected):
        return len(counts) == 1
    ends = np.cumsum(counts) - 1
    epochs = table.column("epoch").take(pa.array(ends)).to_numpy(zero_copy_only=False)
    return bool(np.array_equal(epochs, np.array(expected)))


def _concat(tables: list[pa.Table]) -> pa.Table:
    if not tables:
        return pa.table({})
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")
