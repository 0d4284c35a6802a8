"""Languages: English is the source text; other languages are gettext catalogs (.po files under
llmsizer/locale/<lang>/LC_MESSAGES/llmsizer.po), read with a small .po reader so nothing needs
compiling. `gettext` translates one label (charts, the page); `translate_text` translates the
labels, section titles and error-message frames inside a command's finished text output, longest
phrase first, in one pass (numbers and names are left as they are). JSON is never translated:
its keys are an interface.
"""

from __future__ import annotations

import ast
import functools
import re
import unicodedata
from importlib import resources

LANGUAGES = ("en", "zh")


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
    # a phrase matches only as whole words: not inside a longer identifier or number
    return re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(p) for p in phrases) + r")(?![\w])")


def translate_text(text: str, lang: str = "en") -> str:
    """`text` with every catalogued phrase replaced by its translation (one pass)."""
    pattern = _pattern(lang)
    if pattern is None:
        return text
    messages = catalog(lang)
    return pattern.sub(lambda m: messages[m.group(0)], text)


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
