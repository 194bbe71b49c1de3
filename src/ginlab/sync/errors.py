"""The two errors every part of ginlab.sync raises, and bin/sync.py maps to exit codes (1 and 2)."""


class SyncError(RuntimeError):
    """Sync failed: a tool is missing, watchman failed, or the remote kept failing."""


class UsageError(ValueError):
    """The arguments cannot work (bad or unsafe DEST, missing source folder)."""
