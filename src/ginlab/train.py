"""The workflow behind bin/train.py: configure, validate, train, and map the outcome to an exit code.

Exit codes: 0 finished; 1 failed during training; 2 usage or configuration error (nothing written);
3 interrupted by SIGTERM/SIGUSR1/Ctrl-C after writing a checkpoint (continue with training_loop.reload=True).
"""

import logging
import sys
import warnings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 3


class _Marked(logging.Formatter):
    """Starts every line of a record with `mark`, those of multi-line warnings and tracebacks included."""

    def __init__(self, mark: str, fmt: str):
        super().__init__(fmt)
        self.mark = mark

    def format(self, record) -> str:
        return marked(self.mark, super().format(record))


def marked(mark: str, text: str) -> str:
    text = text.rstrip("\n")
    return "\n".join(mark + line for line in text.splitlines()) if mark else text


def setup_logging(main_process: bool = True) -> None:
    """Progress lines on stdout. The other processes of a DDP run print only warnings and errors, each line
    marked with their rank: their output reaches the same terminal and log.txt as rank 0's, which reports
    the run."""
    from ginlab.distributed import process_label

    mark = "" if main_process else f"[{process_label()}] "
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Marked(mark, "%(message)s"))
    progress = logging.getLogger("ginlab.progress")
    progress.handlers[:] = [handler]
    progress.setLevel(logging.INFO if main_process else logging.WARNING)
    progress.propagate = False
    logging.getLogger("ginlab").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger().handlers[0].setFormatter(_Marked(mark, "%(levelname)s %(name)s: %(message)s"))
    if not main_process:
        # Python warnings through the handler above, so that they are marked too
        logging.captureWarnings(True)
    # Known harmless warnings of the pinned versions (see notes): they would drown the progress lines.
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*srun.*command is available.*")
    warnings.filterwarnings("ignore", message=".*`srun` command is available.*")


def quiet_lightning() -> None:
    """Lightning sets its loggers to INFO when imported;
    its start-up chatter is not what a researcher steers by."""
    for name in (
        "lightning",
        "pytorch_lightning",
        "lightning.pytorch",
        "lightning_fabric",
        "lightning.fabric",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)


def configure(save_dir: str, config_files: list[str], binding_strings: list[str]):
    """Parse and validate; on reload, check the configuration against the saved run and layer it on top.

    Returns (bindings, accepted_changes). Raises ConfigError or RunFolderError; writes nothing.
    """
    import gin

    from ginlab.config import ConfigError, differences, flat_config, parse, split_bindings
    from ginlab.distributed import is_main_process
    from ginlab.run_folder import RunFolder, RunFolderError

    bindings = split_bindings(binding_strings)
    parse(config_files, bindings)
    reload = _query("training_loop.reload", False)
    run = RunFolder(save_dir)
    if not reload:
        # Under DDP the other processes start once rank 0 has created the run: it is theirs too.
        if is_main_process() and run.holds_run():
            raise RunFolderError(
                f"{save_dir} already holds a run. To continue it, add -b training_loop.reload=True; "
                f"to start a new run, choose another folder. Nothing was changed."
            )
        return bindings, []
    if not run.meta.exists():
        raise RunFolderError(
            f"Cannot reload {save_dir}: it holds no run (no meta.json). "
            f"Leave out training_loop.reload=True to start a fresh run there."
        )
    run.check_logs_before_reload()
    base = [run.config_gin] if run.config_gin.exists() else run.config_files()
    saved = run.saved_config()
    if not saved:  # killed before config.json was written: what it was started with is the reference
        parse(base, [])
        saved = flat_config(operative=False)
        parse(config_files, bindings)
    diffs = differences(saved, flat_config(operative=False))
    if diffs and not _query("training_loop.reload_allow_changes", False):
        raise ConfigError(
            f"Reload of {save_dir} refused: the configuration differs from the saved run:\n"
            + "\n".join(diffs)
            + "\nReload with the run's own configuration (bin/train.py SAVE_DIR -b training_loop.reload=True "
            "needs no config file), or add -b training_loop.reload_allow_changes=True to accept the changes "
            "(they are recorded in meta.json)."
        )
    parse(config_files, bindings, base_files=base)
    gin.bind_parameter("training_loop.reload", True)
    return bindings, diffs


def _message(error: Exception) -> str:
    # gin appends "In call to configurable ..." to errors raised inside configurables: noise for the reader.
    return "\n".join(
        line for line in str(error).splitlines() if not line.strip().startswith("In call to configurable")
    )


def _query(name, default):
    import gin

    try:
        return gin.query_parameter(name)
    except ValueError:
        return default


def main(save_dir: str, config_files: list[str], binding_strings: list[str], argv: list[str]) -> int:
    from ginlab.distributed import follow_rank_0, is_main_process, process_label

    main_process = is_main_process()
    if not main_process:
        follow_rank_0()
    setup_logging(main_process)
    from ginlab.config import ConfigError
    from ginlab.run_folder import RunFolderError

    mark = "" if main_process else f"[{process_label()}] "

    def error(message: str) -> None:
        print(marked(mark, f"error: {message}"), file=sys.stderr)

    try:
        bindings, accepted = configure(save_dir, config_files, binding_strings)
    except (ConfigError, RunFolderError) as e:
        error(_message(e))
        return EXIT_USAGE

    from ginlab.callbacks import Interrupted
    from ginlab.loop import training_loop
    from ginlab.tee import Tee

    quiet_lightning()

    # The other DDP processes write into rank 0's output, which rank 0 copies to log.txt: no copy of
    # their own.
    tee = Tee().start() if main_process else None
    try:
        training_loop(
            save_dir,
            command=argv,
            config_files=config_files,
            bindings=bindings,
            accepted_changes=accepted,
            on_folder_ready=lambda run: tee.attach(run.log) if tee else None,
        )
        return EXIT_OK
    except (ConfigError, RunFolderError) as e:
        error(_message(e))
        return EXIT_USAGE
    except Interrupted:
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("stopped by a second Ctrl-C: no checkpoint written for the current step", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        import traceback

        print(marked(mark, traceback.format_exc()), file=sys.stderr)
        error(f"training failed; see {save_dir}/meta.json and {save_dir}/log.txt")
        return EXIT_FAILED
    finally:
        if tee is not None:
            tee.stop()
