"""The live path: intraday bars, incremental stream state, intraday risk rules, de-risking.

`runner watch` (runner/watch.py) drives it during market hours:
bars (`bars`) -> stream state (`stream`) -> risk rules (`rules`) -> alerts and de-risking
(`derisk`) -> warehouse rows (`tables`). Settings are the `watch:` params section (`settings`).
"""
