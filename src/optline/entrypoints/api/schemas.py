"""Request and response bodies of the /v1 API (Create / Public pairs per resource)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, HttpUrl


class ProgramCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    brand: str = Field(min_length=1, max_length=100)
    sender_numbers: list[str] = []
    short_code: str | None = None
    help_text: str | None = None
    help_contact: str = Field(
        min_length=1, max_length=200, description="customer care for the HELP reply: a URL, email or phone"
    )
    frequency_text: str = Field("Msg frequency varies", max_length=200)
    terms_url: HttpUrl | None = None
    privacy_url: HttpUrl | None = None
    optout_scope: Literal["program", "brand"] = "brand"
    double_opt_in: bool = False
    join_keywords: list[str] = []


class ProgramPublic(BaseModel):
    id: int
    name: str
    brand: str
    sender_numbers: list[str]
    short_code: str | None
    help_text: str
    help_contact: str | None
    frequency_text: str
    terms_url: str | None
    privacy_url: str | None
    optout_scope: str
    double_opt_in: bool
    join_keywords: list[str]
    created_at: datetime


class ContactCreate(BaseModel):
    phone: str
    attributes: dict[str, Any] = {}
    locale: str | None = None
    time_zone: str | None = None


class SubscriptionPublic(BaseModel):
    program: str
    brand: str
    status: str
    held: bool
    since: datetime
    consent_event_id: int | None


class ConsentEventPublic(BaseModel):
    id: int
    seq: int
    program_id: int | None
    brand: str
    action: str
    channel: str
    evidence: dict[str, Any]
    occurred_at: datetime
    recorded_at: datetime
    hash: str


class ContactPublic(BaseModel):
    id: int
    phone: str
    region: str | None
    number_type: str
    time_zone: str | None
    us_state: str | None
    locale: str | None
    attributes: dict[str, Any]
    subscriptions: list[SubscriptionPublic] = []
    history: list[ConsentEventPublic] = []


class ConsentRequest(BaseModel):
    program: str = Field(description="program name")
    action: Literal["opt_in", "opt_out"]
    all_programs_of_brand: bool = Field(False, description="opt-out only: every program of the brand")
    occurred_at: datetime | None = None
    evidence: dict[str, Any] = Field(
        default_factory=dict,
        description="opt-in: source and disclosure_text are required (what the person saw and where)",
    )


class ConsentResult(BaseModel):
    event: ConsentEventPublic
    statuses: dict[str, str]
