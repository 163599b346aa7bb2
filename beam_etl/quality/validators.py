"""Common format validators: ``values -> failing mask``, vectorized over Arrow arrays.

Each validator takes an Arrow array and returns a boolean array of the same length that is
**true where the value fails** and false where it passes. Nulls never fail (``required`` /
``nullable`` are separate rules). Non-string columns are checked on their text form.

Most validators are RE2 patterns run by ``pyarrow.compute`` (email-free formats: URL,
postal codes, UUID, IPv4/IPv6), or pure Arrow/NumPy arithmetic (credit-card Luhn, ISO
dates). Two need a library per value — email (email-validator, syntax only, never DNS) and
phone (phonenumbers) — and run only over the *distinct* non-null values of the array
(``pc.unique``, then mapped back with ``pc.index_in`` + ``take``), so repeated values cost
one Python call, not one per row.

``FORMATS`` maps the spec names (``format: email`` in ``validate``) to the validator and the
pydantic model of its options; :func:`format_mask` applies one by name.

Example:
    >>> import pyarrow as pa
    >>> invalid_ipv4(pa.array(["10.0.0.1", "256.1.1.1", None])).to_pylist()
    [False, True, False]
    >>> format_mask(pa.array(["12345", "1234"]), "zip", {"country": "US"}).to_pylist()
    [False, True]
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from beam_etl.models import StrictModel
from beam_etl.casting import cast_isolating_errors

__all__ = [
    "Validator",
    "Format",
    "FORMATS",
    "POSTAL_PATTERNS",
    "format_mask",
    "check_format_options",
    "map_distinct",
    "as_text",
    "invalid_email",
    "invalid_url",
    "invalid_phone",
    "invalid_date",
    "invalid_datetime",
    "invalid_postal_code",
    "invalid_uuid",
    "invalid_ipv4",
    "invalid_ipv6",
    "invalid_ip",
    "invalid_credit_card",
    "phone_to_e164",
    "PhoneOptions",
    "ParsedTimes",
    "parse_datetimes",
    "check_strptime_format",
]

#: ``(values, **options) -> mask`` true where the value fails.
Validator = Callable[..., pa.Array]


# --------------------------------------------------------------------------- helpers


def as_text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``values`` as a plain ``string`` array (dictionary decoded, large strings narrowed)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if pa.types.is_string(values.type):
        return values
    return pc.cast(values, pa.string())


def _no_fail(values: pa.Array) -> pa.Array:
    return pa.array(np.zeros(len(values), dtype=bool))


def _fails_where_not(passes: pa.Array) -> pa.Array:
    """Failing mask from a passing mask: nulls (null input) never fail."""
    return pc.fill_null(pc.invert(passes), False)


def _regex_mask(values: pa.Array, pattern: str, ignore_case: bool = False) -> pa.Array:
    return _fails_where_not(pc.match_substring_regex(as_text(values), pattern, ignore_case=ignore_case))


def map_distinct(values: pa.Array, fn: Callable[[Any], Any], result_type: pa.DataType) -> pa.Array:
    """Apply a per-value Python ``fn`` once per distinct non-null value, then map back.

    For work only a Python library can do (email syntax, phone numbers, HTML sanitizing):
    ``pc.unique`` collapses repeats, ``pc.index_in`` + ``take`` spreads the results over the
    rows. Nulls stay null.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    distinct = pc.unique(values.drop_null())
    results = pa.array([fn(value) for value in distinct.to_pylist()], type=result_type)
    return results.take(pc.index_in(values, value_set=distinct))


# --------------------------------------------------------------------------- email


