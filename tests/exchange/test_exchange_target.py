import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.exchange.errors import ExchangeSettingsError
from shared.exchange.sim_defaults import SIM_DEV_API_KEY, SIM_DEV_API_SECRET
from shared.exchange.target import (
    MAINNET_CONFIRM_PHRASE,
    ExchangeSettings,
    Target,
    load_exchange_settings,
    parse_bool,
    settings_error_line,
)

KEY = "KEYVALUE7f3a9c0d1e2b"
SECRET = "SECRETVALUE9d8c7b6a5f4e"
ENV_NAMES = {
    "EXCHANGE_TARGET", "BINANCE_USE_TESTNET", "TESTNET", "USE_TESTNET", "BINANCE_TESTNET", "PAPER_TRADING",
    "EXCHANGE_MAINNET_CONFIRM", "BINANCE_API_KEY", "BINANCE_API_SECRET", "BINANCE_TESTNET_API_KEY",
    "BINANCE_TESTNET_API_SECRET", "EXCHANGE_SIM_API_KEY", "EXCHANGE_SIM_API_SECRET", "EXCHANGE_SIM_URL",
    "CREDENTIALS_DIRECTORY", "EXCHANGE_REQUEST_TIMEOUT_S", "EXCHANGE_FILTERS_REFRESH_S", "EXCHANGE_STARTUP_WAIT_S",
}
CREDS = {"BINANCE_API_KEY": KEY, "BINANCE_API_SECRET": SECRET}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper() in ENV_NAMES:
            monkeypatch.delenv(name)


def settings_with(monkeypatch, env: dict[str, str]) -> ExchangeSettings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_exchange_settings()


def error_line_for(monkeypatch, env: dict[str, str]) -> str:
    with pytest.raises(ExchangeSettingsError) as caught:
        settings_with(monkeypatch, env)
    line = str(caught.value)
    assert "\n" not in line
    assert KEY not in line and SECRET not in line and KEY not in repr(caught.value)
    return line


@pytest.mark.parametrize(
    "env",
    [{}, {"EXCHANGE_TARGET": ""}, {"BINANCE_USE_TESTNET": "false"}, {"BINANCE_USE_TESTNET": "0"},
     {"BINANCE_USE_TESTNET": ""}, {"PAPER_TRADING": "false"}, {"TESTNET": "false"}, {"EXCHANGE_SIM_URL": "http://127.0.0.1:9"}],
)
def test_without_an_explicit_target_the_settings_fail_naming_exchange_target_and_its_values(monkeypatch, env):
    line = error_line_for(monkeypatch, env)

    assert line == ("invalid exchange settings: EXCHANGE_TARGET is required, there is no default: set it to"
                    " simulator | testnet | mainnet (or the seed alias BINANCE_USE_TESTNET=true for testnet)")


def test_the_simulator_target_uses_the_dev_credentials(monkeypatch):
    settings = settings_with(monkeypatch, {"EXCHANGE_TARGET": "simulator"})

    assert settings.target is Target.SIMULATOR
    assert settings.root_url == "http://127.0.0.1:8090"
    assert settings.api_key.get_secret_value() == SIM_DEV_API_KEY
    assert settings.api_secret.get_secret_value() == SIM_DEV_API_SECRET
    assert (settings.request_timeout_s, settings.filters_refresh_s) == (5.0, 300.0)


