"""Running one distillation on several processes: torch.distributed, launched by torchrun.

QTinker does not have its own launcher or communication layer. `torchrun` starts one
process per GPU (or per CPU worker) and sets RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR
in each; `setup()` reads them and joins the process group (NCCL on CUDA, gloo on CPU).
The run itself stays the same program, with a few changes a reader can find by name:

    ctx = setup(device)                    # one Context per process; world_size 1 without torchrun
    ids = shard_batch(global_batch, ctx)   # each rank takes its share of every global batch
    model = wrap_ddp(trainable, ctx)       # gradients averaged across ranks during backward
    stop = any_rank(stop_requested, ctx)   # every rank takes the same branch
    loss = mean_across_ranks({"loss": ...}, ctx)  # metrics every rank agrees on
    if ctx.is_main: save(...)              # only rank 0 writes outputs and checkpoints
    teardown(ctx)

Without torchrun every function here is a cheap no-op around the single-process path, so
the run has one code path. `launch_command()` builds the torchrun command line the UI (and
users) start; `visible_gpus()` lists the GPUs this process can use.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import torch
import torch.distributed as dist

from qtinker.core.errors import QTinkerError

T = TypeVar("T")

# Rank 0 may fine-tune the teacher or save while the other ranks wait at the next collective;
# the default (10 min NCCL, 30 min gloo) is too short for that. A failing rank does not make
# the others wait this long: torchrun stops the whole group when one process fails.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("QTINKER_DIST_TIMEOUT_MIN", "180")))


@dataclass(frozen=True)
class Context:
    """Where this process sits in the job. world_size == 1 means a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    backend: str | None = None  # "nccl" | "gloo" | None (not distributed)
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The one process that writes outputs, checkpoints, events and logs."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True inside a process started by torchrun (or any launcher that sets the same variables)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def env_rank() -> int:
    """This process's global rank from the torchrun environment (0 outside torchrun), before setup()."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def backend_for(device: str) -> str:
    """NCCL for CUDA tensors, gloo for CPU."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def setup(device: str = "auto") -> Context:
    """Join the torchrun process group (if launched by torchrun) and pick this rank's device.

    device: "auto" | "cpu" | "cuda" | "cuda:N". Under torchrun, CUDA ranks use
    cuda:<LOCAL_RANK> (one GPU per process); an explicit index is an error there.
    """
    want = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    if not launched_by_torchrun():
        return Context(device=want)
    env = os.environ
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    local_rank = int(env["LOCAL_RANK"])
    local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    node_rank = int(env.get("GROUP_RANK", env.get("NODE_RANK", "0")))
    if want == "mps" and world > 1:
        raise QTinkerError("--device mps: torch.distributed has no Apple-GPU backend; run one process "
                           "(no torchrun) or use --device cpu")
    if want.startswith("cuda"):
        if ":" in want:
            raise QTinkerError(f"--device {want}: under torchrun each process uses cuda:<LOCAL_RANK>; pass --device cuda "
                               "and choose GPUs with CUDA_VISIBLE_DEVICES")
        if not torch.cuda.is_available():
            raise QTinkerError("--device cuda: no CUDA GPU is visible to this process; use --device cpu (gloo) "
                               "or install a CUDA build of PyTorch")
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise QTinkerError(f"torchrun --nproc_per_node={local_world}: only {count} GPU(s) visible on this machine; "
                               f"use --nproc_per_node={count} or fewer")
        torch.cuda.set_device(local_rank)
        want = f"cuda:{local_rank}"
    backend = backend_for(want)
    if world > 1 and not dist.is_initialized():
        kwargs = {"device_id": torch.device(want)} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT, **kwargs)
    return Context(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world,
                   node_rank=node_rank, backend=backend if world > 1 else None, device=want)


def teardown(ctx: Context | None = None, sync: bool = True) -> None:
    """Leave the process group (safe to call twice, or when never joined).

    sync: wait for every rank first (the normal end), so no rank tears down its connections
    while another still finishes a collective (gloo can abort the process then). Pass
    sync=False after an error: the other ranks may never arrive.
    """
    if dist.is_available() and dist.is_initialized():
        if sync:
            dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def on_main(fn: Callable[[], T], ctx: Context) -> T:
    """Run fn() on rank 0 only (prepare the output folder, fine-tune the teacher) and give its
    result to every rank. A QTinkerError there is raised on every rank, so all of them stop
    with the same one-line message instead of waiting in the next collective."""
    if not ctx.distributed:
        return fn()
    box: list = [None, None]
    if ctx.is_main:
        try:
            box[1] = fn()
        except QTinkerError as exc:
            box[0] = str(exc)
    dist.broadcast_object_list(box, src=0, device=_comm_device(ctx))
    if box[0] is not None:
        raise QTinkerError(box[0])
    return box[1]


# ---------------------------------------------------------------- data and model

def shard_batch(ids: Sequence[int], ctx: Context) -> list[int]:
    """This rank's share of one global batch, by torch's DistributedSampler (no shuffling here:
    the run's seeded `batch_order` already shuffled and length-bucketed the global batches).

    Rank r gets ids[r], ids[r + W], ... so every rank sees similar lengths, and the global batch
    of a W-process run with --batch-size B is the batch of a 1-process run with --batch-size W·B:
    the same examples, step for step. A global batch not divisible by W is padded by repeating
    its first ids (DistributedSampler's rule), so every rank runs the same number of steps.
    """
    if not ctx.distributed:
        return list(ids)
    from torch.utils.data.distributed import DistributedSampler

    return [ids[i] for i in DistributedSampler(range(len(ids)), num_replicas=ctx.world_size, rank=ctx.rank,
                                               shuffle=False, drop_last=False)]