def invalid_email(
    values: pa.Array,
    *,
    allow_smtputf8: bool = True,
    allow_quoted_local: bool = False,
    allow_domain_literal: bool = False,
    allow_display_name: bool = False,
) -> pa.Array:
    """Email addresses whose syntax is invalid (email-validator; no DNS lookups).

    Args:
        values: the addresses.
        allow_smtputf8: accept internationalized local parts (``josé@example.com``).
        allow_quoted_local: accept quoted local parts (``"a b"@example.com``).
        allow_domain_literal: accept ``user@[192.0.2.1]``.
        allow_display_name: accept ``Name <user@example.com>``.
    """
    import email_validator

    def bad(value: str) -> bool:
        try:
            email_validator.validate_email(
                value,
                check_deliverability=False,
                allow_smtputf8=allow_smtputf8,
                allow_quoted_local=allow_quoted_local,
                allow_domain_literal=allow_domain_literal,
                allow_display_name=allow_display_name,
            )
        except email_validator.EmailNotValidError:
            return True
        return False

    text = as_text(values)
    # email-validator is per value (~50 µs a call). Plain ASCII addresses that it surely
    # accepts are passed by one vectorized pattern; the rest go to email-validator, once per
    # distinct value. The differential test in tests/unit/test_validators.py checks the pattern
    # never passes what email-validator rejects.
    plain = _plain_email(text)
    rest = pc.if_else(plain, pa.scalar(None, pa.string()), text)
    return pc.fill_null(map_distinct(rest, bad, pa.bool_()), False)


_PLAIN_LOCAL = r"[a-z0-9_%+=-]{1,64}(?:\.[a-z0-9_%+=-]{1,64})*"
_PLAIN_DOMAIN = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"


def _plain_email(text: pa.Array) -> pa.Array:
    """True where the address is plain ASCII that email-validator always accepts."""
    import email_validator

    shape = pc.match_substring_regex(text, rf"^{_PLAIN_LOCAL}@{_PLAIN_DOMAIN}$", ignore_case=True)
    short = pc.and_(pc.less_equal(pc.utf8_length(text), 254), pc.match_substring_regex(text, r"^[^@]{1,64}@"))
    # "--" in a label is IDNA territory (xn--, ab--cd); special-use names (.test, .local ...)
    # are refused: both are left to email-validator.
    special = "|".join(re.escape(name) for name in email_validator.SPECIAL_USE_DOMAIN_NAMES)
    odd = pc.match_substring_regex(text, rf"@.*--|[@.](?:{special})$", ignore_case=True)
    return pc.fill_null(pc.and_(pc.and_(shape, short), pc.invert(odd)), False)


# --------------------------------------------------------------------------- URL

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"


def _ipv6_pattern() -> str:
    """RFC 3986 ``IPv6address`` as one regular expression (no zone ids)."""
    h16 = r"[0-9A-Fa-f]{1,4}"
    ls32 = rf"(?:{h16}:{h16}|{_IPV4})"

    def head(max_groups: int) -> str:
        # [ *max_groups( h16 ":" ) h16 ]
        if max_groups < 0:
            return ""
        return rf"(?:(?:{h16}:){{0,{max_groups}}}{h16})?"

    forms = [
        rf"(?:{h16}:){{6}}{ls32}",
        rf"::(?:{h16}:){{5}}{ls32}",
        rf"{head(0)}::(?:{h16}:){{4}}{ls32}",
        rf"{head(1)}::(?:{h16}:){{3}}{ls32}",
        rf"{head(2)}::(?:{h16}:){{2}}{ls32}",
        rf"{head(3)}::{h16}:{ls32}",
        rf"{head(4)}::{ls32}",
        rf"{head(5)}::{h16}",
        rf"{head(6)}::",
    ]
    return "(?:" + "|".join(forms) + ")"


_IPV6 = _ipv6_pattern()
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)"
_LABEL = r"(?:[\p{L}\p{N}](?:[\p{L}\p{N}-]{0,61}[\p{L}\p{N}])?)"


