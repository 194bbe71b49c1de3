"""The command line every experiment's main.py gets: prepare | run | status | report.

    python experiments/tune_lr/main.py prepare            # check the grid, write configs and jobs.txt
    python experiments/tune_lr/main.py run                # local, one run per core
    python experiments/tune_lr/main.py run --backend slurm --partition gpu --time 02:00:00 --gpus 1
    python experiments/tune_lr/main.py status             # done / running / failed / left (and SLURM job ids)
    python experiments/tune_lr/main.py report             # tables, figures and summary.md in report/

Exit codes: 0 nothing is left to do (every run finished, diverged or was pruned); 1 some runs failed, were
refused or are not finished; 2 the experiment cannot be prepared or run as asked (bad grid, not prepared,
SLURM unavailable or refusing the job script); 130 stopped by Ctrl-C or SIGTERM (running runs wrote
checkpoints; `run` again continues).
"""

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ginlab.experiments.backends.plan import REFUSE, plan_run
from ginlab.experiments.experiment import Experiment, ExperimentError
from ginlab.experiments.prepare import grid_changed, load_prepared, prepare

console = Console(highlight=False, soft_wrap=True)


def main(experiment: Experiment, argv: list[str] | None = None) -> None:
    """Parse the command line, run the subcommand on `experiment`, and exit with its exit code."""
    args = build_parser(experiment).parse_args(argv)
    try:
        code = args.handler(experiment, args) if experiment.grid is not None else 0
        if experiment.search is not None and code != 130:  # the search's own verbs (search/cli.py)
            from ginlab.experiments.search.cli import search_command

            code = max(code, search_command(experiment, args, console, program()))
    except ExperimentError as error:
        console.print(f"[bold red]error:[/] {error}")
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def build_parser(experiment: Experiment) -> argparse.ArgumentParser:
    what = "grid" if experiment.search is None else "search" if experiment.grid is None else "grid and search"
    parser = argparse.ArgumentParser(
        prog=program(),
        description=f"The {experiment.name} experiment: prepare, run, follow and report its {what}.",
        epilog=f"Results: {experiment.paths.base}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="prepare|run|status|report")

    sub = commands.add_parser("prepare", help="check the grid and write one config per run and jobs.txt")
    sub.add_argument("--no-check", action="store_true", help="skip the gin check of every grid point")
    sub.set_defaults(handler=prepare_command)

    sub = commands.add_parser(
        "run", help="run what is not finished (skips finished runs, continues interrupted ones)"
    )
    sub.add_argument("--backend", choices=["local", "slurm"], default="local")
    sub.add_argument("--retries", type=int, default=1, help="restarts of a failed run before it is reported")
    local = sub.add_argument_group("local backend")
    local.add_argument(
        "--slots", type=int, default=None, help="runs at a time (default: the number of cores)"
    )
    local.add_argument(
        "--fresh-processes",
        action="store_true",
        help="start every run as a fresh interpreter (default: fork it from a warm process that imported "
        "torch and Lightning once; the same run folders, seconds sooner)",
    )
    slurm = sub.add_argument_group("SLURM backend (defaults from the experiment's `slurm` settings)")
    defaults = experiment.slurm
    slurm.add_argument("--partition", default=defaults.get("partition"))
    slurm.add_argument("--time", default=defaults.get("time", "01:00:00"), help="time limit of one job")
    slurm.add_argument(
        "--cpus", type=int, default=defaults.get("cpus", 1), help="CPUs per run (torch threads)"
    )
    slurm.add_argument("--gpus", default=defaults.get("gpus"), help="GPUs per run, a count or type:count")
    slurm.add_argument("--mem", default=defaults.get("mem"), help="memory per run, e.g. 8G")
    slurm.add_argument(
        "--signal-seconds",
        type=int,
        default=defaults.get("signal_seconds", 120),
        help="SIGUSR1 this long before the time limit: checkpoint and requeue",
    )
    slurm.add_argument(
        "--max-parallel",
        type=int,
        default=defaults.get("max_parallel"),
        help="at most this many jobs at once",
    )
    slurm.add_argument(
        "--sbatch",
        action="append",
        default=list(defaults.get("extra", [])),
        metavar="ARG",
        help="one more sbatch argument (may repeat), e.g. --sbatch=--account=myproject",
    )
    slurm.add_argument(
        "--poll",
        type=float,
        default=defaults.get("poll_seconds", 10.0),
        help="seconds between two looks at the queue",
    )
    sub.set_defaults(handler=run_command)

    sub = commands.add_parser("status", help="what is done, running, failed and left")
    sub.add_argument("--all", action="store_true", help="list every run, not only the unfinished ones")
    sub.set_defaults(handler=status_command)

    sub = commands.add_parser("report", help="tables, figures and summary.md into the report/ folder")
    sub.set_defaults(handler=report_command)
    return parser


def program() -> str:
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(Path.cwd())
    return f"python {script}" if script.suffix == ".py" else str(script)


# --- prepare ------------------------------------------------------------------------------------------------


def prepare_command(experiment: Experiment, args) -> int:
    runs = prepare(experiment, check=not args.no_check)
    paths = experiment.paths
    console.print(f"Prepared {len(runs)} runs of {experiment.name} in {paths.base}")
    console.print(
        f"  {paths.jobs.name}: one bin/train.py command per run; {paths.configs.name}/: one .gin per run; "
        f"{paths.experiment_json.name}: what `run` executes"
    )
    states = [plan_run(run, experiment.root, paths.claims) for run in runs]
    counts: dict[str, int] = {}
    for state in states:
        word = WORDS.get((state.action, state.status)) or WORDS[state.action]
        counts[word] = counts.get(word, 0) + 1
    console.print("  " + ", ".join(f"{n} {word}" for word, n in counts.items()))
    for run, state in zip(runs, states, strict=True):
        if state.action == REFUSE:
            console.print(f"  [red]refused[/] {run.name}: " + "; ".join(state.reasons))
    console.print(f"Next: {program()} run")
    return 0


WORDS = {
    "start": "to start",
    "reload": "to continue (interrupted or failed)",
    ("reload", "finished"): "to extend (finished, more epochs prepared)",
    "skip": "finished already",
    ("skip", "diverged"): "diverged (not retried)",
    ("skip", "pruned"): "pruned (not retried)",
    "busy": "running now",
    "refuse": "refused (run folder made with another config, or unusable)",
}


# --- run ----------------------------------------------------------------------------------------------------


def run_command(experiment: Experiment, args) -> int:
    runs = load_prepared(experiment)
    if grid_changed(experiment, runs):
        raise ExperimentError(
            f"main.py's grid or bindings changed since `prepare`: run `{program()} prepare` "
            "again first (finished runs are kept)."
        )
    from ginlab.experiments.backends.plan import Outcome
    from ginlab.experiments.notify import announce, close_experiment, experiment_settings
    from ginlab.experiments.progress import Progress

    notify = experiment_settings(experiment, runs)  # a URL Apprise cannot use stops `run` before any run
    announce(experiment)

    if args.backend == "slurm":
        from ginlab.experiments.backends.slurm import SlurmBackend, SlurmOptions

        options = SlurmOptions.from_arguments(args)
        backend = SlurmBackend(
            experiment.name,
            experiment.root,
            experiment.paths.slurm,
            options,
            retries=args.retries,
            poll_seconds=args.poll,
            progress=Progress(f"{experiment.name} on SLURM", console),
            claims=experiment.paths.claims,
        )
        console.print(f"{experiment.name}: {len(runs)} runs on SLURM ({describe_options(options)})")
        outcomes = backend.run(runs)
        stopped = False
    else:
        from ginlab.experiments.backends.local import LocalRunner

        runner = LocalRunner(
            experiment.root,
            experiment.paths.logs,
            experiment.paths.claims,
            slots=args.slots,
            retries=args.retries,
            progress=Progress(experiment.name, console),
            warm=not args.fresh_processes,
        )
        console.print(
            f"{experiment.name}: {len(runs)} runs, {runner.slots} at a time, "
            f"{runner.threads} torch thread(s) each; logs in {experiment.paths.logs}"
        )
        on_slurm = slurm_jobs(experiment)
        for name, job in on_slurm.items():
            console.print(f"{name} has SLURM job {job.label} ({job.state}): left to SLURM")
        outcomes = runner.run([run for run in runs if run.name not in on_slurm])
        outcomes += [Outcome(run, "queued", "on SLURM") for run in runs if run.name in on_slurm]
        stopped = runner.stopped
    ended = all(outcome.status not in ("queued", "busy") for outcome in outcomes)
    if not stopped and ended and any(outcome.attempts for outcome in outcomes):
        close_experiment(experiment, runs, outcomes, notify)  # every run has ended, some of them now: say so
    return summarize(outcomes, stopped)


def slurm_jobs(experiment: Experiment) -> dict:
    """{run name: Job} of this experiment's SLURM jobs still queued or running (empty without SLURM)."""
    if not (experiment.paths.slurm / "submissions.jsonl").is_file():
        return {}
    from ginlab.experiments.backends.slurm import SlurmBackend, SlurmOptions
    from ginlab.experiments.backends.slurm_cli import SlurmRefused, SlurmUnavailable

    backend = SlurmBackend(experiment.name, experiment.root, experiment.paths.slurm, SlurmOptions())
    try:
        return backend.active_jobs()
    except (SlurmUnavailable, SlurmRefused):
        return {}


def describe_options(options) -> str:
    fields = dataclasses.asdict(options)
    return ", ".join(f"{k} {v}" for k, v in fields.items() if v not in (None, [], ""))


def summarize(outcomes, stopped: bool) -> int:
    """Print what this `run` did with every run; return main.py's exit code."""
    by_status: dict[str, list] = {}
    for outcome in outcomes:
        by_status.setdefault(outcome.status, []).append(outcome)
    console.print(", ".join(f"{len(v)} {k}" for k, v in by_status.items()))
    for outcome in by_status.get("failed", []):
        console.print(
            f"[red]failed[/] {outcome.run.name}: {outcome.message}\n    log: {outcome.log}; "
            f"run log: {outcome.run.save_dir / 'log.txt'}"
        )
    for outcome in by_status.get("refused", []):
        console.print(f"[red]refused[/] {outcome.run.name}: {outcome.message}")
    for status in ("diverged", "pruned"):  # ended for good, but without a result
        for outcome in by_status.get(status, []):
            console.print(f"[yellow]{status}[/] {outcome.run.name}: {outcome.message}")
    if stopped:
        console.print(
            f"Stopped. Running runs wrote checkpoints; `{program()} run` continues where this stopped."
        )
        return 130
    unfinished = [o for o in outcomes if not o.ended_for_good]
    if unfinished:
        console.print(f"{len(unfinished)} run(s) not finished: `{program()} status` lists them.")
        return 1
    without_result = len(outcomes) - len(by_status.get("finished", [])) - len(by_status.get("skipped", []))
    if without_result:
        console.print(
            f"Every run ended; {without_result} of them without a result (left out of the report). "
            f"Next: {program()} report"
        )
    else:
        console.print(f"Every run finished. Next: {program()} report")
    return 0


# --- status -------------------------------------------------------------------------------------------------


def status_command(experiment: Experiment, args) -> int:
    from ginlab.experiments.status import experiment_status

    runs = load_prepared(experiment)
    status = experiment_status(experiment, runs)
    table = Table(title=f"{experiment.name}: {len(runs)} runs in {experiment.paths.runs}")
    for column in ("run", "status", "epochs", "job", "details"):
        table.add_column(column)
    for row in status.rows:
        if args.all or row.status != "finished":
            table.add_row(row.run.name, row.status, row.epochs, row.job, row.details)
    console.print(status.summary())
    if table.row_count:
        console.print(table)
    return 0 if status.done else 1


# --- report -------------------------------------------------------------------------------------------------


def report_command(experiment: Experiment, args) -> int:
    from ginlab.experiments.report import build_report

    runs = load_prepared(experiment)
    report = build_report(experiment, runs)
    console.print(f"Report: {report.summary} (figures and tables beside it)")
    return 0