def test_simulator_credentials_and_url_come_from_env(monkeypatch):
    settings = settings_with(monkeypatch, {"EXCHANGE_TARGET": "simulator", "EXCHANGE_SIM_URL": "http://127.0.0.1:9999/",
                                           "EXCHANGE_SIM_API_KEY": KEY, "EXCHANGE_SIM_API_SECRET": SECRET})

    assert settings.root_url == "http://127.0.0.1:9999"
    assert (settings.api_key.get_secret_value(), settings.api_secret.get_secret_value()) == (KEY, SECRET)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"EXCHANGE_TARGET": "simulator"}, Target.SIMULATOR),
        ({"EXCHANGE_TARGET": "TESTNET", **CREDS}, Target.TESTNET),
        ({"BINANCE_USE_TESTNET": "true", **CREDS}, Target.TESTNET),
        ({"BINANCE_USE_TESTNET": "YES", **CREDS}, Target.TESTNET),
        ({"BINANCE_USE_TESTNET": "1", **CREDS}, Target.TESTNET),
        ({"EXCHANGE_TARGET": "simulator", "BINANCE_USE_TESTNET": "False"}, Target.SIMULATOR),
        ({"EXCHANGE_TARGET": "simulator", "BINANCE_USE_TESTNET": "0"}, Target.SIMULATOR),
        ({"EXCHANGE_TARGET": "simulator", "BINANCE_USE_TESTNET": "no"}, Target.SIMULATOR),
        ({"EXCHANGE_TARGET": "simulator", "BINANCE_USE_TESTNET": ""}, Target.SIMULATOR),
        ({"EXCHANGE_TARGET": "testnet", "BINANCE_USE_TESTNET": "true", **CREDS}, Target.TESTNET),
        ({"EXCHANGE_TARGET": "simulator", "BINANCE_USE_TESTNET": "false"}, Target.SIMULATOR),
        ({"EXCHANGE_TARGET": "testnet", "TESTNET": "true", "USE_TESTNET": "1", **CREDS}, Target.TESTNET),
        ({"EXCHANGE_TARGET": "mainnet", "EXCHANGE_MAINNET_CONFIRM": MAINNET_CONFIRM_PHRASE, **CREDS},
         Target.MAINNET),
        ({"EXCHANGE_TARGET": "simulator", "PAPER_TRADING": "false"}, Target.SIMULATOR),
    ],
)
def test_target_selection(monkeypatch, env, expected):
    settings = settings_with(monkeypatch, env)

    assert settings.target is expected


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"BINANCE_USE_TESTNET": "maybe"}, ["BINANCE_USE_TESTNET"]),
        ({"BINANCE_USE_TESTNET": "on"}, ["BINANCE_USE_TESTNET"]),
        ({"EXCHANGE_TARGET": "paper"}, ["EXCHANGE_TARGET"]),
        ({"EXCHANGE_TARGET": "simulator", "BINANCE_USE_TESTNET": "true"},
         ["EXCHANGE_TARGET", "BINANCE_USE_TESTNET"]),
        ({"EXCHANGE_TARGET": "testnet", "BINANCE_USE_TESTNET": "false", **CREDS},
         ["EXCHANGE_TARGET", "BINANCE_USE_TESTNET"]),
        ({"EXCHANGE_TARGET": "mainnet", "BINANCE_USE_TESTNET": "true", **CREDS},
         ["EXCHANGE_TARGET", "BINANCE_USE_TESTNET"]),
        ({"EXCHANGE_TARGET": "mainnet", **CREDS}, ["EXCHANGE_MAINNET_CONFIRM"]),
        ({"EXCHANGE_TARGET": "mainnet", "EXCHANGE_MAINNET_CONFIRM": "yes", **CREDS}, ["EXCHANGE_MAINNET_CONFIRM"]),
        ({"EXCHANGE_TARGET": "mainnet", "TESTNET": "true", **CREDS}, ["TESTNET"]),
        ({"PAPER_TRADING": "true"}, ["PAPER_TRADING"]),
        ({"EXCHANGE_TARGET": "testnet"}, ["BINANCE_API_KEY"]),
        ({"EXCHANGE_TARGET": "testnet", "BINANCE_API_KEY": KEY}, ["BINANCE_API_SECRET"]),
        ({"EXCHANGE_TARGET": "testnet", **CREDS, "BINANCE_TESTNET_API_SECRET": SECRET + "x"},
         ["BINANCE_API_SECRET", "BINANCE_TESTNET_API_SECRET"]),
        ({"EXCHANGE_TARGET": "mainnet", "EXCHANGE_MAINNET_CONFIRM": MAINNET_CONFIRM_PHRASE,
          "BINANCE_TESTNET_API_KEY": KEY, "BINANCE_TESTNET_API_SECRET": SECRET}, ["BINANCE_TESTNET_API_KEY"]),
        ({"EXCHANGE_TARGET": "simulator", "EXCHANGE_SIM_URL": "ftp://x", "EXCHANGE_SIM_API_SECRET": SECRET},
         ["EXCHANGE_SIM_URL"]),
        ({"PAPER_TRADING": "true", "EXCHANGE_TARGET": "simulator"}, ["PAPER_TRADING"]),
        ({"EXCHANGE_TARGET": "simulator", "EXCHANGE_FILTERS_REFRESH_S": "inf"}, ["EXCHANGE_FILTERS_REFRESH_S"]),
        ({"EXCHANGE_TARGET": "simulator", "EXCHANGE_STARTUP_WAIT_S": "nan"}, ["EXCHANGE_STARTUP_WAIT_S"]),
        ({"EXCHANGE_TARGET": "simulator", "EXCHANGE_STARTUP_WAIT_S": "1e300"}, ["EXCHANGE_STARTUP_WAIT_S"]),
        ({"EXCHANGE_TARGET": "simulator", "EXCHANGE_STARTUP_WAIT_S": "91"}, ["EXCHANGE_STARTUP_WAIT_S"]),
        ({"EXCHANGE_REQUEST_TIMEOUT_S": "0", **CREDS}, ["EXCHANGE_REQUEST_TIMEOUT_S"]),
        # Longer than a claim on a plan or systemd's watchdog can wait on (MAX_REQUEST_TIMEOUT_S).
        ({"EXCHANGE_TARGET": "simulator", "EXCHANGE_REQUEST_TIMEOUT_S": "10.5"}, ["EXCHANGE_REQUEST_TIMEOUT_S"]),
        # From a review: an order signed late under a long recvWindow could still be accepted after the governor and
        # P3.3 stopped counting its open (60 s after the permit's TTL), and the caps were exceeded.
        ({"EXCHANGE_TARGET": "simulator", "EXCHANGE_REQUEST_TIMEOUT_S": "10", "EXCHANGE_RECV_WINDOW_MS": "27001"},
         ["EXCHANGE_RECV_WINDOW_MS", "EXCHANGE_REQUEST_TIMEOUT_S", "49 s"]),
    ],
)
def test_invalid_settings_give_one_line_naming_the_variables(monkeypatch, env, names):
    line = error_line_for(monkeypatch, env)

    assert all(name in line for name in names), line


