"""Personal data out of training text: e-mail addresses, IBANs, national identifiers, card numbers,
phone numbers, street addresses and postcodes, names given with a cue, then the admin's patterns.

Every pattern here is compiled with RE2, whose matching time is linear in the text, so no message
can hang a dataset build; what a pattern finds is then confirmed by a well-kept library where one
exists (``phonenumbers`` for phone numbers, ``python-stdnum`` for IBANs and national identifiers),
on candidates of bounded length. Stages run in order on the text the previous stage left, each
replacing what it finds with a token the later stages cannot match. Limits and figures:
docs/redaction.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import phonenumbers
import re2
from stdnum import iban
from stdnum.ca import sin
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale
from stdnum.nl import bsn
from stdnum.us import ssn

logger = logging.getLogger(__name__)

EMAIL_TOKEN = "[email]"
CARD_TOKEN = "[card]"
PHONE_TOKEN = "[phone]"
IBAN_TOKEN = "[iban]"
ID_TOKEN = "[id]"
ADDRESS_TOKEN = "[address]"
POSTCODE_TOKEN = "[postcode]"
NAME_TOKEN = "[name]"


class Regex(Protocol):
    def sub(self, repl: str | Callable[..., str], text: str, count: int = 0) -> str: ...


@dataclass(frozen=True)
class Pattern:
    regex: Regex
    replacement: str


class Match(Protocol):
    def start(self, group: int = 0) -> int: ...
    def end(self, group: int = 0) -> int: ...
    def group(self, group: int = 0) -> str: ...


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a bad admin pattern is logged once, by us, with its reason
    return options


def _compile(pattern: str) -> re2._Regexp:
    return re2.compile(pattern, _options())


def luhn_valid(digits: str) -> bool:
    """The checksum every payment card number carries in its last digit."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _compact(text: str) -> str:
    return "".join(char for char in text if char.isalnum()).upper()


def _bounded(text: str, start: int, end: int) -> bool:
    """Not glued to a letter or digit on either side: ``A1B2C3`` or ``ORD-2024-0042`` are not data."""
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    if before.isalnum() or after.isalnum():
        return False
    if before in "-/." and start > 1 and text[start - 2].isalnum():
        return False
    return not (after in "-/" and end + 1 < len(text) and text[end + 1].isalnum())


def _replace(text: str, regex: re2._Regexp, decide: Callable[[str, Match], str | None], group: int = 0) -> str:
    """Each match that ``decide`` turns into a token is replaced; the rest of the text is kept."""
    pieces: list[str] = []
    last = 0
    for match in regex.finditer(text):
        token = decide(text, match)
        if token is None:
            continue
        start, end = match.start(group), match.end(group)
        pieces += [text[last:start], token]
        last = end
    return "".join(pieces) + text[last:] if pieces else text


# Cue words just before a number say what it is: "call me on …" against "order …", "tracking …".
PHONE_CUE = _compile(
    r"(?i)\b(?:phone|call|ring|tel|mobile|cell|whatsapp|text me|sms|fax|landline|line|reach|contact|number is"
    r"|handy|telefon|rufnummer|anrufen|erreichbar|zurückrufen|portable|joindre|appelez|numéro|fixe|teléfono"
    r"|telefono|llam|móvil|celular|cellulare|chiamat|numero|ufficio|nummer|bel me|mobiel|vast|telefone|whats)"
)
NEGATIVE_CUE = _compile(
    r"(?i)(?:#|\b(?:order|tracking|track|parcel|shipment|invoice|ticket|case|ref|rma|sku|ean|upc|isbn|item|batch|serial"
    r"|model|part|code|voucher|coupon|customer id|account no|bestell|commande|pedido|ordine|bestelling|sendung"
    r"|version|build))"
)
CUE_WINDOW = 28


def _last_cue(text: str, start: int) -> str:
    """'phone', 'other' or '' for the nearest cue word in the few characters before ``start``."""
    window = text[max(0, start - CUE_WINDOW) : start].lower()
    phone = [m.end() for m in PHONE_CUE.finditer(window)]
    other = [m.end() for m in NEGATIVE_CUE.finditer(window)]
    if not phone and not other:
        return ""
    return "phone" if max(phone, default=-1) > max(other, default=-1) else "other"


EMAIL = _compile(r"[\p{L}\p{N}._%+\-]+@[\p{L}\p{N}\-]+(?:\.[\p{L}\p{N}\-]+)*")


