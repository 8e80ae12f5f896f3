"""Run one stage's per-study work on a local process pool or a Dask cluster.

Every study runs in a worker process and writes its outputs, in their final format, to a staging
folder on the same disk as the data; the stage's dataset then moves them into place. What a
study's run can end in:

- ``ok``;
- ``quarantined``: bad input (:data:`INPUT_ERRORS`), with the file and the problem;
- ``failed``: its worker died (e.g. killed for memory); tried again ``retries`` times on a fresh
  worker first. Other studies go on.

Any other exception is a bug of ours: the run stops with the study's traceback. SIGINT and SIGTERM
stop the workers and remove the staging folder; a later run removes the staging folder left by a
run that was killed with SIGKILL. Local workers watch the run's process and exit when it is gone.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import resource
import secrets
import shutil
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from colearn_pipeline._process import pid_alive
from colearn_pipeline.dicom.errors import DicomSeriesError
from colearn_pipeline.pipelines.preprocess.params import ExecutorParams
from colearn_pipeline.suv import SuvError

logger = logging.getLogger(__name__)

#: Staging folders of runs: ``.preprocess-staging-<pid>-<token>``.
STAGING_PREFIX = ".preprocess-staging-"
#: Test hook: ``<stage>:<pseudonym>`` in the run's environment makes that study's worker kill
#: itself (SIGKILL) in that stage, as the out-of-memory killer would.
KILL_HOOK_ENV = "COLEARN_PREPROCESS_TEST_KILL"
#: Modules a local worker process starts with (imported once, in the fork server).
WORKER_PRELOAD = ["colearn_pipeline.pipelines.preprocess.study"]


class StudyError(ValueError):
    """A study-level problem of the input (no seeds, a finding outside the CT, ...)."""

    def __init__(self, study: str, file: str, problem: str) -> None:
        self.study, self.file, self.problem = study, file, problem
        super().__init__(f"{study}: {file}: {problem}")

    def __reduce__(self):
        return (type(self), (self.study, self.file, self.problem))


#: Exceptions that mean bad input (the study is quarantined); anything else is a bug.
INPUT_ERRORS = (DicomSeriesError, StudyError, SuvError)


class StudyTaskError(RuntimeError):
    """An unexpected exception in a study's task (a bug): stops the run, carrying the worker's traceback."""


@dataclass(frozen=True)
class StudyTask:
    """One study's work in one stage (picklable: sent to a worker); see :func:`make_task`.

    ``func(staging_dir=..., **kwargs)`` returns ``{"row": {...}, "staged": {member: path}}``.
    ``redact`` lists patient identifiers to remove from messages (kept in memory only).
    """

    pseudonym: str
    stage: str
    func: Callable[..., dict]
    kwargs: dict[str, Any]
    staging_dir: str
    redact: tuple[str, ...] = field(default=(), repr=False)
    kill_worker: bool = False  # test hook (KILL_HOOK_ENV, read in the parent): the worker kills itself

    def clean(self, text: str) -> str:
        out = str(text)
        for ident in sorted(self.redact, key=len, reverse=True):
            out = out.replace(ident, "<redacted>") if ident else out
        return out


def make_task(pseudonym: str, stage: str, func: Callable[..., dict], kwargs: dict[str, Any], staging_dir: str,
              redact: Iterable[str] = ()) -> StudyTask:
    """A :class:`StudyTask`, with the test hook :data:`KILL_HOOK_ENV` read from this process's environment."""
    kill = os.environ.get(KILL_HOOK_ENV) == f"{stage}:{pseudonym}"
    return StudyTask(pseudonym, stage, func, kwargs, staging_dir, tuple(redact), kill)


def _input_error(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, SuvError):
        return str(exc.file or "PET series"), f"SUV: {exc.tag}: {exc.problem}" if exc.tag else f"SUV: {exc.problem}"
    return str(exc.file), str(exc.problem)


