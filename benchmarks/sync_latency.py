#!/usr/bin/env python3
"""How long from saving a file to its arrival in DEST, with ginlab.sync watching (watchman + rsync).

    python benchmarks/sync_latency.py                  # 30 edits in a 300-file project
    python benchmarks/sync_latency.py --files 3000     # a bigger tree: each sync walks all of it
    python benchmarks/sync_latency.py --dest me@localhost:/tmp/m --arrival /tmp/m   # over ssh

Builds a synthetic project in a temporary folder, starts a private watchman, runs `ginlab.sync.watch`
in a thread towards DEST (a temporary local folder unless --dest), then edits one file at a time and
polls DEST (or --arrival, the local view of a remote DEST) until the new content is there. Prints the
median and p90 latency and the share of it from the start of the rsync run to the arrival (the rest is
watchman noticing the change and its 20 ms settle time). A remote DEST adds the network round trips to the
rsync part.
"""

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ginlab import sync as gsync


def build_project(root: Path, num_files: int) -> list[Path]:
    files = []
    for index in range(num_files):
        path = root / "src" / f"pkg{index // 50}" / f"module{index}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# module {index}\n" + "x = 1\n" * 300)  # ~1.8 kB, a typical source file
        files.append(path)
    (root / "results").mkdir()
    return files


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--edits", type=int, default=30, help="number of saves to time (default: %(default)s)"
    )
    parser.add_argument("--files", type=int, default=300, help="files in the project (default: %(default)s)")
    parser.add_argument(
        "--interval", type=float, default=0.2, help="pause between edits, s (default: %(default)s)"
    )
    parser.add_argument("--dest", help="where to sync (default: a temporary local folder)")
    parser.add_argument("--arrival", type=Path, help="local folder where a remote --dest's files appear")
    parser.add_argument("--rsh", help="remote shell for a remote --dest (default: ginlab's ssh command)")
    args = parser.parse_args()
    gsync.check_tools(need_watchman=True, need_ssh=False)
    if args.dest and ":" in args.dest and args.arrival is None:
        parser.error("a remote --dest needs --arrival, the local folder where its files can be read")

    folder = Path(tempfile.mkdtemp(prefix="ginlab-synclat-"))
    syncs: list[tuple[float, float]] = []  # (time the rsync run ended, its duration)
    stop = threading.Event()
    try:
        source = folder / "project"
        files = build_project(source, args.files)
        destination = gsync.load_destination(args.dest or str(folder / "mirror"), source)
        dest = args.arrival or Path(destination.path)
        config = gsync.SyncConfig(source=source, dest=destination, rsh=args.rsh, retries=None)
        with gsync.OwnWatchman(folder / "wm") as service:
            watcher = threading.Thread(
                target=gsync.watch,
                args=(config, lambda result: syncs.append((time.perf_counter(), result.seconds))),
                kwargs={"sockpath": service.sockpath, "stop": stop},
            )
            watcher.start()
            deadline = time.monotonic() + 60
            while not syncs and time.monotonic() < deadline:
                time.sleep(0.01)
            if not syncs:
                raise SystemExit("the initial sync did not finish within 60 s")
            print(f"initial sync of {args.files} files: {syncs[0][1]:.3f} s")

            latencies, rsync_parts, rsync_runs = [], [], []
            rng = random.Random(0)
            for edit in range(args.edits):
                time.sleep(args.interval)
                path = rng.choice(files)
                content = f"# edit {edit}\n" + "y = 2\n" * rng.randint(100, 400)
                num_syncs_before = len(syncs)
                path.write_text(content)
                saved = time.perf_counter()
                target = dest / path.relative_to(source)
                while True:
                    try:
                        if target.read_text() == content:
                            break
                    except OSError:
                        pass
                    if time.perf_counter() - saved > 10:
                        raise SystemExit(f"edit {edit} did not arrive within 10 s")
                    time.sleep(0.001)
                arrived = time.perf_counter()
                latencies.append(arrived - saved)
                while len(syncs) == num_syncs_before:  # on_sync runs just after rsync returns
                    time.sleep(0.001)
                ended, seconds = syncs[num_syncs_before]
                started = ended - seconds
                # The file lands before rsync exits (it still exchanges statistics): count the rsync
                # part as its start to the arrival; the rest of the latency is watchman noticing.
                rsync_parts.append(arrived - max(started, saved))
                rsync_runs.append(seconds)
            stop.set()
            watcher.join(timeout=5)
    finally:
        stop.set()
        shutil.rmtree(folder, ignore_errors=True)

    total_latency, total_rsync = sum(latencies), sum(rsync_parts)
    where = "remote" if destination.is_remote else "local"
    print(f"{args.edits} edits, project of {args.files} files, {where} DEST, {len(syncs) - 1} syncs")
    print(
        f"save -> arrival: median {statistics.median(latencies) * 1000:.0f} ms, "
        f"p90 {percentile(latencies, 0.9) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )
    print(
        f"rsync:           {100 * total_rsync / total_latency:.0f}% of the latency (start to arrival); "
        f"a whole rsync run takes median {statistics.median(rsync_runs) * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
