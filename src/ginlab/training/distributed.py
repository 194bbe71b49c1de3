"""Several processes training one run (DDP): who may write the run folder, who starts whom, and
how they agree.

With `trainer.devices=2` (or more), Lightning trains with DDP: one process per device, each on its own
share of every epoch's batches, gradients averaged after each step. ginlab's rules:
- Only the process the user started (global rank 0) creates, locks and writes the run folder; the others run
  the same code with a read-only view of it (`RunFolder(writer=False)`), and checkpoints are written by rank
  0.
- The other processes of a node are started by ginlab, not by Lightning: the same command line again, with
  the environment variables of Lightning's protocol (LOCAL_RANK, NODE_RANK, WORLD_SIZE, MASTER_ADDR,
  MASTER_PORT), so Lightning sees them as started from outside. Lightning's own launcher would also start a
  thread that SIGKILLs the main process as soon as another one exits with a non-zero code, which can come
  before rank 0 has recorded the outcome in meta.json or exited with its own code (3 after a signal).
  Rank 0 instead waits for the others at the end, kills them when it fails itself, and names those that
  failed. A process that dies before it joined the process group would leave rank 0 waiting for it (30
  minutes): a watcher thread then records the outcome in meta.json and ends rank 0.
- Every decision that leads to a collective operation (stop on a signal, write a checkpoint) is taken
  together: a process that alone decided to save would wait forever for the others.
"""

import os
import subprocess
import sys
import threading
import time

import torch
import torch.distributed as dist

from ginlab.errors import ConfigError, ExitCode
from ginlab.runfolder import format as fmt
from ginlab.training import lightning_internals

EXIT_INTERRUPTED = ExitCode.INTERRUPTED

# What trainer.strategy accepts: ginlab's run folder, checkpoints and exact resume are built for one
# process or for DDP with processes started by re-running the command line.
STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true")


def is_main_process() -> bool:
    """True unless the environment says this process is another rank of a distributed run.

    Known before torch.distributed starts, which is what the run folder needs: it is created or refused
    before training. The variables are those of the launchers Lightning supports: torchrun (RANK), Lightning's
    and ginlab's own protocol (LOCAL_RANK, NODE_RANK or GROUP_RANK), SLURM (SLURM_PROCID, checked last
    because SLURM sets it also for one task that starts its processes itself).
    """
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"]) == 0
    if "LOCAL_RANK" in env or "NODE_RANK" in env or "GROUP_RANK" in env:
        node = env.get("NODE_RANK", env.get("GROUP_RANK", "0"))
        return int(env.get("LOCAL_RANK", "0")) == 0 and int(node) == 0
    return int(env.get("SLURM_PROCID", "0")) == 0


def process_label() -> str:
    """How the output of this process is marked when it is not the main one ("rank 1")."""
    env = os.environ
    rank = env.get("RANK", env.get("LOCAL_RANK", env.get("SLURM_PROCID", "?")))
    node = env.get("NODE_RANK", env.get("GROUP_RANK"))
    return f"rank {rank}" + (f" of node {node}" if node not in (None, "0") and "RANK" not in env else "")


