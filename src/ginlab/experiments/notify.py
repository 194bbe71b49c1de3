"""An experiment's notifications: its settings, read from the prepared configs, and its closing message.

The runs of an experiment notify for themselves (bin/train.py, on this machine or in a SLURM job); `run`
tells them which experiment they belong to (GINLAB_EXPERIMENT, GINLAB_EXPERIMENT_DIR: their messages name it
and share its limit on messages, ginlab.health.throttle). When every run has ended, `run` sends the closing
message: the counts, the best configuration, the report (written for it) and the events held back meanwhile.
"""

from __future__ import annotations

import logging
import os
from collections import Counter

from ginlab.config.reader import read_gin
from ginlab.errors import ConfigError
from ginlab.experiments.experiment import Experiment, ExperimentError, Run
from ginlab.health.events import EXPERIMENT_DIR_VARIABLE, EXPERIMENT_VARIABLE, Event
from ginlab.health.notifier import Notifier
from ginlab.health.settings import NotifySettings, build_settings

log = logging.getLogger(__name__)


def experiment_settings(experiment: Experiment, runs: list[Run]) -> NotifySettings:
    """The notify.* settings the experiment's runs get (its config files and its first run's own bindings,
    read without executing anything; else $GINLAB_NOTIFY_URLS), checked. Needs nothing `prepare` writes.

    Raises:
        ExperimentError: a URL Apprise cannot use or a bad notify.* value (before anything is written or run).
    """
    values = {}
    if runs:
        texts = [(experiment.root / path, None) for path in experiment.configs]
        texts.append((f"the bindings of {runs[0].name}", experiment.point_config(runs[0])))
        for where, text in texts:
            try:
                text = where.read_text() if text is None else text
                values.update(read_gin(text, str(where), mode="values", root=experiment.root))
            except (OSError, ValueError) as error:
                raise ExperimentError(f"Cannot read {where}: {error}") from None
    bound = {key.split(".", 1)[1]: value for key, value in values.items() if key.startswith("notify.")}
    try:
        return build_settings(**bound)
    except (ConfigError, TypeError) as error:
        raise ExperimentError(f"The experiment's notification settings cannot be used: {error}") from None


def announce(experiment: Experiment) -> None:
    """Tell the runs `run` starts (children and SLURM jobs inherit the environment) their experiment."""
    os.environ[EXPERIMENT_VARIABLE] = experiment.name
    os.environ[EXPERIMENT_DIR_VARIABLE] = str(experiment.paths.base)


def close_experiment(experiment: Experiment, runs: list[Run], outcomes, settings: NotifySettings) -> None:
    """Send the experiment's closing message (every run has ended), with the events held back meanwhile."""
    if not settings.urls:
        return
    counts = Counter(outcome.status for outcome in outcomes)
    title = f"[{experiment.name}] experiment finished: " + ", ".join(
        f"{n} {s}" for s, n in counts.most_common()
    )
    lines = []
    try:
        from ginlab.experiments.report import build_report

        report = build_report(experiment, runs)
        lines.append(
            f"Best configuration {report.best}" if report.best else "No run finished: no best configuration."
        )
        lines.append(f"Report: {report.summary}")
        if report.suggested.get("mem") or report.suggested.get("time"):
            options = " ".join(f"--{k} {v}" for k, v in report.suggested.items() if v)
            lines.append(f"Resources for a next submission: {options}")
    except Exception as error:  # the message goes out without the report rather than not at all
        log.warning("the report for the closing notification could not be written: %s", error)
        lines.append(f"The report could not be written ({error}); `report` writes it.")
    lines.append(f"Runs: {experiment.paths.runs}")
    Notifier(settings).close_experiment(Event("experiment_finished", title, "\n".join(lines)))
