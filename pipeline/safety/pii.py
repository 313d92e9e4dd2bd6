"""Personal data out of logs and stored transcripts: e-mail addresses, phone numbers and
payment card numbers (Luhn-checked), replaced by [email], [phone], [card]."""

from __future__ import annotations

import logging
import re

_EMAIL = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+")
_CARD = re.compile(r"(?<![\d\w])(?:\d[ \-]?){12,18}\d(?![\d\w])")
_PHONE = re.compile(r"(?<![\d\w])\+?(?:\(?\d[\d\s().\-]{5,}\d)(?![\d\w])")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def redact_pii(text: str) -> str:
    text = _EMAIL.sub("[email]", text)

    def card(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        return "[card]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group(0)

    text = _CARD.sub(card, text)

    def phone(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        return "[phone]" if 7 <= len(digits) <= 15 else match.group(0)

    return _PHONE.sub(phone, text)


class PiiRedactingFilter(logging.Filter):
    """On a handler: every record's message is redacted before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_pii(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
