"""Warehouse tables of the live path (declared in `bentley.warehouse`, which creates them).

The watch's de-risking orders and fills are not here: they are rows of the ledger's `orders`
and `fills` (see `bentley.live.derisk`).
"""

from __future__ import annotations

from bentley.warehouse import intraday_marks, intraday_risk, watch_heartbeats

TABLES = {t.name: t for t in (intraday_marks, intraday_risk, watch_heartbeats)}
__all__ = ["TABLES", "intraday_marks", "intraday_risk", "watch_heartbeats"]
