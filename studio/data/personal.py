"""Personal data in text: e-mail addresses, phone numbers, card numbers and IBANs, found and masked offline.

Cards must pass the Luhn check and IBANs their mod-97 check digits, so order numbers and dates are not flagged;
phone numbers are what the phonenumbers library calls valid for one of a few common regions (or any number
written with +country code), leaving out toll-free and other company lines. Nothing is sent anywhere.
"""

from __future__ import annotations

import re

# kind -> (what we call it, the mask written in its place)
KINDS = {"email": ("e-mail address", "[EMAIL]"), "phone": ("phone number", "[PHONE]"),
         "card": ("card number", "[CARD]"), "iban": ("IBAN", "[IBAN]")}
# National numbers (without +) are tried in these regions in turn; + numbers are valid in any of them.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "AU", "BR")

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\w-])[2-6](?:[ -]?\d){12,18}(?![\d-])")  # issuers' numbers start with 2 to 6
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
# 7+ digits close together: worth asking phonenumbers; every card number and IBAN has such a run too
_PHONE_HINT = re.compile(r"\d(?:[\s().\-/]{0,2}\d){6,}")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to 10..35, the number mod 97 is 1."""
    if not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def find(text: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of each piece of personal data in text, in order, not overlapping."""
    has_at, digits = "@" in text, _PHONE_HINT.search(text)
    if not has_at and not digits:  # one scan: cards, IBANs and phones all hold 7+ digits
        return []
    spans: list[tuple[int, int, str]] = []

    def free(a: int, b: int) -> bool:
        return all(b <= s or a >= e for s, e, _ in spans)

    if has_at:
        spans += [(m.start(), m.end(), "email") for m in _EMAIL.finditer(text)]
    for m in _IBAN.finditer(text):
        if free(m.start(), m.end()) and iban_ok(m.group().replace(" ", "")):
            spans.append((m.start(), m.end(), "iban"))
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits) and free(m.start(), m.end()):
            spans.append((m.start(), m.end(), "card"))
    if digits:
        spans += [s for s in _phones(text) if free(s[0], s[1])]
    return sorted(spans)


def _phones(text: str) -> list[tuple[int, int, str]]:
    import phonenumbers
    from phonenumbers import PhoneNumberType

    # A company's own hotline (toll-free, shared-cost, premium) is not a person's number: a support answer may
    # rightly give it.
    business = {PhoneNumberType.TOLL_FREE, PhoneNumberType.SHARED_COST, PhoneNumberType.PREMIUM_RATE,
                PhoneNumberType.UAN}
    for region in PHONE_REGIONS:
        matches = list(phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID))
        if matches:
            return [(m.start, m.end, "phone") for m in matches if phonenumbers.number_type(m.number) not in business]
    return []


def mask(text: str) -> str:
    """text with each piece of personal data replaced by its mask: "mail me at a@b.org" -> "mail me at [EMAIL]"."""
    out, pos = [], 0
    for start, end, kind in find(text):
        out += [text[pos:start], KINDS[kind][1]]
        pos = end
    return "".join(out) + text[pos:]