# -- collective operations (no-ops in a single process) ------------------------------------------------------
def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _device() -> torch.device:
    # NCCL moves only CUDA tensors; gloo moves CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over all processes (a new tensor, on the device of `tensor`)."""
    if world_size() == 1:
        return tensor
    total = tensor.detach().to(_device(), copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(tensor.device)


def mean_over_processes(value: float) -> float:
    return float(all_reduce_sum(torch.tensor(value, dtype=torch.float64))) / world_size()


def agree(signal_number: int | None, due: bool) -> tuple[int | None, bool]:
    """(a stop signal any process received,
    whether any process finds a checkpoint due): the same everywhere."""
    if world_size() == 1:
        return signal_number, due
    flags = torch.tensor([signal_number or 0, int(due)], dtype=torch.int64, device=_device())
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    signum, any_due = flags.tolist()
    return (signum or None), bool(any_due)


def all_gather_object(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every process; [obj] in a single process."""
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_from_rank_0(tensors) -> None:
    """Overwrite each tensor, in place, with rank 0's values (nothing to do in a single process)."""
    if world_size() == 1:
        return
    for tensor in tensors:
        local = tensor.detach()
        moved = local.to(_device())
        dist.broadcast(moved, src=0)
        if moved.data_ptr() != local.data_ptr():  # NCCL with a CPU buffer: copy the received values back
            local.copy_(moved)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


# -- starting and ending the other processes of this node ----------------------------------------------------
def check_strategy(trainer) -> None:
    """Refuse what the trainer resolved to when ginlab cannot run it
    (e.g. "auto" choosing a notebook launcher)."""
    from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy

    strategy = trainer.strategy
    if isinstance(strategy, SingleDeviceStrategy):
        return
    if type(strategy) is DDPStrategy and lightning_internals.starts_processes_by_script(strategy):
        return
    raise ConfigError(
        f"Lightning resolved the strategy to {type(strategy).__name__} with "
        f"{type(strategy.launcher).__name__}, which ginlab cannot run: its run folder, checkpoints and exact "
        f"resume work in one process or with DDP whose processes re-run the command line. Set "
        f"trainer.strategy to one of {', '.join(STRATEGIES)} and run bin/train.py from a terminal or a "
        f"job script (not a notebook)."
    )


class Workers:
    """The other processes of this node in a DDP run, when this process has to start them (see the
    module doc).

    Args: grace: seconds this process has to notice, by itself, that another one died (an error in its next
    collective operation, handled like any failure) before the watcher ends it.
    """

    def __init__(self, grace: float = 10.0):
        self.procs: list[tuple[int, subprocess.Popen]] = []  # (global rank, process)
        self.grace = grace
        self._done = False
        self._lock = threading.Lock()  # between finish() and the watcher: one of them decides how it ends

    def start(self, trainer, run=None, stop_signal=lambda: None) -> None:
        """Start ranks 1..n-1 of this node running the same command line, if Lightning would start them here.

        run: the RunFolder, where the watcher records an outcome; stop_signal(): the stop signal received, if
        any (then the outcome is "interrupted", not "failed").
        """
        from pytorch_lightning.strategies import DDPStrategy

        strategy = trainer.strategy
        environment = getattr(strategy, "cluster_environment", None)
        if (
            not isinstance(strategy, DDPStrategy)
            or environment is None
            or environment.creates_processes_externally
        ):
            return  # one process, or processes started by torchrun, SLURM or this very mechanism
        local, nodes, node = strategy.num_processes, strategy.num_nodes, environment.node_rank()
        # The same variables Lightning's launcher sets; with LOCAL_RANK present, Lightning leaves
        # starting to us.
        os.environ.update(
            MASTER_ADDR=environment.main_address,
            MASTER_PORT=str(environment.main_port),
            NODE_RANK=str(node),
            WORLD_SIZE=str(local * nodes),
            LOCAL_RANK="0",
        )
        command = _this_command()
        for local_rank in range(1, local):
            proc = subprocess.Popen(
                command,
                env={**os.environ, "LOCAL_RANK": str(local_rank), "GINLAB_RANK0_PID": str(os.getpid())},
            )
            self.procs.append((node * local + local_rank, proc))
        threading.Thread(
            target=self._watch, args=(run, stop_signal), daemon=True, name="ginlab-workers"
        ).start()

    def _watch(self, run, stop_signal) -> None:
        """End this process when another one died and this one has not noticed it within `grace` seconds.

        torch.distributed notices a dead peer once the process group exists (its connection closes), but not
        while the group is being formed: rank 0 would wait for the process-group timeout. A process can die
        then, e.g. on a Ctrl-C while it imports torch. Without the dead process no step and no checkpoint can
        follow, so ending here loses nothing: the outcome goes to meta.json, and the process exits with 3
        after a stop signal (reload continues from the last checkpoint) or 1.
        """
        died = None
        while not self._done:
            time.sleep(0.5)
            gone = [
                (rank, proc) for rank, proc in self.procs if proc.poll() not in (None, 0, EXIT_INTERRUPTED)
            ]
            if not gone:
                continue
            died = died or time.monotonic()
            if time.monotonic() - died < self.grace:
                continue
            with self._lock:
                if self._done:  # finish() started meanwhile: this process noticed after all
                    return
                self._done = True
                for _, proc in self.procs:
                    proc.kill()
                what = "; ".join(
                    f"rank {rank} (pid {proc.pid}) exited with code {proc.returncode}" for rank, proc in gone
                )
                signum = stop_signal()
                code = EXIT_INTERRUPTED if signum is not None else ExitCode.FAILED
                message = (
                    f"{what}, and rank 0 was still waiting for it {self.grace:.0f} s later (a process that "
                    f"dies before the process group is formed is not noticed otherwise). Continue with -b "
                    f"training_loop.reload=True."
                )
                print(f"error: {message}", file=sys.stderr, flush=True)
                if run is not None and run.writer:
                    status = fmt.INTERRUPTED if code == EXIT_INTERRUPTED else fmt.FAILED
                    error = None if signum is not None else {"type": "ProcessLost", "message": message}
                    run.mark_ended(status, int(code), error)
                    run.lock_info.unlink(missing_ok=True)  # the OS lock goes with the process
                time.sleep(0.5)  # the log copy thread (Tee) writes the message to log.txt
                os._exit(code)

    def finish(self, failed: bool, timeout: float = 60) -> list[str]:
        """Wait for the other processes to end; describe those that did not end well.

        When this process failed, the others are killed after a short grace: they are blocked in a collective
        operation with it and would wait for the process-group timeout (30 minutes). They hold nothing that
        needs saving: only rank 0 writes. Called again, returns [] at once.
        """
        with self._lock:
            if self._done:
                return []
            self._done = True
        deadline = time.monotonic() + (1.0 if failed else timeout)
        problems = []
        for rank, proc in self.procs:
            try:
                code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                if not failed:  # when rank 0 failed, the others are expected to be waiting for it
                    problems.append(
                        f"rank {rank} (pid {proc.pid}) was still running {timeout:.0f} s after rank 0 "
                        f"ended: killed"
                    )
                continue
            # stopped by a signal, as rank 0 was
            if code != 0 and not (code == EXIT_INTERRUPTED and not failed):
                problems.append(f"rank {rank} (pid {proc.pid}) exited with code {code}")
        return problems


def follow_rank_0() -> None:
    """In a process started by Workers: end it as soon as the process that started it is gone.

    Once the processes are connected, a dead rank 0 makes the next collective operation fail; while they
    connect, the others would wait for it until the process-group timeout (30 minutes). They hold nothing
    worth keeping (only rank 0 writes), so they just exit.
    """
    parent = os.environ.get("GINLAB_RANK0_PID")
    if not parent:
        return

    def watch():
        while os.getppid() == int(parent):  # a process whose parent died gets a new parent
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="ginlab-rank-0").start()


def _this_command() -> list[str]:
    """The command line of this process, runnable again from the same working directory."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None:  # python -m package.module
        return [sys.executable, "-m", spec.name, *sys.argv[1:]]
    script = sys.argv[0] if sys.argv else ""
    if not script or script == "-c" or not os.path.isfile(script):
        raise RuntimeError(
            "DDP starts its other processes by running this command line again, "
            "but this process was not started "
            f"from a script file (sys.argv[0] is {script!r}). Train with bin/train.py, or with devices=1."
        )
    return [sys.executable, os.path.abspath(script), *sys.argv[1:]]
