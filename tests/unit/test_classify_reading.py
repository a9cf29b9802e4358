"""The compositional reading: what issue 14 promises must, and must not, be an opt-out, in four languages.

These are promises, not measurements: the figures come from ``python -m bench.classifier`` on the evaluation
set in ``bench/replies`` (kept apart from these tests).
"""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest

from optline.domain import reading
from optline.domain.classify import Intent, classify

# The kinds the issue lists, each an automatic opt-out (no review).
OPTOUT = {
    "polite": [
        "I'd really like these texts to end", "would you mind not messaging this number",
        "can you make the texts stop?", "I'd appreciate no more of these", "could you please stop these messages",
        "quisiera no recibir más mensajes", "¿pueden dejar de mandarme mensajes?",
        "je voudrais que vous arrêtiez de m'écrire", "pourriez-vous arrêter les messages ?",
        "gostaria que parassem de me mandar mensagens", "vocês podem parar de me mandar sms?",
    ],
    "removal": [
        "delete my details", "remove my info from your system", "cancel this service", "discontinue the alerts",
        "end my subscription please", "wipe my data from your system", "borren mis datos por favor",
        "eliminen mi información de su sistema", "supprimez mes informations", "effacez mon numéro",
        "apaguem meus dados", "removam minhas informações do sistema", "cancelem esse serviço de mensagens",
    ],
    "twist": ["no stop", "don't text back", "leave me alone", "make it stop", "no me escriban", "ne m'envoyez plus rien"],
}  # fmt: skip

# The same verbs about something else: an invoice, an order, a package, an appointment, another person.
OTHER_SENSE = [
    "don't send me the invoice yet", "stop the order", "no me mandes la factura todavía",
    "ne m'envoyez pas l'ancien modèle", "pare de mandar o pedido nesse endereço", "stop calling my mom",
    "cancel my order", "please cancel the appointment", "remove the item from my cart",
    "don't text my daughter", "cancelen mi pedido", "no le manden mensajes a mi hijo", "annulez ma commande",
    "n'écrivez pas à mon mari", "cancela meu pedido", "não mandem mensagem pro meu filho",
    "I can't stop laughing", "don't stop the weekly deals", "I'll stop in tomorrow",
]  # fmt: skip


@pytest.mark.parametrize("text", [t for texts in OPTOUT.values() for t in texts])
def test_issue_kinds_are_opt_outs(text: str) -> None:
    result = classify(text)
    assert result.intent is Intent.OPTOUT and not result.review, result
    assert result.confidence >= 0.8


@pytest.mark.parametrize("text", OTHER_SENSE)
def test_the_same_verbs_about_something_else_are_not(text: str) -> None:
    result = classify(text)
    assert result.intent is Intent.OTHER and not result.review, result


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("stop calling my mom", "other-sense:en:stop calling+mom"),
        ("no me mandes la factura todavía", "other-sense:es:mandes+factura"),
        ("dejen de mandarme mensajes", "composed:es:dejen de mandarme+mensajes"),
        ("would you mind not messaging this number", "composed:en:messaging+this number"),
    ],
)
def test_the_reason_names_the_action_and_the_object(text: str, reason: str) -> None:
    assert classify(text).reason == reason


@pytest.mark.parametrize(
    "text",
    [
        "can you cancel it?",
        "don't text me till Monday",
        "please don't send it yet",
        "no me escriban hasta el lunes",
    ],
)
def test_no_confident_reading_goes_to_review_never_silently_to_other(text: str) -> None:
    result = classify(text)
    assert result.review and result.intent is Intent.OTHER and result.confidence < 0.5, result
    assert result.reason.startswith("review:cue:")


def test_an_opt_out_anywhere_in_the_message_wins_over_another_sense() -> None:
    result = classify("cancel my order and stop texting me")
    assert result.intent is Intent.OPTOUT and not result.review


def test_language_comes_from_the_words_that_decided() -> None:
    assert classify("borren mis datos por favor").language == "es"
    assert classify("effacez mon numéro").language == "fr"
    assert classify("apaguem meus dados").language == "pt"
    assert classify("delete my details").language == "en"


def test_help_and_start_only_as_whole_messages() -> None:
    assert classify("START").intent is Intent.OPTIN and classify("HELP").intent is Intent.HELP
    for text in ("please start sending me deals again", "I need help with my order", "ayuda con mi pedido"):
        assert classify(text).intent is Intent.OTHER


def test_keywords_in_four_languages_stay_whole_message_keywords() -> None:
    for text in ("STOP", "ALTO", "ARRET", "SAIR"):
        result = classify(text)
        assert result.intent is Intent.OPTOUT and result.reason.startswith("keyword:")


