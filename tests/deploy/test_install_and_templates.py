"""install.sh into a temporary root, and env templates that document every setting."""

from __future__ import annotations

import importlib
import re
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from shared import fleet
from shared.exchange.target import ExchangeSettings
from shared.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[2]
ETC = ROOT / "etc" / "quantum"
SETTINGS = {
    "intent-bridge": "microservices.intent_bridge.settings:BridgeSettings",
    "intent-executor": "microservices.intent_executor.settings:ExecutorSettings",
    "position-state-brain": "microservices.position_state_brain.settings:PositionStateSettings",
    "apply-layer": "microservices.apply_layer.settings:ApplySettings",
    "reconcile": "microservices.reconcile.settings:ReconcileSettings",
    "governor": "microservices.governor.settings:GovernorSettings",
    "harvest-proposal": "microservices.harvest_proposal.settings:HarvestSettings",
    "portfolio-heat-gate": "microservices.portfolio_heat_gate.settings:HeatGateSettings",
    "exchange-sim": "microservices.exchange_sim.settings:SimSettings",
}


def documented(path: Path) -> set[str]:
    return set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", path.read_text(), flags=re.M))


def env_names(settings_cls: type[BaseSettings]) -> set[str]:
    prefix = (settings_cls.model_config.get("env_prefix") or "").upper()
    names = set()
    for field_name, info in settings_cls.model_fields.items():
        alias = info.validation_alias if isinstance(info.validation_alias, str) else None
        names.add(alias.upper() if alias else f"{prefix}{field_name}".upper())
    return names


def load(path: str) -> type[BaseSettings]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("daemon", sorted(SETTINGS))
def test_every_setting_is_documented_in_a_template(daemon: str) -> None:
    settings_cls = load(SETTINGS[daemon])
    shared_names = env_names(CommonSettings) | env_names(ExchangeSettings) - {"CREDENTIALS_DIRECTORY"}

    missing = (env_names(settings_cls) | shared_names) - documented(ETC / "common.env") - documented(ETC / f"{daemon}.env")

    assert missing - {"CREDENTIALS_DIRECTORY", "METRICS_PORT"} == set(), f"document {sorted(missing)}"


def test_every_installed_unit_has_its_env_template() -> None:
    assert {f"{spec.name}.env" for spec in fleet.installed()} <= {path.name for path in ETC.glob("*.env")}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_into_a_temporary_root_is_runnable_private_and_idempotent(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not available")
    install = [str(ROOT / "deploy" / "install.sh"), "--root", str(tmp_path), "--python", sys.executable]

    subprocess.run(install, check=True, capture_output=True, text=True, timeout=600)
    edited = tmp_path / "etc/quantum/governor.env"
    edited.write_text("GOV_MAX_OPEN_POSITIONS=3\n")
    again = subprocess.run(install, capture_output=True, text=True, timeout=600)

    assert again.returncode == 0, again.stderr
    assert edited.read_text() == "GOV_MAX_OPEN_POSITIONS=3\n"
    # This version's template beside the operator's file (from a review: new settings never reached it).
    assert (tmp_path / "etc/quantum/governor.env.dist").read_text() == (ETC / "governor.env").read_text()
    assert mode(tmp_path / "etc/quantum/governor.env.dist") == 0o600
    assert not (tmp_path / "etc/quantum/common.env.dist").exists()  # unedited: nothing to compare
    for env_file in (tmp_path / "etc/quantum").glob("*.env"):
        assert mode(env_file) == 0o600, env_file
    assert mode(tmp_path / "etc/quantum/credentials") == 0o700
    assert mode(tmp_path / "etc/quantum/credentials/binance_api_secret") == 0o600
    # The runbook's `quantum ...` on the host (found in review: "command not found", the CLI only in the venv).
    assert os.readlink(tmp_path / "usr/local/bin/quantum") == "/opt/quantum/venv/bin/quantum"
    assert (tmp_path / "opt/quantum/venv/bin/quantum").is_file()
    python = tmp_path / "opt/quantum/venv/bin/python"
    for spec in fleet.installed():
        unit = (tmp_path / "etc/systemd/system" / spec.unit).read_text()
        assert f"ExecStart=/opt/quantum/venv/bin/python -m {spec.module}" in unit
        runnable = f"import importlib.util, sys; sys.exit(importlib.util.find_spec('{spec.module}.__main__') is None)"
        assert subprocess.run([str(python), "-c", runnable]).returncode == 0, spec.module


def test_install_under_another_prefix_points_every_unit_there(tmp_path: Path) -> None:
    """The committed units name /opt/quantum; installed with --prefix, each unit runs the venv under that prefix
    (they once kept /opt/quantum and every unit failed with 203/EXEC)."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not available")
    install = [str(ROOT / "deploy" / "install.sh"), "--root", str(tmp_path), "--prefix", "/srv/quantum/", "--no-venv"]

    subprocess.run(install, check=True, capture_output=True, text=True, timeout=120)

    for spec in fleet.installed():
        unit = (tmp_path / "etc/systemd/system" / spec.unit).read_text()
        assert f"ExecStart=/srv/quantum/venv/bin/python -m {spec.module}" in unit
        assert "/opt/quantum" not in unit
        assert mode(tmp_path / "etc/systemd/system" / spec.unit) == 0o644
    assert (tmp_path / "srv/quantum/README.md").exists()


@pytest.mark.parametrize("prefix", ["relative/dir", "/srv/my quantum", "/srv/q#x", "/", "//", "/usr/local/",
                                    "/opt/quantum/../../etc", "/opt"])
def test_install_refuses_a_prefix_a_unit_cannot_hold(tmp_path: Path, prefix: str) -> None:
    install = [str(ROOT / "deploy" / "install.sh"), "--root", str(tmp_path), "--prefix", prefix, "--no-venv"]

    refused = subprocess.run(install, capture_output=True, text=True, timeout=60)

    assert refused.returncode == 2 and "--prefix" in refused.stderr
    assert not (tmp_path / "etc/systemd/system").exists()


def fake_systemctl(tmp_path: Path, active: list[str], stays_active: list[str] = ()) -> tuple[Path, Path]:
    """A systemctl that lists `active` as running, says `stays_active` is active whatever it is told, and records
    every call."""
    calls = tmp_path / "systemctl.calls"
    tool = tmp_path / "systemctl"
    listing = "".join(f"{unit} loaded active running Quantum\n" for unit in active)
    tool.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {calls}
if [ "$1" = list-units ]; then printf '%s' '{listing}'; fi
if [ "$1" = is-active ]; then case " {' '.join(stays_active)} " in *" $3 "*) exit 0 ;; *) exit 3 ;; esac; fi
""")
    tool.chmod(0o755)
    return tool, calls


