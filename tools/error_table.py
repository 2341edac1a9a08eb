#!/usr/bin/env python3
"""Run every bad-input case (tools/bad_inputs.py) and print the README's "When things go wrong" table.

    python tools/error_table.py           # print the table
    python tools/error_table.py --write   # put it in README.md, between the error-table markers

The messages are qwen-tune's own, from real runs, with the case's directory shown as <tmp>;
tests/test_bad_inputs.py fails when README.md's table is not what this prints.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tools")]

from bad_inputs import CASES, Case, Outcome, run_case  # noqa: E402
from readme_section import Section  # noqa: E402

SECTION = Section("error-table", "error_table")


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


def main() -> int:
    return SECTION.main(__doc__, lambda: render(CASES, run_all()))


if __name__ == "__main__":
    sys.exit(main())
