"""Warehouse tables of the live path (declared in `bentley.warehouse`, which creates them).

Intraday orders and fills live in `intraday_orders`/`intraday_fills`, shaped like the ledger's
`orders`/`fills` plus their timestamps, until the broker learns intraday rows (see
`bentley.live.derisk` for the changes that would take).
"""

from __future__ import annotations

from bentley.warehouse import intraday_fills, intraday_marks, intraday_orders, intraday_risk, watch_heartbeats

TABLES = {t.name: t for t in (intraday_marks, intraday_risk, intraday_orders, intraday_fills, watch_heartbeats)}
__all__ = ["TABLES", "intraday_fills", "intraday_marks", "intraday_orders", "intraday_risk", "watch_heartbeats"]
