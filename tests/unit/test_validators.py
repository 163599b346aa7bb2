"""Format validators: valid and invalid examples per format, and oracles (ipaddress, uuid,
datetime.strptime, a plain Luhn) on generated values."""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_etl.quality.validators import (
    FORMATS,
    check_format_options,
    format_mask,
    invalid_credit_card,
    invalid_ipv4,
    invalid_ipv6,
    map_distinct,
    parse_datetimes,
    phone_to_e164,
)

# format, options, valid values, invalid values
CASES = [
    ("email", {}, ["a@example.com", "first.last+tag@sub.example.co.uk", "josé@example.com", "x@xn--bcher-kva.de"],
     ["plain", "a@", "@example.com", "a b@example.com", "a@@example.com", "a@example..com", "a@localhost"]),
    ("email", {"allow_display_name": True}, ["Ann <ann@example.com>"], ["Ann <ann@>"]),
    ("url", {}, ["https://example.com", "http://example.com:8080/a/b?q=1#f", "https://sub.例え.jp/パス", "http://10.0.0.1/x",
                 "https://[2001:db8::1]:443/", "http://user:pw@example.org", "http://localhost:3000"],
     ["example.com", "ftp://example.com", "http://", "http://exa mple.com", "https://example", "http://example.com:99999",
      "http://-bad-.com", "javascript:alert(1)"]),
    ("url", {"schemes": ["ftp"], "require_tld": False}, ["ftp://files", "FTP://files.example.com"], ["http://example.com"]),
    ("phone", {"region": "US"}, ["(650) 253-0000", "+1 650 253 0000", "650.253.0000", "+44 20 7946 0958"],
     ["123", "650-253-000", "not a phone", "+1 000 000 0000"]),
    ("phone", {}, ["+1 650 253 0000", "+49 30 901820"], ["(650) 253-0000"]),
    ("phone", {"region": "GB", "possible_only": True}, ["020 7946 0958"], ["12"]),
    ("date", {}, ["2024-02-29", "1999-12-31", "0001-01-01"], ["2023-02-29", "2024-13-01", "2024-1-5", " 2024-01-05", "05/01/2024", "2024-01-05T10:00"]),
    ("date", {"formats": ["%d/%m/%Y", "%b %d, %Y"]}, ["05/01/2024", "5/1/2024", "Jan 05, 2024", "jan 5, 2024"],
     ["31/02/2024", "2024-01-05", "05/13/2024", "05/01/2024 "]),
    ("datetime", {}, ["2024-01-05T10:00:00", "2024-01-05 10:00", "2024-01-05T10:00:00.123456789Z", "2024-01-05T10:00:00+02:00",
                      "2024-01-05T10:00:00-0530", "2024-01-05"],
     ["2024-01-05T24:00:00", "2024-02-30T10:00:00", "2024-01-05T10:00:00+2", "yesterday", "2024-01-05T10:60"]),
    ("datetime", {"formats": ["%d.%m.%Y %H:%M", "%Y-%m-%dT%H:%M:%S%z"]}, ["05.01.2024 10:30", "2024-01-05T10:00:00+0200"],
     ["05.01.2024", "30.02.2024 10:30", "2024-01-05T10:00:00"]),
    ("zip", {}, ["12345", "12345-6789", " 02134 "], ["1234", "123456", "12345-678", "ABCDE"]),
    ("zip", {"country": "CA"}, ["K1A 0B1", "k1a0b1", "H0H 0H0"], ["D1A 0B1", "K1A 0BI", "12345"]),
    ("postal_code", {"country": "UK"}, ["SW1A 1AA", "EC1A 1BB", "W1A 0AX", "M1 1AE", "B33 8TH", "CR2 6XH", "GIR 0AA", "sw1a1aa"],
     ["SW1A", "12345", "QA1 1AA", "SW1A 1CA"]),
    ("postal_code", {"country": "GB"}, ["DN55 1PT"], ["DN55-1PT"]),
    ("zip", {"country": "DE"}, ["10115", "01067", "99998"], ["00123", "1011", "101155"]),
    ("zip", {"country": "NL"}, ["1234 AB", "1234ab"], ["0123 AB"]),
    ("uuid", {}, ["123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-426614174000"],
     ["123e4567e89b12d3a456426614174000", "{123e4567-e89b-12d3-a456-426614174000}", "123e4567-e89b-12d3-a456-42661417400g"]),
    ("uuid", {"version": 4}, ["f47ac10b-58cc-4372-a567-0e02b2c3d479"], ["123e4567-e89b-12d3-a456-426614174000", "f47ac10b-58cc-4372-c567-0e02b2c3d479"]),
    ("ipv4", {}, ["0.0.0.0", "192.168.1.1", "255.255.255.255"], ["256.0.0.1", "1.2.3", "01.2.3.4", "1.2.3.4.5", "a.b.c.d", " 1.2.3.4"]),
    ("ipv6", {}, ["::", "::1", "2001:db8::8a2e:370:7334", "fe80::1", "::ffff:192.0.2.1", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:1.2.3.4"],
     ["1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", "::ffff:256.1.1.1", "fe80::1%eth0", "g::1", ":1:2"]),
    ("ip", {}, ["10.0.0.1", "::1"], ["10.0.0.256", "::g"]),
    ("credit_card", {}, ["4111 1111 1111 1111", "4111-1111-1111-1111", "378282246310005", "6011111111111117", "5555555555554444"],
     ["4111111111111112", "1234", "4111 1111 1111 111a", "41111111111111111111"]),
]


@pytest.mark.parametrize("name, options, valid, invalid", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_format_valid_and_invalid_examples(name, options, valid, invalid):
    values = pa.array(valid + invalid + [None])
    failing = format_mask(values, name, options).to_pylist()
    assert dict(zip(valid + invalid, failing)) == {**{v: False for v in valid}, **{v: True for v in invalid}}
    assert failing[-1] is False  # nulls never fail a format


def test_every_format_has_a_case():
    assert {case[0] for case in CASES} == set(FORMATS)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("emial", {}, "unknown format 'emial' (did you mean 'email'?)"),
        ("zip", {"country": "XX"}, "no postal code pattern for country 'XX'"),
        ("phone", {"region": "ZZ"}, "unknown phone region 'ZZ'"),
        ("date", {"formats": ["YYYY-MM-DD"]}, "has no % directive"),
        ("uuid", {"version": 9}, "version"),
        ("url", {"scheme": ["http"]}, "format 'url': scheme: unknown option (options: schemes, require_tld)"),
    ],
)
def test_bad_format_options_are_clear_errors(name, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        check_format_options(name, options)


def test_per_value_validators_call_python_once_per_distinct_value():
    calls = []
    values = pa.array(["a", "b", "a", None, "a", "b"])
    result = map_distinct(values, lambda v: calls.append(v) or v.upper(), pa.string())
    assert result.to_pylist() == ["A", "B", "A", None, "A", "B"]
    assert sorted(calls) == ["a", "b"]


def test_phone_to_e164():
    values = pa.array(["(650) 253-0000", "+44 20 7946 0958", "garbage", None])
    assert phone_to_e164(values, region="US").to_pylist() == ["+16502530000", "+442079460958", "garbage", None]
    assert phone_to_e164(values, region="US", invalid="null").to_pylist() == ["+16502530000", "+442079460958", None, None]


def test_parse_datetimes_offsets_become_utc_and_are_marked():
    parsed = parse_datetimes(pa.array(["2024-01-05T10:00:00+02:00", "2024-01-05T10:00:00", "2024-01-05T10:00:00Z", "nope"]))
    assert parsed.values.to_pylist() == [dt.datetime(2024, 1, 5, 8), dt.datetime(2024, 1, 5, 10), dt.datetime(2024, 1, 5, 10), None]
    assert parsed.has_offset.to_pylist() == [True, False, True, False]
    assert parsed.failed.to_pylist() == [False, False, False, True]


# --------------------------------------------------------------------------- oracles


def _python_ip_ok(text: str, version: int) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.version == version and "%" not in text


ipv4_like = st.one_of(
    st.tuples(*[st.integers(0, 300)] * 4).map(lambda t: ".".join(map(str, t))),
    st.ip_addresses(v=4).map(str),
    st.text(alphabet="0123456789.", max_size=16),
)
ipv6_like = st.one_of(
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=6).map(lambda a: a.exploded),
    st.ip_addresses(v=6).map(lambda a: str(a).upper()),
    st.text(alphabet="0123456789abcdefABCDEF:.", max_size=45),
    st.lists(st.text(alphabet="0123456789abcdef", max_size=5), min_size=2, max_size=10).map(":".join),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(ipv4_like, min_size=1, max_size=20))
