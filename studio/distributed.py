"""One run on several processes (GPUs) and machines: PyTorch's torchrun starts the ranks, the Trainer does the rest.

The process that holds the run (`studio train` with more than one process: the CLI, or the worker the UI spawns) is
the launcher. It takes the runs-folder lock, makes the run folder, then runs torchrun (torch.distributed.run, in this
process) whose ranks each run `python -m studio train --rank-of RUN_DIR`. The Trainer sees torchrun's variables and
trains with DDP (every rank a whole copy of the model, each a share of every batch) or FSDP (the weights sharded).
The launcher waits, turns a rank's death into one sentence in the run's status, and hands the lock on.

Only global rank 0 writes the run's files (events, status, the adapter, checkpoints' studio files, the report card):
events.py's writers do nothing on the other ranks, and train.py checks is_main() for the rest. This module imports
no torch at import time: `studio train` refuses a bad start in well under a second.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from pathlib import Path

from .config import RunConfig
from .errors import ConfigError

log = logging.getLogger("studio.distributed")

RANK_FLAG = "--rank-of"  # `studio train --rank-of RUN_DIR`: this process is one rank of the run in RUN_DIR
LAUNCHER_PID_ENV = "STUDIO_LAUNCHER_PID"  # the launcher's pid, handed to its ranks (status.json's pid is the run's)
# How long a collective (all-reduce of gradients, the stop broadcast) waits for a rank that stopped answering before
# it fails the run. A rank that dies is caught sooner by torchrun's own monitoring (about a second); this bounds a
# rank that hangs. Long enough for rank 0's work alone between steps (saving a checkpoint and the best adapter).
COLLECTIVE_TIMEOUT_S = 180
RANK_FAILURE_FILE = "failure-rank{rank}.txt"  # a rank's one sentence when it fails, for the launcher to say
DEFAULT_MASTER_PORT = 29500  # torchrun's own default


# --- which process am I -----------------------------------------------------------------
def rank() -> int:
    """This process's global rank (torchrun sets RANK); 0 for a run on one process."""
    return int(os.environ.get("RANK") or 0)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE") or 1)


def is_main() -> bool:
    """Whether this process writes the run's files: rank 0, or the only process."""
    return rank() == 0


def run_pid() -> int:
    """The pid status.json names: the launcher's on a rank (stopping or checking the run means the launcher, which
    outlives every rank), else this process's."""
    return int(os.environ.get(LAUNCHER_PID_ENV) or os.getpid())


# --- the plan: how many processes, where ------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Plan:
    """torchrun's arguments for one machine's part of a run."""

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_MASTER_PORT

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def torchrun_args(self, run_dir: Path) -> list[str]:
        return [f"--nproc-per-node={self.nproc_per_node}", f"--nnodes={self.nnodes}",
                f"--node-rank={self.node_rank}", f"--master-addr={self.master_addr}",
                f"--master-port={self.master_port}",
                "--max-restarts=0",  # a rank that fails fails the run: the user resumes, nothing retries blindly
                "--monitor-interval=0.5",  # seconds between torchrun's checks that every rank is alive
                "-m", "studio", "train", RANK_FLAG, str(run_dir)]


def gpu_count() -> int:
    """Visible CUDA GPUs (CUDA_VISIBLE_DEVICES counts), 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def processes_per_node(config: RunConfig) -> int:
    """config.devices as a number of processes on this machine: "auto" is every visible GPU (one process on a CPU,
    where more processes share the same cores and gain nothing); a number is that many, on a CPU too (gloo)."""
    gpus = gpu_count()
    if config.devices == "auto":
        return max(gpus, 1)
    wanted = int(config.devices)
    if gpus and wanted > gpus:
        raise ConfigError(f"devices is {wanted} but this machine has {gpus} GPU{'s' if gpus > 1 else ''}: set devices "
                          f"to {gpus} or auto.")
    return wanted


def plan(config: RunConfig, node_rank: int = 0) -> Plan | None:
    """torchrun's plan for this machine, or None when the run is one process (trained in this process)."""
    if not 0 <= node_rank < config.nodes:
        raise ConfigError(f"--node-rank is {node_rank} but the run has {config.nodes} node(s): use a node rank from 0 "
                          f"to {config.nodes - 1}.")
    per_node = processes_per_node(config)
    if per_node * config.nodes == 1:
        return None
    if config.nodes > 1 and not config.master_addr:
        raise ConfigError("master_addr is empty but the run spans several machines: set it to the address of "
                          "machine 0 (node rank 0), which every machine can reach.")
    return Plan(per_node, config.nodes, node_rank, config.master_addr or "127.0.0.1", config.master_port)


def with_cli_overrides(config: RunConfig, args) -> RunConfig:
    """The config with torchrun's flags of `studio train` (--nproc-per-node, --nnodes, --master-addr,
    --master-port) in place of its fields; they are written into the run's config.json, so that a resume trains on
    the same processes."""
    changes = {"devices": args.nproc_per_node, "nodes": args.nnodes, "master_addr": args.master_addr,
               "master_port": args.master_port}
    changes = {k: v for k, v in changes.items() if v is not None}
    return RunConfig.from_dict({**config.to_dict(), **changes}) if changes else config