def test_mainnet_refusal_line_is_explicit(monkeypatch):
    line = error_line_for(monkeypatch, {"EXCHANGE_TARGET": "mainnet", **CREDS})

    assert line == ("invalid exchange settings: EXCHANGE_TARGET=mainnet requires "
                    "EXCHANGE_MAINNET_CONFIRM=I_UNDERSTAND_THIS_TRADES_REAL_MONEY")


@pytest.mark.parametrize(
    "env",
    [
        {"BINANCE_TESTNET_API_KEY": KEY, "BINANCE_TESTNET_API_SECRET": SECRET, "BINANCE_USE_TESTNET": "true"},
        {"EXCHANGE_TARGET": "testnet", **CREDS},
    ],
)
def test_seed_and_new_credential_names_both_work(monkeypatch, env):
    settings = settings_with(monkeypatch, env)

    assert (settings.api_key.get_secret_value(), settings.api_secret.get_secret_value()) == (KEY, SECRET)


def test_systemd_credential_file_supplies_the_secret(monkeypatch, tmp_path):
    (tmp_path / "binance_api_secret").write_text(SECRET + "\n")
    env = {"EXCHANGE_TARGET": "testnet", "BINANCE_API_KEY": KEY, "BINANCE_API_SECRET": "env-secret",
           "CREDENTIALS_DIRECTORY": str(tmp_path)}

    settings = settings_with(monkeypatch, env)

    assert settings.api_secret.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("key", "secret"),
    [(KEY + "\r", SECRET + "\r"), (KEY + "\r\n", SECRET + "\n"), (" " + KEY, "\t" + SECRET + " ")],
    ids=["crlf-env-file", "line-ending", "spaces-and-tab"],
)
@pytest.mark.parametrize("target", ["testnet", "simulator"])
def test_credentials_from_the_environment_are_stripped(monkeypatch, target, key, secret):
    names = (("BINANCE_API_KEY", "BINANCE_API_SECRET") if target == "testnet"
             else ("EXCHANGE_SIM_API_KEY", "EXCHANGE_SIM_API_SECRET"))

    settings = settings_with(monkeypatch, {"EXCHANGE_TARGET": target, names[0]: key, names[1]: secret})

    assert (settings.api_key.get_secret_value(), settings.api_secret.get_secret_value()) == (KEY, SECRET)


BAD_KEY = "BADKEY0123456789"
NOT_ISSUED = "must be letters and digits only"
BAD_CREDENTIALS = [
    (BAD_KEY[:6] + "\r" + BAD_KEY[6:], NOT_ISSUED),
    (BAD_KEY[:6] + " " + BAD_KEY[6:], NOT_ISSUED),
    (f'"{BAD_KEY}"', NOT_ISSUED),
    (BAD_KEY + "-x", NOT_ISSUED),
    (BAD_KEY + "\x1b", NOT_ISSUED),
    ("   ", "is empty"),
]
BAD_IDS = ["cr", "space", "quotes", "dash", "escape", "blank"]


