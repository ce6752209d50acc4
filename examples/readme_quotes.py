#!/usr/bin/env python3
"""Checks that the README's tour quotes the examples rather than retyping them.

In the section "## Python ↔ C++ tour", every ```python and ```cpp block must be a quote of the
example named by the last `examples/<file>` mentioned above it: each run of lines between "..."
elision lines ("# ..." or "// ...") must appear in that file as consecutive lines. Python blocks
are matched against the file's opening comment (the "//" prefix removed), C++ blocks against its
code. Indentation is ignored, so an excerpt may be dedented.

usage: readme_quotes.py README.md EXAMPLES_DIR
"""
import re
import sys
from pathlib import Path

TOUR = re.compile(r"^## Python ↔ C\+\+ tour\s*$")
SOURCE = re.compile(r"examples/([\w.-]+\.(?:cpp|hpp))")
FENCE = re.compile(r"^```(\w*)\s*$")
ELISION = {"...", "# ...", "// ..."}


def tour_lines(readme):
    lines = readme.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if TOUR.match(line)), None)
    if start is None:
        sys.exit(f"{readme}: no '## Python ↔ C++ tour' section")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return list(enumerate(lines[start + 1:end], start + 2))


def quoted_blocks(lines):
    """Yields (line number, language, block lines, source file) for every python/cpp block."""
    source, block, language, at = None, None, None, 0
    for number, line in lines:
        fence = FENCE.match(line)
        if block is None:
            if fence:
                block, language, at = [], fence.group(1), number
            else:
                source = (SOURCE.findall(line) or [source])[-1]
        elif fence:
            if language in ("python", "cpp"):
                yield at, language, block, source
            block = None
        else:
            block.append(line)


def searchable(path, language):
    text = path.read_text(encoding="utf-8").splitlines()
    if language == "python":
        text = [line.strip()[2:] for line in text if line.strip().startswith("//")]
    return [line.strip() for line in text]


def segments(block):
    segment = []
    for line in block:
        if line.strip() in ELISION:
            if segment:
                yield segment
            segment = []
        else:
            segment.append(line.strip())
    if segment:
        yield segment


def contains(haystack, needle):
    return any(haystack[i:i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


def main(readme, examples):
    failures, count = [], 0
    for at, language, block, source in quoted_blocks(tour_lines(Path(readme))):
        count += 1
        if source is None or not (Path(examples) / source).exists():
            failures.append(f"README.md:{at}: a {language} block with no existing examples/ file named above it")
            continue
        text = searchable(Path(examples) / source, language)
        for segment in segments(block):
            if not contains(text, segment):
                failures.append(f"README.md:{at}: this {language} block is not quoted from examples/{source}:\n  "
                                + "\n  ".join(segment))
    for failure in failures:
        print(failure)
    print(f"{count} quoted blocks checked, {len(failures)} not found in their examples")
    return 1 if failures or count == 0 else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