def global_batch(config: RunConfig, processes: int) -> int:
    """Examples per optimizer step: batch_size is per process (as in the Trainer), so the run's processes, the batch
    and the gradient accumulation multiply."""
    return config.batch_size * config.gradient_accumulation * max(processes, 1)


def machine_command(config_file: str, node_rank: int) -> str:
    """The command to run on machine `node_rank` of a run that spans several: the same config file on each."""
    return f"python -m studio train {config_file} --node-rank {node_rank}"


# --- the launcher -----------------------------------------------------------------------
def launch(run_dir: Path, launch_plan: Plan) -> tuple[str, str]:
    """Run this machine's ranks through torchrun and wait for them. Returns (final status, its sentence or "").

    Rank 0 records how the run ended; the launcher records it instead where no rank could: a rank that died
    (killed, out of system memory), or the launcher's own stop signal. On machines other than 0 the status says
    only that this machine's part ended: machine 0's run folder holds the run."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from .events import PID_FILE, STOP_FILE, read_status, write_status

    run_dir = Path(run_dir)
    here = launch_plan.node_rank == 0
    for stale in run_dir.glob(RANK_FAILURE_FILE.format(rank="*")):
        stale.unlink()
    if here:
        (run_dir / STOP_FILE).unlink(missing_ok=True)
    (run_dir / PID_FILE).write_text(str(os.getpid()))  # the launcher is the run's process: stop and liveness
    write_status(run_dir, status="starting", pid=os.getpid(), processes=launch_plan.world_size,
                 message=None if here else f"Machine {launch_plan.node_rank} of {launch_plan.nnodes}: training "
                                           f"with machine 0 ({launch_plan.master_addr}), whose run shows progress")
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())  # torchrun hands its environment to the ranks
    args = get_args_parser().parse_args(launch_plan.torchrun_args(run_dir))
    log.info("torchrun %s", " ".join(launch_plan.torchrun_args(run_dir)))
    started = time.time()
    failure = None
    try:
        run(args)
    except ChildFailedError as err:
        failure = err
    except SignalException as err:  # stop_run's SIGTERM: torchrun has passed it on and waited for the ranks
        log.info("launcher stopped by %s", err.sigval.name)
        if read_status(run_dir).get("status") not in ("finished", "stopped", "failed"):
            write_status(run_dir, status="stopped", pid=os.getpid(),
                         message="Stopped: the training processes were ended. Resume continues from the last "
                                 "checkpoint.")
        return "stopped", ""
    except Exception as err:  # noqa: BLE001 - torchrun could not bring the processes together: one sentence
        log.error("torchrun failed to start the run", exc_info=True)
        message = meeting_failure_sentence(err, launch_plan)
        _record_failure(run_dir, here, message, "user", elapsed=time.time() - started)
        return "failed", message
    finally:
        os.environ.pop(LAUNCHER_PID_ENV, None)
        (run_dir / PID_FILE).unlink(missing_ok=True)
    status = read_status(run_dir)
    if failure is None:
        if not here:
            write_status(run_dir, status="finished", pid=os.getpid(), elapsed=time.time() - started,
                         message=f"This machine's part of the run ended; machine 0 ({launch_plan.master_addr}) "
                                 f"holds the run's adapter and events.")
            return "finished", ""
        return status.get("status", "failed"), status.get("message") or ""
    failed_rank, process = failure.get_first_failure()
    if failed_rank == 0 and status.get("status") == "failed" and here:
        return "failed", status.get("message") or ""  # rank 0 said what went wrong itself
    message = failure_sentence(run_dir, failed_rank, process.exitcode, launch_plan.world_size)
    log.error("rank %d failed (exit code %s): %s", failed_rank, process.exitcode, process.message)
    _record_failure(run_dir, here, message, "rank", elapsed=time.time() - started)
    return "failed", message


def _record_failure(run_dir: Path, here: bool, message: str, kind: str, elapsed: float) -> None:
    """The launcher's record of a run no rank could end itself: the error event (machine 0 only: its folder holds
    the run) and the failed status. A full disk costs the record, never the launcher."""
    from .events import EventWriter, log_tail, write_status

    try:
        if here:
            events = EventWriter(run_dir)
            try:
                events.write("error", message=message, kind=kind, log_tail=log_tail(run_dir))
            finally:
                events.close()
        write_status(run_dir, status="failed", message=message, pid=os.getpid(), elapsed=elapsed)
    except OSError as err:
        log.info("failed status not written: %s", err)


def meeting_failure_sentence(err: BaseException, launch_plan: Plan) -> str:
    """One sentence for processes that could not meet (torchrun's rendezvous): a port in use, an address that
    cannot be reached, a machine that never came."""
    where = f"{launch_plan.master_addr or '127.0.0.1'}:{launch_plan.master_port}"
    text = str(err).lower()
    if "address already in use" in text or "eaddrinuse" in text or "errno: 98" in text:
        return (f"The port {launch_plan.master_port} on machine 0 is already in use, so the training processes could "
                f"not meet there: set master_port to another free port (for example {launch_plan.master_port + 1}).")
    return (f"The training processes could not meet at {where} ({type(err).__name__}): check the address and "
            f"port of machine 0 (master_addr, master_port), that every machine can reach it, and that each machine "
            f"was started with its own --node-rank.")


def failure_sentence(run_dir: Path, failed_rank: int, exitcode: int, processes: int) -> str:
    """One sentence for a rank's failure: its own (written by the rank: out of memory, a bad file) or how it
    ended (a signal, an exit code)."""
    path = Path(run_dir) / RANK_FAILURE_FILE.format(rank=failed_rank)
    try:
        own = path.read_text(encoding="utf-8").strip()
    except OSError:
        own = ""
    if own:
        return f"Training process {failed_rank} of {processes} failed: {own}"
    how = f"killed by signal {-exitcode}" if exitcode < 0 else f"exit code {exitcode}"
    return (f"Training process {failed_rank} of {processes} ended unexpectedly ({how}; killed, or out of memory), so "
            f"the run was stopped on every process; resume continues from the last checkpoint.")


# --- inside a rank ----------------------------------------------------------------------
def start_rank(run_dir: Path) -> None:
    """Set up this process as one rank of the run in run_dir: stdout too goes to the run's log (the terminal's
    stdout carries the run folder only, printed by the launcher), and the rank ends itself if its launcher is gone
    (a SIGKILL of the launcher, which torchrun's workers in their own sessions would otherwise outlive)."""
    os.dup2(2, 1)  # descriptor 2 is the run's log (train.main moved it there)
    sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    launcher = int(os.environ.get(LAUNCHER_PID_ENV) or 0)
    if launcher:
        threading.Thread(target=_exit_with_launcher, args=(launcher,), name="exit-with-launcher", daemon=True).start()


def _exit_with_launcher(launcher: int) -> None:
    while os.getppid() == launcher:
        time.sleep(1.0)
    log.error("rank %d: the launcher (pid %d) is gone; exiting", rank(), launcher)
    os._exit(1)


def record_rank_failure(run_dir: Path, message: str) -> None:
    """A rank other than 0 that fails leaves its sentence for the launcher (rank 0 records its own in status)."""
    try:
        (Path(run_dir) / RANK_FAILURE_FILE.format(rank=rank())).write_text(message + "\n", encoding="utf-8")
    except OSError:
        pass


def agree(flag: bool) -> bool:
    """Rank 0's flag, on every rank (a broadcast of one number); the flag itself on one process. Every rank must
    call it at the same point: it is how a stop, which only rank 0 reads from the STOP file, reaches all ranks at
    the same step, so that none waits for the others in a collective that never comes."""
    if world_size() == 1:
        return flag
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


FSDP_WRAP_TARGET = "TRANSFORMER_BASED_WRAP"  # one FSDP unit per decoder layer (the model's _no_split_modules)


def fsdp_arguments(config: RunConfig, processes: int) -> dict:
    """TrainingArguments' fsdp / fsdp_config for a sharded run, {} for DDP (every GPU a whole copy). QLoRA's 4-bit
    weights are sharded as they are stored, in the compute dtype (models.bnb_config's bnb_4bit_quant_storage)."""
    if not uses_fsdp(config, processes):
        return {}
    return {"fsdp": "full_shard auto_wrap",
            "fsdp_config": {"auto_wrap_policy": FSDP_WRAP_TARGET, "use_orig_params": False,
                            "cpu_ram_efficient_loading": True, "sync_module_states": True,
                            "state_dict_type": "FULL_STATE_DICT"}}


def uses_fsdp(config: RunConfig, processes: int) -> bool:
    """Whether the run shards its weights (FSDP): asked for, or "auto" where the model does not fit one GPU. FSDP
    needs CUDA GPUs; on a CPU the ranks use DDP (gloo)."""
    if processes <= 1 or config.sharding == "ddp" or gpu_count() == 0:
        return False
    if config.sharding == "fsdp":
        return True
    return not fits_one_gpu(config)


def fits_one_gpu(config: RunConfig) -> bool:
    """The estimate's memory (studio/estimate.py's sizing) against one GPU's memory, with the same margin as the
    fit badge's "fits"."""
    from . import estimate, models

    try:
        params, hidden, layers = estimate.model_shape(config.model)
    except Exception:  # noqa: BLE001 - no config to size it by: replicate (DDP), the Trainer's default
        return True
    need = models.estimate_memory_gb(params / 1e9, models.training_method(config), config.max_seq_length,
                                     config.batch_size, hidden=hidden, layers=layers)
    hardware = models.detect_hardware()
    return models.fit_badge(need, hardware.get("gpu_memory_gb") or hardware["ram_gb"]) != "too big"