def test_install_refuses_to_upgrade_under_running_daemons_without_restart(tmp_path: Path) -> None:
    """From a review: pip installed a new version over running daemons, which could then import new modules beside
    their old ones (the README asked for the governors to be stopped; nothing enforced it)."""
    tool, calls = fake_systemctl(tmp_path, ["quantum-governor.service", "quantum-intent-executor.service"])
    root = tmp_path / "root"
    install = [str(ROOT / "deploy" / "install.sh"), "--root", str(root), "--no-venv"]

    refused = subprocess.run(install, capture_output=True, text=True, timeout=120, env={**os.environ, "SYSTEMCTL": str(tool)})

    assert refused.returncode == 1 and "--restart" in refused.stderr and "quantum-governor.service" in refused.stderr
    assert not (root / "etc/systemd/system").exists()
    assert calls.read_text().splitlines()[-1].startswith("list-units")


def test_install_with_restart_stops_the_running_units_first_and_starts_them_after(tmp_path: Path) -> None:
    tool, calls = fake_systemctl(tmp_path, ["quantum-governor.service", "quantum-exchange-sim.service"])
    install = [str(ROOT / "deploy" / "install.sh"), "--root", str(tmp_path / "root"), "--no-venv", "--restart"]

    done = subprocess.run(install, capture_output=True, text=True, timeout=120, env={**os.environ, "SYSTEMCTL": str(tool)})

    assert done.returncode == 0, done.stderr
    assert [line.split(" ")[0] for line in calls.read_text().splitlines()] == [
        "list-units", "stop", "daemon-reload", "start"]
    assert calls.read_text().splitlines()[1] == "stop quantum-governor.service quantum-exchange-sim.service"


def edit_unit(root: Path, unit: str, text: str) -> str:
    path = root / "etc/systemd/system" / unit
    mine = path.read_text() + text
    path.write_text(mine)
    return mine


