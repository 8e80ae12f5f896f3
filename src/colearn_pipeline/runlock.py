"""One run at a time per project data folder, and environment failures told as messages.

:class:`RunLock` is an exclusive ``flock`` on ``<data>/.colearn-run.lock``, which holds the pid, host
and start time of the run holding it: a second run is refused with "another run is in progress
since <time>, pid <pid>". The kernel releases the lock when its process ends, however it ends, so
a lock file left by a killed run (its pid dead) is taken over by the next run, which says so.

:class:`RunGuardHooks` takes the lock before any other hook (so a refused run touches nothing, not
even MLflow), marks the previous preprocess manifest stale while a preprocess run is under way
(:func:`~colearn_pipeline.pipelines.preprocess.manifest.begin_run`) and, when the run fails on
its environment -- a disk full, a read-only folder, a data folder that is a file -- ends it with a
message saying what failed, where, and that running again after fixing it resumes, instead of a
traceback (:func:`environment_message`). Other errors keep their traceback: they are bugs.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from colearn_pipeline._process import pid_alive

logger = logging.getLogger(__name__)

#: The lock file inside the project's data folder.
LOCK_NAME = ".colearn-run.lock"
#: Test hook: seconds a run sleeps right after taking the lock (to hold it while a second run starts).
HOLD_ENV = "COLEARN_RUN_LOCK_TEST_HOLD_S"
#: errno -> what it means for the user; an OSError with one of these in an error's chain is the environment's.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a path that should be a folder is a file",
    errno.EISDIR: "a path that should be a file is a folder",
    errno.ENOENT: "a file or folder is missing",
    errno.EIO: "input/output error (a failing disk or network file system)",
}


class RunLockError(RuntimeError):
    """Another run holds the project's data folder."""


class RunLock:
    """An exclusive lock on a project data folder (see the module docstring).

    Parameters
    ----------
    folder : path-like
        The project's ``data`` folder (created when missing).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock; return a note when a stale lock of a dead run was taken over, else None.

        Raises
        ------
        RunLockError
            "another run is in progress since <time>, pid <pid> (host <host>)".
        NotADirectoryError
            The data folder is a file.
        """
        if self.folder.exists() and not self.folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "the data folder is a file, not a folder", str(self.folder))
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise RunLockError(
                f"another run is in progress since {holder.get('started', '?')}, pid {holder.get('pid', '?')} "
                f"(host {holder.get('host', '?')}; lock {self.path}): wait for it to end, or stop it and run again"
            ) from None
        previous = _read(fd)
        note = None
        if previous.get("pid") not in (None, os.getpid()):
            state = "no longer running" if not pid_alive(int(previous["pid"])) else "not holding it"
            note = (f"took over the stale run lock of pid {previous['pid']} (since {previous.get('started', '?')}, "
                    f"{state}): that run was killed or crashed; its finished studies are kept")
        mine = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(mine).encode(), 0)
        self._fd = fd
        return note

    def release(self) -> None:
        """Free the lock (the file stays, empty: removing it would let two runs lock two files)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass  # a full or read-only disk: the kernel still drops the lock below
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read(fd: int) -> dict[str, Any]:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        value = json.loads(text) if text else {}
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def environment_problem(error: BaseException | None) -> OSError | None:
    """The OSError of :data:`ENVIRONMENT_ERRNOS` in ``error``'s chain (causes and contexts), or None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def _where(path: str | None, project: Path) -> str:
    """The path of a problem, relative to the project; inside the raw DICOM tree only its top (file names may
    carry patient names)."""
    if not path:
        return "(no path given)"
    full = Path(os.path.abspath(path))
    try:
        relative = full.relative_to(project.resolve())
    except ValueError:
        return str(full)
    parts = relative.parts
    return str(Path(*parts[:3], "...")) if parts[:2] == ("data", "01_raw") and len(parts) > 3 else str(relative)


def environment_message(error: BaseException, project: str | os.PathLike, doing: str = "the run") -> str | None:
    """A message for an environment failure (what failed, where, what to do), or None when ``error`` is not one."""
    problem = environment_problem(error)
    if problem is None:
        return None
    what = ENVIRONMENT_ERRNOS[problem.errno]
    where = _where(problem.filename, Path(project))
    return (f"colearn: {doing} stopped: {what} ({problem.strerror}) at {where}. Nothing was corrupted: outputs "
            "are written atomically and raw files are only read. Fix it (free space, permissions, a file where "
            "a folder should be) and run the same command again: it resumes, finished studies are not computed "
            "again.")


class RunGuardHooks:
    """Kedro hooks: the run lock, the preprocess run status, environment failures as messages."""

    def __init__(self) -> None:
        self._lock: RunLock | None = None
        self._status = None

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Take the lock of ``<project>/data`` (or end the run with the holder's pid and time)."""
        from colearn_pipeline.pipelines.preprocess.manifest import begin_run

        self._release()  # a lock left by a run of this process that failed to start (another hook raised)
        project = Path(run_params.get("project_path") or os.getcwd())
        self._lock = RunLock(project / "data")
        try:
            note = self._lock.acquire()
            if note:
                logger.warning("colearn: %s", note)
            hold = float(os.environ.get(HOLD_ENV, "0") or 0)
            if hold > 0:
                time.sleep(hold)
            self._status = begin_run(catalog, pipeline)
        except RunLockError as exc:
            self._lock = None
            raise SystemExit(f"colearn: {exc}") from None
        except OSError as exc:
            self._release()
            message = environment_message(exc, project, "starting the run")
            if message is None:
                raise
            raise SystemExit(message) from None

    @hook_impl(trylast=True)
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        """Mark the preprocess run complete (its manifest current) and free the lock."""
        try:
            if self._status is not None:
                self._status.finish()
        finally:
            self._release()

    @hook_impl(trylast=True)
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        """Record the failure in the run status; an environment failure ends the run with a message."""
        project = Path(run_params.get("project_path") or os.getcwd())
        message = environment_message(error, project)
        try:
            if self._status is not None:
                self._status.fail(message or f"{type(error).__name__}: see the run's log", environment=message is not None)
        finally:
            self._release()
        if message is not None:
            logger.error("%s", message)
            raise SystemExit(message) from None

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._status = None
