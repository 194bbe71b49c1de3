#!/usr/bin/env python3
"""How long bin/train.py takes to start, against `python -c "import torch"` measured beside it.

Measured, interleaved (the order rotates every round, so that no command always runs first), --repeats times
each, in fresh processes:
  - `python -c "import torch"`: the floor of any PyTorch program;
  - `python -c "import torch; torch.optim.Adam(...)"`: the floor of any PyTorch training (a torch optimizer
    imports torch._dynamo, which `import torch` alone does not);
  - `python -c "import torch, pytorch_lightning"`: the floor of any Lightning program;
  - `bin/train.py TMP configs/cnn.gin -b training_loop.n_epochs=1`: wall time from starting the process to
    the first line on its stdout that starts with "training:" (on_train_start: everything built, the run
    folder written) and to the first progress line ("step ", after the run's first 20 steps), then the
    process group is killed and the folder removed;
  - with --baseline DIR, the same bin/train.py of another checkout (e.g. `git archive main | tar -x -C DIR`),
    for a before/after measured side by side.
An import is timed to a line its process prints once imported (and, for comparison, to the process's end:
teardown adds 0.6-1.8 s). Printed: medians, and the ratio train-to-first-step / import torch (goal <= 2.0), as
a ratio of medians and as the median of the per-round ratios; also over import torch timed to its end.

Then one more run under `python -X importtime` breaks its imports down by whose they are: `import torch`
itself; torch._dynamo (Lightning imports it first, but torch's optimizers import it too: any training pays it);
Lightning (pytorch_lightning, lightning_fabric, torchmetrics and everything they import, scipy.signal and
matplotlib included); the data (what a datamodule imports when it loads); ginlab (its own
modules and what they import: gin, TensorBoard's writer ...); other (Python's own start-up, argparse). -X importtime
inflates every import: the shares are the point, not the seconds.

    python benchmarks/startup.py [--repeats 5] [--baseline DIR] [--no-breakdown]
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_ARGS = ["configs/cnn.gin", "-b", "training_loop.n_epochs=1"]


def import_time(code: str) -> tuple[float, float]:
    """Seconds from starting `python -c code` to the end of its imports, and to the end of the process.

    Timed to a line printed after the imports, as bin/train.py is timed to a line: a process ending spends
    another 0.6-0.9 s (torch) or 1.5-1.8 s (Lightning) in teardown, which no start-up waits for."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", f"{code}; print('imported', flush=True)"], stdout=subprocess.PIPE, text=True,
        cwd=ROOT,
    )  # fmt: skip
    proc.stdout.readline()
    imported = time.perf_counter() - t0
    proc.communicate()
    return imported, time.perf_counter() - t0


def train_times(root: Path, folder: str, python_args=(), stderr=subprocess.DEVNULL) -> tuple[float, float]:
    """Seconds from starting root's bin/train.py to its "training:" line and to its first "step " line."""
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *python_args, str(root / "bin" / "train.py"), folder, *TRAIN_ARGS],
        stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=root, start_new_session=True,
    )  # fmt: skip
    started = first_step = None
    try:
        for line in proc.stdout:
            if started is None and line.startswith("training:"):
                started = time.perf_counter() - t0
            if line.startswith("step "):
                first_step = time.perf_counter() - t0
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and anything it started (watchdog, loader workers)
        proc.communicate()
    if first_step is None:
        raise RuntimeError(f"{root}/bin/train.py ended (exit code {proc.returncode}) before a progress line")
    return started, first_step


# -- the breakdown ------------------------------------------------------------------------------------------
LIGHTNING = ("pytorch_lightning", "lightning_fabric", "lightning_utilities", "lightning", "torchmetrics")
GROUPS = ("torch", "torch._dynamo", "Lightning", "data", "ginlab", "other")
ADAM = "import torch; torch.optim.Adam([torch.zeros(1, requires_grad=True)])"


def owner(name: str) -> str | None:
    """The group a module makes responsible for what it imports, or None (it inherits its importer's)."""
    top = name.split(".")[0]
    if name == "torch":  # `import torch` itself; torch.* modules imported later belong to whoever asked
        return "torch"
    if name == "torch._dynamo":  # imported by Lightning first, and by torch.optim's optimizers anyway
        return "torch._dynamo"
    if top in LIGHTNING:
        return "Lightning"
    if name.startswith("ginlab.data.") or top in ("sklearn", "mlxtend", "torchvision"):
        return "data"
    if top == "ginlab" or name == "torch.utils.tensorboard":  # TensorBoard: always on, ginlab's choice
        return "ginlab"
    return None


