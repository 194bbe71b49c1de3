"""The verbs of an experiment's search (main.py prepare | run | status | report), called by experiments/cli.py
with the same arguments as the grid's."""

from __future__ import annotations

import dataclasses

from rich.console import Console

from ginlab.experiments.experiment import Experiment
from ginlab.experiments.progress import Progress

DEFAULT_SLURM_SLOTS = 4  # trials in flight on SLURM when neither --slots nor --max-parallel says


def search_command(experiment: Experiment, args, console: Console, program: str) -> int:
    """Run the verb `args.command` on the experiment's search; return main.py's exit code.

    Args:
        program: how the researcher runs main.py ("python experiments/x/main.py"), for the next steps shown.
    """
    handler = {"prepare": _prepare, "run": _run, "status": _status, "report": _report}[args.command]
    return handler(experiment, args, console, program)


def _prepare(experiment: Experiment, args, console: Console, program: str) -> int:
    from ginlab.experiments.search.prepare import prepare_search

    search = experiment.search
    prepared = prepare_search(experiment, search)
    pruner = search.pruner_name or "none"
    console.print(
        f"Prepared the search of {experiment.name}: {search.budget()} trials, sampler {search.sampler_name}, "
        f"pruner "
        f"{pruner}, {search.mode} {search.metric}, {prepared.n_epochs} epochs per trial, decisions after "
        f"epochs "
        f"{', '.join(map(str, prepared.decision_epochs))}"
    )
    console.print(f"Next: {program} run")
    return 0


def _run(experiment: Experiment, args, console: Console, program: str) -> int:
    from ginlab.experiments.search.driver import SearchDriver
    from ginlab.experiments.search.prepare import load_prepared_search
    from ginlab.experiments.search.trials import SearchPaths

    prepared = load_prepared_search(experiment, experiment.search)
    paths = SearchPaths(experiment.paths.base)
    if args.backend == "slurm":
        from ginlab.experiments.backends.slurm import SlurmOptions
        from ginlab.experiments.search.launch_slurm import SlurmLauncher

        # Each segment is a one-element array: --max-parallel limits the search's slots, not an array.
        options = dataclasses.replace(SlurmOptions.from_arguments(args), max_parallel=None)
        launcher = SlurmLauncher(
            experiment.name,
            experiment.root,
            paths.slurm,
            options,
            slots=args.slots or args.max_parallel or DEFAULT_SLURM_SLOTS,
            poll_seconds=args.poll,
        )
    else:
        from ginlab.experiments.search.launch_local import LocalLauncher

        launcher = LocalLauncher(
            experiment.root, paths.logs, slots=args.slots, warm=not getattr(args, "fresh_processes", False)
        )
    console.print(
        f"{experiment.name}: search of {experiment.search.budget()} trials, {launcher.description}; "
        f"trials in {paths.trials}"
    )
    driver = SearchDriver(
        experiment,
        experiment.search,
        prepared,
        launcher,
        retries=args.retries,
        progress=Progress(f"{experiment.name} search", console),
    )
    result = driver.run()
    console.print(", ".join(f"{n} {state}" for state, n in result.counts.items() if n))
    for line in result.failed:
        console.print(f"[red]failed[/] {line}")
    if result.stopped:
        console.print(f"Stopped. Running trials wrote checkpoints; `{program} run` continues the search.")
        return 130
    if result.counts.get("running") or result.counts.get("left"):
        return 1
    console.print(f"The search ended. Next: {program} report")
    return 0


def _status(experiment: Experiment, args, console: Console, program: str) -> int:
    from ginlab.experiments.search.status import search_status

    status = search_status(experiment, experiment.search)
    console.print(status.summary())
    table = status.table(show_all=args.all)
    if table.row_count:
        console.print(table)
    return 0 if status.done else 1


def _report(experiment: Experiment, args, console: Console, program: str) -> int:
    from ginlab.experiments.search.report import build_search_report

    path = build_search_report(experiment, experiment.search)
    console.print(f"Search report: {path} (figures and tables beside it)")
    return 0
