"""A generated section of README.md, between two markers: read it, replace it, or write it from a tool's `--write`.

tools/error_table.py and tools/recipe_template.py each own one; their tests fail when README.md's copy is stale.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


@dataclass(frozen=True)
class Section:
    name: str  # the markers are <!-- NAME:start --> and <!-- NAME:end -->
    tool: str  # who writes it, for the messages

    @property
    def start(self) -> str:
        return f"<!-- {self.name}:start -->"

    @property
    def end(self) -> str:
        return f"<!-- {self.name}:end -->"

    def read(self, readme: str) -> str:
        """The text between the markers, as the tool renders it."""
        if self.start not in readme or self.end not in readme:
            raise SystemExit(f"{self.tool}: {README.name} has no {self.start} ... {self.end} section")
        return readme.split(self.start, 1)[1].split(self.end, 1)[0].strip("\n") + "\n"

    def replaced(self, readme: str, text: str) -> str:
        """The README with `text` between the markers."""
        self.read(readme)  # the markers are there
        head, rest = readme.split(self.start, 1)
        return f"{head}{self.start}\n{text}{self.end}{rest.split(self.end, 1)[1]}"

    def write(self, text: str, path: Path = README) -> None:
        """Put `text` in the README (untouched where it is already there) and say which it was."""
        readme = path.read_text(encoding="utf-8")
        updated = self.replaced(readme, text)
        if updated != readme:
            path.write_text(updated, encoding="utf-8")
        print(f"{self.tool}: {path.name} {'updated' if updated != readme else 'already up to date'}", file=sys.stderr)

    def main(self, doc: str, render: Callable[[], str]) -> int:
        """A tool's command line: print what render() gives, or with --write put it in README.md."""
        parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument(
            "--write", action="store_true", help=f"rewrite README.md's {self.name} section instead of printing it"
        )
        write = parser.parse_args().write
        text = render()
        if write:
            self.write(text)
        else:
            print(text, end="")
        return 0
