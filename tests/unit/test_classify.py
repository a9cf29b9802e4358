"""The reply classifier, driven by tables: every example from the issue, the hard negatives, the edge cases."""

from __future__ import annotations

import pytest

from optline.domain.classify import Intent, classify, normalise

OPTOUT = [
    # keywords from Twilio, CTIA, FCC, Telnyx/Plivo, AWS, any case, with punctuation, emoji, filler
    "STOP", "stop", "Stop!", "  StOp.  ", "Stop 🛑", "🛑 STOP 🛑", "STOPALL", "stop all", "STOP ALL",
    "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "OPT OUT", "opt-out", "UNSUB", "REMOVE",
    "stop please!!", "STOP thanks", "please stop", "stop stop stop", "Stop it", "stop now!!!",
    # repeated letters and misspellings
    "STOPPPP", "stooooop", "sotp", "stpo", "stp", "unsubscibe", "unsubcribe", "Unsuscribe", "UNSUBSCRIBEEE",
    # Spanish, French, Portuguese keywords
    "ALTO", "PARAR", "BAJA", "CANCELAR", "DETENER", "NO MAS", "No más", "SALIR", "ARRET", "ARRÊT", "ARRETE",
    "arrêter", "DESABONNER", "Désabonner", "SAIR", "REMOVER", "ARRETT",
    # free text from the issue
    "Please take me off this list", "I never signed up for this, stop", "no more texts thanks",
    "unsubscribe me from everything", "dejen de mandarme mensajes", "ne m'envoyez plus de messages",
    "não quero mais receber", "Stop f***ing texting me", "stop fucking texting me",
    "STOP SENDING ME THESE TEXTS... I don't want to keep getting texts from you",
    "Please don't text me anymore.", "remove me", "Please remove my number from your system. Thank you!",
    "wrong number", "I think u have the wrong number.", "lose my number", "delete my number",
    "don't contact me", "do not call me", "stop calling", "how did you get my number?", "leave me alone",
    "fuck off", "Stop all texts to me!", "I opt out", "opt me out", "I want to opt out of these messages",
    "no quiero recibir más mensajes", "ya no me manden mensajes", "sáquenme de su lista", "Por favor no me escriban más",
    "darme de baja", "número equivocado", "arrêtez de m'envoyer des SMS", "je ne veux plus recevoir vos messages",
    "désabonnez-moi", "mauvais numéro", "pare de me mandar mensagens", "me tire da lista", "número errado",
    "não me mande mais mensagens", "STOP MARKETING", "STOP ads", "I didn't sign up for this",
    "Who gave you my number? Stop.", "Quit texting me", "cease texting",
    # more of the language of opt-outs
    "I said stop", "I've asked you to stop multiple times", "Please do not send me any more messages",
    "Don't ever text me again", "Remove this number", "Take my number off your list", "Reported as spam",
    "wtf stop", "STOP UNSUBSCRIBE", "No thanks. Not interested.", "Wrong number. Who is this?",
    "Stop this nonsense", "cancel my subscription", "Favor de no enviar más mensajes", "No estoy interesado",
    "Ya no me envíen mensajes", "Quiero darme de baja", "Merci de ne plus m'envoyer de messages", "Arrête stp",
    "Veuillez arrêter de m'envoyer des SMS", "Retirez-moi de votre liste", "Não tenho interesse",
    "Me remova da lista", "Para de mandar mensagem", "Stop!! who the hell is this", "cease and desist",
    "Canel", "quti", "Unsubscibe me please", "Stop texting this number", "remove from list",
    "Please take me off your text list", "Me tira dessa lista", "Je ne suis pas intéressé, merci",
    "Not interested anymore", "END ALL", "Paren", "go to hell", "Merci de me retirer de votre liste",
    "Quiten mi número", "Thanks. Go away", "hi. remove me", "do not disturb", "Why do you keep texting me",
    "Arrête de m'écrire", "Pare de me ligar", "NO MORE PLEASE", "how did u get this number",
]  # fmt: skip

