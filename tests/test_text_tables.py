"""Text tables line up in terminal cells in every language: a Chinese character takes two cells,
a combining mark none (Unicode UAX #11)."""

from __future__ import annotations

import pytest

from llmsizer.cli import main
from llmsizer.i18n import (
    catalog,
    display_width,
    output_language,
    translate_text,
    wrap_cells,
)
from llmsizer.report import table


def test_display_width_counts_terminal_cells():
    assert display_width("weights") == 7
    assert display_width("合计") == 4  # CJK ideographs: East Asian Wide
    assert display_width("ＡＢ") == 4  # fullwidth forms
    assert display_width("e\u0301") == 1  # e + combining acute accent
    assert display_width("（含 fp32）") == 2 + 2 + 1 + 4 + 2


def test_english_tables_are_padded_as_before():
    text = table([("weights", "12.5 GiB"), ("optimizer", "9 GiB")], ["part", "bytes"], width=80)
    assert text.splitlines() == ["part          bytes",
                                 "---------  --------",
                                 "weights    12.5 GiB",
                                 "optimizer     9 GiB"]


def column_spans(rule):
    """(first cell, last cell + 1) of each run of dashes in a table's rule line."""
    spans, start = [], None
    for i, c in enumerate(rule + " "):
        if c == "-" and start is None:
            start = i
        elif c != "-" and start is not None:
            spans.append((start, i))
            start = None
    return spans


def cell_at(line, position):
    """The character covering terminal cell `position` of `line` ('' past its end)."""
    at = 0
    for c in line:
        w = display_width(c)
        if at <= position < at + max(w, 1):
            return c
        at += w
    return ""


def assert_aligned(block, right_aligned_last=True):
    """Every row leaves the gaps between the rule's dash runs blank and, with a right-aligned
    last column, ends exactly where the rule ends."""
    header, rule, *rows = block
    spans = column_spans(rule)
    gaps = [p for (_, end), (start, _) in zip(spans, spans[1:], strict=False)
            for p in range(end, start)]
    for line in [header, *rows]:
        assert all(cell_at(line, p) in (" ", "") for p in gaps), (line, rule)
        if right_aligned_last:
            assert display_width(line) == display_width(rule), (line, rule)


def test_a_chinese_table_lines_up_in_cells():
    rows = [("权重", "12.55 GiB"), ("优化器状态（含 fp32 主权重）", "9.41 GiB"),
            ("other: framework overhead", "1.00 GiB")]
    with output_language("zh"):
        text = table(rows, ["", "bytes"], width=80)
    lines = text.splitlines()
    assert len({display_width(line) for line in lines}) == 1
    assert_aligned(lines)
    assert "其他: 框架开销" in text  # cells are translated before they are measured


def test_chinese_text_columns_wrap_within_their_cells():
    rows = [("流水线阶段" * 6, "1"), ("short", "2")]
    with output_language("zh"):
        lines = table(rows, ["name", "n"], width=30).splitlines()
    assert all(display_width(line) <= 30 for line in lines)
    assert_aligned(lines[:2] + lines[2:], right_aligned_last=False)


@pytest.mark.parametrize("argv", [
    ["params", "llama-2-7b"],
    ["train", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--zero", "1", "--global-batch",
     "128"],
    ["models"],
])
def test_every_table_of_a_zh_command_lines_up(argv, capsys, monkeypatch):
    import llmsizer.report
    import llmsizer.report_training

    drawn = []

    def spy(*args, **kwargs):
        drawn.append(table(*args, **kwargs))
        return drawn[-1]

    for module in (llmsizer.report, llmsizer.report_training):
        monkeypatch.setattr(module, "table", spy)
    monkeypatch.setenv("COLUMNS", "200")
    assert main([*argv, "--lang", "zh"]) in (0, 3)
    out = capsys.readouterr().out
    assert drawn and any(display_width(c) == 2 for c in "".join(drawn))
    for text in drawn:
        assert text in out  # printed as laid out: translating the whole output changed nothing
        lines = text.splitlines()
        assert_aligned(lines, right_aligned_last=False)


def test_translating_twice_changes_nothing():
    # tables translate their cells, then the finished output is translated as a whole
    for english, chinese in catalog("zh").items():
        assert translate_text(chinese, "zh") == chinese, english


def test_dotted_parameter_names_are_not_translated():
    assert translate_text("embedding.tokens.weight: tokens", "zh") == \
        "embedding.tokens.weight: " + catalog("zh")["tokens"]


def test_wrap_cells_never_exceeds_the_width():
    text = "每个阶段都按最慢阶段计时 and then some English words, averyveryverylongword"
    lines = wrap_cells(text, 12)
    assert all(display_width(line) <= 12 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