def _email(text: str, match: Match) -> str | None:
    return EMAIL_TOKEN


# Two letters, two check digits, then 11 to 30 letters or digits in groups; the longest prefix that
# passes stdnum's check (country length, format and mod 97) is the IBAN.
IBAN_CANDIDATE = _compile(r"(?i)[a-z]{2}\d{2}(?:[ \-]?[a-z0-9]){11,30}")


def _mod97(value: str) -> bool:
    """The IBAN check digits' own test, cheap enough to run before stdnum's full one on every prefix."""
    rearranged = value[4:] + value[:4]
    return rearranged.isalnum() and int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _iban_end(candidate: str) -> int | None:
    """How many characters of ``candidate`` the IBAN takes, or None."""
    ends = [index + 1 for index, char in enumerate(candidate) if char.isalnum()]
    for end in reversed(ends[14:]):
        value = _compact(candidate[:end])
        boundary = end == len(candidate) or not candidate[end].isalnum()
        if boundary and _mod97(value) and iban.is_valid(value):
            return end
    return None


def _redact_ibans(text: str) -> str:
    pieces: list[str] = []
    last = 0
    for match in IBAN_CANDIDATE.finditer(text):
        start = match.start()
        if start > 0 and text[start - 1].isalnum():
            continue
        end = _iban_end(match.group())
        if end is not None:
            pieces += [text[last:start], IBAN_TOKEN]
            last = start + end
    return "".join(pieces) + text[last:] if pieces else text


# National identifiers that carry letters: UK National Insurance, Spanish DNI and NIE, Italian codice fiscale.
NINO = _compile(r"(?i)[a-z]{2} ?\d{2} ?\d{2} ?\d{2} ?[a-d]")
NINO_PREFIX_FIRST = set("ABCEGHJKLMNOPRSTWXYZ")
NINO_PREFIX_SECOND = set("ABCEGHJKLMNPRSTWXYZ")
NINO_PREFIX_NEVER = {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}
SPANISH_ID = _compile(r"(?i)(?:[xyz][ \-]?\d{7}|\d{8})[ \-]?[a-z]")
CODICE_FISCALE = _compile(r"(?i)[a-z]{6}\d{2}[a-z]\d{2}[a-z]\d{3}[a-z]")


def _nino_valid(value: str) -> bool:
    prefix = value[:2]
    return prefix[0] in NINO_PREFIX_FIRST and prefix[1] in NINO_PREFIX_SECOND and prefix not in NINO_PREFIX_NEVER


def _lettered_id(validate: Callable[[str], bool]) -> Callable[[str, Match], str | None]:
    def decide(text: str, match: Match) -> str | None:
        if not _bounded(text, match.start(), match.end()):
            return None
        return ID_TOKEN if validate(_compact(match.group())) else None

    return decide


def _spanish_id_valid(value: str) -> bool:
    return dni.is_valid(value) or nie.is_valid(value)


# Runs of digits with single or double separators, as numbers are typed: "4111  1111 …", "+44 (0)20 …".
DIGIT_RUN = _compile(r"[+(]?\d[\d()]*(?:[ .\-/]{1,2}\(?\d[\d()]*)*")
SEPARATORS = _compile(r"[^\d]+")
DATE_SHAPES = [
    _compile(r"^\d{4}[\-./]\d{1,2}[\-./]\d{1,2}$"),
    _compile(r"^\d{1,2}[\-./]\d{1,2}[\-./]\d{2,4}$"),
    _compile(r"^(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])$"),
]
ID_CUE = _compile(r"(?i)\b(?:ssn|social security|sin|social insurance|bsn|burgerservice|aadhaar|steuer|idnr|nir|sécu)")
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "AU", "BR", "CA")
# National numbers written without a trunk 0: these regions' leading digits and lengths.
NO_TRUNK_SHAPES = _compile(r"^(?:[2-9]\d{9}|1[2-9]\d{9}|[6-9]\d{8}|3\d{9})$")
MAX_NUMBER_CHECKS = 400


@dataclass
class _Budget:
    """Checks left for this text. A check costs tens of µs (phonenumbers, stdnum); past the budget a
    number-shaped run is redacted unchecked, so that a text made of numbers stays fast and still private."""

    left: int = MAX_NUMBER_CHECKS


def _groups(run: str) -> list[str]:
    return [group for group in SEPARATORS.split(run) if group]


