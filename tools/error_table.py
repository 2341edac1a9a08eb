#!/usr/bin/env python3
"""Run every bad-input case (tools/bad_inputs.py) and print the README's "When things go wrong" table.

    python tools/error_table.py           # print the table
    python tools/error_table.py --write   # put it in README.md, between the error-table markers

The messages are qwen-tune's own, from real runs, with the case's directory shown as <tmp>;
tests/test_bad_inputs.py fails when README.md's table is not what this prints.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
START, END = "<!-- error-table:start -->", "<!-- error-table:end -->"

sys.path[:0] = [str(REPO), str(REPO / "tools")]

from bad_inputs import CASES, Case, Outcome, run_case  # noqa: E402


def run_all(cases: tuple[Case, ...] = CASES) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="qwen-tune-errors-") as root:
        outcomes = []
        for number, case in enumerate(cases):
            tmp = Path(root) / f"case-{number}"
            tmp.mkdir()
            outcomes.append(run_case(case, tmp))
        return outcomes


def render(cases: tuple[Case, ...], outcomes: list[Outcome]) -> str:
    lines = ["| what went wrong | exit code | what qwen-tune prints |", "|---|---|---|"]
    for case, outcome in zip(cases, outcomes, strict=True):
        lines.append(f"| {case.what} | {outcome.code} | {_code(outcome.stderr.strip())} |")
    return "\n".join(lines) + "\n"


def _code(text: str) -> str:
    """A code span that may hold single backticks; a table cell needs its pipes escaped even there."""
    return "`` " + text.replace("|", "\\|") + " ``"


def table_in(readme: str) -> str:
    """The table between the markers, as render() gives it."""
    if START not in readme or END not in readme:
        raise SystemExit(f"error_table: {README} has no {START} ... {END} section")
    return readme.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def with_table(readme: str, table: str) -> str:
    table_in(readme)  # the markers are there
    head, rest = readme.split(START, 1)
    return f"{head}{START}\n{table}{END}{rest.split(END, 1)[1]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite README.md's table instead of printing it")
    args = parser.parse_args()
    table = render(CASES, run_all())
    if not args.write:
        print(table, end="")
        return 0
    readme = README.read_text(encoding="utf-8")
    updated = with_table(readme, table)
    if updated != readme:
        README.write_text(updated, encoding="utf-8")
    print(f"error_table: {README.name} {'updated' if updated != readme else 'already up to date'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
