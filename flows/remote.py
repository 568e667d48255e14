"""Stages on workers that share nothing with the flow but the DVC remote: the
flow's side (``--remote NAME``, with ``--dask-address`` or in this process).

:class:`RemoteRunner` is one of the flow's two stage runners (the other,
here in the project folder, is flows/local.py): **restore** a stage from the
local run-cache, else from the remote's (its record, then its outputs, each
file checked against its hash); **run** it by sending a request
(flows/executor.py) that names no path of this machine, its inputs sent to
the remote first; **record** what the worker returned as a local run would
be recorded: its deps those asked for (and still those here), its record
and outputs on the remote, fetched and checked. :class:`DaskDispatcher`
sends requests to Dask workers as plain Dask tasks, so a worker needs no
access to the Prefect API.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from flows import dvc_internals
from flows.dvc_project import DvcProject, InputsChanged, changed_inputs
from flows.executor import StageRequest, _execute_on_worker, execute
from flows.local import StageFailed, stop_processes
from mnist_cnn.params import PARAMS_FILE


class RemoteFailed(RuntimeError):
    """The DVC remote failed the flow (unreachable, refused a file, ...)."""


@contextlib.contextmanager
def _remote_errors(stage: str, remote: str, url: str):
    """A DVC or file-system error of the remote as one line naming it."""
    from dvc.exceptions import DvcException

    try:
        yield
    except (DvcException, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RemoteFailed(f"{stage}: the DVC remote {remote!r} ({url}) failed: "
                           f"{first}") from None


# No worker for this long: a stage sent to Dask fails instead of waiting on.
NO_WORKER_S = float(os.environ.get("MNIST_CNN_DASK_WAIT_S", 60))


class RemoteRunner:
    """Stages through the DVC remote ``remote``, on the workers of the Dask
    scheduler at ``address`` (None: in this process)."""

    def __init__(self, dvc: DvcProject, remote: str, address: str | None = None):
        self.dvc, self.remote, self.address = dvc, remote, address
        _STOPPING.clear()  # a new run (a served process runs several)
        self.url = dvc.repo.config["remote"][remote]["url"]
        self.requests: dict[str, StageRequest] = {}

    def warm(self) -> None:
        """Nothing to start here: each worker keeps its own ready interpreter."""

    def restore(self, stage: str) -> bool:
        """Restored from the local run-cache or the remote's, and recorded; or False."""
        if self.dvc.prepare(stage) or self._restore(stage) is not None:
            self.dvc.commit(stage)
            return True
        return False

    def _restore(self, stage: str) -> dict | None:
        with _remote_errors(stage, self.remote, self.url), self.dvc.locked():
            found = self.dvc.stage(stage)
            if not dvc_internals.fetch_run_cache_record(self.dvc.repo, found, self.remote):
                return None
            return dvc_internals.restore_record(self.dvc.repo, found, self.remote)

    def job(self, stage: str, env: dict[str, str] | None = None) -> RemoteJob:
        """What a worker needs to run ``stage`` (prepared: its deps saved),
        by hash and relative path: its definition, what it is computed from,
        the upstream outputs it reads (sent to the remote now, if they are
        not there) and where the remote is."""
        dvc = self.dvc
        with _remote_errors(stage, self.remote, self.url), dvc.locked():
            found = dvc.stage(stage)
            lock = {k: v for k, v in dvc_internals.lock_entry(found).items() if k != "outs"}
            reads = [d["path"] for d in lock.get("deps", [])]
            inputs = [out for name in dvc.graph if name != stage
                      for out in dvc_internals.lock_entry(dvc.stage(name)).get("outs", [])
                      if "md5" in out and any(out["path"] == p or out["path"].startswith(
                          f"{p}/") for p in reads)]
            try:  # a worker finds its inputs on the remote, whoever computed them
                dvc_internals.send_outputs(dvc.repo, inputs, self.remote)
            except dvc_internals.RunCacheNotFoundError:
                raise InputsChanged(f"{stage}: its inputs are neither in the local cache nor "
                                    f"on the DVC remote {self.remote!r}") from None
            request = StageRequest(
                stage=stage, definition=dvc_internals.stage_definition(found), lock=lock,
                inputs=inputs, params=Path(dvc.root, PARAMS_FILE).read_text(encoding="utf-8"),
                remote=self.remote, url=self.url)
        self.requests[stage] = request
        return RemoteJob(stage, request.cmd, request, self.address)

    def record(self, stage: str, entry: dict) -> None:
        request = self.requests.pop(stage)
        if differ := changed_inputs(entry, request.lock):
            raise InputsChanged(f"{stage}: the worker computed it from other inputs than "
                                f"asked: {', '.join(differ)}")
        record = self._restore(stage)
        if record is None:
            raise InputsChanged(f"{stage}: the worker's result is not on the DVC remote "
                                f"{self.remote!r} (its record or an output is missing)")
        if record.get("outs") != entry.get("outs"):
            raise InputsChanged(f"{stage}: the remote's record differs from what the worker "
                                "returned")
        self.dvc.commit(stage)  # refused too if its inputs here changed meanwhile

    def stop(self) -> None:
        stop_sent()
        stop_processes()