def _card_shaped(run: str, digits: str) -> bool:
    # Card numbers start with 2 to 6 (Mastercard, Visa, Amex, Diners, Discover, JCB, UnionPay, Maestro).
    groups = _groups(run)
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and len(groups[0]) >= 4 and luhn_valid(digits)


def _numeric_id(run: str, digits: str, cue: str, id_cue: bool) -> bool:
    lengths = [len(group) for group in _groups(run)]
    if lengths == [3, 2, 4] or (id_cue and len(digits) == 9 and ssn.is_valid(digits)):
        return ssn.is_valid(digits)
    if cue == "other" and not id_cue:
        return False
    checks: dict[int, Callable[[str], bool]] = {
        9: lambda value: bsn.is_valid(value) or sin.is_valid(value),
        11: idnr.is_valid,
        12: aadhaar.is_valid,
        15: nir.is_valid,
    }
    check = checks.get(len(digits))
    return check is not None and (len(digits) != 9 or id_cue or len(lengths) in (1, 3)) and check(digits)


def _phone_number(run: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(run, region)
    except phonenumbers.NumberParseException:
        return None


def _international_phone(run: str, budget: _Budget) -> bool:
    number = "+" + run[2:] if run.startswith("00") else run
    if budget.left <= 0:
        return True
    budget.left -= 1
    parsed = _phone_number(number, None)
    return parsed is not None and phonenumbers.is_possible_number(parsed)


def _national_phone(run: str, digits: str, cue: str, budget: _Budget) -> bool:
    if cue == "other" and " " not in run and "(" not in run and "-" not in run:
        return False
    if not (digits.startswith("0") or run.startswith("(") or NO_TRUNK_SHAPES.search(digits) or cue == "phone"):
        return False
    if budget.left <= 0:
        return True
    possible = False
    for region in PHONE_REGIONS:
        budget.left -= 1
        parsed = _phone_number(run, region)
        if parsed is None:
            continue
        if phonenumbers.is_valid_number(parsed) and (cue != "other" or _written_as_phone(run, parsed)):
            return True
        possible = possible or phonenumbers.is_possible_number(parsed)
    return possible and cue == "phone"


def _written_as_phone(run: str, parsed: phonenumbers.PhoneNumber) -> bool:
    """Grouped exactly as the country writes its numbers: a phone even right after "order" or "ref"."""
    return run == phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)


def _phone(run: str, digits: str, cue: str, budget: _Budget) -> bool:
    if not 7 <= len(digits) <= 16 or any(shape.search(run) for shape in DATE_SHAPES):
        return False
    if run.startswith("+") or (run.startswith("00") and len(digits) > 9):
        return _international_phone(run, budget)
    if len(digits) > 13:
        return False
    return _national_phone(run, digits, cue, budget)


def _number_token(text: str, start: int, end: int, cue: str, budget: _Budget) -> str | None:
    """What the digits in ``text[start:end]`` are, if they are personal data."""
    run = text[start:end]
    digits = _digits(run)
    if not 7 <= len(digits) <= 19 or not _bounded(text, start, end):
        return None
    if budget.left <= 0:
        return PHONE_TOKEN
    if _card_shaped(run, digits):
        return CARD_TOKEN
    id_cue = ID_CUE.search(text[max(0, start - CUE_WINDOW) : start]) is not None
    if not run.startswith("+") and _numeric_id(run, digits, cue, id_cue):
        return ID_TOKEN
    return PHONE_TOKEN if _phone(run, digits, cue, budget) else None


WHITESPACE = _compile(r"\s+")
MAX_GROUPS_PER_NUMBER = 5


