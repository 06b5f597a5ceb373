"""The one table renderer: words to the left, numbers to the right, a title when given."""

from __future__ import annotations

from fleet.results.tables import format_table


def test_numbers_go_right_and_words_left() -> None:
    table = format_table(["name", "p50 ms"], [["pi5-a", "2.500"], ["orin-1", "12.000"]], "title")
    assert table.splitlines() == [
        "title",
        "name    p50 ms",
        "pi5-a    2.500",
        "orin-1  12.000",
    ]


def test_a_column_with_one_word_is_a_word_column() -> None:
    table = format_table(["p50", "x"], [["1.0", "a"], ["timeout", "b"]])
    assert table.splitlines() == ["p50      x", "1.0      a", "timeout  b"]


def test_missing_values_do_not_turn_a_number_column_into_words() -> None:
    assert format_table(["p50"], [["-"], ["10.5"]]).splitlines() == [" p50", "   -", "10.5"]


def test_no_rows_says_so_under_the_title() -> None:
    assert format_table(["a", "b"], [], "runs in x") == "runs in x\n(nothing yet)"
