from tests.e2e.conftest import make_fleet  # noqa: F401
