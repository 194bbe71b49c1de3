"""Reading run folders (docs/run-folder.md) back: one run's config and history, or many runs as tables.

Importing this package is fast (pandas and pyarrow, no torch or Lightning): analysis scripts start at once.
"""

from ginlab.analysis.many import UnreadableRunsWarning, load_histories, load_runs
from ginlab.analysis.run import RunFolderError, effective_status, load_C, load_H, load_HC, load_meta
from ginlab.analysis.runs_table import RunsTable, runs_table

__all__ = [
    "RunFolderError",
    "RunsTable",
    "UnreadableRunsWarning",
    "effective_status",
    "load_C",
    "load_H",
    "load_HC",
    "load_histories",
    "load_meta",
    "load_runs",
    "runs_table",
]
