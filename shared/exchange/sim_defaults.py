"""Documented development credentials of the local exchange simulator.

They only ever open the simulator on loopback; override them with EXCHANGE_SIM_API_KEY /
EXCHANGE_SIM_API_SECRET. They are still handled as secrets (never logged).
"""

SIM_DEV_API_KEY = "qtsimdevkey0000000000000000000000000000000000000000000000000000000"
SIM_DEV_API_SECRET = "qtsimdevsecret00000000000000000000000000000000000000000000000000000"
SIM_DEFAULT_HOST = "127.0.0.1"
SIM_DEFAULT_PORT = 8090