def invalid_url(values: pa.Array, *, schemes: list[str] | None = None, require_tld: bool = True) -> pa.Array:
    """URLs that are not absolute ``scheme://host[:port][/path][?query][#fragment]``.

    The host is a domain name (letters in any script), ``localhost``, an IPv4 address or a
    bracketed IPv6 address; no whitespace anywhere.

    Args:
        values: the URLs.
        schemes: accepted schemes (default ``http``, ``https``).
        require_tld: the domain needs a dot and a top-level label of 2+ letters.
    """
    schemes = schemes or ["http", "https"]
    scheme = "|".join(re.escape(s.lower()) for s in schemes)
    domain = rf"(?:{_LABEL}\.)+\p{{L}}{{2,63}}\.?" if require_tld else rf"{_LABEL}(?:\.{_LABEL})*\.?"
    host = rf"(?:localhost|{_IPV4}|\[{_IPV6}\]|{domain})"
    pattern = rf"^(?:{scheme})://(?:[^\s:@/?#]+(?::[^\s@/?#]*)?@)?{host}(?::{_PORT})?(?:[/?#]\S*)?$"
    return _regex_mask(values, pattern, ignore_case=True)


# --------------------------------------------------------------------------- phone


def _parse_phone(value: str, region: str | None):
    import phonenumbers

    try:
        return phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None


def invalid_phone(values: pa.Array, *, region: str | None = None, possible_only: bool = False) -> pa.Array:
    """Phone numbers that phonenumbers cannot parse or does not consider valid.

    Args:
        values: the numbers, in any common notation (``+1 650-253-0000``, ``(650) 253-0000``).
        region: ISO 3166 region for numbers written without ``+country`` (e.g. ``US``, ``GB``);
            without it such numbers fail.
        possible_only: only check the length for the region (``is_possible_number``), not
            the full numbering plan.
    """
    import phonenumbers

    check = phonenumbers.is_possible_number if possible_only else phonenumbers.is_valid_number

    def bad(value: str) -> bool:
        number = _parse_phone(value, region)
        return number is None or not check(number)

    # phonenumbers is per value: run it over the distinct values only.
    return pc.fill_null(map_distinct(as_text(values), bad, pa.bool_()), False)


def phone_to_e164(values: pa.Array, *, region: str | None = None, invalid: Literal["keep", "null"] = "keep") -> pa.Array:
    """Phone numbers rewritten as E.164 (``+16502530000``); invalid ones kept or nulled."""
    import phonenumbers

    def e164(value: str) -> str | None:
        number = _parse_phone(value, region)
        if number is None or not phonenumbers.is_valid_number(number):
            return value if invalid == "keep" else None
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    # phonenumbers is per value: run it over the distinct values only.
    return map_distinct(as_text(values), e164, pa.string())


# --------------------------------------------------------------------------- dates


@dataclass
class ParsedTimes:
    """Strictly parsed date/times.

    ``values`` are naive ``timestamp[unit]``: wall-clock times for inputs without an offset,
    UTC for inputs with one (``has_offset`` true). ``failed`` is true where a non-null input
    matched no format.
    """

    values: pa.Array
    has_offset: pa.Array
    failed: pa.Array


_ISO_DATE = r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_ISO_TIME = r"(?:[01][0-9]|2[0-3])(?::[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,9})?)?)?"
_ISO_OFFSET = r"(?:Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)"
_ISO_DATETIME = rf"^{_ISO_DATE}(?:[T ]{_ISO_TIME}{_ISO_OFFSET}?)?$"
_FRACTION_DIGITS = {"s": 0, "ms": 3, "us": 6, "ns": 9}
#: strptime directives Arrow's parser lacks or normalises: such formats parse in Python.
_PYTHON_ONLY = ("%f", "%z", "%Z", "%:z")


def _rows_mask(rows: int, indices) -> pa.Array:
    mask = np.zeros(rows, dtype=bool)
    mask[list(indices)] = True
    return pa.array(mask)


