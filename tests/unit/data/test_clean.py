"""Cleaning: NFC, whitespace rules that keep structure, and HTML stripping."""
import unicodedata

import pytest

from tunelab.data.clean import make_cleaner, normalise_whitespace, strip_html

DECOMPOSED_E = "e\u0301"  # e + combining acute accent
COMPOSED_E = "\u00e9"


# --- NFC -----------------------------------------------------------------------------------

def test_nfc_composes_decomposed_characters():
    clean = make_cleaner()
    assert clean(f"caf{DECOMPOSED_E}") == f"caf{COMPOSED_E}"
    assert len(clean(f"caf{DECOMPOSED_E}")) == 4
    assert unicodedata.is_normalized("NFC", clean("Cre\u0300me bru\u0302le\u0301e"))
    assert clean("Cre\u0300me bru\u0302le\u0301e") == "Crème brûlée"


def test_nfc_off_keeps_decomposed_characters():
    assert make_cleaner(nfc=False)(f"caf{DECOMPOSED_E}") == f"caf{DECOMPOSED_E}"


def test_nfc_leaves_compatibility_characters_alone():
    # NFC, not NFKC: ligatures and full-width forms are the author's choice
    assert make_cleaner()("\ufb01le \uff21") == "\ufb01le \uff21"


# --- whitespace ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("line one\r\nline two\r\n", "line one\nline two"),
    ("old\rmac", "old\nmac"),
    ("a\u00a0b", "a b"),
    ("narrow\u202fno-break\u3000ideographic", "narrow no-break ideographic"),
    ("zero\u200bwidth\u200d join\ufeff", "zerowidth join"),
    ("word\u2060joiner", "wordjoiner"),
    ("trailing   \nspaces\t\nend  ", "trailing\nspaces\nend"),
    ("a\n\n\nb", "a\n\nb"),
    ("a\n\n\n\n\n\nb", "a\n\nb"),
    ("a\n  \n\t\n   \nb", "a\n\nb"),  # blank lines holding spaces count as blank
    ("a\n\nb", "a\n\nb"),  # one blank line is kept
    ("one  two     three", "one two three"),
    ("a\u00a0\u00a0b", "a b"),
    ("a \u200b b", "a b"),
    ("\n\n  \n  text  \n\n\n", "text"),
])
def test_normalise_whitespace(text, expected):
    assert normalise_whitespace(text) == expected


def test_indentation_and_tabs_are_kept():
    code = "def f(x):\n    if x:\n        return  1\n\treturn 0"
    assert normalise_whitespace(code) == "def f(x):\n    if x:\n        return 1\n\treturn 0"


def test_list_indentation_is_kept():
    text = "Steps:\n  1. open\n     the file\n  2. save"
    assert normalise_whitespace(text) == text


def test_whitespace_rules_combined():
    text = "Title\u00a0 here  \r\n\r\n\r\n\r\n  - item\u200b one\r\n  - item   two  \r\n"
    assert make_cleaner()(text) == "Title here\n\n  - item one\n  - item two"


def test_whitespace_off_keeps_whitespace():
    text = "a  b\r\n\n\n\nc \u00a0"
    assert make_cleaner(whitespace=False)(text) == text


# --- HTML ----------------------------------------------------------------------------------

def test_strip_html_removes_inline_tags():
    assert strip_html('Click <a href="x">here</a> for <b>bold</b> <span class="c">text</span>') == \
        "Click here for bold text"


def test_strip_html_turns_block_tags_into_newlines():
    assert strip_html("<p>Hello</p><p>World</p>") == "\nHello\n\nWorld\n"
    assert strip_html("one<br>two<br/>three") == "one\ntwo\nthree"
    assert strip_html("<ul><li>a</li><li>b</li></ul>") == "\n\na\n\nb\n\n"


def test_strip_html_drops_script_and_style():
    html = ("<style>p { color: red; }</style><p>Keep</p>"
            "<script>var x = '<b>no</b>';</script>this<SCRIPT>alert(1)</SCRIPT>")
    assert strip_html(html) == "\nKeep\nthis"


def test_strip_html_self_closing_script_does_not_swallow_the_rest():
    assert strip_html('<script src="a.js"/>kept<hr/>too') == "kept\ntoo"


def test_strip_html_unescapes_entities():
    assert strip_html("<p>Tom &amp; Jerry &lt;3 &eacute;t&eacute; &#8364;5</p>") == "\nTom & Jerry <3 été €5\n"


def test_strip_html_drops_comments():
    assert strip_html("a<!-- hidden -->b") == "ab"


@pytest.mark.parametrize("text", ["1 < 2 and 3 > 2", "plain text", "x <= y", "a < b > c", ""])
def test_strip_html_leaves_text_without_tags_unchanged(text):
    assert strip_html(text) == text


def test_strip_html_unescapes_entities_in_text_without_tags():
    assert strip_html("Tom &amp; Jerry &lt;3") == "Tom & Jerry <3"
    assert strip_html("R&D at AT&T") == "R&D at AT&T"


def test_cleaner_with_html_then_whitespace():
    clean = make_cleaner(html=True)
    html = "<div><h1>Title</h1><p>Caf" + DECOMPOSED_E + "  &amp; bar</p><script>x()</script></div>"
    assert clean(html) == "Title\n\nCaf\u00e9 & bar"


def test_cleaner_html_off_by_default_keeps_tags():
    assert make_cleaner()("<b>bold</b> &amp; more") == "<b>bold</b> &amp; more"


# --- all off -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    f"  <p>caf{DECOMPOSED_E}</p>\r\n\n\n\n a  b\u00a0\u200b  ",
    "plain",
    "",
])
def test_cleaner_with_every_step_off_is_identity(text):
    assert make_cleaner(nfc=False, whitespace=False, html=False)(text) == text


def test_ascii_text_that_needs_nothing_is_unchanged():
    text = "Hello, world.\n\n    indented line\nlast"
    assert make_cleaner()(text) == text