def execute(task: StudyTask, threads: int) -> dict[str, Any]:
    """Run one task (in a worker); bad input becomes a ``quarantined`` result, anything else raises."""
    if task.kill_worker:
        os.kill(os.getpid(), signal.SIGKILL)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, int(threads)))
    start, cpu = time.perf_counter(), _cpu_seconds()
    try:
        out = task.func(staging_dir=task.staging_dir, **task.kwargs)
        result = {"status": "ok", "row": out["row"], "staged": out["staged"], "reason": "", "file": ""}
    except INPUT_ERRORS as exc:
        file, reason = _input_error(exc)
        result = {"status": "quarantined", "row": {}, "staged": {}, "reason": task.clean(reason), "file": task.clean(file)}
        shutil.rmtree(task.staging_dir, ignore_errors=True)
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["row"].update({
        f"t_{task.stage}_s": round(time.perf_counter() - start, 3),
        f"cpu_{task.stage}_s": round(_cpu_seconds() - cpu, 3),
        f"peak_rss_{task.stage}_mb": round(usage / 1024.0 if sys.platform != "darwin" else usage / 1024.0**2, 1),
    })
    return result


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _failed(task: StudyTask, why: str) -> dict[str, Any]:
    return {"status": "failed", "row": {}, "staged": {}, "reason": why, "file": "-"}


def run_tasks(tasks: Iterable[StudyTask], params: ExecutorParams) -> dict[str, dict[str, Any]]:
    """Run the tasks on the configured executor; return ``{pseudonym: result}``.

    Raises
    ------
    StudyTaskError
        An unexpected exception in a study (the other workers are stopped first).
    """
    tasks = list(tasks)
    if not tasks:
        return {}
    _stop_on_sigterm()
    if params.kind == "dask":
        return _run_dask(tasks, params)
    if int(params.workers) <= 0:
        return {t.pseudonym: _run_here(t, params.threads_per_worker) for t in tasks}
    return _run_local(tasks, params)


def _run_here(task: StudyTask, threads: int) -> dict[str, Any]:
    try:
        return execute(task, threads)
    except Exception as exc:
        raise StudyTaskError(f"{task.pseudonym}: stage {task.stage}: unexpected {type(exc).__name__}: "
                             f"{task.clean(str(exc))}\n{task.clean(traceback.format_exc())}") from exc


def _die_with_run(run_pid: int) -> None:
    """Exit when the run's process is gone, even after SIGKILL (the fork server outlives it for a while)."""
    def watch() -> None:
        while pid_alive(run_pid):
            time.sleep(0.5)
        os._exit(137)

    threading.Thread(target=watch, daemon=True).start()


