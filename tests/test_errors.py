"""``one_line``: the one way an exception becomes one line of a message or a record."""

from __future__ import annotations

import pytest

from softening.errors import InputError, one_line

MESSAGE = "  first  line \n\n second\tline\n third line\n  last line  \n"


def test_all_lines_with_white_space_collapsed_is_the_default():
    assert one_line(ValueError(MESSAGE)) == "first line second line third line last line"


def test_first_and_last_lines_are_kept_as_they_are():
    assert one_line(ValueError(MESSAGE), "first") == "first  line "
    assert one_line(ValueError(MESSAGE), "last") == "  last line"
    assert one_line(ValueError(MESSAGE), "last", typed=True) == "ValueError:   last line"


def test_the_first_lines_skip_blank_ones_and_join_with_spaces():
    assert one_line(OSError("a\n\nb\nc\nd"), 3, typed=True) == "OSError: a b c"
    assert one_line(ValueError("a\n\nb\nc\nd"), 3) == "a b c"


def test_an_empty_message_gives_the_type_name():
    for lines in ("all", "first", "last", 3):
        assert one_line(InputError("  \n "), lines) == "InputError"
        assert one_line(InputError(), lines, typed=True) == "InputError"


def test_a_long_text_is_cut_with_an_ellipsis():
    text = one_line(ValueError("x" * 300), limit=200)
    assert len(text) == 200 and text.endswith("...") and text.startswith("x" * 197)
    assert one_line(ValueError("x" * 200), limit=200) == "x" * 200
    typed = one_line(ValueError("y" * 600), 3, typed=True, limit=500)
    assert len(typed) == 500 and typed.startswith("ValueError: y") and typed.endswith("...")


def test_unknown_lines_are_refused():
    with pytest.raises(ValueError, match="lines"):
        one_line(ValueError("a"), "middle")
    with pytest.raises(ValueError, match="lines"):
        one_line(ValueError("a"), 0)