NOT_OPTOUT = [
    "I'll stop by the store later", "don't stop the deals coming!", "the bus stop on Main St",
    "Yes, what time do you open?", "send STOP to 80000", "Reply STOP to opt out of these alerts",
    "Text STOP to 12345 to cancel. Msg&data rates may apply", "Yup next stop.", "Stop knowing me so well!",
    "I can't stop singing it.", "Wait 2 min..stand at bus stop", "Now that you have started dont stop.",
    "Hey babe, my friend had to cancel, still up for a visit ?", "Ok, be careful ! Don't text and drive !",
    "Do you have it in blue?", "What are your hours", "Thanks! See you Saturday", "LOL",
    "Can you drop me off at the station?", "Ok u can take me shopping when u get paid",
    "G wants to know where the fuck you are", "Damn, can you make it tonight or do you want to wait",
    "I need to stop at the bank first", "no more already thanks 4 printing", "Stop and Shop has it cheaper",
    "Can you take me off at the corner?", "I'll text you when I'm off work", "Stop it I'm laughing so hard",
    "See you at the end of the week", "I can't stop laughing lol", "Send me the info please",
    "Text me when you get home", "No more excuses, let's go to the gym", "I don't want to go to the party",
    "please remove the pickles from my order", "How do I get to your store?", "👍", "cancer",
    "Can you get me the list from the database", "who is this?", "ok", "Can I cancel my order?",
    "Can you text me the address?", "no more than 2 a week please", "quit playing lol", "Remove the olives please",
    "I'll end up coming tomorrow", "Thanks, I'll quit smoking soon", "please send me more deals",
    "Can I get help with my order", "I'm driving, text later", "yes I want in",
]  # fmt: skip

OPTIN = ["START", "Start", "UNSTOP", "YES", "yes!", "Yes please", "SUBSCRIBE", "JOIN", "RESUME", "CONTINUE",
         "VOLVER", "RECIBIR", "VOLTAR", "RECEBER", "START MARKETING", "Sí", "OUI", "SIM"]  # fmt: skip
HELP = ["HELP", "help", "Help?", "INFO", "AYUDA", "AIDE", "AJUDA", "help please"]
REVIEW = ["no", "NO", "x", "X", "S", "s", "não", "nao", "nope", "No thanks", "🛑"]


@pytest.mark.parametrize("text", OPTOUT)
def test_opt_outs(text: str) -> None:
    result = classify(text)
    assert result.intent is Intent.OPTOUT, result
    assert not result.review, result
    assert result.reason


@pytest.mark.parametrize("text", NOT_OPTOUT)
def test_not_opt_outs(text: str) -> None:
    result = classify(text)
    assert result.intent is not Intent.OPTOUT, result


@pytest.mark.parametrize("text", OPTIN)
def test_opt_ins_only_from_keywords(text: str) -> None:
    assert classify(text).intent is Intent.OPTIN


@pytest.mark.parametrize("text", HELP)
def test_help(text: str) -> None:
    assert classify(text).intent is Intent.HELP


@pytest.mark.parametrize("text", REVIEW)
def test_ambiguous_short_replies_go_to_review(text: str) -> None:
    result = classify(text)
    assert result.review and result.intent is Intent.OPTOUT and result.confidence < 0.7


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("ALTO", "es"),
        ("dejen de mandarme mensajes", "es"),
        ("ARRÊT", "fr"),
        ("ne m'envoyez plus de messages", "fr"),
        ("não quero mais receber", "pt"),
        ("SAIR", "pt"),
        ("STOP", "en"),
        ("please stop texting me", "en"),
    ],
)
def test_language(text: str, language: str) -> None:
    assert classify(text).language == language


def test_language_hint_decides_shared_words() -> None:
    assert classify("CANCELAR", language_hint="pt").language == "pt"
    assert classify("CANCELAR", language_hint="es-MX").language == "es"
    assert classify("STOP", language_hint="fr").language == "fr"  # the same word everywhere
    assert classify("ALTO", language_hint="fr").language == "es"  # a Spanish word stays Spanish


@pytest.mark.parametrize("text", ["STOPALL", "stop all", "unsubscribe me from everything", "UNSUBSCRIBE ALL"])
def test_brand_wide(text: str) -> None:
    assert classify(text).brand_wide


def test_plain_stop_is_not_brand_wide() -> None:
    assert not classify("STOP").brand_wide


def test_opt_in_words_inside_free_text_do_not_resubscribe() -> None:
    for text in ("Yes fine", "I want to start over", "join us for dinner?", "Yes. Last practice"):
        assert classify(text).intent is Intent.OTHER


def test_deterministic_and_explained() -> None:
    a, b = classify("please stop texting me"), classify("please stop texting me")
    assert a == b and a.reason == "composed:en:stop texting+me"
    assert classify("STOP").reason == "keyword:stop"


@pytest.mark.parametrize(
    ("raw", "normal"),
    [("  STÓPPPP!!! 🛑", "stop"), ("Don’t text", "dont text"), ("&lt;#&gt; mins", "# mins")],
)
def test_normalise(raw: str, normal: str) -> None:
    assert normalise(raw) == normal


def test_empty_and_emoji_only() -> None:
    assert classify("").intent is Intent.OTHER and not classify("").review
    assert classify("🙂").intent is Intent.OTHER