def test_lexicons_are_package_data_with_known_roles() -> None:
    folder = resources.files("optline.domain") / "lexicons"
    known = set(reading.ACTIONS + reading.OBJECTS + reading.OTHER_ROLES)
    for lang in reading.LANGUAGES:
        data = tomllib.loads((folder / f"{lang}.toml").read_text(encoding="utf-8"))
        assert set(data) <= known, (lang, set(data) - known)
        assert {"stop", "send", "messaging", "other", "negator"} <= set(data), lang
        for phrases in data.values():
            # Written in the normalised form the classifier compares against.
            assert all(p == p.lower() and p.isascii() and "'" not in p for p in phrases), (lang, phrases)


def test_segment_takes_the_longest_phrase() -> None:
    units = reading.segment(["dejen", "de", "mandarme", "mensajes"])
    assert [u.text for u in units] == ["dejen de", "mandarme", "mensajes"]
    assert units[0].action == "stop" and "messaging" in units[2].roles


# Dismissals and exits: the sender is told to go, or the person leaves, with no messaging word. Only as the
# whole request; the object, when there is one, decides as for any action.
@pytest.mark.parametrize(
    "text",
    [
        "go away please",
        "I'm blocking you",
        "we want out",
        "count me out of this",
        "I want out of your list",
        "déjenme en paz",
        "me salgo de la lista",
        "je veux sortir de la liste",
        "sai fora daqui",
        "me deixem em paz",
        "quero sair da lista",
    ],
)
def test_dismissals_and_exits_are_opt_outs(text: str) -> None:
    result = classify(text)
    assert result.intent is Intent.OPTOUT and not result.review, result


@pytest.mark.parametrize(
    "text",
    [
        "the pain will go away",
        "I'm out of milk, can you grab some",
        "count me in",
        "block the card please",
        "vou sair pra jantar com a Ana",
        "I want out of the lease",
        "je veux sortir ce soir",
        "quiero salir a cenar",
    ],
)
def test_dismissal_and_exit_words_in_statements_or_about_something_else_are_not(text: str) -> None:
    assert classify(text).intent is Intent.OTHER, classify(text)


# A negation reaches across a helper verb ("volver a", "keep", "essayer de", "continuar").
@pytest.mark.parametrize(
    "text",
    [
        "please don't keep texting me",
        "do not try to message this number",
        "no vuelvas a escribirme",
        "no sigan mandándome mensajes",
        "n'essayez plus de m'écrire",
        "ne continuez pas à m'envoyer des sms",
        "não voltem a me mandar sms",
        "nunca mais voltem a me escrever",
    ],
)
def test_negation_reaches_across_a_helper_verb(text: str) -> None:
    result = classify(text)
    assert result.intent is Intent.OPTOUT and not result.review, result


# Fixed phrases go through the same object check as the reading.
@pytest.mark.parametrize(
    ("text", "review"),
    [
        ("take me off the wait list", False),
        ("remove me from the group chat", False),
        ("sáquenme de la lista de espera", False),
        ("retirez-moi de la liste d'attente", False),
        ("me tirem da lista de espera", False),
        ("no me manden el sillón", True),
        ("ne m'envoyez pas la lampe", True),
        ("stop sending my daughter's grades", True),
    ],
)
def test_fixed_phrases_check_their_object(text: str, review: bool) -> None:
    result = classify(text)
    assert result.intent is Intent.OTHER and result.review is review, result


def test_a_phrase_about_messages_keeps_its_reading() -> None:
    for text in ("take me off the mailing list", "no me manden más mensajes", "stop sending me these texts"):
        assert classify(text).intent is Intent.OPTOUT, text


@pytest.mark.parametrize(
    "text",
    [
        "I'd rather you didn't message me",
        "prefiero que no me escriban",
        "je préférerais que vous ne m'écriviez plus",
        "stop sending those, thanks a lot",
        "please drop this number",
        "get off my phone",
        "stop pestering me",
        "para de encher o saco",
    ],
)
def test_wishes_messaging_verbs_and_numbers_are_opt_outs(text: str) -> None:
    result = classify(text)
    assert result.intent is Intent.OPTOUT and not result.review, result


@pytest.mark.parametrize(
    "text",
    [
        "you didn't text me back yesterday",
        "drop me off at the corner",
        "no dejen de mandar los cupones",
        "não parem de mandar as promoções",
        "n'arrêtez pas les offres",
        "get off the train at Main St",
    ],
)
def test_statements_and_negated_stops_are_not(text: str) -> None:
    result = classify(text)
    assert result.intent is Intent.OTHER and not result.review, result


