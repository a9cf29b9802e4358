"""Request and response bodies of the /v1 API (Create / Public pairs per resource)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from optline.entrypoints.api.fields import GivenTime, JsonObject, Timestamp, text

Name = Annotated[str, text(100, min_length=1)]
Short = Annotated[str, text(200)]
Phone = Annotated[str, text(40, min_length=1)]


class Problem(BaseModel):
    """Every error answer: ``detail`` says what is wrong and where (a list of them for a request that does
    not match the schema)."""

    detail: str | list[dict[str, Any]]


class ProgramCreate(BaseModel):
    name: Name
    brand: Name
    sender_numbers: list[Phone] = Field([], max_length=100)
    short_code: Annotated[str, text(20)] | None = None
    help_text: Annotated[str, text(1000)] | None = None
    help_contact: Annotated[str, text(200, min_length=1)] = Field(
        description="customer care for the HELP reply: a URL, email or phone"
    )
    frequency_text: Short = "Msg frequency varies"
    terms_url: HttpUrl | None = None
    privacy_url: HttpUrl | None = None
    optout_scope: Literal["program", "brand"] = "brand"
    double_opt_in: bool = False
    join_keywords: list[Annotated[str, text(50, min_length=1)]] = Field([], max_length=50)
    optout_link: bool = Field(True, description="add the personal one-tap opt-out link to marketing messages")


class SendingWindow(BaseModel):
    start: Annotated[str, text(5)] = Field(
        description="HH:MM, the recipient's local time, 08:00 at the earliest"
    )
    end: Annotated[str, text(5)] = Field(description="HH:MM, 21:00 at the latest")


class ProgramSettingsUpdate(BaseModel):
    """Only the fields given change; each is checked by the rules the dashboard's program page uses."""

    # A field this route cannot change (a typo, or "brand") is refused, not ignored: a 200 would say it
    # was changed.
    model_config = ConfigDict(extra="forbid")

    optout_link: bool | None = None
    optout_instruction: Literal["every", "monthly"] | None = None
    quiet_hours: SendingWindow | None = Field(
        None, description="the program's sending window; null or 08:00-21:00 (the law's) removes it"
    )
    disclosure: Annotated[str, text(2000)] | None = Field(
        None,
        description="the sign-up disclosure: a changed text becomes a new version (every CTIA element "
        'checked); null or "" goes back to the text composed from the program',
    )

    @model_validator(mode="before")
    @classmethod
    def _something_known(cls, data: Any) -> Any:
        if isinstance(data, dict):
            changeable = ", ".join(cls.model_fields)
            unknown = [str(k) for k in data if k not in cls.model_fields]
            if unknown:
                raise ValueError(
                    f"cannot change {', '.join(map(repr, unknown))} with PATCH (it changes: {changeable})"
                )
            if not data:
                raise ValueError(f"nothing to change: give one of {changeable}")
        return data


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
    optout_link: bool
    quiet_hours: SendingWindow | None = None
    disclosure: str = Field(description="the disclosure a sign-up shows now")
    disclosure_version: int | None = Field(
        description="its version (null: not shown to anyone yet, so not recorded yet)"
    )
    created_at: Timestamp


class ContactCreate(BaseModel):
    phone: Phone
    attributes: JsonObject = {}
    locale: Annotated[str, text(35)] | None = None
    time_zone: Annotated[str, text(64)] | None = None


class SubscriptionPublic(BaseModel):
    program: str
    brand: str
    status: str
    held: bool
    since: Timestamp
    consent_event_id: int | None


class ConsentEventPublic(BaseModel):
    id: int
    seq: int
    program_id: int | None
    brand: str
    action: str
    channel: str
    evidence: dict[str, Any]
    occurred_at: Timestamp
    recorded_at: Timestamp
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
    program: Name = Field(description="program name")
    action: Literal["opt_in", "opt_out"]
    all_programs_of_brand: bool = Field(False, description="opt-out only: every program of the brand")
    occurred_at: GivenTime | None = None
    evidence: JsonObject = Field(
        default_factory=dict,
        description="opt-in: source and disclosure_text are required (what the person saw and where)",
    )


class ConsentResult(BaseModel):
    event: ConsentEventPublic
    statuses: dict[str, str]
