import pytest

from optline.domain import compose

BASE = dict(brand="Acme", program_name="deals", phone="+14155550100", locale=None, settings={},
            marketing=True, first_this_month=True, public_url="https://x.test", optout_token="AbCdEfGhJk")  # fmt: skip


def test_fields_brand_prefix_and_optout_instruction() -> None:
    out = compose.compose("Hi {{ first_name }}, 20% off today", attributes={"first_name": "Ana"}, **BASE)
    assert out.body == "Acme: Hi Ana, 20% off today. Reply STOP to opt out."
    assert out.added_brand and out.added_optout


def test_missing_field_is_an_error_not_a_blank() -> None:
    with pytest.raises(compose.TemplateError, match="first_name"):
        compose.compose("Hi {{ first_name }}", attributes={}, **BASE)


def test_sandbox_refuses_python_internals() -> None:
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError):
        compose.render("{{ ''.__class__.__mro__ }}", {})


@pytest.mark.parametrize(("locale", "text"), [("es-MX", "Responde STOP"), ("fr", "Répondez STOP"),
                                               ("pt_BR", "Responda STOP"), ("de", "Reply STOP")])  # fmt: skip
def test_instruction_in_the_contacts_language(locale: str, text: str) -> None:
    out = compose.compose("Acme news", attributes={}, **{**BASE, "locale": locale})
    assert text in out.body


def test_monthly_policy_only_on_first_message_of_the_month() -> None:
    monthly = {**BASE, "settings": {"optout_instruction": "monthly"}}
    assert compose.compose("Acme news", attributes={}, **monthly).added_optout
    later = compose.compose("Acme news", attributes={}, **{**monthly, "first_this_month": False})
    assert not later.added_optout and later.body == "Acme news"


def test_existing_instruction_and_optout_url() -> None:
    out = compose.compose("Acme deals. Opt out: {{ optout_url }}", attributes={}, **BASE)
    assert out.body == "Acme deals. Opt out: https://x.test/u/AbCdEfGhJk" and not out.added_optout
    transactional = compose.compose("Acme: your order shipped", attributes={}, **{**BASE, "marketing": False})
    assert not transactional.added_optout
