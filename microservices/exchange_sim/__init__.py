"""Local stand-in for the Binance USD-M futures REST API (/fapi), driven by python-binance unmodified.

Run with `python -m microservices.exchange_sim` (settings: EXCHANGE_SIM_* env, see settings.py) or
in-process with `testing.running_simulator()`. Simulator-only controls live under /_sim/:
POST /_sim/price, POST /_sim/walk, GET|POST /_sim/faults, GET /_sim/orders, POST /_sim/reset,
GET /_sim/price?symbol=, GET /_sim/state. /_sim/faults takes shares of order faults and outages of whole
endpoints, e.g. {"outages": {"GET /fapi/v1/premiumIndex": "ip_banned"}} (faults.py lists the kinds).
"""
