"""At most one active run: a lease in the warehouse, renewed by a heartbeat thread.

The holder is `host:pid:token`. A lease whose heartbeat lapsed is taken over by the next
runner (and the run that held it is marked crashed); on the same host a holder whose
process is gone is taken over at once, so `kill -9` does not block the next run for a TTL.
A runner that cannot renew its lease calls `on_lost`: it must stop writing and exit.
"""

from __future__ import annotations

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
        self, warehouse: Warehouse, holder: str, ttl_s: float, every_s: float, on_lost: Callable[[str], None],
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
        self._stopped.set()
