"""One training run over several processes (one GPU each on CUDA, or CPU processes) with
DistributedDataParallel, equal to the one-process run up to floating-point summation order.

Semantics (``train.nproc = N > 1``):

* **Global batch.** ``train.batch_size`` stays the global batch ``B`` (it must be divisible by
  ``N``). Every rank draws the same epoch permutation and augmentation from the same ``data_order``
  generator state, augments the whole global batch (so the generator advances as in one process)
  and keeps its contiguous slice of ``B / N`` examples
  (:meth:`prunelab.data.bundle.DataBundle.train_shard_batches`): the ranks' slices together are
  the one-process batch, example for example.
* **Loss.** Rank ``r`` minimises ``sum of its cross-entropies * N / B``; DDP averages gradients
  over ranks, so the update is the gradient of the global batch's mean loss. The last, partial
  batch of an epoch (``n % B`` examples) is split as evenly as it goes (one rank may hold one
  example fewer) with the same weighting, so it too equals the one-process step; nothing is dropped
  (with BatchNorm in training, a rank's part needs 2 examples, as one process needs 2 in a batch).
* **BatchNorm.** On CUDA, BatchNorm layers become :class:`torch.nn.SyncBatchNorm`, whose batch
  statistics span the global batch as in one process. PyTorch's SyncBatchNorm does not run on CPU
  (it raises for CPU tensors), so CPU (gloo) runs keep per-rank BatchNorm: each rank's ``B / N``
  examples are normalised by their own statistics ("ghost" batch norm), and the running
  statistics are rank 0's (DDP broadcasts rank 0's buffers before each forward pass). A CPU DDP
  run of a model with BatchNorm is therefore *not* the one-process run but exactly the
  one-process run with ghost BatchNorm (``tests/test_ddp.py`` checks both); models without
  BatchNorm (the MLP) match the one-process run.
* **Evaluation.** Rank 0 evaluates the whole test split after each epoch, as one process does
  (the other ranks skip it; their records carry NaN test metrics and are never written).
* **Mask.** Rank 0 computes the mask (or loads it on resume) and broadcasts it with the resume
  checkpoint; every rank then hashes the mask it will train with (:func:`mask_digest`) and all
  ranks compare hashes: on any mismatch every rank refuses to train (:func:`agree_on_mask`).
  The hashes are recorded in the result (``distributed.mask_sha256``).
* **Store.** Only rank 0 writes (metrics, checkpoints, rewinding points, mask, result); a stopped
  or killed run resumes from rank 0's checkpoint, which rank 0 reads and broadcasts to every rank.
* **Run identity.** ``nproc`` is a :class:`~prunelab.training.config.TrainConfig` field, so
  a DDP run has its own hash: its floating-point result differs slightly from one process (the
  gradients are summed in another order), and a run's stored result is one computation.
* **Launch.** :func:`launch` starts ``N`` processes (``torch.multiprocessing``; forked from a
  fork server that imported torch and prunelab once, else spawned) joined by a file rendezvous,
  backend ``gloo`` on CPU and ``nccl`` on CUDA (rank ``r`` on ``cuda:r``). They get the launching
  process's environment, working directory, ``sys.path``, ``.py`` plugins and model factories;
  a registration made in the launching process any other way is not seen by the ranks. Under
  ``torchrun`` (``RANK``/``WORLD_SIZE`` set) nothing is started: :func:`under_torchrun` joins the
  existing world, rank 0 drives (claims runs, decides what is finished, writes) and sends every
  distributed training to the other ranks (:func:`lead_job`).
* **Failures.** An error in any rank ends every rank and reaches the caller as one line
  (:class:`~prunelab.errors.PrunelabError` naming the rank); collectives time out after
  :data:`DEFAULT_TIMEOUT` instead of hanging; ranks die with their parent process.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import pickle
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from prunelab.errors import PrunelabError
from prunelab.pruning.mask import Mask

T = TypeVar("T")

#: How long a collective (or the rendezvous) waits for the other ranks before failing.
DEFAULT_TIMEOUT = timedelta(minutes=30)

#: ``progress(epochs_done, epochs_total)``, called on rank 0.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Shard:
    """This process's place in a distributed run (its process group is initialised).

    Attributes:
        rank: this process, in ``[0, world)``; rank 0 is the only one that writes.
        world: number of processes.
        device: this rank's device (``cuda:LOCAL_RANK`` on CUDA, else CPU).
        report: progress callback (rank 0 only), forwarded to the launching process.
    """

    rank: int
    world: int
    device: torch.device
    report: Progress | None = field(default=None, compare=False, repr=False)

    @property
    def leads(self) -> bool:
        """Rank 0: computes the mask, evaluates, writes to the store."""
        return self.rank == 0

    @property
    def backend(self) -> str:
        return str(dist.get_backend())

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel (which broadcasts rank 0's parameters and buffers
        now), its BatchNorm layers synchronised on CUDA (see the module docstring for CPU). The
        module is changed in place (parameters and buffers kept), so an optimizer built on it and
        its ``state_dict`` keys stay valid."""
        from torch.nn.parallel import DistributedDataParallel

        if self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return DistributedDataParallel(model, device_ids=[self.device.index])
        return DistributedDataParallel(model)

    def sum_(self, values: Tensor) -> Tensor:
        """All-reduce ``values`` (on this rank's device) to their sum over ranks, in place."""
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def share(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (pickled; tensors should be on CPU)."""
        box: list[Any] = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def mask_digest(mask: Mask | None) -> str:
    """SHA-256 (hex) of a mask's layer names, shapes and bits; ``"dense"`` for no mask."""
    if mask is None:
        return "dense"
    digest = hashlib.sha256()
    for name in mask:
        bits = mask[name].detach().to("cpu", torch.uint8).contiguous()
        digest.update(f"{name}:{tuple(bits.shape)}:".encode())
        digest.update(bits.numpy().tobytes())
    return digest.hexdigest()


def agree_on_mask(shard: Shard, mask: Mask | None) -> list[str]:
    """Every rank's :func:`mask_digest`, in rank order; raises on every rank when they differ.

    Raises:
        PrunelabError: the ranks hold different masks (naming each rank's hash prefix).
    """
    digests = shard.gather(mask_digest(mask))
    if len(set(digests)) > 1:
        held = ", ".join(f"rank {r}: {d[:12]}" for r, d in enumerate(digests))
        raise PrunelabError(f"ranks hold different masks ({held}); refusing to train")
    return digests


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA, ``gloo`` for CPU; a one-line error for any other device."""
    if device.type == "cuda":
        return "nccl"
    if device.type == "cpu":
        return "gloo"
    raise PrunelabError(
        f"device {str(device)!r} cannot train over several processes; valid choices: cpu (gloo), cuda (nccl)"
    )


def one_line(exc: BaseException) -> str:
    """An exception as one line: a PrunelabError's message, else ``Type: first line``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if isinstance(exc, PrunelabError):
        return lines[0] if lines else type(exc).__name__
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def check_launch(nproc: int, device: torch.device) -> str:
    """The backend for ``nproc`` processes on ``device``'s type, or a one-line error (no
    torch.distributed, a device type other than cpu/cuda, fewer GPUs than processes)."""
    if nproc < 1:
        raise PrunelabError(f"nproc must be at least 1, got {nproc}")
    if not dist.is_available():
        raise PrunelabError("this torch build has no torch.distributed; train with nproc 1")
    backend = backend_for(device)
    if device.type == "cuda" and torch.cuda.device_count() < nproc:
        raise PrunelabError(
            f"nproc {nproc} needs {nproc} CUDA devices (one per process); {torch.cuda.device_count()} here"
        )
    return backend


def _plugin_files() -> list[str]:
    """The ``.py`` plugins loaded in this process (rank processes load them too)."""
    files = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.startswith("prunelab_plugin_") and path:
            files.append(str(path))
    return sorted(files)


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this rank when its launching process dies (a killed run
    must not leave ranks training in the background)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


#: Imported once by the fork server, so each rank process starts in a fraction of a second:
#: prunelab's executors, what every optimizer imports on first use (dynamo), the default dataset's
#: generator.
_PRELOAD = ["prunelab.runs.training", "torch._dynamo", "torch.nn.parallel", "mnist1d"]


def _start_method() -> str:
    """``forkserver`` where available (a clean server process that imported torch and prunelab
    once, forked per rank: no re-import per launch, and CUDA is never initialised before the
    fork), else ``spawn``."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def launch(
    fn: Callable[..., T],
    nproc: int,
    args: Sequence[Any] = (),
    *,
    device: str | torch.device = "cpu",
    threads: int = 1,
    progress: Progress | None = None,
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> T:
    """Run ``fn(shard, *args)`` in ``nproc`` new processes joined in one process group and
    return rank 0's return value.

    The processes get this process's environment, working directory, ``sys.path``, ``.py``
    plugins and model factories (the fork server itself may be older than any of them). As with
    any multiprocessing start method but fork, a script that launches must guard its top level
    with ``if __name__ == "__main__":`` (each process imports the main module).

    Args:
        fn: a module-level function (pickled by reference), run with the group initialised and
            given its :class:`Shard`; ``args`` must pickle too.
        nproc: processes (ranks).
        device: ``"cpu"`` (gloo) or ``"cuda"`` (nccl; rank ``r`` on ``cuda:r``).
        threads: torch intra-op threads per rank.
        progress: called here with rank 0's ``shard.report(done, total)`` calls.
        timeout: how long a rank waits in a collective for the others.

    Raises:
        PrunelabError: any rank failed (the first failure, as one line naming the rank); every
            other rank is ended first.
    """
    dev = torch.device(device)
    backend = check_launch(nproc, dev)
    from prunelab.plugins import FACTORY_MODELS

    try:
        payload = pickle.dumps((fn, tuple(args), dict(FACTORY_MODELS)))
    except Exception as exc:
        raise PrunelabError(
            f"what the rank processes run cannot be sent to them ({exc}); define functions and "
            "model factories at module level"
        ) from None
    method = _start_method()
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(_PRELOAD)  # no effect once the server runs
    queue = context.SimpleQueue()
    with tempfile.TemporaryDirectory(prefix="prunelab-ddp-") as rendezvous:
        setup = _Setup(
            payload,
            nproc,
            f"file://{rendezvous}/store",
            backend,
            dev.type,
            _plugin_files(),
            threads,
            timeout.total_seconds(),
            dict(os.environ),
            os.getcwd(),
            list(sys.path),
        )
        processes = torch.multiprocessing.start_processes(
            _entry, args=(setup, queue), nprocs=nproc, join=False, start_method=method
        )
        return _supervise(processes, queue, nproc, progress)


@dataclass(frozen=True)
class _Setup:
    """What every rank process needs to join the group and run its function."""

    payload: bytes  # pickled (fn, args, model factories)
    nproc: int
    rendezvous: str
    backend: str
    device_type: str
    plugins: list[str]
    threads: int
    timeout_s: float
    env: dict[str, str]
    cwd: str
    path: list[str]


def _supervise(processes: Any, queue: Any, nproc: int, progress: Progress | None) -> Any:
    """Wait for the ranks, forwarding rank 0's progress. Once one rank fails, the others are
    killed at once (they may be waiting for it in a collective) and its error becomes one line."""
    from multiprocessing.connection import wait

    results: list[Any] = []
    errors: list[tuple[int, str]] = []

    def drain() -> None:
        while not queue.empty():
            message = queue.get()
            if message[0] == "progress" and progress is not None:
                progress(message[1], message[2])
            elif message[0] == "result":
                results.append(message[1])
            elif message[0] == "error":
                errors.append((message[1], message[2]))

    members = list(processes.processes)
    pending = {process.sentinel: rank for rank, process in enumerate(members)}
    failed: tuple[int, int] | None = None
    try:
        while pending and failed is None:
            ready = wait(list(pending), timeout=0.1)
            drain()  # a rank's error is in the queue before its exit is seen
            for sentinel in ready:
                rank = pending.pop(sentinel)
                members[rank].join()
                if members[rank].exitcode != 0:
                    failed = (rank, members[rank].exitcode)
                    break
    finally:
        for process in members:  # after a failure, or an error here (e.g. in progress)
            if process.is_alive():
                process.kill()
            process.join()
    drain()
    if failed is not None:
        # The first error reported is the cause; later ones echo it (a peer that vanished).
        rank, message = errors[0] if errors else (failed[0], f"exited with code {failed[1]}")
        raise PrunelabError(f"rank {rank} of {nproc} failed: {message}")
    if not results:
        raise PrunelabError(f"rank 0 of {nproc} ended without a result")
    return results[0]


def _entry(index: int, setup: _Setup, queue: Any) -> None:
    """One rank: take the launcher's environment, join the group, run ``fn``, report its result
    (rank 0) or its error (any rank), and exit at once (a peer may still hold the group)."""
    _die_with_parent()
    code = 0
    try:
        os.environ.clear()
        os.environ.update(setup.env)
        os.chdir(setup.cwd)
        sys.path[:] = setup.path
        from prunelab.plugins import load_plugins, register_factories

        torch.set_num_threads(setup.threads)
        load_plugins(setup.plugins)
        fn, args, factories = pickle.loads(setup.payload)
        register_factories(factories)
        device = torch.device("cpu")
        if setup.device_type == "cuda":
            device = torch.device("cuda", index)
            torch.cuda.set_device(device)
        dist.init_process_group(
            setup.backend,
            init_method=setup.rendezvous,
            rank=index,
            world_size=setup.nproc,
            timeout=timedelta(seconds=setup.timeout_s),
        )

        def report(done: int, total: int) -> None:
            queue.put(("progress", done, total))

        out = fn(Shard(index, setup.nproc, device, report if index == 0 else None), *args)
        if index == 0:
            queue.put(("result", out))
        dist.barrier()  # leave together: gloo aborts a rank whose peer closes the group under it
        dist.destroy_process_group()
    except KeyboardInterrupt:
        code = 130
    except BaseException as exc:
        queue.put(("error", index, one_line(exc)))
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: it is slow, and may block on a peer's process group


# -- torchrun ----------------------------------------------------------------------------------


@dataclass
class _Session:
    """The torchrun world this process joined (:func:`under_torchrun`)."""

    shard: Shard
    broken: bool = False  # a job failed: the other ranks may be inside a collective


_SESSION: list[_Session] = []


def torchrun_world_size() -> int | None:
    """``WORLD_SIZE`` when this process was launched by torchrun (``RANK`` and ``WORLD_SIZE``
    set), else None."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    return None


def under_torchrun(lead: Callable[[], T], nproc: int, device: str = "cpu") -> T | None:
    """Run ``lead()`` (e.g. a CLI command), joining the torchrun world when launched by torchrun.

    Not under torchrun: just ``lead()``. Under torchrun (``WORLD_SIZE`` must equal ``nproc``):
    rank 0 runs ``lead()``, which sends each distributed training to the other ranks
    (:func:`lead_job`); the other ranks follow those jobs and return None when rank 0 is done.

    Raises:
        PrunelabError: ``WORLD_SIZE`` differs from ``nproc``; rank 0 failed (on the other ranks).
    """
    size = torchrun_world_size()
    if size is None:
        return lead()
    if size != nproc:
        raise PrunelabError(
            f"launched by torchrun with WORLD_SIZE={size} but train.nproc={nproc}; pass --nproc {size}"
        )
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    wanted = str(device)
    cuda = wanted.startswith("cuda") or (wanted == "auto" and torch.cuda.is_available())
    dev = torch.device("cuda", local) if cuda else torch.device("cpu")
    if not dist.is_available():
        raise PrunelabError("this torch build has no torch.distributed; train with nproc 1")
    if cuda and local >= torch.cuda.device_count():
        raise PrunelabError(
            f"local rank {local} needs cuda:{local}, but {torch.cuda.device_count()} CUDA device(s) here"
        )
    if cuda:
        torch.cuda.set_device(dev)
    dist.init_process_group(backend_for(dev), init_method="env://", timeout=DEFAULT_TIMEOUT)
    session = _Session(Shard(rank, size, dev))
    _SESSION.append(session)
    try:
        if rank != 0:
            _follow(session.shard)
            return None
        try:
            out = lead()
        except BaseException as exc:
            if not session.broken:  # the others wait for a message, not inside a training
                session.shard.share(("failed", one_line(exc)))
                dist.barrier()
            raise
        session.shard.share(("done",))
        # Every rank leaves together: gloo aborts (SIGABRT) a rank whose peer tears the group down
        # while it is still reading the last message.
        dist.barrier()
        return out
    finally:
        _SESSION.clear()
        dist.destroy_process_group()


def lead_job(fn: Callable[..., T], args: Sequence[Any], progress: Progress | None = None) -> T:
    """On rank 0 of a torchrun world: run ``fn(shard, *args)`` here and on every other rank.

    Raises:
        PrunelabError: no world was joined (only ``prunelab train`` / :func:`under_torchrun` join one).
    """
    if not _SESSION:
        raise PrunelabError(
            "launched by torchrun, but nothing joined its world: run `prunelab train --nproc N` "
            "under torchrun, or call prunelab.training.distributed.under_torchrun"
        )
    session = _SESSION[0]
    session.shard.share(("job", fn, tuple(args)))
    try:
        return fn(replace(session.shard, report=progress), *args)
    except BaseException:
        session.broken = True  # the others may be inside a collective: no further message
        raise


def _follow(shard: Shard) -> None:
    """A rank other than 0 under torchrun: run rank 0's jobs until it is done."""
    while True:
        message: tuple[Any, ...] = shard.share(())  # what this rank sends is ignored
        if message[0] == "job":
            message[1](shard, *message[2])
        elif message[0] == "failed":
            dist.barrier()  # as rank 0 does before it raises (see under_torchrun)
            raise PrunelabError(f"rank 0 failed: {message[1]}")
        else:
            dist.barrier()
            return


__all__ = [
    "DEFAULT_TIMEOUT",
    "Shard",
    "agree_on_mask",
    "backend_for",
    "check_launch",
    "launch",
    "lead_job",
    "mask_digest",
    "torchrun_world_size",
    "under_torchrun",
]
