"""Languages: English is the source text; other languages are gettext catalogs (.po files under
llmsizer/locale/<lang>/LC_MESSAGES/llmsizer.po), read with a small .po reader so nothing needs
compiling. `gettext` translates one label (charts, the page); `translate_text` translates the
labels, section titles and error-message frames inside a command's finished text output, longest
phrase first, in one pass (numbers and names are left as they are). JSON is never translated:
its keys are an interface.

Text tables translate their cells while they are laid out (`output_language`, set by the CLI
around a command) and pad them by terminal cells (`display_width`), so that Chinese labels,
two cells wide per character, still line up; translating a finished table afterwards would not.
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import functools
import re
import unicodedata
from collections.abc import Iterator
from importlib import resources

LANGUAGES = ("en", "zh")
# The language of the text output being built (per thread and task: the server runs commands
# concurrently, each in its own context).
_OUTPUT_LANGUAGE: contextvars.ContextVar[str] = contextvars.ContextVar("llmsizer_output_language",
                                                                        default="en")


def parse_po(text: str) -> dict[str, str]:
    """msgid -> msgstr of a .po file (plain entries; fuzzy and untranslated ones skipped)."""
    out: dict[str, str] = {}
    msgid: list[str] | None = None
    msgstr: list[str] | None = None
    current: list[str] | None = None
    fuzzy = False

    def flush() -> None:
        if msgid is not None and msgstr is not None and not fuzzy:
            key, value = "".join(msgid), "".join(msgstr)
            if key and value:
                out[key] = value

    for raw in text.splitlines() + [""]:
        line = raw.strip()
        if not line:
            flush()
            msgid = msgstr = current = None
            fuzzy = False
        elif line.startswith("#,") and "fuzzy" in line:
            fuzzy = True
        elif line.startswith("#"):
            continue
        elif line.startswith("msgid "):
            msgid, current = [ast.literal_eval(line[6:])], None
            current = msgid
        elif line.startswith("msgstr "):
            msgstr = [ast.literal_eval(line[7:])]
            current = msgstr
        elif line.startswith('"') and current is not None:
            current.append(ast.literal_eval(line))
    return out


@functools.cache
def catalog(lang: str) -> dict[str, str]:
    """The messages of `lang` (empty for English or an unknown language)."""
    if lang not in LANGUAGES or lang == "en":
        return {}
    po = resources.files("llmsizer").joinpath("locale", lang, "LC_MESSAGES", "llmsizer.po")
    return parse_po(po.read_text("utf-8"))


def gettext(text: str, lang: str = "en") -> str:
    return catalog(lang).get(text, text)


@functools.cache
def _pattern(lang: str) -> re.Pattern[str] | None:
    phrases = sorted(catalog(lang), key=len, reverse=True)
    if not phrases:
        return None
    # a phrase matches only as whole words: not inside a longer identifier or number, nor as one
    # part of a dotted name (embedding.tokens.weight)
    return re.compile(r"(?<![\w-])(?<!\w\.)(?:" + "|".join(re.escape(p) for p in phrases)
                      + r")(?![\w])(?!\.\w)")


def translate_text(text: str, lang: str = "en") -> str:
    """`text` with every catalogued phrase replaced by its translation (one pass)."""
    pattern = _pattern(lang)
    if pattern is None:
        return text
    messages = catalog(lang)

    def translated(m: re.Match[str]) -> str:
        phrase, result = m.group(0), messages[m.group(0)]
        # a translation that keeps the term ("TTFT" -> "首词元时间 TTFT") is not translated again
        # (tables translate their cells, then the finished text is translated as a whole)
        at = result.find(phrase)
        if at >= 0 and m.string.endswith(result[:at], 0, m.start()) and m.string.startswith(
                result[at + len(phrase):], m.end()):
            return phrase
        return result

    return pattern.sub(translated, text)


def display_width(text: str) -> int:
    """Terminal cells `text` takes: East Asian Wide and Fullwidth characters two, combining marks
    and other zero-width characters none, everything else one (Unicode UAX #11, as wcwidth
    counts)."""
    cells = 0
    for c in text:
        if unicodedata.combining(c) or unicodedata.category(c) in ("Mn", "Me", "Cf"):
            continue
        cells += 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
    return cells


@contextlib.contextmanager
def output_language(lang: str) -> Iterator[None]:
    """Text output built inside this block is in `lang` (tables translate their cells)."""
    token = _OUTPUT_LANGUAGE.set(lang if lang in LANGUAGES else "en")
    try:
        yield
    finally:
        _OUTPUT_LANGUAGE.reset(token)


def output_lang() -> str:
    return _OUTPUT_LANGUAGE.get()


def pad(text: str, cells: int, align: str = "l") -> str:
    """`text` padded with spaces to `cells` terminal cells, left ('l') or right ('r') aligned."""
    fill = " " * max(0, cells - display_width(text))
    return text + fill if align == "l" else fill + text


_WIDE_OR_WORD = re.compile(r"\s*[\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f"
                           r"\uff00-\uff60\uffe0-\uffe6]|\s*[^\s\u1100-\u115f\u2e80-\ua4cf"
                           r"\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6]+")


def wrap_cells(text: str, cells: int) -> list[str]:
    """`text` folded into lines of at most `cells` terminal cells: at spaces, or between any two
    wide (CJK) characters, a word longer than a line cut where it must be."""
    cells = max(1, cells)
    lines: list[str] = []
    line, used = "", 0
    for token in _WIDE_OR_WORD.findall(" ".join(text.split())):
        if line and used + display_width(token) > cells:
            lines.append(line)
            line, used, token = "", 0, token.lstrip()
        while display_width(token) > cells:  # a word wider than the line
            head = ""
            for c in token:
                if display_width(head + c) > cells - used:
                    break
                head += c
            if not head and not line:
                head = token[0]
            lines.append(line + head)
            line, used, token = "", 0, token[len(head):]
        line += token
        used += display_width(token)
    if line or not lines:
        lines.append(line)
    return lines