def test_a_pronoun_after_a_repeated_sending_is_the_messages() -> None:
    for text in ("don't keep sending this", "no sigan mandando eso", "não voltem a mandar isso"):
        result = classify(text)
        assert result.intent is Intent.OPTOUT and not result.review, (text, result)
    assert classify("don't send this").review  # once: it may be a thing, a person should look


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("I want my details deleted", Intent.OPTOUT),
        ("quiero mi número eliminado", Intent.OPTOUT),
        ("how did you get my number? delete it", Intent.OPTOUT),
        ("can you delete it?", Intent.OTHER),
        ("cancelem o envio de mensagens", Intent.OPTOUT),
        ("cancel the membership of my gym", Intent.OTHER),
        ("stop the sending of alerts", Intent.OPTOUT),
    ],
)
def test_objects_before_participles_across_clauses_and_after_of(text: str, intent: Intent) -> None:
    assert classify(text).intent is intent, classify(text)


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("not interested, thanks", Intent.OPTOUT),
        ("ya no tengo interés", Intent.OPTOUT),
        ("sem interesse", Intent.OPTOUT),
        ("je ne suis plus intéressée", Intent.OPTOUT),
        ("not interested in the blue one, do you have red", Intent.OTHER),
        ("I want to stop receiving them", Intent.OPTOUT),
        ("dejar de recibir el periódico", Intent.OTHER),
        ("me tira desse grupo de oração", Intent.OTHER),
        ("remove me from the carpool", Intent.OTHER),
        ("take my number off your records", Intent.OPTOUT),
        ("retirez-moi de vos fichiers clients", Intent.OPTOUT),
        ("não me liguem", Intent.OPTOUT),
        ("favor me remover", Intent.OPTOUT),
        ("I'm sick of these texts", Intent.OPTOUT),
    ],
)
def test_interest_receiving_sources_and_clitics(text: str, intent: Intent) -> None:
    result = classify(text)
    assert result.intent is intent and (intent is Intent.OTHER or not result.review), result


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("please refrain from messaging me", Intent.OPTOUT),
        ("je refuse de recevoir ces sms", Intent.OPTOUT),
        ("me niego a recibir sus mensajes", Intent.OPTOUT),
        ("parem com isso", Intent.OPTOUT),
        ("stop all communication", Intent.OPTOUT),
        ("não tenho interesse nessa cor", Intent.OTHER),
        ("not interested in the annual plan", Intent.OTHER),
    ],
)
def test_refusals_and_interest_in_something_named(text: str, intent: Intent) -> None:
    result = classify(text)
    assert result.intent is intent and (intent is Intent.OTHER or not result.review), result


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("ok, arrêtez", Intent.OPTOUT),
        ("¿cómo me salgo de la lista?", Intent.OPTOUT),
        ("como faço pra sair da lista", Intent.OPTOUT),
        ("no me llamen ni me escriban", Intent.OPTOUT),
        ("don't call me honey", Intent.OTHER),
        ("no me mandes fotos, mejor texto", Intent.OTHER),
        ("I've told you to stop several times", Intent.OPTOUT),
        ("I'm tired of them eating my lunch", Intent.OTHER),
    ],
)
def test_clauses_questions_conjunctions_and_names(text: str, intent: Intent) -> None:
    result = classify(text)
    assert result.intent is intent and (intent is Intent.OTHER or not result.review), result


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("delete my previous text please", Intent.OTHER),
        ("borra mi mensaje anterior", Intent.OTHER),
        ("remove my text alerts", Intent.OPTOUT),
        ("I've blocked you", Intent.OPTOUT),
        ("I'm out of here by noon", Intent.OTHER),
        ("je ne veux plus être importuné", Intent.OPTOUT),
    ],
)
def test_own_messages_places_and_passives(text: str, intent: Intent) -> None:
    result = classify(text)
    assert result.intent is intent and (intent is Intent.OTHER or not result.review), result


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("I'd like to be unsubscribed", Intent.OPTOUT),
        ("quero ser excluído", Intent.OPTOUT),
        ("I would like to be removed from the carpool", Intent.OTHER),
        ("can we stop receiving these?", Intent.OPTOUT),
        ("arrêtez vos envois", Intent.OPTOUT),
        ("não mandem mais nada nesse número", Intent.OPTOUT),
    ],
)
def test_passive_requests_and_questions(text: str, intent: Intent) -> None:
    result = classify(text)
    assert result.intent is intent and (intent is Intent.OTHER or not result.review), result