def test_ipv4_agrees_with_ipaddress(values):
    assert invalid_ipv4(pa.array(values)).to_pylist() == [not _python_ip_ok(v, 4) for v in values]


@settings(max_examples=150, deadline=None)
@given(st.lists(ipv6_like, min_size=1, max_size=20))
def test_ipv6_agrees_with_ipaddress(values):
    assert invalid_ipv6(pa.array(values)).to_pylist() == [not _python_ip_ok(v, 6) for v in values]


def _luhn_ok(text: str) -> bool:
    digits = text.replace(" ", "").replace("-", "")
    if not (digits.isascii() and digits.isdigit() and 12 <= len(digits) <= 19):
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(alphabet="0123456789", min_size=10, max_size=21), st.text(alphabet="0123456789 -x", max_size=22)), min_size=1, max_size=30))
def test_luhn_agrees_with_a_plain_python_luhn(values):
    assert invalid_credit_card(pa.array(values)).to_pylist() == [not _luhn_ok(v) for v in values]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), st.text(alphabet="0123456789abcdef-", max_size=37)), min_size=1, max_size=20))
def test_uuid_agrees_with_uuid_module_on_canonical_text(values):
    def ok(text: str) -> bool:
        try:
            return len(text) == 36 and str(uuid.UUID(text)) == text.lower()
        except ValueError:
            return False

    assert format_mask(pa.array(values), "uuid").to_pylist() == [not ok(v) for v in values]