def wrap_ddp(module: torch.nn.Module, ctx: Context, find_unused_parameters: bool = False) -> torch.nn.Module:
    """DistributedDataParallel around the trainable module (student plus its projections).

    DDP copies rank 0's parameters to every rank at construction (so load weights before
    wrapping) and averages gradients across ranks during backward. The forward pass must
    go through the returned module. Single process: the module itself.
    """
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [torch.device(ctx.device).index] if ctx.device.startswith("cuda") else None
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


class TrainedTogether(torch.nn.Module):
    """The student and the modules trained with it (e.g. a width projection) as ONE module for
    DDP. forward() runs the student; the loss calls the others outside forward, and DDP still
    averages their gradients (every parameter here must get a gradient each step)."""

    def __init__(self, student: torch.nn.Module, **others: torch.nn.Module):
        super().__init__()
        self.student = student
        for name, module in others.items():
            self.add_module(name, module)

    def forward(self, *args, **kwargs):
        return self.student(*args, **kwargs)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper (for saving, evaluation, state_dict keys)."""
    return getattr(module, "module", module)


# ---------------------------------------------------------------- agreeing across ranks

def mean_across_ranks(values: dict[str, float], ctx: Context) -> dict[str, float]:
    """Average scalar metrics over ranks (one all-reduce for the whole dict)."""
    if not ctx.distributed:
        return dict(values)
    return {k: v / ctx.world_size for k, v in sum_across_ranks(values, ctx).items()}


def sum_across_ranks(values: dict[str, float], ctx: Context) -> dict[str, float]:
    """Add scalar counters over ranks (examples seen, tokens, ...)."""
    if not ctx.distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def any_rank(flag: bool, ctx: Context) -> bool:
    """True on every rank if it is true on any (a stop request, a missing file), so all ranks
    take the same branch; ranks that disagree would wait forever in the next collective."""
    if not ctx.distributed:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_comm_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_tensors(tensors: Sequence[torch.Tensor], ctx: Context, src: int = 0) -> None:
    """Overwrite the tensors in place with rank `src`'s values (e.g. optimizer state on resume)."""
    if not ctx.distributed:
        return
    for t in tensors:
        if ctx.backend == "nccl" and not t.is_cuda:
            moved = t.to(ctx.device)
            dist.broadcast(moved, src=src)
            t.copy_(moved.cpu())
        else:
            dist.broadcast(t, src=src)


def gather_rng_states(ctx: Context) -> list[torch.Tensor]:
    """Every rank's random state (CPU, plus this rank's GPU), for a checkpoint that resumes each
    rank's dropout stream where it was. Collective: all ranks call it; index = rank."""
    mine = torch.get_rng_state()
    if ctx.device.startswith("cuda"):
        mine = torch.cat([mine, torch.cuda.get_rng_state(ctx.device)])
    if not ctx.distributed:
        return [mine]
    states = [torch.empty_like(mine) for _ in range(ctx.world_size)]
    if ctx.backend == "nccl":
        moved = [t.to(ctx.device) for t in states]
        dist.all_gather(moved, mine.to(ctx.device))
        return [t.cpu() for t in moved]
    dist.all_gather(states, mine)
    return states


def set_rng_state(state: torch.Tensor, ctx: Context) -> None:
    """Restore what gather_rng_states() saved for this rank."""
    cpu = torch.get_rng_state()
    torch.set_rng_state(state[:cpu.numel()].clone())
    if ctx.device.startswith("cuda") and state.numel() > cpu.numel():
        torch.cuda.set_rng_state(state[cpu.numel():].clone(), ctx.device)


def _comm_device(ctx: Context) -> torch.device:
    # NCCL only moves CUDA tensors; gloo moves CPU tensors.
    return torch.device(ctx.device if ctx.backend == "nccl" else "cpu")


# ---------------------------------------------------------------- launching

def visible_gpus() -> list[str]:
    """Names of the CUDA GPUs this process can use, e.g. ["0: NVIDIA H100 80GB HBM3", ...]."""
    if not torch.cuda.is_available():
        return []
    return [f"{i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]


def launch_command(args: Sequence[str], nproc: int, *, nnodes: int = 1, node_rank: int | None = None,
                   rdzv_endpoint: str | None = None, rdzv_id: str = "qtinker",
                   python: str | None = None) -> list[str]:
    """The torchrun command line that runs `qtinker <args>` on `nproc` processes per machine.

    args: the qtinker arguments, starting with the command (["distill", "--teacher", ...]).
    Single machine (nnodes=1): `--standalone` picks a free local port. Several machines: run
    the same command on each, with the same `rdzv_endpoint` (host:port of one of them) and
    rdzv_id; torchrun's c10d rendezvous assigns node ranks (or pass node_rank to fix them).
    Uses `python -m torch.distributed.run` (what the `torchrun` script runs) with this
    interpreter, so the job runs in the same environment as the caller.
    """
    if nproc < 1:
        raise QTinkerError(f"nproc={nproc}: the number of processes per machine must be at least 1")
    if nnodes < 1:
        raise QTinkerError(f"nnodes={nnodes}: the number of machines must be at least 1")
    cmd = [python or sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if nnodes == 1 and rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        if not rdzv_endpoint:
            raise QTinkerError(f"nnodes={nnodes}: a multi-machine run needs rdzv_endpoint=HOST:PORT reachable from "
                               "every machine (e.g. the first machine's address and a free port like 29500)")
        cmd += [f"--nnodes={nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={rdzv_endpoint}", f"--rdzv_id={rdzv_id}"]
        if node_rank is not None:
            cmd.append(f"--node_rank={node_rank}")
    return cmd + ["-m", "qtinker", *[str(a) for a in args]]
