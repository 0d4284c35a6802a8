"""Text tables line up in terminal cells in every language: a Chinese character takes two cells,
a combining mark none (Unicode UAX #11)."""

from __future__ import annotations

import pytest

from llmsizer.cli import main
from llmsizer.i18n import (
    catalog,
    display_width,
    output_language,
    translate_cell,
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


# -- every command's text in Chinese ----------------------------------------------------------------

ZH_COMMANDS = {
    "train": ["train", "llama-2-7b", "--gpu", "a100", "--gpus", "8", "--zero", "1",
              "--global-batch", "128", "--tokens", "2T", "--explain"],
    "train-pp": ["train", "llama-2-70b", "--gpu", "h100", "--gpus", "64", "--tp", "8", "--pp", "2",
                 "--sequence-parallel", "--recompute", "selective", "--zero", "1",
                 "--global-batch", "256"],
    "infer": ["infer", "llama-3-8b", "--gpu", "h100", "--batch", "32", "--prompt", "2048",
              "--output", "256", "--sweep"],
    "finetune": ["finetune", "llama-3-8b", "--gpu", "rtx4090", "--method", "qlora", "--recompute",
                 "full", "--tokens", "100M"],
    "finetune-offload": ["finetune", "llama-3.1-8b", "--gpu", "a100-80gb", "--method", "full",
                         "--zero", "2", "--offload", "optimizer", "--recompute", "full",
                         "--micro-batch", "4", "--global-batch", "64", "--tokens", "100M"],
    "finetune-no-fit": ["finetune", "llama-3-70b", "--gpu", "rtx4090", "--method", "full"],
    "plan": ["plan", "llama-2-7b", "--gpu", "a100", "--gpus", "16", "--global-batch", "64",
             "--seq", "4096"],
    "simulate": ["simulate", "llama-3.1-8b", "--gpu", "h100", "--qps", "10", "--requests", "100"],
}


def spy_on_layouts(monkeypatch):
    """Record every table() and columns() the command lays out, wherever it was imported."""
    import importlib
    import sys

    import llmsizer.report as report

    for name in ("cli_train", "cli_infer", "cli_finetune", "cli_plan", "cli_simulate",
                 "report_training", "report_inference"):
        importlib.import_module(f"llmsizer.{name}")
    real_table, real_columns = report.table, report.columns
    tables, blocks = [], []

    def table_spy(*args, **kwargs):
        tables.append(real_table(*args, **kwargs))
        return tables[-1]

    def columns_spy(rows, align, *args, **kwargs):
        lines = real_columns(rows, align, *args, **kwargs)
        blocks.append((list(rows), align, lines))
        return lines

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("llmsizer"):
            if getattr(module, "table", None) is real_table:
                monkeypatch.setattr(module, "table", table_spy)
            if getattr(module, "columns", None) is real_columns:
                monkeypatch.setattr(module, "columns", columns_spy)
    return tables, blocks


def cell_span(line, text):
    """(first cell, last cell + 1) that `text` takes inside `line`, in terminal cells."""
    at = line.index(text)
    start = display_width(line[:at])
    return start, start + display_width(text)


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("name", list(ZH_COMMANDS))
def test_chinese_output_fits_the_width_and_its_columns_line_up(name, width, capsys, monkeypatch):
    tables, blocks = spy_on_layouts(monkeypatch)
    monkeypatch.setenv("COLUMNS", str(width))
    assert main([*ZH_COMMANDS[name], "--lang", "zh"]) in (0, 3)
    out = capsys.readouterr().out
    assert any(display_width(c) == 2 for c in out)  # it is Chinese
    for line in out.splitlines():
        assert display_width(line) <= width, line
    assert tables or blocks
    for text in tables:
        assert text in out  # printed as laid out
        assert_aligned(text.splitlines(), right_aligned_last=False)
    for rows, align, lines in blocks:
        assert "\n".join(lines) in out
        if len(lines) != len(rows):
            continue  # a cell wrapped: its continuation lines hold no numbers to line up
        for col, how in enumerate(align):
            # find each row's cell (as printed: translated) in its line and compare where it
            # starts (left-aligned column) or ends (right-aligned) in terminal cells
            spans = []
            for row, line in zip(rows, lines, strict=True):
                cell = translate_cell(str(row[col]), "zh") if col < len(row) else ""
                if cell and col > 0:  # later columns: search after the first cell
                    first = translate_cell(str(row[0]), "zh")
                    at = line.index(first) + len(first)
                    spans.append(tuple(display_width(line[:at]) + e
                                       for e in cell_span(line[at:], cell)))
                elif cell:
                    spans.append(cell_span(line, cell))
            edges = {span[0] if how == "l" else span[1] for span in spans}
            assert len(edges) <= 1, (name, col, lines)


def test_fit_width_folds_by_terminal_cells():
    from llmsizer.report import fit_width

    line = "  " + "显存" * 30  # 120 cells
    folded = fit_width(line, 40).splitlines()
    assert all(display_width(x) <= 40 for x in folded)
    assert display_width(folded[0]) == 40  # 2 + 19 characters of 2 cells: full
    assert all(x.startswith("      ") and x[6] in "显存" for x in folded[1:])  # indent + 4
    assert "".join(x.strip() for x in folded) == "显存" * 30
    assert fit_width("weights  12.5 GiB", 40) == "weights  12.5 GiB"  # short lines untouched


def test_closing_brackets_never_begin_a_folded_line():
    lines = wrap_cells("（不分片，不含激活）" + "(不分片，不含激活)", 9)
    assert not any(line[0] in ")），" for line in lines)


def test_flags_and_their_values_are_never_translated():
    assert translate_text("--offload optimizer,params", "zh") == "--offload optimizer,params"
    assert translate_text("offload optimizer", "zh") == "offload " + catalog("zh")["optimizer"]


def test_context_words_translate_as_labels_only():
    from llmsizer.i18n import gettext, pgettext, translate_cell

    # "hidden" is the hidden size only as the models table's column header
    assert translate_cell("hidden", "zh") == "隐藏维度" == gettext("hidden", "zh")
    assert "隐藏" not in translate_text("the framework hides the rest: hidden 2 ms", "zh")
    # "no" is a table cell, not every "no" of a sentence
    assert translate_cell("no", "zh") == "否"
    assert "否" not in translate_text("20·P (no sharding, no activations)", "zh")
    # memory as what bounds a pass is memory traffic, not memory capacity
    assert pgettext("bound", "memory", "zh") == "访存"
    assert pgettext("bound", "memory", "zh") != translate_text("memory", "zh")
    # the optimizer's states (a memory part) vs its update (a step-time part)
    assert gettext("optimizer", "zh") != pgettext("step time", "optimizer", "zh")
    assert "compute-bound" not in translate_text("decode turns compute-bound", "zh")
    assert "计算-" not in translate_text("compute-bound", "zh")


def test_framework_and_model_names_stay_untranslated(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main([*ZH_COMMANDS["train"], "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    for name in ("megatron", "Megatron-LM", "llama-2-7b", "ZeRO-1", "DeepSpeed", "Korthikanti"):
        assert name in out
    line = next(x for x in out.splitlines() if "→" in x)
    assert "未掩盖" in line and "exposed" not in line  # the new explain words are translated


def test_finetune_memory_block_lines_up_in_chinese(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert main([*ZH_COMMANDS["finetune"], "--lang", "zh"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = lines.index(translate_text("memory per device", "zh"))
    block = lines[at + 1:at + 7]  # weights … total: byte counts, right-aligned
    assert all(line.startswith("  ") for line in block)
    assert len({display_width(line) for line in block}) == 1, block


def test_training_references_line_up_in_chinese(capsys, monkeypatch):
    import re

    monkeypatch.setenv("COLUMNS", "160")
    assert main([*ZH_COMMANDS["train"], "--lang", "zh"]) == 0
    out = capsys.readouterr().out.splitlines()
    for title, number in (("memory references:", r"\d[\d.,]* [KMGT]?i?B \([^)]*\)"),
                          ("FLOPs references:", r"\d[\d.,]* [KMGTPE]?FLOP")):
        at = out.index(translate_text(title, "zh"))
        block = out[at + 1:out.index("", at)]
        ends = {display_width(line[:re.search(number, line).end()]) for line in block}
        percents = {display_width(line[:re.search(r"[+-]\d+\.\d%", line).end()])
                    for line in block if re.search(r"[+-]\d+\.\d%", line)}
        assert len(ends) == 1 and len(percents) == 1, block
