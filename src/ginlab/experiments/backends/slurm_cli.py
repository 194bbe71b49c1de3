"""Talking to SLURM's commands (sbatch, squeue, scontrol): their errors, their output, and sbatch's quoting.

Two kinds of failure are told apart, because they need different fixes:
- `SlurmUnavailable`: SLURM is not installed here, or its controller does not answer (the cluster may be
  down);
- `SlurmRefused`: a command answered with an error of its own, e.g. sbatch rejecting a job script or an
  option. Its own message is reported as it is: guessing that the cluster is down would send the researcher
  the wrong way.
"""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import subprocess

from ginlab.experiments.experiment import ExperimentError

# What SLURM's clients print when the controller does not answer (slurm 22.05: slurm_strerror's texts).
UNREACHABLE = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "Zero Bytes were transmitted or received",
    "Connection refused",
    "Connection timed out",
    "Communication connection failure",
)

# Job states in which a job is still queued or running (squeue's %T).
ACTIVE_STATES = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "STOPPED",
    "SIGNALING",
    "STAGE_OUT",
    "RESV_DEL_HOLD",
}


CLUSTER_UP = "Is the cluster up? (`sinfo`; for the development cluster: sudo bin/slurm-dev-cluster start)"


class SlurmUnavailable(ExperimentError):
    """sbatch is missing, or the SLURM controller does not answer."""


class SlurmRefused(ExperimentError):
    """A SLURM command answered with an error of its own (a rejected job script, an unknown partition ...)."""


@dataclasses.dataclass
class Job:
    """A SLURM job running (or waiting to run) one run: an element of an array."""

    job_id: str  # the element's own id, what scontrol requeue/update take
    array_id: str
    index: int
    state: str
    reason: str

    @property
    def label(self) -> str:
        return f"{self.array_id}_{self.index}"


def local_instead(experiment_name: str) -> str:
    return (
        f"To run the experiment on this machine instead: python experiments/{experiment_name}/main.py run "
        "--backend local"
    )


def slurm_command(args: list[str], experiment_name: str, timeout: float = 60) -> str:
    """Run a SLURM client command; return its stdout.

    Raises:
        SlurmUnavailable: the command is missing, timed out, or says the controller does not answer.
        SlurmRefused: the command failed with a message of its own (quoted in the error).
    """
    if shutil.which(args[0]) is None:
        raise SlurmUnavailable(
            f"`{args[0]}` not found: SLURM is not installed on this machine (or not on PATH), so the "
            f"experiment cannot be submitted to a cluster.\n{local_instead(experiment_name)}"
        )
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(
            f"`{shlex.join(args)}` got no answer within {timeout:.0f} s: the SLURM controller is not "
            f"answering. {CLUSTER_UP}\n{local_instead(experiment_name)}"
        ) from None
    if result.returncode == 0:
        return result.stdout
    message = (result.stderr or result.stdout).strip() or "(no message)"
    if any(text in message for text in UNREACHABLE):
        raise SlurmUnavailable(
            f"`{shlex.join(args)}` failed (exit {result.returncode}): {message}\n"
            f"The SLURM controller does not answer. {CLUSTER_UP}\n{local_instead(experiment_name)}"
        )
    raise SlurmRefused(f"`{shlex.join(args)}` failed (exit {result.returncode}): {message}")


def parse_squeue(output: str) -> list[Job]:
    """The jobs of `squeue -h -r -o %A|%F|%K|%T|%r` output (array elements only)."""
    jobs = []
    for line in output.splitlines():
        fields = line.strip().split("|")
        if len(fields) == 5 and fields[2].isdigit():
            jobs.append(Job(fields[0], fields[1], int(fields[2]), fields[3], fields[4]))
    return jobs


def parse_scontrol_job(output: str) -> tuple[str | None, int | None]:
    """(JobState, exit code) from `scontrol -o show job ID` (the code of ExitCode=CODE:SIGNAL)."""
    state = code = None
    for field in output.split():
        if field.startswith("JobState="):
            state = field.split("=", 1)[1]
        elif field.startswith("ExitCode="):
            text = field.split("=", 1)[1].split(":")[0]
            code = int(text) if text.isdigit() else None
    return state, code


def sbatch_value(value: object, what: str) -> str:
    """`value` quoted for an #SBATCH line, as sbatch reads it.

    Measured with sbatch 22.05: a value in double or single quotes may hold spaces, `$`, `#`, `=` and the
    other quote; an unquoted space ends the directive ("Invalid directive found in batch script"); there is no
    escape character: a backslash is dropped or turns off the %-patterns of --output, so no quoting holds one.

    Raises:
        ExperimentError: the value holds a backslash, a newline, or both kinds of quote.
    """
    text = str(value)
    if "\\" in text or "\n" in text or ('"' in text and "'" in text):
        raise ExperimentError(
            f"{what} {text!r} cannot be written into an #SBATCH line of the job script: sbatch reads no "
            f"backslash, newline or value with both kinds of quote. Choose a value (for a path: a "
            f"RESULTS_DIR) without them."
        )
    quote = "'" if '"' in text else '"'
    return f"{quote}{text}{quote}"


def output_pattern(folder: str) -> str:
    """An --output pattern for files <folder>/<array id>_<index>.out: a "%" of the path itself is "%%"."""
    return folder.replace("%", "%%") + "/%A_%a.out"