def breakdown(lines) -> dict[str, float]:
    """Self time of every import in `python -X importtime` output, summed by owning group (seconds)."""
    rows = []
    for line in lines:
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line[len("import time:") :].split("|")
        rows.append((int(self_us), len(name) - len(name.lstrip()), name.strip()))
    totals = dict.fromkeys(GROUPS, 0.0)
    # importtime prints a module after everything it imported, one level of indentation less: read backwards
    # and keep the stack of the modules still open, outermost first.
    stack = []  # (indentation, group)
    for self_us, indent, name in reversed(rows):
        while stack and stack[-1][0] >= indent:
            stack.pop()
        group = owner(name) or (stack[-1][1] if stack else "other")
        stack.append((indent, group))
        totals[group] += self_us / 1e6
    return totals


def import_breakdown() -> tuple[dict[str, float], float]:
    with (
        tempfile.TemporaryDirectory(prefix="ginlab-startup-") as tmp,
        open(Path(tmp) / "imports.txt", "w+") as f,
    ):
        _, first_step = train_times(ROOT, f"{tmp}/run", ["-X", "importtime"], stderr=f)
        f.seek(0)
        return breakdown(f), first_step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="rounds; each runs every command once")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout whose bin/train.py runs beside this one"
    )
    parser.add_argument("--no-breakdown", action="store_true", help="skip the -X importtime run")
    args = parser.parse_args()

    commands = {
        "import torch": lambda tmp, i: import_time("import torch"),
        "import torch + Adam": lambda tmp, i: import_time(ADAM),
        "import torch, pytorch_lightning": lambda tmp, i: import_time("import torch, pytorch_lightning"),
        "train": lambda tmp, i: train_times(ROOT, f"{tmp}/train{i}"),
    }
    if args.baseline:
        commands["baseline train"] = lambda tmp, i: train_times(args.baseline.resolve(), f"{tmp}/base{i}")
    results = {name: [] for name in commands}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ginlab-startup-") as tmp:
        for i in range(args.repeats):
            names = list(commands)
            names = names[i % len(names) :] + names[: i % len(names)]  # rotate: nobody always goes first
            for name in names:
                results[name].append(commands[name](tmp, i))
    load = (load + os.getloadavg()[0]) / 2

    median = statistics.median
    torch_times = [imported for imported, _ in results["import torch"]]
    torch_ended = [ended for _, ended in results["import torch"]]
    print(f"{args.repeats} interleaved rounds, {os.cpu_count()} cores, load average {load:.1f} (1 min, mean of "
          f"start and end); imports: until imported (until the process ended)")  # fmt: skip
    for name in ("import torch", "import torch + Adam", "import torch, pytorch_lightning"):
        imported = median([i for i, _ in results[name]])
        ended = median([e for _, e in results[name]])
        print(
            f"  {name:32s} {imported:6.2f} s ({ended:5.2f} s)   {imported / median(torch_times):.2f} x import torch"
        )
    for name in [n for n in commands if n.endswith("train")]:
        started = [s for s, _ in results[name]]
        first = [f for _, f in results[name]]
        per_round = [f / t for f, t in zip(first, torch_times, strict=True)]
        label = "bin/train.py" if name == "train" else f"bin/train.py of {args.baseline}"
        print(f"  {label}: to 'training:' {median(started):.2f} s, to the first progress line "
              f"{median(first):.2f} s")  # fmt: skip
        print(f"    first progress line / import torch: {median(first) / median(torch_times):.2f} (ratio of "
              f"medians), {median(per_round):.2f} (median of rounds: "
              f"{', '.join(f'{r:.2f}' for r in per_round)}); goal <= 2.0")  # fmt: skip
        print(f"    over import torch timed to its process's end: {median(first) / median(torch_ended):.2f}")

    if not args.no_breakdown:
        totals, first_step = import_breakdown()
        total = sum(totals.values())
        print(f"imports of one bin/train.py run under -X importtime ({total:.2f} s of imports; first progress "
              f"line at {first_step:.2f} s):")  # fmt: skip
        for group in GROUPS:
            print(f"  {group:13s} {totals[group]:6.2f} s  {100 * totals[group] / total:5.1f} %")


if __name__ == "__main__":
    main()
