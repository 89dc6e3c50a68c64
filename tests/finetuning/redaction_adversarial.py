"""Texts of 2,000 characters built to make a pattern backtrack or a validator run often."""

from __future__ import annotations

LENGTH = 2000


def fill(unit: str, length: int = LENGTH) -> str:
    return (unit * (length // len(unit) + 1))[:length]


ADVERSARIAL: dict[str, str] = {
    "digits_then_letter": fill("8" * 80 + "a"),
    "one_digit_run": fill("7") + "x",
    "email_at_signs": fill("a@"),
    "email_dotted_domain": "x@" + fill("a.", LENGTH - 2),
    "email_local_part": fill("a.b+c-") + "@",
    "dashed_digits": fill("1-"),
    "spaced_digits": fill("1 "),
    "double_spaced_digits": fill("12  "),
    "repeated_separators": fill("1 .-/"),
    "parentheses": fill("(1)"),
    "plus_signs": fill("+1 "),
    "phone_shaped": fill("0612345678 "),
    "invalid_phone_shaped": fill("0999999999 "),
    "card_shaped": fill("4111 1111 1111 1112 "),
    "near_ibans": fill("DE89 3704 0044 0532 0130 0X "),
    "iban_prefix_and_digits": fill("DE00" + "1" * 40 + " "),
    "capitalised_words": fill("Maria "),
    "name_cues": fill("my name is Maria Lopez "),
    "sign_off_cues": fill("Thanks, Maria\n"),
    "title_cues": fill("Mr Mr Dr Ms "),
    "street_words": "12 " + fill("Baker ", LENGTH - 9) + "Street",
    "street_suffixes": fill("Hauptstraße "),
    "postcodes": fill("SW1A 1AA 10115 Berlin "),
    "letters_and_digits": fill("A1B2C3"),
    "mixed": fill("call +44 20 7946 0958, a@b, 4111-1111-1111-1111, DE89 3704 0044 0532 0130 00, Mr Smith "),
}

REALISTIC_2000 = fill(
    "Hi, my name is Maria Lopez. I ordered a lamp (order #100234) on 15.03.2024 for $129.99 and it arrived "
    "broken. Please call me on +44 7700 900123 or write to maria.lopez@example.com. My address is 42 Elm Road, "
    "Leeds LS6 2AB. Refund to GB29 NWBK 6016 1331 9268 19 please, the card was 4111 1111 1111 1111. Thanks, Maria\n"
)
