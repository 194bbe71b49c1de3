"""The workflow behind bin/train.py: configure, train, and exit with the code the run folder records.

Exit codes (ginlab.errors.ExitCode): 0 finished; 1 failed during training; 2 usage or configuration error
(nothing written); 3 interrupted by SIGTERM/SIGUSR1/Ctrl-C after writing a checkpoint (continue with
training_loop.reload=True); 4 diverged (the training loss became NaN or infinite).
"""

from __future__ import annotations

import sys

from ginlab.errors import ExitCode, GinlabError
from ginlab.training.distributed import follow_rank_0, is_main_process, process_label
from ginlab.training.logs import marked, quiet_lightning, setup_logging
from ginlab.training.outcome import ignore_stop_signals


def main(save_dir: str, config_files: list[str], binding_strings: list[str], argv: list[str]) -> int:
    """Train one run as bin/train.py does; return its exit code."""
    main_process = is_main_process()
    if not main_process:
        follow_rank_0()
    setup_logging(main_process)
    mark = "" if main_process else f"[{process_label()}] "

    def error(message: str) -> None:
        print(marked(mark, f"error: {message}"), file=sys.stderr)

    from ginlab.training.configure import configure

    try:
        launch = configure(save_dir, config_files, binding_strings, argv)
    except GinlabError as e:
        error(_message(e))
        return ExitCode.USAGE
    if launch.start.action == "done":  # reload="auto" on a run that needs nothing: its recorded outcome
        meta = launch.start.meta
        print(f"{save_dir} {meta['status']} already: nothing to do (training_loop.reload=True continues it)")
        return int(meta.get("exit_code") or ExitCode.FINISHED)

    from ginlab.training.loop import training_loop
    from ginlab.training.outcome import Diverged, Interrupted
    from ginlab.training.tee import Tee

    quiet_lightning()
    # The other DDP processes write into rank 0's output, which rank 0 copies to log.txt: no copy of their own.
    tee = Tee().start() if main_process else None
    launch.on_folder_ready = (lambda run: tee.attach(run.log)) if tee else None
    code = ExitCode.FAILED
    try:
        training_loop(save_dir, launch=launch)
        code = ExitCode.FINISHED
    except GinlabError as e:
        error(_message(e))
        code = ExitCode.USAGE
    except Interrupted:
        code = ExitCode.INTERRUPTED
    except Diverged:
        code = ExitCode.DIVERGED
    except KeyboardInterrupt:
        print("stopped by a second Ctrl-C: no checkpoint written for the current step", file=sys.stderr)
        code = ExitCode.INTERRUPTED
    except Exception:
        import traceback

        print(marked(mark, traceback.format_exc()), file=sys.stderr)
        error(f"training failed; see {save_dir}/meta.json and {save_dir}/log.txt")
        code = ExitCode.FAILED
    finally:
        ignore_stop_signals()  # the outcome is recorded: a late Ctrl-C must not change the exit code
        if tee is not None:
            tee.stop()
    return _recorded(launch, code)


def _recorded(launch, code: ExitCode) -> int:
    """The exit code the run folder recorded, when this run recorded one: the record and the exit code agree
    whatever interrupted the way out (a second Ctrl-C, an error after the outcome was written)."""
    recorded = launch.run.recorded_exit_code if launch.run is not None else None
    return int(code) if recorded is None else int(recorded)


def _message(error: Exception) -> str:
    # gin appends "In call to configurable ..." to errors raised inside configurables: noise for the reader.
    return "\n".join(
        line for line in str(error).splitlines() if not line.strip().startswith("In call to configurable")
    )
