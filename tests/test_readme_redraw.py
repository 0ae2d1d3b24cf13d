"""README's examples that redraw a line in place clear it first, so a shorter line leaves nothing behind."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_lines_redrawn_in_place_are_cleared() -> None:
    code = "\n".join(m[1] for m in re.finditer(r"```python\n(.*?)\n```", README, re.S))
    redraws = [line.strip() for line in code.splitlines() if "print(" in line and "\\r" in line]
    assert len(redraws) >= 6  # the streaming, progress and microphone examples
    # "\r" goes back to the start of the line, "\x1b[K" clears it: a partial that got shorter (a new
    # utterance starts empty) would otherwise keep the old one's tail on screen.
    assert [line for line in redraws if "\\r\\x1b[K" not in line] == []