def _chunks(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The space-separated parts of ``text[start:end]``, as (start, end) offsets."""
    bounds = [start]
    for gap in WHITESPACE.finditer(text[start:end]):
        bounds += [start + gap.start(), start + gap.end()]
    bounds.append(end)
    return list(zip(bounds[::2], bounds[1::2], strict=True))


def _number_spans(text: str, start: int, end: int, budget: _Budget) -> list[tuple[int, int, str]]:
    """The run as one number or, failing that, the longest numbers among its space-separated parts,
    so that two numbers typed one after the other ("0612345678 0698765432") are both found."""
    cue = _last_cue(text, start)
    budget.left -= 1
    token = _number_token(text, start, end, cue, budget)
    if token is not None or len(_digits(text[start:end])) < 7:
        return [] if token is None else [(start, end, token)]
    chunks = _chunks(text, start, end)
    digits = [sum(char.isdigit() for char in text[a:b]) for a, b in chunks]
    spans: list[tuple[int, int, str]] = []
    first = 0
    while first < len(chunks):
        for last in range(min(len(chunks), first + MAX_GROUPS_PER_NUMBER) - 1, first - 1, -1):
            if (first, last) == (0, len(chunks) - 1) or not 7 <= sum(digits[first : last + 1]) <= 19:
                continue
            budget.left -= 1
            token = _number_token(text, chunks[first][0], chunks[last][1], cue, budget)
            if token is not None:
                spans.append((chunks[first][0], chunks[last][1], token))
                first = last
                break
        first += 1
    return spans


def _redact_numbers(text: str) -> str:
    budget = _Budget()
    pieces: list[str] = []
    last = 0
    for match in DIGIT_RUN.finditer(text):
        for start, end, token in _number_spans(text, match.start(), match.end(), budget):
            pieces += [text[last:start], token]
            last = end
    return "".join(pieces) + text[last:] if pieces else text


CAPITALISED = r"\p{Lu}\p{Ll}[\p{L}'’\-]*"
HOUSE_NUMBER = r"\d{1,5}[A-Za-z]?"
STREET_EN = (
    r"(?i:street|st|road|rd|avenue|ave|lane|ln|drive|dr|boulevard|blvd|court|ct|place|pl|way|close|crescent"
    r"|terrace|square|sq|parkway|pkwy|highway|hwy|row|grove|gardens|mews|walk)"
)
ADDRESSES = [
    # 221B Baker Street, 1600 Pennsylvania Ave
    _compile(rf"({HOUSE_NUMBER}\s+(?:{CAPITALISED}\s+){{1,3}}{STREET_EN}\.?)(?:[^\p{{L}}]|$)"),
    # Hauptstraße 12, Goethestr. 8, Lindenweg 3a, Keizersgracht 123, Dorpsstraat 7
    _compile(
        r"(\p{Lu}\p{Ll}*(?i:straße|strasse|str\.|weg|gasse|allee|platz|damm|ufer|chaussee|gracht|straat|laan"
        r"|plein|kade|singel|dijk|steeg)\s?\d{1,4}[a-z]?)(?:[^\p{L}\d]|$)"
    ),
    # Berliner Straße 45a
    _compile(
        rf"({CAPITALISED}\s(?:Straße|Strasse|Str\.|Weg|Allee|Platz|Gasse|Ring|Damm)\s\d{{1,4}}[a-z]?)(?:[^\p{{L}}\d]|$)"
    ),
    # 12 rue de la Paix, 27 boulevard Saint-Michel
    _compile(
        rf"(\d{{1,4}}(?:\s?(?i:bis|ter))?,?\s+(?i:rue|avenue|av\.|boulevard|bd|place|allée|allee|impasse|chemin|quai"
        rf"|cours|route)\s+(?:(?:de la|de l'|de l’|du|des|de|d'|d’)\s?)?{CAPITALISED}(?:[\s\-]{CAPITALISED}){{0,3}})"
    ),
    # Calle Mayor 15, calle de Alcalá 120, Via Roma 10, Piazza Navona 45
    _compile(
        rf"((?i:calle|c/|avenida|avda\.?|av\.|plaza|paseo|carrer|camino|ronda|via|viale|piazza|piazzale|corso"
        rf"|vicolo|largo)\s+(?:(?i:de la|de los|de las|del|de|dei|della|delle|degli|di)\s+)?{CAPITALISED}"
        rf"(?:\s+(?:(?i:de la|del|de|di|della)\s+)?{CAPITALISED}){{0,3}},?\s*(?:(?i:nº|n°|no\.|núm\.?|n\.)\s*)?"
        rf"\d{{1,4}}[a-zA-Z]?)(?:[^\p{{L}}\d]|$)"
    ),
]
US_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK"
    "|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY"
)
POSTCODES = [
    # UK: SW1A 2AA, M1 1AE
    _compile(r"(?:^|[^\p{L}\d])([A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2})(?:[^\p{L}\d]|$)"),
    # US: a ZIP after the state
    _compile(rf"(?:^|[^\p{{L}}\d])((?:{US_STATES}) \d{{5}}(?:-\d{{4}})?)(?:[^\p{{L}}\d]|$)"),
    # NL: 1015 CJ before the city
    _compile(rf"(?:^|[^\p{{L}}\d])([1-9]\d{{3}} ?[A-Z]{{2}})\s+{CAPITALISED}"),
    # DE, FR, ES, IT: five digits before the city, after a comma, a line break or a cue
    _compile(
        rf"(?:^|[,\n]|(?i:plz|code postal|cp|cap|c\.p\.|postcode|postal code|zip))\s*(\d{{5}}(?:\s+{CAPITALISED})?)"
        rf"(?:[^\p{{L}}\d]|$)"
    ),
]
NOT_NL_LETTERS = {"SA", "SD", "SS", "MB", "KB", "GB", "TB", "ML", "MG", "KG", "KM", "CM", "MM", "AM", "PM", "HZ"}


def _address(text: str, match: Match) -> str | None:
    return ADDRESS_TOKEN


def _postcode(text: str, match: Match) -> str | None:
    found = match.group(1)
    if found[:4].isdigit() and found[4:].strip()[:2] in NOT_NL_LETTERS:
        return None
    words = found.split()
    if len(words) > 1 and words[-1] in NON_NAMES:
        return None
    return POSTCODE_TOKEN


# Capitalised words that are not names, so that "Thanks, Monday works" or "It's Tuesday" are kept.
NON_NAMES = set(
    """
    I The This That These Those It A An And Or But So Yes No Not Ok Okay Sorry Hello Hi Hey Dear Thanks Thank Please
    Just Still Here There Great Good Perfect Amazing Awesome Excellent Bye See Will Can Could Would Should Happy Glad
    Back Done Looking Calling Writing Trying Having Waiting Interested Unable Customer Support Team Order Sir Madam
    Everyone All Again Also Now Today Tomorrow Yesterday Tonight Morning Afternoon Evening Weekend Everything Nothing
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July August
    September October November December Montag Dienstag Mittwoch Donnerstag Freitag Samstag Sonntag Lundi Mardi
    Mercredi Jeudi Vendredi Samedi Dimanche Lunes Martes Miércoles Jueves Viernes Sábado Domingo Uhr Euro Euros
    Amazon Google Apple Samsung Microsoft Windows Android iPhone Bluetooth Paypal PayPal Visa Mastercard Street Road
    Avenue What When Where Why How Who Which My Your Our Their His Her We You They He She Me Us Them Welcome Regards
    Mr Mrs Ms Miss Mx Dr Prof Herr Frau Mme Mlle Madame Monsieur Sr Sra Srta Sig Signor Signora Dott Dhr Mevr
    Best Cheers Kind Sincerely Yours Merci Gracias Grazie Danke Bedankt Groeten Saludos Cordialement Bonjour Hola
    Buongiorno Hallo Goedemiddag Yeah Fine Cool Wow Oh Ah Well Anyway Soon Later Sure Right Left Asap Urgent
    """.split()
)
NON_NAME_WORDS_LOWER = set(
    """
    on in at the a an not and or but to of for from with by is was be been also still wrong missing spelled correct
    incorrect different same here there written listed shown on the my your his her their this that it what
    """.split()
)
NAME = r"\p{Lu}\p{Ll}+(?:[\-'’]\p{Lu}?\p{Ll}+)*"
PARTICLE = r"(?:de|van|von|der|den|da|di|del|la|le|du|dos|das|ter|ten|al|el|bin)"
FULL_NAME = rf"{NAME}(?:[ \t]+(?:{PARTICLE}[ \t]+){{0,2}}{NAME}){{0,2}}"
STRONG_CUE = (
    r"(?i:my name is|my name's|name is|name\s*:|ich heiße|ich heisse|mein name ist|je m'appelle|je m’appelle"
    r"|me llamo|mi nombre es|mi chiamo|mijn naam is|ik heet|under the name(?: of)?|account holder\s*:?)"
)
WEAK_CUE = r"(?i:this is|it's|it’s|its|i'm|i’m|i am|ich bin|je suis|soy|sono|ik ben)"
TITLE = (
    r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Herr|Frau|Mme|Mlle|Madame|Monsieur|Sr|Sra|Srta|Sig|Sig\.ra|Signor|Signora|Dott"
    r"|Dhr|Mevr)\.?"
)
SIGN_OFF = (
    r"(?i:thanks|thank you|thx|many thanks|regards|kind regards|best regards|best wishes|warm regards|best|cheers"
    r"|sincerely|yours|greetings|mit freundlichen grüßen|viele grüße|liebe grüße|beste grüße|grüße|gruß|lg|vg"
    r"|merci|cordialement|bien à vous|saludos|un saludo|gracias|grazie mille|grazie|cordiali saluti|saluti|groeten"
    r"|met vriendelijke groet|bedankt)"
)
NAMES = [
    _compile(rf"(?:^|[^\p{{L}}]){STRONG_CUE}[ \t]*({FULL_NAME})"),
    _compile(rf"(?:^|[^\p{{L}}]){WEAK_CUE}[ \t]+({FULL_NAME})"),
    _compile(rf"(?:^|[^\p{{L}}]){TITLE}[ \t]+({FULL_NAME})"),
    _compile(rf"(?m)(?:^|[^\p{{L}}]){SIGN_OFF}[ \t]*[,.!]*\s*(?:[\-–—~][ \t]*)?({FULL_NAME})[ \t]*[.!]?[ \t]*$"),
    _compile(rf"(?m)^[\-–—~][ \t]*({FULL_NAME})[ \t]*$"),
]
LOWERCASE_NAME = _compile(
    r"(?:^|[^\p{L}])(?i:my name is|mein name ist|ich heiße|je m'appelle|me llamo|mi chiamo|mijn naam is)[ \t]+"
    r"(\p{Ll}+(?:[ \t]+\p{Ll}+)?)[ \t]*(?:[.,!?;:\n]|$)"
)


def _name(text: str, match: Match) -> str | None:
    return None if match.group(1).split()[0] in NON_NAMES else NAME_TOKEN


def _lowercase_name(text: str, match: Match) -> str | None:
    words = match.group(1).split()
    return None if any(word in NON_NAME_WORDS_LOWER for word in words) else NAME_TOKEN


def compile_patterns(rows: Iterable[tuple[str, str]]) -> list[Pattern]:
    """(regex, replacement) pairs compiled with RE2, so an admin's pattern runs in linear time too.

    A regex RE2 cannot compile (a syntax error, or a lookaround or backreference RE2 refuses) is
    skipped with a warning rather than stopping a build.
    """
    compiled = []
    for regex, replacement in rows:
        try:
            compiled.append(Pattern(_compile(regex), replacement))
        except re2.error as error:
            reason = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else str(error)
            logger.warning("redaction pattern %r skipped: RE2 cannot compile it (%s)", regex, reason)
    return compiled


def _admin(text: str, pattern: Pattern) -> str:
    # A replacement without backslashes is taken literally (RE2's template expansion would unescape it).
    if "\\" in pattern.replacement:
        return pattern.regex.sub(pattern.replacement, text)
    return pattern.regex.sub(lambda _: pattern.replacement, text)


def _valid_unicode(text: str) -> str:
    # A lone surrogate (possible in JSON, not in UTF-8) cannot reach RE2 or a UTF-8 database.
    return text.encode("utf-8", "replace").decode("utf-8") if any("\ud800" <= c <= "\udfff" for c in text) else text


def redact(text: str, extra: Iterable[Pattern] = ()) -> str:
    text = _valid_unicode(text)
    text = _replace(text, EMAIL, _email)
    text = _redact_ibans(text)
    text = _replace(text, NINO, _lettered_id(_nino_valid))
    text = _replace(text, SPANISH_ID, _lettered_id(_spanish_id_valid))
    text = _replace(text, CODICE_FISCALE, _lettered_id(lambda value: codicefiscale.is_valid(value)))
    text = _redact_numbers(text)
    for regex in ADDRESSES:
        text = _replace(text, regex, _address, group=1)
    for regex in POSTCODES:
        text = _replace(text, regex, _postcode, group=1)
    for regex in NAMES:
        text = _replace(text, regex, _name, group=1)
    text = _replace(text, LOWERCASE_NAME, _lowercase_name, group=1)
    for pattern in extra:
        text = _admin(text, pattern)
    return text


def apply_patterns(text: str, patterns: Iterable[Pattern]) -> str:
    """Only the admin's patterns (``redact`` applies them after its own)."""
    for pattern in patterns:
        text = _admin(text, pattern)
    return text


def admin_patterns() -> list[Pattern]:
    """The enabled patterns from the database."""
    from .models import RedactionPattern

    rows = RedactionPattern.objects.filter(enabled=True).values_list("pattern", "replacement")
    return compile_patterns(rows)
