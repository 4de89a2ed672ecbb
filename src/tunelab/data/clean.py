"""Cleaning: Unicode NFC, whitespace normalisation, optional HTML stripping.

Whitespace rules keep indentation and single blank lines (code and lists in chat data depend on
them) and remove what only hurts: CRLF, odd Unicode spaces, zero-width characters, trailing
spaces, runs of blank lines, and leading/trailing blank space.
"""
from __future__ import annotations

import re
import unicodedata
from html import unescape
from html.parser import HTMLParser

ODD_SPACES = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
ZERO_WIDTH = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
TRAILING_SPACE = re.compile(r"[ \t]+(?=\n)")
INNER_SPACE_RUN = re.compile(r"(?<=\S) {2,}(?=\S)")
BLANK_LINE_RUN = re.compile(r"\n{3,}")
LOOKS_LIKE_HTML = re.compile(r"<(?:[a-zA-Z][a-zA-Z0-9]*\b[^>]*|/[a-zA-Z][a-zA-Z0-9]*\s*|!--.*?--)>", re.S)
BLOCK_TAGS = {"p", "div", "br", "li", "ul", "ol", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6",
              "section", "article", "blockquote", "pre", "hr"}


def normalise_whitespace(text: str) -> str:
    # each rule runs only when the plain substring test says it can match: most texts need none
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii():
        text = ZERO_WIDTH.sub("", ODD_SPACES.sub(" ", text))
    if "\n" in text:
        text = TRAILING_SPACE.sub("", text)
    if "  " in text:
        text = INNER_SPACE_RUN.sub(" ", text)
    if "\n\n\n" in text:
        text = BLANK_LINE_RUN.sub("\n\n", text)
    return text.strip()


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag, attrs):
        # a self-closing <br/> is one line break, as <br> is (the default would add two)
        if tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def strip_html(text: str) -> str:
    if not LOOKS_LIKE_HTML.search(text):
        return unescape(text) if "&" in text else text
    extractor = _TextExtractor()
    extractor.feed(text)
    extractor.close()
    return "".join(extractor.parts)


def make_cleaner(nfc: bool = True, whitespace: bool = True, html: bool = False):
    """A str -> str function applying the chosen steps in a fixed order."""
    def clean(text: str) -> str:
        if html:
            text = strip_html(text)
        if nfc and not text.isascii():
            text = unicodedata.normalize("NFC", text)
        if whitespace:
            text = normalise_whitespace(text)
        return text
    return clean