def _child(conn, task: StudyTask, threads: int, run_pid: int) -> None:
    _die_with_run(run_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it kills us on Ctrl-C
    try:
        message = ("ok", execute(task, threads))
    except BaseException as exc:  # sent to the parent, which stops the run
        message = ("error", f"{type(exc).__name__}: {task.clean(str(exc))}", task.clean(traceback.format_exc()))
    conn.send(message)
    conn.close()


def _run_local(tasks: list[StudyTask], params: ExecutorParams) -> dict[str, dict[str, Any]]:
    """One fresh process per study (forked from a server holding the imports), ``workers`` at a time."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_PRELOAD)
    pending = deque((task, 0) for task in tasks)
    running: dict[int, tuple[Any, Any, StudyTask, int]] = {}
    results: dict[str, dict[str, Any]] = {}
    try:
        while pending or running:
            while pending and len(running) < int(params.workers):
                task, attempt = pending.popleft()
                receive, send = context.Pipe(duplex=False)
                proc = context.Process(target=_child, args=(send, task, params.threads_per_worker, os.getpid()),
                                       daemon=True)
                proc.start()
                send.close()
                running[proc.sentinel] = (proc, receive, task, attempt)
            ready = set(wait([w for p, c, _, _ in running.values() for w in (p.sentinel, c)]))
            for sentinel, (proc, conn, task, attempt) in list(running.items()):
                if conn not in ready and sentinel not in ready:
                    continue
                try:
                    message = conn.recv()
                except EOFError:
                    message = None  # the worker died before it answered
                proc.join()
                conn.close()
                del running[sentinel]
                if message is None:
                    why = f"worker died (exit code {proc.exitcode}) on attempt {attempt + 1}"
                    logger.warning("preprocess %s: %s %s", task.stage, task.pseudonym, why)
                    if attempt < int(params.retries):
                        pending.append((task, attempt + 1))
                    else:
                        results[task.pseudonym] = _failed(task, why)
                elif message[0] == "error":
                    raise StudyTaskError(f"{task.pseudonym}: stage {task.stage}: unexpected {message[1]}\n{message[2]}")
                else:
                    results[task.pseudonym] = message[1]
    finally:
        for proc, conn, _, _ in running.values():
            proc.kill()
            proc.join()
            conn.close()
    return results


_DASK: dict[tuple, Any] = {}


def dask_client(params: ExecutorParams):
    """The run's Dask client: to the configured scheduler, or to a LocalCluster started once per run."""
    import dask
    from distributed import Client, LocalCluster

    address = params.dask_scheduler or os.environ.get(params.dask_scheduler_env) or None
    key = (address, int(params.workers), int(params.retries))
    if key not in _DASK:
        with dask.config.set({"distributed.scheduler.allowed-failures": int(params.retries)}):
            cluster = None
            if address is None:
                cluster = LocalCluster(n_workers=max(1, int(params.workers)), threads_per_worker=1, processes=True,
                                       dashboard_address=None)
            client = Client(address or cluster)
        _DASK[key] = (client, cluster)
        atexit.register(_close_dask, key)
    return _DASK[key][0]


def _close_dask(key: tuple) -> None:
    client, cluster = _DASK.pop(key, (None, None))
    if client is not None:
        client.close()
    if cluster is not None:
        cluster.close()


def _run_dask(tasks: list[StudyTask], params: ExecutorParams) -> dict[str, dict[str, Any]]:
    """Submit every study to the Dask cluster; a study whose worker died ``retries + 1`` times is failed."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    client = dask_client(params)
    results: dict[str, dict[str, Any]] = {}
    futures = {client.submit(execute, t, params.threads_per_worker, pure=False,
                             key=f"preprocess-{t.stage}-{t.pseudonym}-{secrets.token_hex(4)}"): t for t in tasks}
    try:
        for future in as_completed(futures):
            task = futures[future]
            try:
                results[task.pseudonym] = future.result()
            except KilledWorker as exc:
                results[task.pseudonym] = _failed(task, f"worker died ({type(exc).__name__})")
            except Exception as exc:
                raise StudyTaskError(f"{task.pseudonym}: stage {task.stage}: unexpected {type(exc).__name__}: "
                                     f"{task.clean(str(exc))}") from exc
    finally:
        client.cancel([f for f in futures if not f.done()])
    return results


# -- staging ---------------------------------------------------------------------------------

_STAGING: dict[str, Path] = {}


def remove_stale_staging(parent: str | os.PathLike) -> list[Path]:
    """Remove staging folders under ``parent`` whose run (process id in the name) is gone."""
    removed = []
    for path in Path(parent).glob(f"{STAGING_PREFIX}*"):
        try:
            pid = int(path.name[len(STAGING_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def staging_folder(params: ExecutorParams) -> Path:
    """This run's staging folder (created once per process, removed at exit); stale ones are removed first."""
    parent = Path(params.staging_dir)
    key = str(parent.resolve())
    if key not in _STAGING or not _STAGING[key].is_dir():
        parent.mkdir(parents=True, exist_ok=True)
        for path in remove_stale_staging(parent):
            logger.warning("preprocess: removed the staging folder %s of a run that was killed", path.name)
        folder = parent / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        folder.mkdir()
        atexit.register(shutil.rmtree, folder, True)
        _STAGING[key] = folder
    return _STAGING[key]


def _stop_on_sigterm() -> None:
    """SIGTERM raises SystemExit in the main thread, so workers are stopped and staging removed on the way out."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        def stop(signum, frame):
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, stop)
