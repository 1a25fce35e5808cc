"""The kinds of personal data the detector finds; their names appear in placeholders and in the
counts a stored record carries, so they are part of the contract."""

from __future__ import annotations

from enum import StrEnum


class Entity(StrEnum):
    """One kind of personal data."""

    EMAIL = "EMAIL"
    PHONE_NUMBER = "PHONE_NUMBER"
    CREDIT_CARD = "CREDIT_CARD"
    IBAN = "IBAN"
    IP_ADDRESS = "IP_ADDRESS"
    US_SSN = "US_SSN"
    CA_SIN = "CA_SIN"
    CA_POSTAL_CODE = "CA_POSTAL_CODE"
    SECRET = "SECRET"
    """An API key, access token, password or private key."""
    PERSON = "PERSON"
