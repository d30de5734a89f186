"""At most one active run: a lease in the warehouse, renewed by a heartbeat thread.

The holder is `host:pid:token`, or `run:<run_id>` for the tasks of an orchestrated run, which
share it. A lease whose heartbeat lapsed is taken over by the next
runner (and the run that held it is marked crashed); on the same host a holder whose
process is gone is taken over at once, so `kill -9` does not block the next run for a TTL.
A runner that cannot renew its lease calls `on_lost`: it must stop writing and exit.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

from bentley.warehouse import Warehouse

PIPELINE_LEASE = "pipeline"


def new_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def run_holder(run_id: str) -> str:
    """The holder every task of an orchestrated run uses: the run, not the process, owns the lease."""
    return f"run:{run_id}"


def holder_alive(holder: str) -> bool:
    """False only when the holder ran on this host and its process no longer exists."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another machine: only its heartbeat can tell
    import psutil

    try:
        return psutil.Process(int(pid_text)).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class LeaseKeeper(threading.Thread):
    """Renews the lease every `every_s`; calls `on_lost` once if it cannot for a whole TTL."""

    def __init__(
        self,
        warehouse: Warehouse,
        holder: str,
        ttl_s: float,
        every_s: float,
        on_lost: Callable[[str], None],
        name: str = PIPELINE_LEASE,
    ) -> None:
        super().__init__(name="lease-keeper", daemon=True)
        self.warehouse = warehouse
        self.holder = holder
        self.ttl_s = ttl_s
        self.every_s = every_s
        self.on_lost = on_lost
        self.lease = name
        self._stopped = threading.Event()

    def run(self) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        last_renewed = time.monotonic()
        while not self._stopped.wait(self.every_s):
            try:
                if self.warehouse.renew_lease(self.lease, self.holder, self.ttl_s):
                    last_renewed = time.monotonic()
                    continue
                reason = "the lease was taken over by another runner"
            except SQLAlchemyError as exc:
                if time.monotonic() - last_renewed < self.ttl_s:
                    continue  # the warehouse hiccuped; the lease is still ours until the TTL
                reason = f"the warehouse did not answer for {self.ttl_s:.0f} s ({type(exc).__name__})"
            if not self._stopped.is_set():
                self.on_lost(reason)
            return

    def stop(self) -> None:
        """Stop renewing, and wait for a renewal in flight: it must not land after a final one."""
        self._stopped.set()
        if self.is_alive():
            self.join(timeout=60)


class RunRecordLock:
    """A short mutex around the read-merge-write of one run's records (manifest, ledger, index).

    It is a lease row of its own in the warehouse, the one service every worker of an
    orchestrated run shares (a file lock would not hold across machines). Re-entrant within
    the process. A holder that died is taken over at once on its own machine and after
    `ttl_s` elsewhere. Nothing renews it, so `ttl_s` must outlast the longest hold: creating
    the MLflow parent run, or `runner finish` uploading its artifacts to a tracking server.
    """

    def __init__(self, warehouse: Warehouse, run_id: str, *, ttl_s: float = 600.0, timeout_s: float = 900.0) -> None:
        self.warehouse = warehouse
        self.run_id = run_id
        self.name = "record:" + hashlib.sha256(run_id.encode()).hexdigest()[:24]
        self.holder = new_holder()
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._local = threading.RLock()
        self._depth = 0

    def __enter__(self) -> RunRecordLock:
        self._local.acquire()
        if self._depth == 0:
            try:
                self._take()
            except BaseException:
                self._local.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, *_exc: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                self.warehouse.release_lease(self.name, self.holder)
        finally:
            self._local.release()

    def _take(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        delay = 0.02
        while True:
            grant = self.warehouse.acquire_lease(
                self.name, self.holder, self.run_id, self.ttl_s, holder_alive=holder_alive
            )
            if grant.acquired:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"run {self.run_id}: its record stayed locked by {grant.holder or 'another task'} "
                    f"for {self.timeout_s:.0f} s"
                )
            time.sleep(delay)
            delay = min(2 * delay, 0.5)
