"""Point-in-time price adjustment: store what was traded, adjust as of the logical date.

A back-adjusted close depends on the date it is computed for: a split on 2025-06-03 halves
every earlier adjusted close, but only for readers after 2025-06-03. Storing adjusted
closes would let whichever run came last decide history for every other date (a backdated
run rewrote the table with closes adjusted as of its own date, and later runs read a
mixture). So the warehouse keeps the facts that never change once they are known: the
as-traded bar, and the split ratio and dividend on their ex-date. Adjusted series are
derived when a stage reads them, from the rows up to its logical date
(`adjusted_as_of`): a corporate action becomes known on its ex-date, so a run for date D
applies exactly the actions dated on or before D.

A source whose adjusted close its own splits and dividends explain (the sample source,
any file that carries both) is stored as traded, with `adj_close` NULL. A source that
only delivers adjusted prices (a CSV with Adj Close and no actions, Yahoo's
split-adjusted Close) cannot be taken apart: its `adj_close` is stored as delivered
(adjusted as of the export, whatever that was) and used as is. A non-NULL `adj_close`
in the warehouse is that flag.

Convention (Yahoo/CRSP): a dividend D on ex-date t with previous close C scales earlier
sessions by (1 - D/C); a split of ratio r scales them by 1/r.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Relative tolerance within which a delivered adjusted close counts as explained by the
#: delivered actions (the sample source computes the same products in another order).
EXPLAINED_RTOL = 1e-9


def _log_factors(close: np.ndarray, dividend: np.ndarray, split_ratio: np.ndarray, first: np.ndarray) -> np.ndarray:
    """log of each row's adjustment factor for the rows before it (0 on a ticker's first row).

    A ticker's first row has no previous close here, and the rows its factor would scale are
    not in the frame either, so it contributes nothing.
    """
    previous = np.roll(close, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_factor = np.log1p(-np.nan_to_num(dividend) / previous) - np.log(np.nan_to_num(split_ratio, nan=1.0))
    log_factor[first | ~np.isfinite(log_factor)] = 0.0
    return log_factor


def _back_adjusted(frame: pd.DataFrame) -> np.ndarray:
    """Close adjusted for every later action of its ticker within `frame`, in `frame`'s row order.

    The sum over later actions runs backwards from each ticker's last row, like the sample
    source's own adjustment, so both give the same numbers.
    """
    order = np.lexsort((frame["date"].to_numpy(), frame["ticker"].to_numpy()))
    tickers = frame["ticker"].to_numpy()[order]
    close = frame["close"].to_numpy(dtype="float64")[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = tickers[1:] != tickers[:-1]
    log_factor = _log_factors(
        close,
        frame["dividend"].to_numpy(dtype="float64")[order],
        frame["split_ratio"].to_numpy(dtype="float64")[order],
        first,
    )
    from_here = (
        pd.Series(log_factor[::-1]).groupby(tickers[::-1], sort=False).cumsum().to_numpy()[::-1]
    )  # sum over the ticker's rows at or after each row
    adjusted = np.empty(len(order))
    adjusted[order] = close * np.exp(from_here - log_factor)
    return adjusted


def rows_to_store(delivered: pd.DataFrame) -> pd.DataFrame:
    """Prices as the warehouse keeps them: `adj_close` NULL where the actions explain it.

    Decided per ticker over the delivered rows: when the delivered adjusted close equals
    the back-adjustment of the delivered close by the delivered splits and dividends, the
    adjustment can be redone for any date and is dropped; otherwise it is kept as delivered.
    """
    if delivered.empty:
        return delivered.copy()
    derived = _back_adjusted(delivered)
    given = delivered["adj_close"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        row_explained = np.isclose(given, derived, rtol=EXPLAINED_RTOL, atol=0.0) | np.isnan(given)
    explained = pd.Series(row_explained, index=delivered.index).groupby(delivered["ticker"]).transform("all")
    out = delivered.copy()
    out["adj_close"] = out["adj_close"].astype("float64").where(~explained.to_numpy(), np.nan)
    return out


def adjusted_as_of(stored: pd.DataFrame) -> pd.DataFrame:
    """Stored prices with `adj_close` filled in as of the last row (the caller cut the window).

    Rows stored as traded are back-adjusted by the actions after them within `stored`;
    rows whose source delivered only adjusted prices keep the delivered value.
    """
    out = stored.copy()
    if out.empty:
        out["adj_close"] = out["adj_close"].astype("float64")
        return out
    as_delivered = out["adj_close"].astype("float64")
    out["adj_close"] = as_delivered.where(as_delivered.notna(), pd.Series(_back_adjusted(out), index=out.index))
    return out
