"""`python -m bench`'s command line (the benchmark itself runs in `make bench`, not here)."""

from bench.__main__ import HERE, parse


def test_a_quick_run_writes_beside_the_committed_full_run():
    assert parse(["--quick"]).out == HERE / "results-quick.json"
    assert parse([]).out == HERE / "results.json"
    assert parse(["--quick"]).against == HERE / "results.json"


def test_an_explicit_out_wins():
    assert str(parse(["--quick", "--out", "/tmp/x.json"]).out) == "/tmp/x.json"
