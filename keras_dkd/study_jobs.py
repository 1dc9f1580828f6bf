"""A study's trainings, run one after another in this process or as Ray tasks.

A study (:mod:`keras_dkd.studies`) plans its trainings as :class:`Job` objects (the options, the
run directory, the job that must finish first) and hands them to :func:`run_jobs`:

- serially (``ray=None``): each job is :func:`keras_dkd.training.train` in this process, in
  order;
- on Ray (``ray=RayOptions(...)``): each job is one Ray task, a ``train`` call in a Ray worker.
  Locally, :func:`run_jobs` starts a Ray instance on this machine with ``workers`` trainings at
  once and the machine's cores split between them (``threads`` each); with ``address`` it
  connects to a running cluster instead. A job that needs another one (a distillation run needs
  its seed's teacher) gets that job's object ref as an argument, so Ray starts it when the other
  has finished.

Either way every training is its own resumable run directory, written atomically by ``train``,
so the records a study writes from the results are the same. Finished runs never become tasks:
they are read here (``train`` returns a finished run's results without training), so rerunning
an interrupted study only trains what is left. On a cluster the run directories, the data and
the feature cache must be on a filesystem every node sees at the same paths, and keras-dkd must
be installed on every node.

Example:
    >>> from keras_dkd.study_jobs import RayOptions
    >>> RayOptions(workers=2).address is None       # a local Ray instance, 2 trainings at once
    True
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import keras

from keras_dkd.allocator import tune_allocator
from keras_dkd.errors import UserError
from keras_dkd.options import RunOptions
from keras_dkd.runs import RunDir
from keras_dkd.training import Progress, train

__all__ = ["Job", "RayOptions", "run_jobs", "thread_env"]

INSTALL_HINT = "pip install 'keras-dkd[ray]'"
# Environment variables a Ray worker inherits from the driver: where data, caches and runs are.
_FORWARDED_PREFIXES = ("KERAS_DKD_", "TFDS_")
_PROBE_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class Job:
    """One training of a study.

    Args:
        key: the study's name for it (e.g. a fold index, or ``(seed, run name)``).
        label: how messages name it (``"fold 0 (speaker03)"``).
        options: the run's :class:`keras_dkd.options.RunOptions`.
        run_dir: its run directory.
        event: the fields of its ``run`` progress event (``fold``/``group`` or ``seed``/``run``).
        after: the key of the job that must finish first (its teacher), or None.
        data_key: serially, consecutive jobs with the same key share one prepared dataset.
    """

    key: object
    label: str
    options: RunOptions
    run_dir: Path
    event: dict
    after: object = None
    data_key: object = None


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """Where and how wide a study runs on Ray.

    Args:
        address: a running Ray cluster (``host:6379``, ``ray://host:10001`` or ``auto``); None
            starts a local Ray instance on this machine for the study and stops it afterwards.
        workers: trainings at once (default: locally one per core; on a cluster as many as
            its CPUs hold at ``threads`` each).
        threads: CPU threads (and Ray CPUs) per training (default: the CPUs divided among the
            workers, at least 1).
    """

    address: str | None = None
    workers: int | None = None
    threads: int | None = None

    def __post_init__(self):
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise UserError(f"Ray {name} must be a positive integer, got {value!r}")
        if self.address is not None and not str(self.address).strip():
            raise UserError("the Ray address is empty; give host:port, ray://host:port or auto")


def thread_env(threads: int) -> dict[str, str]:
    """The environment variables that hold a training to ``threads`` CPU threads (OpenMP, MKL,
    TensorFlow's intra- and inter-op pools; JAX only at 1 thread, through ``XLA_FLAGS``)."""
    threads = str(int(threads))
    env = {name: threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                      "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                                      "TF_NUM_INTEROP_THREADS")}
    if threads == "1":
        env["XLA_FLAGS"] = " ".join(filter(None, [
            os.environ.get("XLA_FLAGS", ""),
            "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"]))
    return env


def run_jobs(
    jobs: Sequence[Job],
    *,
    ray: RayOptions | None = None,
    progress: Progress | None = None,
    command: str | None = None,
) -> dict:
    """Train every job (serially, or as Ray tasks); ``{job.key: train's result}``.

    Raises:
        UserError: Ray is not installed or the cluster cannot be reached; a training's own
            UserError, naming the run.
        RuntimeError: a training failed on Ray for another reason (the worker's traceback).
    """
    progress = progress or Progress()
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"job keys repeat: {keys}")
    if ray is None:
        return _run_serially(jobs, progress, command)
    return _run_on_ray(jobs, ray, progress, command)


def _finished(run_dir) -> bool:
    """Whether a run directory holds a finished run (train returns it without training)."""
    run = RunDir(run_dir)
    return run.read_config() is not None and run.read_metrics() is not None


def _run_serially(jobs, progress, command) -> dict:
    from keras_dkd.data import prepare

    results: dict = {}
    bundle_key, bundle = None, None
    for job in jobs:
        progress.emit(event="run", **job.event, run_dir=str(job.run_dir))
        shared = job.data_key is not None
        if shared and job.data_key != bundle_key and not _finished(job.run_dir):
            bundle_key, bundle = None, None  # free the previous one first
            bundle_key, bundle = job.data_key, prepare(job.options.data, job.options.seed)
        results[job.key] = train(job.options, job.run_dir,
                                 bundle=bundle if shared and job.data_key == bundle_key else None,
                                 progress=progress, command=command)
    return results


# ------------------------------------------------------------------------------------------
# Ray
# ------------------------------------------------------------------------------------------


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray needs Ray, which is not installed; {INSTALL_HINT}") from None
    return ray


def _run_on_ray(jobs, options: RayOptions, progress, command) -> dict:
    ray = _import_ray()
    results: dict = {}
    for job in jobs:  # finished runs are read here, never become tasks
        if _finished(job.run_dir):
            progress.emit(event="run", **job.event, run_dir=str(job.run_dir))
            results[job.key] = train(job.options, job.run_dir, progress=progress,
                                     command=command)
    todo = [job for job in jobs if job.key not in results]
    if not todo:
        return results
    started = _connect(ray, options)
    try:
        workers, threads = _width(ray, options, started)
        progress.emit(event="ray", address=options.address or "local", workers=workers,
                      threads=threads, tasks=len(todo), finished=len(results))
        # a local instance started here gave its workers their environment already
        per_task_env = not (started and options.address is None)
        results.update(_submit_and_gather(ray, todo, threads, progress, command, per_task_env))
    finally:
        if started:
            ray.shutdown()
    return results


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _local_width(options: RayOptions) -> tuple[int, int]:
    workers = options.workers or _cores()
    return workers, options.threads or max(1, _cores() // workers)


def _connect(ray, options: RayOptions) -> bool:
    """Start a local Ray instance or connect to ``options.address``; whether this call did
    (and so must shut it down). An already initialised Ray (the caller's) is used as it is.

    Ray started here gives every worker the driver's backend and the threads of a training
    from the start (the job's runtime environment).
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if options.address is None:
        workers, threads = _local_width(options)
        ray.init(address="local", num_cpus=workers * threads,
                 object_store_memory=128 * 2**20, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.ERROR,
                 runtime_env={"env_vars": _worker_env(threads)})
        return True
    address = str(options.address).strip()
    _probe(address)
    try:  # the threads per training are known once connected: they go with each task
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, TimeoutError, RuntimeError) as error:
        raise UserError(
            f"cannot connect to the Ray cluster at {address} ({error}); check the address; a "
            "cluster with token authentication (`ray start`'s default) also needs "
            "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token) here"
        ) from None
    return True


def _probe(address: str) -> None:
    """A quick TCP check of ``[ray://]host:port`` (Ray itself retries an unreachable address
    for minutes)."""
    where = address.removeprefix("ray://")
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and the like: Ray answers those at once
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_SECONDS).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UserError(f"cannot reach a Ray cluster at {address} ({reason}); check the "
                        "address, or start one with `ray start --head`") from None


def _width(ray, options: RayOptions, started_locally: bool) -> tuple[int, int]:
    """``(workers, threads)``: trainings at once, and CPU threads per training."""
    if options.address is None and started_locally:
        return _local_width(options)
    total = max(1, int(ray.cluster_resources().get("CPU", 1)))
    largest = max((int(node["Resources"].get("CPU", 0)) for node in ray.nodes()
                   if node.get("Alive")), default=1)
    if options.threads:
        threads = options.threads
    elif options.workers:
        threads = max(1, total // options.workers)
    else:
        threads = 1
    threads = max(1, min(threads, largest))  # one training runs on one node
    return options.workers or max(1, total // threads), threads


def _worker_env(threads: int) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if name.startswith(_FORWARDED_PREFIXES)}
    env.update(thread_env(threads))
    env["KERAS_BACKEND"] = keras.backend.backend()
    return env


def _train_task(options, run_dir, command, cwd, threads, *after):
    """One training in a Ray worker (``after``: the finished results of the jobs it waits on,
    already resolved by Ray)."""
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)  # relative paths mean what they mean on the driver
    tune_allocator()  # before this worker's first JAX computation (a no-op elsewhere)
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except (ImportError, RuntimeError):  # no TensorFlow, or already set in this worker
        pass
    if keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(threads)
    return train(options, run_dir, command=command)


def _submit_and_gather(ray, jobs, threads, progress, command, per_task_env) -> dict:
    settings = {"num_cpus": threads}
    if per_task_env:
        settings["runtime_env"] = {"env_vars": _worker_env(threads)}
    task = ray.remote(_train_task).options(**settings)
    cwd = os.getcwd()
    refs: dict = {}
    for job in jobs:  # in order: a job's teacher is submitted before it
        after = [refs[job.after]] if job.after in refs else []
        refs[job.key] = task.remote(job.options, str(job.run_dir), command, cwd, threads,
                                    *after)
        progress.emit(event="run", **job.event, run_dir=str(job.run_dir), queued=True)
    by_ref = {ref: job for job, ref in zip(jobs, refs.values(), strict=True)}
    results, failures = {}, []
    waiting, start = list(refs.values()), time.monotonic()
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        job = by_ref[done[0]]
        try:
            results[job.key] = ray.get(done[0])
            status = results[job.key]["status"]
        except ray.exceptions.RayError as error:
            failures.append((job, error))
            status = "failed"
        progress.emit(event="finished", label=job.label, run_dir=str(job.run_dir),
                      status=status, done=len(results) + len(failures), total=len(jobs),
                      seconds=time.monotonic() - start)
    if failures:
        _raise(failures, {job.key for job, _ in failures}, len(jobs))
    return results


def _raise(failures, failed_keys, total) -> None:
    """One error for the failed tasks: the first own failure (not a teacher's knock-on)."""
    own = [(job, error) for job, error in failures if job.after not in failed_keys]
    job, error = (own or failures)[0]
    cause = getattr(error, "cause", None)
    others = len(failures) - 1
    more = (f"; {others} other training{'s' if others > 1 else ''} of {total} failed too "
            "(finished ones are kept: rerun to retry the rest)") if others else ""
    if isinstance(cause, UserError):
        raise UserError(f"{job.label} ({job.run_dir}): {cause}{more}")
    raise RuntimeError(f"{job.label} ({job.run_dir}) failed in its Ray task{more}:\n{error}")
