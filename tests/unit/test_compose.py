import pytest

from optline.domain import compose, segments

BASE = dict(
    brand="Acme",
    program_name="deals",
    phone="+14155550100",
    locale=None,
    settings={},
    marketing=True,
    first_this_month=True,
    public_url="https://x.test",
    optout_token="AbCdEfGhJk",
)


LINK = "https://x.test/u/AbCdEfGhJk"
NO_LINK = {**BASE, "settings": {"optout_link": False}}


def test_fields_brand_prefix_and_optout_instruction_with_the_personal_link() -> None:
    out = compose.compose("Hi {{ first_name }}, 20% off today", attributes={"first_name": "Ana"}, **BASE)
    assert out.body == f"Acme: Hi Ana, 20% off today. Reply STOP to opt out or tap {LINK}"
    assert out.added_brand and out.added_optout and out.added_link


def test_link_setting_off_gives_the_stop_sentence_alone() -> None:
    out = compose.compose("Hi {{ first_name }}, 20% off today", attributes={"first_name": "Ana"}, **NO_LINK)
    assert out.body == "Acme: Hi Ana, 20% off today. Reply STOP to opt out."
    assert out.added_optout and not out.added_link


def test_programs_without_the_setting_get_the_link() -> None:
    # Programs created before the setting existed have no "optout_link" key: the default is on.
    assert compose.optout_link_on({}) and not compose.optout_link_on({"optout_link": False})
    assert (
        LINK in compose.compose("Acme news", attributes={}, **{**BASE, "settings": {"language": "en"}}).body
    )


def test_missing_field_is_an_error_not_a_blank() -> None:
    with pytest.raises(compose.TemplateError, match="first_name"):
        compose.compose("Hi {{ first_name }}", attributes={}, **BASE)


def test_sandbox_refuses_python_internals() -> None:
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError):
        compose.render("{{ ''.__class__.__mro__ }}", {})


@pytest.mark.parametrize(
    ("locale", "text"),
    [
        ("es-MX", f"Responde STOP para darte de baja o toca {LINK}"),
        ("fr", f"Répondez STOP pour vous désabonner ou touchez {LINK}"),
        ("pt_BR", f"Responda STOP para cancelar ou toque {LINK}"),
        ("de", f"Reply STOP to opt out or tap {LINK}"),  # no German wording: English
    ],
)
def test_instruction_and_link_in_the_contacts_language(locale: str, text: str) -> None:
    out = compose.compose("Acme news", attributes={}, **{**BASE, "locale": locale})
    assert out.body == f"Acme news. {text}"
    # Every wording is GSM-7: the link never turns a message into UCS-2 (which would double its cost).
    assert segments.count(out.body).is_gsm7


@pytest.mark.parametrize("lang", sorted(compose.OPTOUT_INSTRUCTIONS))
def test_every_language_has_each_wording_and_the_link_ends_the_message(lang: str) -> None:
    with_link = compose.compose("Acme news", attributes={}, **{**BASE, "locale": lang}).body
    alone = compose.compose("Acme news. Reply STOP to end", attributes={}, **{**BASE, "locale": lang}).body
    # Nothing after the link: some phones take a trailing full stop into the URL.
    assert with_link.endswith(LINK) and alone.endswith(LINK)
    assert compose.OPTOUT_INSTRUCTIONS[lang].split()[1] == "STOP" and "STOP" in with_link


def test_the_link_costs_its_real_length_in_segments() -> None:
    # 105 characters of text: one segment with "Reply STOP to opt out." (128 characters in all), two with the
    # link (164). The preview, lint and the dry run measure this same text (a token of the real length).
    text = "Acme: " + "x" * 99
    off = compose.compose(text, attributes={}, **NO_LINK).body
    on = compose.compose(text, attributes={}, **BASE).body
    assert (segments.count(off).segments, segments.count(on).segments) == (1, 2)
    assert len(on) - len(off) == len(" or tap ") + len(LINK) - 1  # the link and "or tap", minus the full stop


def test_monthly_policy_only_on_first_message_of_the_month_and_the_link_in_every_one() -> None:
    monthly = {**BASE, "settings": {"optout_instruction": "monthly"}}
    first = compose.compose("Acme news", attributes={}, **monthly)
    assert first.added_optout and first.body == f"Acme news. Reply STOP to opt out or tap {LINK}"
    later = compose.compose("Acme news", attributes={}, **{**monthly, "first_this_month": False})
    assert not later.added_optout and later.added_link and later.body == f"Acme news. Opt out: {LINK}"
    spanish = compose.compose(
        "Acme news", attributes={}, **{**monthly, "first_this_month": False, "locale": "es"}
    )
    assert spanish.body == f"Acme news. Darte de baja: {LINK}"
    # With the link off, the monthly policy's later messages carry nothing (as before the link existed).
    quiet = {
        **BASE,
        "settings": {"optout_instruction": "monthly", "optout_link": False},
        "first_this_month": False,
    }
    later_off = compose.compose("Acme news", attributes={}, **quiet)
    assert later_off.body == "Acme news" and not later_off.added_optout and not later_off.added_link


def test_template_with_its_own_stop_wording_still_gets_the_link() -> None:
    out = compose.compose("Acme news. Reply STOP to end", attributes={}, **BASE)
    assert out.body == f"Acme news. Reply STOP to end. Opt out: {LINK}"
    assert not out.added_optout and out.added_link


def test_template_placing_optout_url_gets_nothing_added() -> None:
    out = compose.compose("Acme deals. Opt out: {{ optout_url }}", attributes={}, **BASE)
    assert out.body == f"Acme deals. Opt out: {LINK}" and not out.added_optout and not out.added_link
    assert out.body.count("/u/") == 1


def test_transactional_and_replies_never_get_the_instruction_or_the_link() -> None:
    transactional = compose.compose("Acme: your order shipped", attributes={}, **{**BASE, "marketing": False})
    assert transactional.body == "Acme: your order shipped"
    assert not transactional.added_optout and not transactional.added_link


def test_no_token_no_link() -> None:
    out = compose.compose("Acme news", attributes={}, **{**BASE, "optout_token": None})
    assert out.body == "Acme news. Reply STOP to opt out." and not out.added_link
