"""What bin/train.py prints, and how: progress lines on stdout, warnings marked by rank under DDP."""

import logging
import sys
import warnings

from ginlab.training.distributed import process_label


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
