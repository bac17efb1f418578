"""One gate for every text that becomes training data: typed in the studio or accepted from the NLU inbox.

Normalised to NFC (the same sentence typed on two phones is one example), stripped, and refused (422 with a
reason) when it holds a character that breaks a YAML line or that Rasa reads differently: control
characters (C0, DEL, C1 — U+0085 NEL is a YAML line break), line and paragraph separators (U+2028/2029),
noncharacters (U+FDD0–U+FDEF, U+xFFFE/xFFFF), surrogates, the byte-order mark, and bidirectional
overrides (text that displays differently from what it says). The file written afterwards is still checked
as a whole by Rasa's own reader (`api/studio/rasa_check.py`): this gate gives the person a clear reason first.
"""

from __future__ import annotations

import unicodedata

from api.errors import Unprocessable

MAX_CHARS = 500
_BIDI_CONTROLS = {*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C}


def refused_character(text: str) -> str | None:
    """Why `text` can't be one line of training data, naming the first bad character; None when it can."""
    for char in text:
        code = ord(char)
        category = unicodedata.category(char)
        if char in "\n\r":
            why = "a line break"
        elif category == "Cc":
            why = "a control character"
        elif category in ("Zl", "Zp"):
            why = "a line or paragraph separator"
        elif category == "Cs":
            why = "a lone surrogate"
        elif 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE:
            why = "a noncharacter"
        elif code == 0xFEFF:
            why = "a byte-order mark"
        elif code in _BIDI_CONTROLS:
            why = "a bidirectional control"
        else:
            continue
        return f"contains {why} (U+{code:04X}); examples are one line of ordinary text"
    return None


def clean_text(text: str, *, what: str = "an example", max_chars: int = MAX_CHARS) -> str:
    """The text as it will be stored (NFC, stripped), or Unprocessable (422) saying what is wrong."""
    if not isinstance(text, str):
        raise Unprocessable(f"{what} must be text", code="bad_text")
    value = unicodedata.normalize("NFC", text).strip()
    if not value:
        raise Unprocessable(f"{what} must not be blank", code="bad_text")
    if len(value) > max_chars:
        raise Unprocessable(f"{what} is longer than {max_chars} characters", code="bad_text")
    if value.startswith(("- ", "-\t")) or value == "-":
        raise Unprocessable(f"{what} must not start with '- ' (it would read as another example)", code="bad_text")
    why = refused_character(value)
    if why:
        raise Unprocessable(f"{what} {why}", code="bad_text")
    return value


def schema_text(value: str) -> str:
    """The same gate as a pydantic AfterValidator (a ValueError there is a 422 naming the field)."""
    try:
        return clean_text(value)
    except Unprocessable as exc:
        raise ValueError(exc.message) from None
