"""Routers (model aliases) and the providers behind them."""
