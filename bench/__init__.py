"""`make bench` (python -m bench): latency, throughput and cost of the plan path.

It starts its own embedded redis-server, the exchange simulator (own process, no added latency)
and the plan-path daemons (position-state-brain, governor, intent-executor), measures, and writes
bench/results.json, a table on stdout and, when matplotlib imports, bench/latency.png.
"""