date_text = st.one_of(
    st.dates().map(lambda d: d.strftime("%d/%m/%Y")),
    st.tuples(st.integers(1, 35), st.integers(0, 14), st.integers(1900, 2100)).map(lambda t: f"{t[0]:02d}/{t[1]:02d}/{t[2]}"),
    st.tuples(st.integers(1, 31), st.integers(1, 12), st.integers(1990, 2030)).map(lambda t: f"{t[0]}/{t[1]}/{t[2]}"),
    st.text(alphabet="0123456789/ ", max_size=12),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(date_text, min_size=1, max_size=20))
def test_date_formats_agree_with_python_strptime(values):
    def parse(text: str):
        try:
            return dt.datetime.strptime(text, "%d/%m/%Y")
        except ValueError:
            return None

    parsed = parse_datetimes(pa.array(values), ["%d/%m/%Y"], unit="s")
    assert parsed.values.to_pylist() == [parse(v) for v in values]
    assert parsed.failed.to_pylist() == [parse(v) is None for v in values]


_LOCAL_CHARS = "abcXYZ019_%+=-.'!#&*/?^`{|}~\"() "
_DOMAIN_CHARS = "abcxnXN019-._"
email_like = st.one_of(
    st.emails().map(str),
    st.tuples(st.text(alphabet=_LOCAL_CHARS, min_size=0, max_size=70), st.text(alphabet=_DOMAIN_CHARS, min_size=0, max_size=70),
              st.sampled_from(["com", "de", "test", "local", "c0m", "x", "onion", "arpa", "example"]))
    .map(lambda t: f"{t[0]}@{t[1]}.{t[2]}"),
    st.tuples(st.text(alphabet="ab", min_size=60, max_size=70), st.text(alphabet="ab.", min_size=180, max_size=200)).map(lambda t: f"{t[0]}@{t[1]}.com"),
    # Near the fast path's edge: mostly plain characters, a few that are not.
    st.tuples(st.text(alphabet="ab9_%+=-.", min_size=1, max_size=8), st.text(alphabet="ab9-_.", min_size=1, max_size=8),
              st.sampled_from(["com", "c0m", "1", "test", "xn--bcher-kva", "ab--cd", "x"])).map(lambda t: f"{t[0]}@{t[1]}.{t[2]}"),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(email_like, min_size=1, max_size=15))
def test_email_fast_path_agrees_with_email_validator(values):
    import email_validator

    def bad(value: str) -> bool:
        try:
            email_validator.validate_email(value, check_deliverability=False)
        except email_validator.EmailNotValidError:
            return True
        return False

    assert format_mask(pa.array(values), "email").to_pylist() == [bad(v) for v in values]