def _cast_rows(text: pa.Array, target: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """Cast, finding the rows Arrow rejects (see ``cast_isolating_errors``)."""
    values, errors = cast_isolating_errors(text, target)
    return values, _rows_mask(len(text), errors)


def _parse_iso(text: pa.Array, unit: str, date_only: bool) -> ParsedTimes:
    rows = len(text)
    null_ts = pa.scalar(None, pa.timestamp(unit))
    pattern = rf"^{_ISO_DATE}$" if date_only else _ISO_DATETIME
    shape_ok = pc.fill_null(pc.match_substring_regex(text, pattern), False)
    has_offset = pc.and_(shape_ok, pc.fill_null(pc.match_substring_regex(text, rf"[T ].*{_ISO_OFFSET}$"), False))
    digits = _FRACTION_DIGITS[unit]
    # More fractional digits than the unit holds are truncated, not a failure.
    trimmed = pc.replace_substring_regex(text, r"(\.[0-9]{%d})[0-9]+" % digits if digits else r"\.[0-9]+", r"\1" if digits else "")
    naive_in = pc.if_else(pc.and_(shape_ok, pc.invert(has_offset)), trimmed, pa.scalar(None, pa.string()))
    aware_in = pc.if_else(has_offset, trimmed, pa.scalar(None, pa.string()))
    # The shape regex has already rejected malformed text; the casts only meet impossible
    # calendar dates (2023-02-29), which are few, so bisection stays cheap.
    naive, naive_bad = _cast_rows(naive_in, pa.timestamp(unit))
    aware, aware_bad = (pa.nulls(rows, pa.timestamp(unit, tz="UTC")), _no_fail(text))
    if pc.any(has_offset).as_py():
        aware, aware_bad = _cast_rows(aware_in, pa.timestamp(unit, tz="UTC"))
    values = pc.coalesce(naive, pc.cast(aware, pa.timestamp(unit)), null_ts)
    failed = pc.and_(pc.is_valid(text), pc.or_(pc.invert(shape_ok), pc.or_(naive_bad, aware_bad)))
    return ParsedTimes(values, has_offset, failed)


def _python_parse(value: str, fmt: str) -> tuple[_dt.datetime | None, bool]:
    try:
        parsed = _dt.datetime.strptime(value, fmt)
    except ValueError:
        return None, False
    if parsed.tzinfo is not None:
        return parsed.astimezone(_dt.timezone.utc).replace(tzinfo=None), True
    return parsed, False


def _parse_format(text: pa.Array, fmt: str, unit: str) -> tuple[pa.Array, pa.Array]:
    """(naive timestamps or null, has_offset) for one strptime format, Python semantics."""
    ts_type = pa.timestamp(unit)
    rows = len(text)
    if any(directive in fmt for directive in _PYTHON_ONLY):
        candidates = text
        fast = pa.nulls(rows, ts_type)
    else:
        fast = pc.strptime(text, format=fmt, unit=unit, error_is_null=True)
        # Arrow's strptime is lenient (2023-02-29 becomes 2023-03-01, leading blanks pass):
        # a value is accepted on the fast path only if formatting it back gives the input.
        same = pc.equal(pc.utf8_lower(pc.strftime(fast, format=fmt)), pc.utf8_lower(text))
        same = pc.fill_null(same, False)
        candidates = pc.if_else(pc.and_(pc.is_valid(fast), pc.invert(same)), text, pa.scalar(None, pa.string()))
        fast = pc.if_else(same, fast, pa.scalar(None, ts_type))
    if candidates.null_count == rows:
        return fast, _no_fail(text)
    # The rest get Python's datetime.strptime (the reference semantics), once per distinct value.
    parsed = map_distinct(candidates, lambda v: _python_parse(v, fmt)[0], ts_type)
    offset = pc.fill_null(map_distinct(candidates, lambda v: _python_parse(v, fmt)[1], pa.bool_()), False)
    return pc.coalesce(fast, parsed), offset


def parse_datetimes(values: pa.Array, formats: list[str] | None = None, unit: str = "us", date_only: bool = False) -> ParsedTimes:
    """Parse strings strictly as dates/times: ISO 8601 by default, else the first matching format.

    Args:
        values: the text to parse.
        formats: strptime formats tried in order (Python's ``datetime.strptime`` semantics,
            run on the fast path by Arrow); None means ISO 8601 (``2024-01-05``,
            ``2024-01-05T10:30:00.123+02:00``, ``Z``).
        unit: the timestamp unit of the result.
        date_only: with ISO, accept only ``YYYY-MM-DD``.
    """
    text = as_text(values)
    if not formats:
        return _parse_iso(text, unit, date_only)
    rows = len(text)
    result = pa.nulls(rows, pa.timestamp(unit))
    has_offset = _no_fail(text)
    remaining = text
    for fmt in formats:
        if remaining.null_count == rows:
            break
        parsed, offset = _parse_format(remaining, fmt, unit)
        found = pc.is_valid(parsed)
        result = pc.coalesce(result, parsed)
        has_offset = pc.or_(has_offset, pc.and_(found, offset))
        remaining = pc.if_else(found, pa.scalar(None, pa.string()), remaining)
    failed = pc.and_(pc.is_valid(text), pc.is_null(result))
    return ParsedTimes(result, has_offset, failed)


def check_strptime_format(fmt: str) -> str:
    """Raise ValueError when ``fmt`` is not a usable strptime format (spec-time check)."""
    if "%" not in fmt:
        raise ValueError(f"date format {fmt!r} has no % directive; write e.g. '%Y-%m-%d' or '%d/%m/%Y %H:%M'")
    try:
        _dt.datetime(2001, 2, 3, 4, 5, 6).strftime(fmt)
    except ValueError as exc:
        raise ValueError(f"date format {fmt!r} is not valid: {exc}") from None
    return fmt


def _is_temporal(values: pa.Array) -> bool:
    return pa.types.is_date(values.type) or pa.types.is_timestamp(values.type)


def invalid_date(values: pa.Array, *, formats: list[str] | None = None) -> pa.Array:
    """Dates that match none of ``formats`` (default ISO ``YYYY-MM-DD``) or do not exist.

    Calendar-checked: ``2023-02-29`` fails. Date/timestamp columns always pass.

    Args:
        values: the dates.
        formats: strptime formats, e.g. ``["%d/%m/%Y", "%Y-%m-%d"]``.
    """
    if _is_temporal(values):
        return _no_fail(values)
    return parse_datetimes(values, formats, unit="s", date_only=True).failed


def invalid_datetime(values: pa.Array, *, formats: list[str] | None = None) -> pa.Array:
    """Date-times that match none of ``formats`` (default ISO 8601, offset optional).

    Args:
        values: the date-times.
        formats: strptime formats, e.g. ``["%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M"]``.
    """
    if _is_temporal(values):
        return _no_fail(values)
    return parse_datetimes(values, formats, unit="us").failed


# --------------------------------------------------------------------------- postal codes

#: Country -> postal code pattern (matched case-insensitively on the trimmed value).
POSTAL_PATTERNS: dict[str, str] = {
    "US": r"[0-9]{5}(?:-[0-9]{4})?",
    "CA": r"[ABCEGHJ-NPRSTVXY][0-9][ABCEGHJ-NPRSTV-Z] ?[0-9][ABCEGHJ-NPRSTV-Z][0-9]",
    "UK": r"GIR ?0AA|(?:[A-PR-UWYZ](?:[0-9]{1,2}|[A-HK-Y][0-9]{1,2}|[0-9][A-HJKPSTUW]|[A-HK-Y][0-9][ABEHMNPRV-Y])) ?[0-9][ABD-HJLNP-UW-Z]{2}",
    "DE": r"0[1-9][0-9]{3}|[1-9][0-9]{4}",
    "FR": r"[0-9]{5}",
    "IT": r"[0-9]{5}",
    "ES": r"(?:0[1-9]|[1-4][0-9]|5[0-2])[0-9]{3}",
    "NL": r"[1-9][0-9]{3} ?[A-Z]{2}",
    "BE": r"[1-9][0-9]{3}",
    "AT": r"[1-9][0-9]{3}",
    "CH": r"[1-9][0-9]{3}",
    "AU": r"[0-9]{4}",
    "IN": r"[1-9][0-9]{5}",
    "JP": r"[0-9]{3}-?[0-9]{4}",
    "BR": r"[0-9]{5}-?[0-9]{3}",
    "PL": r"[0-9]{2}-[0-9]{3}",
    "SE": r"[1-9][0-9]{2} ?[0-9]{2}",
}
POSTAL_PATTERNS["GB"] = POSTAL_PATTERNS["UK"]


def invalid_postal_code(values: pa.Array, *, country: str = "US") -> pa.Array:
    """Postal codes that do not have ``country``'s shape (US ZIP / ZIP+4, CA, UK, DE, ...).

    Args:
        values: the codes.
        country: a key of ``POSTAL_PATTERNS`` (``US``, ``CA``, ``UK``/``GB``, ``DE``, ``FR`` ...).
    """
    pattern = POSTAL_PATTERNS[country.upper()]
    return _regex_mask(pc.utf8_trim_whitespace(as_text(values)), f"^(?:{pattern})$", ignore_case=True)


# --------------------------------------------------------------------------- UUID, IP


def invalid_uuid(values: pa.Array, *, version: int | None = None) -> pa.Array:
    """Values that are not a hyphenated UUID (``123e4567-e89b-12d3-a456-426614174000``).

    Args:
        values: the UUIDs (any case).
        version: also require this version digit (1-8) and the RFC 4122 variant.
    """
    if version is None:
        pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    else:
        pattern = rf"^[0-9a-f]{{8}}-[0-9a-f]{{4}}-{version}[0-9a-f]{{3}}-[89ab][0-9a-f]{{3}}-[0-9a-f]{{12}}$"
    return _regex_mask(values, pattern, ignore_case=True)


def invalid_ipv4(values: pa.Array) -> pa.Array:
    """Values that are not dotted-quad IPv4 addresses (no leading zeros, octets <= 255)."""
    return _regex_mask(values, rf"^{_IPV4}$")


def invalid_ipv6(values: pa.Array) -> pa.Array:
    """Values that are not RFC 4291 text IPv6 addresses (``::1``, ``2001:db8::8a2e:370:7334``)."""
    return _regex_mask(values, rf"^{_IPV6}$")


def invalid_ip(values: pa.Array) -> pa.Array:
    """Values that are neither IPv4 nor IPv6 addresses."""
    return _regex_mask(values, rf"^(?:{_IPV4}|{_IPV6})$")


# --------------------------------------------------------------------------- credit cards


def invalid_credit_card(values: pa.Array) -> pa.Array:
    """Card numbers that are not 12-19 digits (spaces/hyphens allowed) passing the Luhn check.

    The Luhn sum is computed for the whole array at once: digits are left-padded to 19
    characters and read as a NumPy matrix of shape (rows, 19).
    """
    text = as_text(values)
    digits = pc.replace_substring_regex(text, r"[ -]", "")
    shape_ok = pc.fill_null(pc.match_substring_regex(digits, r"^[0-9]{12,19}$"), False)
    rows = len(text)
    luhn_ok = np.zeros(rows, dtype=bool)
    index = np.flatnonzero(shape_ok.to_numpy(zero_copy_only=False))
    if len(index):
        padded = pc.utf8_lpad(digits.take(pa.array(index)), width=19, padding="0")
        offsets = np.frombuffer(padded.buffers()[1], dtype=np.int32)[padded.offset :]
        start = int(offsets[0])
        matrix = np.frombuffer(padded.buffers()[2], dtype=np.uint8)[start : start + 19 * len(index)]
        matrix = matrix.reshape(len(index), 19).astype(np.int64) - ord("0")
        # From the right, every second digit is doubled (minus 9 when above 9).
        doubled = matrix[:, -2::-2] * 2
        doubled = np.where(doubled > 9, doubled - 9, doubled)
        total = matrix[:, -1::-2].sum(axis=1) + doubled.sum(axis=1)
        luhn_ok[index] = total % 10 == 0
    passes = pc.and_(shape_ok, pa.array(luhn_ok))
    return pc.and_(pc.is_valid(text), pc.invert(passes))


# --------------------------------------------------------------------------- registry


class _NoOptions(StrictModel):
    pass


class EmailOptions(StrictModel):
    allow_smtputf8: bool = True
    allow_quoted_local: bool = False
    allow_domain_literal: bool = False
    allow_display_name: bool = False


class UrlOptions(StrictModel):
    schemes: list[str] = Field(default_factory=lambda: ["http", "https"], min_length=1)
    require_tld: bool = True


class PhoneOptions(StrictModel):
    region: str | None = None
    possible_only: bool = False

    @field_validator("region")
    @classmethod
    def _known_region(cls, region: str | None) -> str | None:
        if region is None:
            return None
        import phonenumbers

        region = region.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region '{region}'; use an ISO 3166 code such as US, GB, DE, FR")
        return region


class DateOptions(StrictModel):
    formats: list[str] | None = None

    @field_validator("formats", mode="before")
    @classmethod
    def _one_or_many(cls, formats: Any) -> Any:
        return [formats] if isinstance(formats, str) else formats

    @field_validator("formats")
    @classmethod
    def _valid_formats(cls, formats: list[str] | None) -> list[str] | None:
        for fmt in formats or []:
            check_strptime_format(fmt)
        return formats


class PostalOptions(StrictModel):
    country: str = "US"

    @field_validator("country")
    @classmethod
    def _known_country(cls, country: str) -> str:
        if country.upper() not in POSTAL_PATTERNS:
            raise ValueError(f"no postal code pattern for country '{country}'; known: {', '.join(sorted(POSTAL_PATTERNS))}")
        return country.upper()


class UuidOptions(StrictModel):
    version: int | None = Field(default=None, ge=1, le=8)


@dataclass(frozen=True)
class Format:
    """A named validator and the model of its options."""

    fn: Validator
    options: type[StrictModel]
    description: str


#: ``format:`` names accepted by ``validate``.
FORMATS: dict[str, Format] = {
    "email": Format(invalid_email, EmailOptions, "an email address (syntax only, no DNS)"),
    "url": Format(invalid_url, UrlOptions, "an absolute http(s) URL"),
    "phone": Format(invalid_phone, PhoneOptions, "a phone number"),
    "date": Format(invalid_date, DateOptions, "a date"),
    "datetime": Format(invalid_datetime, DateOptions, "a date-time"),
    "zip": Format(invalid_postal_code, PostalOptions, "a postal code"),
    "postal_code": Format(invalid_postal_code, PostalOptions, "a postal code"),
    "uuid": Format(invalid_uuid, UuidOptions, "a UUID"),
    "ipv4": Format(invalid_ipv4, _NoOptions, "an IPv4 address"),
    "ipv6": Format(invalid_ipv6, _NoOptions, "an IPv6 address"),
    "ip": Format(invalid_ip, _NoOptions, "an IP address"),
    "credit_card": Format(invalid_credit_card, _NoOptions, "a credit card number (Luhn)"),
}


def check_format_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Validated options for format ``name``; ValueError naming the format when unknown/bad."""
    from pydantic import ValidationError

    from beam_etl.spec import did_you_mean

    entry = FORMATS.get(name)
    if entry is None:
        hint = did_you_mean(name, FORMATS) or f"known formats: {', '.join(sorted(FORMATS))}"
        raise ValueError(f"unknown format '{name}' ({hint})")
    try:
        model = entry.options.model_validate(options or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'options'}: "
            + ("unknown option" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, "))
            for error in exc.errors()
        )
        allowed = ", ".join(entry.options.model_fields) or "none"
        raise ValueError(f"format '{name}': {problems} (options: {allowed})") from None
    return model.model_dump()


def format_mask(values: pa.Array, name: str, options: dict[str, Any] | None = None) -> pa.Array:
    """Failing mask of the validator ``name`` (a key of ``FORMATS``) with ``options``.

    Example:
        >>> format_mask(pa.array(["+44 20 7946 0958", "12"]), "phone").to_pylist()
        [False, True]
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    checked = check_format_options(name, options)
    if len(values) == 0:
        return pa.array([], pa.bool_())
    return FORMATS[name].fn(values, **checked)
