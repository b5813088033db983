"""No undefined name, attribute or argument reaches a daemon: mypy over the fleet's code, before it runs.

The seeds deployed P3.3 with `safe_close_qty` undefined and the governor calling an undefined
`self._allow_plan()`; both were found by the first plan in production. Tests exercise the paths we
think of; a type checker reads every line. Only the error codes that mean a crash are enforced here
(the rest of mypy's findings are typing precision, not yet clean).
"""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["shared", "microservices", "ops", "bench"]
CRASHES = ("attr-defined", "name-defined", "call-arg", "import-not-found", "import", "has-type", "valid-type")


def test_no_undefined_name_attribute_or_argument_in_the_fleets_code(tmp_path: Path) -> None:
    stdout, stderr, _status = api.run(["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path),
                                       "--no-error-summary", *(str(ROOT / path) for path in CHECKED)])

    assert not stderr.strip(), stderr
    crashes = [line for line in stdout.splitlines() if line.rstrip().endswith(tuple(f"[{c}]" for c in CRASHES))]
    assert crashes == [], "\n".join(crashes)


def test_the_check_finds_an_undefined_method(tmp_path: Path) -> None:
    """The seeds' governor bug, as a module: the check must name it."""
    module = tmp_path / "seed_governor.py"
    module.write_text("class Governor:\n"
                      "    def _issue_permit(self, plan_id: str) -> None: ...\n\n"
                      "    def on_plan(self, plan_id: str) -> None:\n"
                      "        self._allow_plan(plan_id)\n")

    stdout, _stderr, _status = api.run(["--config-file", str(ROOT / "pyproject.toml"),
                                        "--cache-dir", str(tmp_path / "cache"), str(module)])

    assert '"Governor" has no attribute "_allow_plan"' in stdout and "[attr-defined]" in stdout
