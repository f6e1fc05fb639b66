"""Personal-data scrubbing: replace emails, phone numbers, card numbers, national ID numbers,
street addresses and IP addresses with typed placeholders before anyone sees or exports a text.

``scrub(text)`` returns the scrubbed text and the kinds found (in a stable order). It errs on the
side of scrubbing: a false positive costs a labeler a placeholder, a false negative leaks data.
"""

from __future__ import annotations

import re

PLACEHOLDERS = {
    "email": "[EMAIL]",
    "ip": "[IP]",
    "card": "[CARD]",
    "id_number": "[ID_NUMBER]",
    "phone": "[PHONE]",
    "address": "[ADDRESS]",
}

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# 13-19 digits, optionally grouped by spaces or dashes; confirmed with the Luhn checksum.
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
# US SSN, UK National Insurance number, and generic "ID/passport/SSN: <alnum>" mentions.
_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}[- ](?!00)\d{2}[- ](?!0000)\d{4}\b")
_NINO = re.compile(r"\b[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_LABELED_ID = re.compile(
    r"(?i)\b(?:ssn|social security(?: number| no\.?)?|passport(?: number| no\.?)?|national id(?: number)?|"
    r"id number|driver'?s licen[cs]e(?: number| no\.?)?|tax id)\s*(?:is|:|#|no\.?)?\s*([A-Z0-9][A-Z0-9 -]{4,18}[A-Z0-9])"
)
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}(?!\w)"
    r"|(?<![\w+])\+\d{7,14}(?!\w)"
)
_STREET_SUFFIX = (
    r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|way|terrace|"
    r"parkway|pkwy|highway|hwy|square|sq|circle|cir|strasse|straße|rue)"
)
_ADDRESS = re.compile(
    rf"(?i)\b\d{{1,6}}[A-Za-z]?\s+(?:[A-Z][\w'.-]*\s+){{0,4}}{_STREET_SUFFIX}\b\.?"
    r"(?:,?\s+(?:apt|apartment|suite|unit|#)\.?\s*[\w-]+)?"
)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def scrub(text: str) -> tuple[str, list[str]]:
    """The text with personal data replaced by typed placeholders, and the kinds replaced."""
    found: list[str] = []

    def sub(pattern: re.Pattern, kind: str, s: str, check=None, group: int = 0) -> str:
        def repl(m: re.Match) -> str:
            if check is not None and not check(m.group(0)):
                return m.group(0)
            if kind not in found:
                found.append(kind)
            if group:
                start, end = m.start(group) - m.start(0), m.end(group) - m.start(0)
                whole = m.group(0)
                return whole[:start] + PLACEHOLDERS[kind] + whole[end:]
            return PLACEHOLDERS[kind]

        return pattern.sub(repl, s)

    if not text:
        return text, found
    out = sub(_EMAIL, "email", text)
    out = sub(_IPV4, "ip", out)
    out = sub(_IPV6, "ip", out, check=lambda s: "::" in s or s.count(":") >= 5)
    out = sub(_CARD, "card", out, check=lambda s: _luhn_ok(re.sub(r"\D", "", s)))
    out = sub(_LABELED_ID, "id_number", out, check=lambda s: any(c.isdigit() for c in s), group=1)
    out = sub(_SSN, "id_number", out)
    out = sub(_NINO, "id_number", out)
    out = sub(_PHONE, "phone", out, check=lambda s: len(re.sub(r"\D", "", s)) >= 7)
    out = sub(_ADDRESS, "address", out)
    order = list(PLACEHOLDERS)
    return out, sorted(found, key=order.index)
