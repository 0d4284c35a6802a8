"""Languages: English is the source text; other languages are gettext catalogs (.po files under
llmsizer/locale/<lang>/LC_MESSAGES/llmsizer.po), read with a small .po reader so nothing needs
compiling. `gettext` translates one label (charts, the page); `translate_text` translates the
labels, section titles and error-message frames inside a command's finished text output, longest
phrase first, in one pass (numbers and names are left as they are). JSON is never translated:
its keys are an interface.

Text tables translate their cells while they are laid out (`output_language`, set by the CLI
around a command) and pad them by terminal cells (`display_width`), so that Chinese labels,
two cells wide per character, still line up; translating a finished table afterwards would not.

A word can be right in one place and wrong in another ("hidden" is the hidden size as a column
header, overlapped time in prose; "no" is a table cell, not every "no" in a sentence). Such words
carry a gettext `msgctxt`: `label` entries translate a whole label (a table cell, a chart or page
label) and nothing inside prose; other contexts (`bound`, …) are asked for by name where the
renderer knows what the word means (`pgettext`). Entries without a context are phrases, replaced
wherever they occur as whole words.
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
    """msgid -> msgstr of a .po file's entries without a msgctxt (plain entries; fuzzy and
    untranslated ones skipped)."""
    return {k: v for (ctx, k), v in parse_po_contexts(text).items() if ctx is None}


def parse_po_contexts(text: str) -> dict[tuple[str | None, str], str]:
    """(msgctxt or None, msgid) -> msgstr of every translated, non-fuzzy entry of a .po file."""
    out: dict[tuple[str | None, str], str] = {}
    fields: dict[str, list[str]] = {}
    current: list[str] | None = None
    fuzzy = False

    def flush() -> None:
        if "msgid" in fields and "msgstr" in fields and not fuzzy:
            ctx = "".join(fields["msgctxt"]) if "msgctxt" in fields else None
            key, value = "".join(fields["msgid"]), "".join(fields["msgstr"])
            if key and value:
                out[(ctx, key)] = value

    for raw in text.splitlines() + [""]:
        line = raw.strip()
        if not line:
            flush()
            fields, current, fuzzy = {}, None, False
        elif line.startswith("#,") and "fuzzy" in line:
            fuzzy = True
        elif line.startswith("#"):
            continue
        elif line.startswith(("msgctxt ", "msgid ", "msgstr ")):
            if line.startswith("msgctxt ") and "msgid" in fields:  # a new entry, no blank line
                flush()
                fields, fuzzy = {}, False
            name, _, value = line.partition(" ")
            current = fields[name] = [ast.literal_eval(value)]
        elif line.startswith('"') and current is not None:
            current.append(ast.literal_eval(line))
    return out


@functools.cache
def _entries(lang: str) -> dict[tuple[str | None, str], str]:
    if lang not in LANGUAGES or lang == "en":
        return {}
    po = resources.files("llmsizer").joinpath("locale", lang, "LC_MESSAGES", "llmsizer.po")
    return parse_po_contexts(po.read_text("utf-8"))


@functools.cache
def catalog(lang: str) -> dict[str, str]:
    """The phrases of `lang`, translated wherever they occur (empty for English or an unknown
    language)."""
    return {k: v for (ctx, k), v in _entries(lang).items() if ctx is None}


@functools.cache
def labels(lang: str) -> dict[str, str]:
    """What a whole label translates to: the phrases, overridden by the `label` context (what the
    page and the charts look their labels up in)."""
    out = catalog(lang).copy()
    out.update({k: v for (ctx, k), v in _entries(lang).items() if ctx == "label"})
    return out


def gettext(text: str, lang: str = "en") -> str:
    """`text` as a whole label in `lang`."""
    return labels(lang).get(text, text)


def pgettext(context: str, text: str, lang: str | None = None) -> str:
    """`text` in `context` (a msgctxt: `label`, `bound`, …), in `lang` (default: the output
    language); a phrase of the catalog if the context has no entry for it."""
    lang = output_lang() if lang is None else lang
    entries = _entries(lang)
    return entries.get((context, text)) or entries.get((None, text)) or text


def translate_cell(text: str, lang: str | None = None) -> str:
    """A table cell or other whole label in `lang` (default: the output language): the label's
    own translation if it has one, else its phrases translated."""
    lang = output_lang() if lang is None else lang
    whole = _entries(lang).get(("label", text))
    return whole if whole is not None else translate_text(text, lang)


@functools.cache
def _pattern(lang: str) -> re.Pattern[str] | None:
    phrases = sorted(catalog(lang), key=len, reverse=True)
    if not phrases:
        return None
    # a phrase matches only as whole words: not inside a longer identifier or number, nor as one
    # part of a dotted or hyphenated name (embedding.tokens.weight, compute-bound); a command-line
    # flag and its value ("--offload optimizer,params") are matched first and kept: what a user
    # types must stay typeable
    return re.compile(r"(?P<flag>(?<![\w-])--[A-Za-z][\w-]*(?:[ =](?!-)[^\s;()]+)?)|"
                      r"(?<![\w-])(?<!\w\.)(?:" + "|".join(re.escape(p) for p in phrases)
                      + r")(?![\w-])(?!\.\w)")


def translate_text(text: str, lang: str = "en") -> str:
    """`text` with every catalogued phrase replaced by its translation (one pass)."""
    pattern = _pattern(lang)
    if pattern is None:
        return text
    messages = catalog(lang)

    def translated(m: re.Match[str]) -> str:
        if m.group("flag"):
            return m.group(0)
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


# what may not begin a line: closing brackets and CJK punctuation stay with what they close
_NO_BREAK_BEFORE = re.compile(r"[)\]}%,.;:!?\uff09\uff0c\u3002\u3001\uff1b\uff1a\uff01\uff1f"
                              r"\u300d\u300f\u300b\u3011]")


def _tokens(text: str) -> list[str]:
    """The pieces a line may break between: words (with the spaces before them) and single wide
    characters; a piece that may not begin a line is glued to the one before it."""
    out: list[str] = []
    for token in _WIDE_OR_WORD.findall(" ".join(text.split())):
        if out and _NO_BREAK_BEFORE.match(token):
            out[-1] += token
        else:
            out.append(token)
    return out


def wrap_cells(text: str, cells: int, later_cells: int | None = None) -> list[str]:
    """`text` folded into lines of at most `cells` terminal cells (`later_cells` for every line
    after the first, if given): at spaces, or between any two wide (CJK) characters, a word longer
    than a line cut where it must be."""
    first = max(1, cells)
    later = first if later_cells is None else max(1, later_cells)
    lines: list[str] = []
    line, used = "", 0

    def room() -> int:
        return first if not lines else later

    for token in _tokens(text):
        if line and used + display_width(token) > room():
            lines.append(line)
            line, used, token = "", 0, token.lstrip()
        while display_width(token) > room() - used:  # a word wider than the line
            head = ""
            for c in token:
                if display_width(head + c) > room() - used:
                    break
                head += c
            if not head and not line:
                head = token[0]
            if not head:  # nothing fits after what the line holds: start a new line
                lines.append(line)
                line, used, token = "", 0, token.lstrip()
                continue
            lines.append(line + head)
            line, used, token = "", 0, token[len(head):]
        line += token
        used += display_width(token)
    if line or not lines:
        lines.append(line)
    return lines
