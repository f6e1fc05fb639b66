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

# Emails are found by ``_email_spans`` (linear time); this is the pattern it implements, kept as
# the reference the tests compare it with. Run by ``re`` it is quadratic: every position of a
# long run like "a.a.a.a..." starts a match attempt that scans to the end of the run.
EMAIL_REFERENCE = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
_DOMAIN_RUN = re.compile(r"[A-Za-z0-9.-]*")
_LETTER_RUN = re.compile(r"[A-Za-z]*")
# An '@' whose run of domain characters holds a '.' and two letters: the only ones worth a look.
# Linear: the lazy scan of one '@' stops at the end of its domain run, before the next '@'.
_AT_WITH_DOMAIN = re.compile(r"@(?=[A-Za-z0-9.-]*?\.[A-Za-z]{2})")
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# 13-19 digits, optionally grouped by spaces or dashes; confirmed with the Luhn checksum.
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
# US SSN, UK National Insurance number, and generic "ID/passport/SSN: <alnum>" mentions.
_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}[- ](?!00)\d{2}[- ](?!0000)\d{4}\b")
_NINO = re.compile(r"\b[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_LABELED_ID = re.compile(
    r"(?i)\b(?:ssn|social security(?: number| no\.?)?|passport(?: number| no\.?)?|national id(?: number)?|"
    r"id number|driver'?s licen[cs]e(?: number| no\.?)?|tax id)\s{0,20}(?:is|:|#|no\.?)?\s{0,20}([A-Z0-9][A-Z0-9 -]{4,18}[A-Z0-9])"
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


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"  # what \\w matches in a str pattern


def _email_spans(text: str) -> list[tuple[int, int]]:
    """The spans ``EMAIL_REFERENCE.finditer(text)`` finds, in time linear in the text.

    A match holds exactly one '@' (neither part allows one), so each '@' is tried once: its local
    part is the run of local characters before it (not reaching back into the previous match),
    starting at the first word boundary of that run; its domain is the run of domain characters
    after it, ending at the last '.' followed by two or more letters and a word boundary. The
    runs before and after successive '@'s do not overlap, so every character is looked at a
    bounded number of times."""
    spans: list[tuple[int, int]] = []
    n, lo = len(text), 0
    for candidate in _AT_WITH_DOMAIN.finditer(text):
        at = candidate.start()
        start = at
        while start > lo and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        s = start  # the first word boundary (\\b) in the local run
        while s < at and (s > 0 and _is_word(text[s - 1])) == _is_word(text[s]):
            s += 1
        if s < at:  # a non-empty local part starts at a word boundary
            run_end = _DOMAIN_RUN.match(text, at + 1).end()
            dot = text.rfind(".", at + 2, run_end)
            while dot != -1:
                letters_end = _LETTER_RUN.match(text, dot + 1).end()
                if letters_end - dot - 1 >= 2 and (letters_end == n or not _is_word(text[letters_end])):
                    spans.append((s, letters_end))
                    lo = letters_end
                    break
                dot = text.rfind(".", at + 2, dot)
    return spans


def _sub_emails(text: str, found: list[str]) -> str:
    spans = _email_spans(text)
    if not spans:
        return text
    if "email" not in found:
        found.append("email")
    parts, last = [], 0
    for start, end in spans:
        parts.append(text[last:start])
        parts.append(PLACEHOLDERS["email"])
        last = end
    parts.append(text[last:])
    return "".join(parts)


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
    out = _sub_emails(text, found)
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
