"""Warm starts: runs forked from a process that imported torch, Lightning and ginlab once.

A fresh `bin/train.py` spends most of a small run's time importing (torch ~2 s, Lightning ~4 s on a 2-core
machine). `WarmStarter` (client.py) keeps one process that has imported them (server.py) and forks a child
per run that behaves as `bin/train.py` started with the same command: its own pid, session, exit code,
signals, output file. Used by the local backend, the search's local launcher and the test suite; the
process-per-run path stays (`run --fresh-processes`).
"""

from ginlab.workers.client import WarmProcess, WarmStarter

__all__ = ["WarmProcess", "WarmStarter"]
