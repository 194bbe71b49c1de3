#!/usr/bin/env python3
"""Mirror this project to DEST and keep it current as files change (rsync + watchman).

    bin/sync.py ../ginlab-mirror                      # a local folder
    bin/sync.py alice@cluster:work/ginlab             # over ssh
    bin/sync.py alice@cluster:work/ginlab --once      # sync once and exit
    bin/sync.py alice@cluster:work/ginlab --dry-run   # show what would be sent, send nothing

results/, data/, environments, .git and caches never leave the machine; add your own patterns to a
.syncignore file (gitignore syntax). --delete only deletes in a DEST that ginlab created for this project
(its .ginlab-sync.json says so); --adopt takes over another folder. See docs/sync.md. Exit codes: 0 ok
(also after Ctrl-C while watching), 2 bad arguments (an unsafe DEST, --delete refused), 1 failure.
"""

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dest", metavar="DEST", help="a local folder or user@host:path (over ssh)")
    parser.add_argument(
        "--source", type=Path, default=PROJECT_ROOT, help="folder to mirror (default: %(default)s)"
    )
    parser.add_argument("--once", action="store_true", help="sync once and exit (needs no watchman)")
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be sent and deleted, then exit"
    )
    parser.add_argument(
        "--delete",
        action="store_true",
        help="delete files on DEST that were deleted here (only inside DEST, only if DEST is this project's "
        "mirror; excluded paths there are kept)",
    )
    parser.add_argument(
        "--adopt",
        action="store_true",
        help="make DEST this project's mirror although ginlab did not create it (or it mirrors another "
        "project): writes its marker, allows --delete there. Check first with --dry-run --delete --adopt",
    )
    parser.add_argument(
        "--rsh", metavar="COMMAND", help="remote shell for user@host DEST (default: ssh with timeouts)"
    )
    parser.add_argument(
        "--own-watchman",
        action="store_true",
        help="start a private watchman (own socket and state files) instead of using the running service",
    )
    parser.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help="retries of a failed sync before giving up (default: 3 with --once, forever while watching)",
    )
    parser.add_argument(
        "--retry-wait",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="wait before the first retry, doubled on each failure up to 60 s (default: %(default)s)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="list the files of every sync (-vv: also debug details)",
    )
    args = parser.parse_args(argv)
    if args.retries is not None and args.retries < 0 or args.retry_wait <= 0:
        parser.error("--retries must be 0 or more and --retry-wait more than 0")
    return args


def print_start(config) -> None:
    dry_run = " (dry run: nothing is sent)" if config.dry_run else ""
    print(f"syncing {config.source} -> {config.dest}{dry_run}", flush=True)


def result_printer(watching: bool, dry_run: bool, verbose: int):
    """on_sync for ginlab.sync.mirror: one line per sync, and the files with -v or --dry-run."""
    labels = iter(["initial sync"] if watching else [])
    label = "would send" if dry_run else "synced"

    def print_result(result) -> None:
        print(f"{time.strftime('%H:%M:%S')} {next(labels, label)}: {result.summary()}", flush=True)
        if verbose or result.dry_run:
            for line in result.changes:
                if not line.startswith(".d"):  # a folder whose only change is its mtime
                    print(f"  {line}", flush=True)

    return print_result


def import_sync():
    """ginlab.sync, also when run without `source e.sh` (then src/ is not on PYTHONPATH)."""
    try:
        try:
            import ginlab.sync as gsync
        except ModuleNotFoundError as error:
            if error.name != "ginlab":
                raise
            sys.path.insert(0, str(PROJECT_ROOT / "src"))
            import ginlab.sync as gsync
    except ModuleNotFoundError as error:
        print(
            f"sync.py: failed: the Python package {error.name} is missing. `source e.sh` builds and "
            "activates the project's environment (requirements.txt).",
            file=sys.stderr,
        )
        return None
    return gsync


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO, format="%(message)s")
    logging.getLogger("pywatchman").setLevel(logging.WARNING)
    # Ctrl-C, `kill` and a closed terminal all end the sync through KeyboardInterrupt, which stops rsync
    # with its remote shell and removes the watch. rsync runs in a session of its own, so the terminal's
    # signals reach it only this way.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    gsync = import_sync()
    if gsync is None:
        return 1
    watching = not (args.once or args.dry_run)
    try:
        source = gsync.load_source(args.source)
        config = gsync.SyncConfig(
            source=source,
            dest=gsync.load_destination(args.dest, source),
            delete=args.delete,
            dry_run=args.dry_run,
            adopt=args.adopt,
            rsh=args.rsh,
            retries=args.retries if args.retries is not None else (None if watching else 3),
            retry_wait=args.retry_wait,
        )
        gsync.mirror(
            config,
            on_sync=result_printer(watching, args.dry_run, args.verbose),
            watching=watching,
            own_watchman=args.own_watchman,
            on_start=print_start,
        )
    except gsync.UsageError as error:
        print(f"sync.py: error: {error}", file=sys.stderr)
        return 2
    except gsync.SyncError as error:
        print(f"sync.py: failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if watching:
            print("stopped", file=sys.stderr, flush=True)
            return 0
        print("sync.py: interrupted before the sync finished", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
