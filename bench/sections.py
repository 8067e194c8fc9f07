"""docs/BENCHMARKS.md is written by two scripts: bench/run.py (the echo servers) and
bench/sse.py (channels over plain HTTP).  Each rewrites its own part and keeps the
other's: the channels section lives between two markers."""

import os

SECTION_BEGIN = "<!-- channels: written by bench/sse.py -->"
SECTION_END = "<!-- /channels -->"


def _section_of(text):
    i, j = text.find(SECTION_BEGIN), text.find(SECTION_END)
    return (i, j + len(SECTION_END)) if 0 <= i < j else None


def splice_section(path, lines, replace=True):
    """Put the channels section `lines` into the report at `path`: in place of the old one,
    else before "## Machine" (or at the end).  With replace=False, `lines` is a whole new
    report and the old file's section (if any) is carried over into it."""
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    if replace:
        text, block = old, "\n".join(lines)
    else:
        text, span = "\n".join(lines) + "\n", _section_of(old)
        block = old[span[0]:span[1]] if span else None
    if block is not None:
        span = _section_of(text)
        if span:
            text = text[:span[0]] + block + text[span[1]:]
        elif "\n## Machine\n" in text:
            k = text.index("\n## Machine\n") + 1
            text = text[:k] + block + "\n\n" + text[k:]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)