@pytest.mark.parametrize(("bad", "complaint"), BAD_CREDENTIALS, ids=BAD_IDS)
@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"EXCHANGE_TARGET": "testnet", "BINANCE_API_SECRET": SECRET}, "BINANCE_API_KEY"),
        ({"EXCHANGE_TARGET": "testnet", "BINANCE_API_KEY": KEY}, "BINANCE_API_SECRET"),
        ({"EXCHANGE_TARGET": "testnet", "BINANCE_API_SECRET": SECRET}, "BINANCE_TESTNET_API_KEY"),
        ({"EXCHANGE_TARGET": "simulator"}, "EXCHANGE_SIM_API_KEY"),
        ({"EXCHANGE_TARGET": "simulator"}, "EXCHANGE_SIM_API_SECRET"),
    ],
)
def test_a_credential_binance_would_not_issue_is_named_never_echoed(monkeypatch, env, name, bad, complaint):
    line = error_line_for(monkeypatch, {**env, name: bad})

    assert f"{name} {complaint}" in line
    assert "BADKEY" not in line and "6789" not in line


@pytest.mark.parametrize(("bad", "complaint"), BAD_CREDENTIALS, ids=BAD_IDS)
def test_a_credential_file_binance_would_not_issue_is_named_never_echoed(monkeypatch, tmp_path, bad, complaint):
    (tmp_path / "binance_api_secret").write_text(bad + "\n")

    line = error_line_for(monkeypatch, {"EXCHANGE_TARGET": "testnet", "BINANCE_API_KEY": KEY,
                                        "CREDENTIALS_DIRECTORY": str(tmp_path)})

    assert f"binance_api_secret {complaint}" in line
    assert "BADKEY" not in line and "6789" not in line


def test_secrets_never_appear_in_repr_or_description(monkeypatch):
    settings = settings_with(monkeypatch, {"EXCHANGE_TARGET": "testnet", **CREDS})

    for text in (repr(settings), str(settings), settings.describe(), repr(settings.api_secret)):
        assert KEY not in text and SECRET not in text


def test_settings_error_line_works_on_a_raw_validation_error(monkeypatch):
    monkeypatch.setenv("BINANCE_USE_TESTNET", "maybe")
    monkeypatch.setenv("BINANCE_API_SECRET", SECRET)

    with pytest.raises(ValidationError) as caught:
        ExchangeSettings()

    line = settings_error_line(caught.value)
    assert line.startswith("invalid exchange settings: BINANCE_USE_TESTNET:")
    assert SECRET not in line and SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("TRUE", True), (" yes ", True), ("1", True),
     ("false", False), ("False", False), ("NO", False), ("0", False), (None, None)],
)
def test_parse_bool(raw, expected):
    assert parse_bool(raw) is expected


@pytest.mark.parametrize("raw", ["maybe", "on", "off", "t", "2", "truee"])
def test_parse_bool_rejects_everything_else(raw):
    with pytest.raises(ValueError):
        parse_bool(raw)


def test_the_installs_placeholder_credential_file_leaves_the_env_files_secret_in_force(monkeypatch, tmp_path):
    """Seen by review: deploy/install.sh writes a placeholder into the credential file, which was read first and
    refused, so the documented fallback (BINANCE_API_SECRET in an env file) could not be used."""
    from shared.exchange.target import CREDENTIAL_PLACEHOLDER

    install = (Path(__file__).resolve().parents[2] / "deploy" / "install.sh").read_text()
    assert CREDENTIAL_PLACEHOLDER in install  # the same text the install writes
    (tmp_path / "binance_api_secret").write_text(CREDENTIAL_PLACEHOLDER + "\n")
    env = {"EXCHANGE_TARGET": "testnet", "BINANCE_API_KEY": KEY, "CREDENTIALS_DIRECTORY": str(tmp_path)}

    line = error_line_for(monkeypatch, env)
    assert "BINANCE_API_SECRET is required" in line and "binance_api_secret" in line
    assert settings_with(monkeypatch, {**env, "BINANCE_API_SECRET": SECRET}).api_secret.get_secret_value() == SECRET