@dataclass(frozen=True)
class RemoteJob:
    stage: str
    cmd: str
    request: StageRequest
    address: str | None = None

    def run(self, emit: Callable[[str], None]) -> dict:
        if self.address:
            return DaskDispatcher(self.address).run(self.request, emit)
        return execute(self.request, emit)


# --- sending requests to a Dask cluster --------------------------------------------------
class DaskUnreachable(RuntimeError):
    """No Dask scheduler answers at the address given."""


class DaskDispatcher:
    """Runs requests on the workers of a Dask scheduler as plain Dask tasks:
    a worker needs the scheduler and the DVC remote, not the Prefect API (the
    flow's task run, in the flow's process, reports the stage; the worker's
    lines reach it as Dask events). A worker lost mid-stage is Dask's to
    retry (``distributed.scheduler.allowed-failures``); then the stage fails,
    naming it. With no worker at all for ``NO_WORKER_S`` the stage fails
    too; :func:`stop_sent` stops the stages it sent."""

    _clients: ClassVar[dict[str, object]] = {}  # one client per scheduler, per process
    _lock = threading.Lock()
    POLL_S = 2.0

    def __init__(self, address: str, timeout: float = 10):
        from distributed import Client

        with self._lock:
            if address not in self._clients:
                try:
                    self._clients[address] = Client(address, set_as_default=False,
                                                     timeout=timeout)
                except (OSError, TimeoutError, ValueError) as exc:
                    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise DaskUnreachable(
                        f"no Dask scheduler answers at {address} within {timeout:.0f} s "
                        f"({why}): start one (`dask scheduler`) or fix --dask-address") from None
            self.client = self._clients[address]
        self.address = address

    def run(self, request: StageRequest, emit: Callable[[str], None]) -> dict:
        from distributed import Event, KilledWorker

        topic = f"mnist-cnn-{uuid.uuid4().hex}"
        self.client.subscribe_topic(topic, lambda event: emit(event[1]))
        try:
            future = self.client.submit(_execute_on_worker, request, topic, pure=False,
                                        key=f"{request.stage}-{topic}")
            _SENT[topic] = (Event(topic, client=self.client), future)
            return self._wait(future, request.stage)
        except KilledWorker as exc:
            raise StageFailed(f"{request.stage}: its worker was lost and Dask gave up "
                              f"({exc}); nothing was recorded for it") from None
        except CancelledError:
            raise StageFailed(f"{request.stage}: stopped; nothing was recorded for it") from None
        finally:
            _SENT.pop(topic, None)
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(topic)

    def _wait(self, future, stage: str) -> dict:
        """The future's result; StageFailed once no worker has been there for
        NO_WORKER_S, or the scheduler stopped answering."""
        idle = 0.0
        while True:
            try:
                return future.result(timeout=self.POLL_S)
            except TimeoutError:
                pass
            if _STOPPING.is_set():  # also one sent after stop_sent ran: stopped now
                stop_sent()
                raise StageFailed(f"{stage}: stopped; nothing was recorded for it")
            try:
                workers = self.client.nthreads()
            except OSError as exc:
                future.cancel()
                raise StageFailed(f"{stage}: the Dask scheduler at {self.address} stopped "
                                  f"answering ({exc}); nothing was recorded for it") from None
            idle = 0.0 if workers else idle + self.POLL_S
            if idle >= NO_WORKER_S:
                future.cancel()
                raise StageFailed(
                    f"{stage}: no Dask worker at {self.address} for {idle:.0f} s; nothing was "
                    "recorded for it. Start workers (`dask worker ADDRESS`), or set "
                    f"MNIST_CNN_DASK_WAIT_S to wait longer than {NO_WORKER_S:.0f} s")


# Stages sent to Dask by this process: (their stop event, their future), by topic.
_SENT: dict[str, tuple] = {}
# Set by stop_sent: a stage being sent at that moment is stopped as soon as it is.
_STOPPING = threading.Event()


def stop_sent() -> None:
    """Stop the stages this process sent to Dask workers: a Dask event tells
    each worker to stop the stage's process, and the future is cancelled."""
    _STOPPING.set()
    for event, future in list(_SENT.values()):
        with contextlib.suppress(Exception):
            event.set()
            future.cancel()
