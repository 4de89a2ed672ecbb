"""User errors: one sentence naming what went wrong, where, and how to fix it.

The CLI prints a TunelabError without a traceback and exits with code 2; anything else that
escapes is a bug in tunelab and keeps its traceback.
"""
from __future__ import annotations


class TunelabError(Exception):
    exit_code = 2

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        sentence = f"{self.where}: {self.what}" if self.where else self.what
        if self.fix:
            sentence = f"{sentence}; {self.fix}"
        return sentence.rstrip(".") + "."
