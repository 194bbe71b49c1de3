"""Mirror a project folder to a local or ssh destination and keep it current (rsync + watchman).

The flow: `load_destination` (destination.py) -> `build_filter` (default excludes + `.syncignore`,
filter.py) -> `sync` (one rsync run, rsync.py, retried with backoff, run.py) -> `watch` (a watchman
subscription, watchman.py; every batch of changes that is not excluded runs rsync again,
watch_loop.py). `mirror` (run.py) is what bin/sync.py runs. docs/sync.md is the user guide.
"""

from ginlab.sync.destination import Destination, check_tools, load_destination, load_source
from ginlab.sync.errors import SyncError, UsageError
from ginlab.sync.filter import build_filter, gitignore_to_rsync
from ginlab.sync.rsync import RsyncError, SyncConfig, SyncResult, parse_rsync_output
from ginlab.sync.run import mirror, sync
from ginlab.sync.watch_loop import watch
from ginlab.sync.watchman import OwnWatchman

__all__ = [
    "Destination",
    "OwnWatchman",
    "RsyncError",
    "SyncConfig",
    "SyncError",
    "SyncResult",
    "UsageError",
    "build_filter",
    "check_tools",
    "gitignore_to_rsync",
    "load_destination",
    "load_source",
    "mirror",
    "parse_rsync_output",
    "sync",
    "watch",
]