def test_a_unit_edited_in_place_is_refused_unless_its_edit_is_discarded_with_a_copy_kept(tmp_path: Path) -> None:
    """From reviews: a reinstall overwrote units edited in place without a word, so an edit such as
    Environment=APPLY_MODE=dry_run vanished in an upgrade that restarted the fleet. Now nothing changes until the
    operator moves the edit into a drop-in or discards it (a copy is kept, each in a file of its own)."""
    install = [str(ROOT / "deploy" / "install.sh"), "--root", str(tmp_path), "--no-venv"]
    subprocess.run(install, check=True, capture_output=True, text=True, timeout=120)
    units = tmp_path / "etc/systemd/system"
    mine = edit_unit(tmp_path, "quantum-governor.service", "# my edit\n")
    (units / "quantum-governor.service.d").mkdir()
    (units / "quantum-governor.service.d/override.conf").write_text("[Service]\nCPUQuota=50%\n")

    refused = subprocess.run(install, capture_output=True, text=True, timeout=120)

    assert refused.returncode == 1 and "quantum-governor.service" in refused.stderr
    assert "--discard-unit-edits" in refused.stderr and "systemctl edit" in refused.stderr
    assert (units / "quantum-governor.service").read_text() == mine and not list(units.glob("*.edited*"))

    discarded = subprocess.run([*install, "--discard-unit-edits"], capture_output=True, text=True, timeout=120)

    assert discarded.returncode == 0, discarded.stderr
    assert (units / "quantum-governor.service.edited.1").read_text() == mine
    assert "a copy is kept as" in discarded.stdout
    assert (units / "quantum-governor.service").read_text() == (ROOT / "deploy/systemd/quantum-governor.service").read_text()
    assert (units / "quantum-governor.service.d/override.conf").exists()
    assert [p.name for p in units.glob("*.edited*")] == ["quantum-governor.service.edited.1"]
    assert "copy" not in subprocess.run(install, capture_output=True, text=True, timeout=120, check=True).stdout

    second = edit_unit(tmp_path, "quantum-governor.service", "# another edit\n")
    subprocess.run([*install, "--discard-unit-edits"], check=True, capture_output=True, text=True, timeout=120)
    assert (units / "quantum-governor.service.edited.1").read_text() == mine  # the first copy stays
    assert (units / "quantum-governor.service.edited.2").read_text() == second


def test_an_install_without_a_record_keeps_a_copy_of_each_unit_it_replaces(tmp_path: Path) -> None:
    """An install from before the record (or whose record was lost) cannot tell an edit from an older version: each
    unit that differs is replaced with a copy kept; one equal to this version's is not copied."""
    install = [str(ROOT / "deploy" / "install.sh"), "--root", str(tmp_path), "--no-venv"]
    subprocess.run(install, check=True, capture_output=True, text=True, timeout=120)
    (tmp_path / "etc/quantum/.installed-units.sha256").unlink()
    mine = edit_unit(tmp_path, "quantum-intent-executor.service", "Environment=APPLY_MODE=dry_run\n")

    again = subprocess.run(install, capture_output=True, text=True, timeout=120)

    assert again.returncode == 0, again.stderr
    units = tmp_path / "etc/systemd/system"
    assert [p.name for p in units.glob("*.edited*")] == ["quantum-intent-executor.service.edited.1"]
    assert (units / "quantum-intent-executor.service.edited.1").read_text() == mine


@pytest.mark.parametrize("purge", [False, True])
def test_uninstall_stops_disables_and_removes_what_install_wrote(tmp_path: Path, purge: bool) -> None:
    tool, calls = fake_systemctl(tmp_path, [])
    root = tmp_path / "root"
    env = {**os.environ, "SYSTEMCTL": str(tool)}
    subprocess.run([str(ROOT / "deploy/install.sh"), "--root", str(root), "--no-venv"], check=True, env=env,
                   capture_output=True, text=True, timeout=120)
    (root / "etc/quantum/governor.env").write_text("GOV_MAX_OPEN_POSITIONS=3\n")
    (root / "etc/systemd/system/quantum-reconcile.service").unlink()  # removed by hand: not named to systemctl
    calls.write_text("")

    done = subprocess.run([str(ROOT / "deploy/install.sh"), "--uninstall", "--root", str(root),
                           *(["--purge"] if purge else [])], capture_output=True, text=True, timeout=120, env=env)

    assert done.returncode == 0, done.stderr
    made = calls.read_text().splitlines()
    assert [line.split(" ")[0] for line in made if not line.startswith("is-active")] == ["stop", "disable", "daemon-reload"]
    assert "quantum-intent-executor.service" in made[0] and "quantum-reconcile.service" not in made[0]
    assert list((root / "etc/systemd/system").glob("quantum*")) == []
    assert not (root / "opt/quantum").exists()
    assert (root / "etc/quantum").exists() is not purge
    if not purge:  # settings and credentials are the operator's: kept unless asked
        assert (root / "etc/quantum/governor.env").read_text() == "GOV_MAX_OPEN_POSITIONS=3\n"
        assert (root / "etc/quantum/credentials/binance_api_secret").exists()


