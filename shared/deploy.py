"""systemd units rendered from the fleet registry: `python -m shared.deploy deploy/systemd` rewrites them.

One template, so every unit carries the same hardening (systemd-analyze security ≤ 2.0),
Type=notify with a watchdog fed by the loop, and a sane restart burst limit.
"""

from __future__ import annotations

import sys
from pathlib import Path

from shared.fleet import SIMULATOR, DaemonSpec, installed
from shared.exchange.target import CREDENTIAL_PLACEHOLDER, REAL_CREDENTIAL_VARIABLES

PREFIX = "/opt/quantum"
ETC = "/etc/quantum"
CREDENTIAL = "binance_api_secret"

HARDENING = """\
User=quantum
Group=quantum
UMask=0077
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateUsers=yes
PrivateMounts=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
RemoveIPC=yes
DevicePolicy=closed
KeyringMode=private
"""


def _network(spec: DaemonSpec) -> str:
    if spec.exchange:
        return "# Reaches the exchange: off the simulator that is the internet, so no IP allow list.\n"
    return "IPAddressDeny=any\nIPAddressAllow=localhost\n"


def _credential(spec: DaemonSpec) -> str:
    if not spec.exchange:  # an API secret put in common.env (the documented fallback) must not reach this process
        return (f"# Never talks to the exchange: its credentials are not passed, whichever env file holds them.\n"
                f"UnsetEnvironment={' '.join(REAL_CREDENTIAL_VARIABLES)}\n")
    return (f"# The API secret arrives as $CREDENTIALS_DIRECTORY/{CREDENTIAL} (fallback: BINANCE_API_SECRET in an env file).\n"
            f"LoadCredential={CREDENTIAL}:{ETC}/credentials/{CREDENTIAL}\n"
            "# Its default when that file is missing (systemd 247+): the install's placeholder, which reads as absent, so\n"
            "# the fallback applies, and on the simulator nothing is needed; without it the unit failed (243/CREDENTIALS).\n"
            f"SetCredential={CREDENTIAL}:{CREDENTIAL_PLACEHOLDER}\n")


def _nice(spec: DaemonSpec) -> str:
    return f"Nice={spec.nice}\n" if spec.nice else ""


def _after(spec: DaemonSpec) -> str:
    """Started after Redis (and, talking to the exchange, after the simulator when it is installed: ordering only),
    so stopped before them: an order in hand when quantum.target stops is finished, not cut off."""
    units = ["network-online.target", "redis-server.service"]
    if spec.exchange:
        units.append(SIMULATOR.unit)
    return " ".join(units)


def render_unit(spec: DaemonSpec) -> str:
    return f"""\
[Unit]
Description=Quantum Trader {spec.description}
Documentation=file://{PREFIX}/README.md
After={_after(spec)}
Wants=network-online.target
PartOf=quantum.target
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
ExecStart={PREFIX}/venv/bin/python -m {spec.module}
EnvironmentFile={ETC}/common.env
EnvironmentFile={ETC}/{spec.name}.env
{_credential(spec)}{_nice(spec)}Restart=on-failure
RestartSec=2
# Exit 2 is a setting, a credential or the account's position mode: it fails the same way until an operator
# changes it, so it is not restarted (five restarts would spend the exchange's request weight for nothing).
RestartPreventExitStatus=2
# Start-up may wait REDIS_STARTUP_WAIT_S for Redis, then for a fleet on another exchange to stop (35 s), then
# EXCHANGE_STARTUP_WAIT_S for the exchange (at most 90 s each, and their last attempts; tests/deploy/test_units.py).
TimeoutStartSec=300
WatchdogSec=30
TimeoutStopSec={spec.stop_timeout_s}
KillSignal=SIGTERM
{HARDENING}{_network(spec)}
[Install]
WantedBy=quantum.target
"""


def render_target() -> str:
    # The simulator is not among the target's Wants=: pointed at Binance, an operator disables it and a restart of
    # the target must not start it again. Enabled, it joins the target through its own WantedBy=.
    wants = " ".join(f"quantum-{spec.name}.service" for spec in installed() if spec is not SIMULATOR)
    return f"""\
[Unit]
Description=Quantum Trader execution fleet
Documentation=file://{PREFIX}/README.md
Wants={wants}
After=network-online.target redis-server.service

[Install]
WantedBy=multi-user.target
"""


def render_all() -> dict[str, str]:
    units = {f"quantum-{spec.name}.service": render_unit(spec) for spec in installed()}
    units["quantum.target"] = render_target()
    return units


def write_all(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (directory / name).write_text(text)


if __name__ == "__main__":
    write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/systemd"))
