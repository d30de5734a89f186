"""Signals, risk limits, backtests and the paper broker (the trade stage)."""
