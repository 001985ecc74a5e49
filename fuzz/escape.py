"""Text from files (repro files, report.json) made safe to print: a repro or report may come from anyone, and
a raw terminal escape code in it (ESC [ 2 J, a title change, a hyperlink, a cursor move that hides a line)
must reach the console as visible text, never act on the terminal."""

from __future__ import annotations


def printable(text: object) -> str:
    """`text` with every non-printable character (control codes, ESC, DEL, C1 controls, newlines, format
    characters such as right-to-left overrides) written as its Python escape (\\x1b, \\n, \\u202e)."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in s)


def printable_lines(text: object) -> str:
    """printable() line by line: a multi-line summary keeps its lines, and nothing in them acts on a terminal."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


class PrintableStream:
    """The CLI's stdout and stderr: text written there may quote a file (or code a file names), so it passes
    through printable(), newlines and tabs kept for the CLI's own layout. Importing it imports nothing of
    Triton's, so the CLI can still choose the interpreter afterwards (moe_lora_fuzz.device)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        text = str(text)
        if not text.isprintable():
            text = "\t".join(map(printable_lines, text.split("\t")))
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)