def test_uninstall_removes_nothing_while_a_daemon_is_still_running(tmp_path: Path) -> None:
    """From a review: `disable --now ... || true` could fail as a whole (one unit not installed) and the units and the
    venv were removed under a daemon still sending orders."""
    tool, _calls = fake_systemctl(tmp_path, [], stays_active=["quantum-intent-executor.service"])
    root = tmp_path / "root"
    env = {**os.environ, "SYSTEMCTL": str(tool)}
    subprocess.run([str(ROOT / "deploy/install.sh"), "--root", str(root), "--no-venv"], check=True, env=env,
                   capture_output=True, text=True, timeout=120)

    refused = subprocess.run([str(ROOT / "deploy/install.sh"), "--uninstall", "--root", str(root)],
                             capture_output=True, text=True, timeout=120, env=env)

    assert refused.returncode == 1 and "quantum-intent-executor.service" in refused.stderr
    assert (root / "etc/systemd/system/quantum-intent-executor.service").exists()
    assert (root / "opt/quantum/README.md").exists()


def test_uninstall_needs_no_python(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "deploy/install.sh"), "--root", str(tmp_path), "--no-venv"], check=True,
                   capture_output=True, text=True, timeout=120)

    done = subprocess.run([str(ROOT / "deploy/install.sh"), "--uninstall", "--root", str(tmp_path), "--python", "false"],
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "etc/systemd/system/quantum-governor.service").exists()


def test_purge_without_uninstall_is_refused(tmp_path: Path) -> None:
    refused = subprocess.run([str(ROOT / "deploy/install.sh"), "--purge", "--root", str(tmp_path)],
                             capture_output=True, text=True, timeout=60)

    assert refused.returncode == 2 and "--uninstall" in refused.stderr and not any(tmp_path.iterdir())


def test_install_script_is_shellcheck_clean() -> None:
    tool = shutil.which("shellcheck")
    if tool is None:
        pytest.skip("shellcheck is not installed (Debian package 'shellcheck'; .ci/run installs it when it can)")

    checked = subprocess.run([tool, str(ROOT / "deploy" / "install.sh")], capture_output=True, text=True)

    assert checked.returncode == 0, checked.stdout


def test_the_readme_names_every_documented_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    documented_anywhere = set().union(*(documented(path) for path in ETC.glob("*.env")))

    missing = sorted(name for name in documented_anywhere if f"`{name}`" not in readme)

    assert missing == [], f"add to README's configuration tables: {missing}"


def test_an_install_that_fails_after_stopping_the_fleet_starts_it_again(tmp_path: Path) -> None:
    """Found in review: with --restart, a failure after the units were stopped (pip without network here: a python
    whose venv step fails) exited 1 and left the fleet down, open positions without their exits."""
    tool, calls = fake_systemctl(tmp_path, ["quantum-governor.service", "quantum-intent-executor.service"])
    python = tmp_path / "python3"
    python.write_text(f'#!/bin/sh\nif [ "$1" = -m ]; then echo "no network" >&2; exit 1; fi\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    install = [str(ROOT / "deploy" / "install.sh"), "--root", str(tmp_path / "root"), "--python", str(python),
               "--restart"]

    done = subprocess.run(install, capture_output=True, text=True, timeout=120, env={**os.environ, "SYSTEMCTL": str(tool)})

    assert done.returncode == 1 and "starting them again" in done.stderr
    assert [line.split(" ")[0] for line in calls.read_text().splitlines()] == [
        "list-units", "stop", "daemon-reload", "start"]
    assert calls.read_text().splitlines()[-1] == "start quantum-governor.service quantum-intent-executor.service"


def test_a_stop_that_fails_part_way_starts_the_units_again(tmp_path: Path) -> None:
    """Found in review: one unit's stop job timing out failed the whole `systemctl stop` after the others had stopped,
    and the script exited before its restart guard existed: the fleet stayed down without a word."""
    tool, calls = fake_systemctl(tmp_path, ["quantum-governor.service", "quantum-intent-executor.service"])
    tool.write_text(tool.read_text() + 'if [ "$1" = stop ]; then exit 1; fi\n')
    install = [str(ROOT / "deploy" / "install.sh"), "--root", str(tmp_path / "root"), "--no-venv", "--restart"]

    done = subprocess.run(install, capture_output=True, text=True, timeout=120, env={**os.environ, "SYSTEMCTL": str(tool)})

    assert done.returncode == 1 and "starting them again" in done.stderr
    assert calls.read_text().splitlines()[-1] == "start quantum-governor.service quantum-intent-executor.service"
