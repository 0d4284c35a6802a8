import pytest

from llmsizer.errors import SpecError
from llmsizer.units import format_bytes, format_count, parse_bytes, parse_count


@pytest.mark.parametrize("text,value", [("15T", 15e12), ("6.4M", 6.4e6), ("1.2e3", 1200),
                                        ("4096", 4096), ("7B", 7e9), ("1_000", 1000)])
def test_parse_count(text, value):
    assert parse_count(text) == pytest.approx(value)


@pytest.mark.parametrize("text,value", [("80GiB", 80 * 2**30), ("80 GB", 80e9), ("512MiB", 2**29),
                                        ("1e9", 1e9)])
def test_parse_bytes_keeps_binary_and_decimal_apart(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("bad", ["abc", "15X", "-3", ""])
def test_parse_count_rejects_garbage(bad):
    with pytest.raises(SpecError, match="tokens="):
        parse_count(bad, field="tokens")


def test_format_bytes_names_both_units():
    assert format_bytes(80 * 2**30) == "80.00 GiB (85.90 GB)"


def test_format_count():
    assert format_count(6_738_415_616) == "6.74B"
    # rounding up past a suffix boundary takes the next suffix (gemma-3-1b: 999.9M params)
    assert format_count(999_885_952) == "1B"
    assert format_count(999_499) == "999K"
