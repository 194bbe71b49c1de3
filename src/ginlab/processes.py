"""Is a process still there? Used to tell a dead writer from a live one on this host."""

import os


def process_alive(pid: int) -> bool:
    """True while `pid` names a live process (one we may not signal counts as live; a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
