"""Entry point: python -m microservices.exchange_sim"""

from .server import run
from .settings import load_settings_or_exit


def main() -> None:
    run(load_settings_or_exit())


if __name__ == "__main__":
    main()
