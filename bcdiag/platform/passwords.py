"""The password rules of every bcdiag account, wherever a password is set.

`bcdiag users add` and `reset-password` and the hub's change-password pages
(`bcdiag.platform.hub_pages`) apply the same three rules, one function each:

- at least `MIN_LENGTH` characters;
- not containing the account's name (case-insensitive);
- not guessable: zxcvbn's estimate reaches `MIN_SCORE`. zxcvbn matches the password
  against the lists it ships (the 30,000 most common passwords from leaked password
  sets, 30,000 English Wikipedia words, 19,000 film and TV words, 14,000 names and
  surnames: about 94,000 entries), also l33t-spoken, reversed, or with digits, dates,
  repeats, sequences and keyboard walks around them, so ``password1234`` and
  ``Password1234!`` fail as plainly as ``password`` does.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from zxcvbn import zxcvbn

from bcdiag.errors import BcdiagError

MIN_LENGTH = 12
MIN_SCORE = 3  # zxcvbn's "safely unguessable": about 10^8 guesses or more


class WeakPassword(BcdiagError):
    """A password breaks one of the rules; the message names the rule."""


def _long_enough(password: str, name: str) -> str | None:
    if len(password) >= MIN_LENGTH:
        return None
    return f"it has {len(password)} characters; at least {MIN_LENGTH} are required"


def _without_name(password: str, name: str) -> str | None:
    if name and name.casefold() in password.casefold():
        return f"it contains the user name {name!r}"
    return None


def _not_guessable(password: str, name: str) -> str | None:
    parts = [part for part in re.split(r"[._@-]", name) if len(part) > 2]
    estimate = zxcvbn(password, user_inputs=[name, *parts])
    if estimate["score"] >= MIN_SCORE:
        return None
    warning = estimate["feedback"]["warning"].rstrip(".")
    why = f" ({warning[:1].lower()}{warning[1:]})" if warning else ""
    return f"it is too easy to guess{why}; four unrelated words are harder"


RULES: tuple[Callable[[str, str], str | None], ...] = (_long_enough, _without_name, _not_guessable)


def password_problem(password: str, name: str) -> str | None:
    """Why `password` may not be the password of account `name`, or None if it may."""
    for rule in RULES:
        problem = rule(password, name)
        if problem is not None:
            return problem
    return None


def check_password(password: str, name: str) -> None:
    """Raise `WeakPassword` unless `password` may be the password of account `name`."""
    problem = password_problem(password, name)
    if problem is not None:
        raise WeakPassword(f"the password is not accepted: {problem}")
