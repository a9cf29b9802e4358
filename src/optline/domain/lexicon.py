"""The words people use to leave, rejoin or ask for help, in English, Spanish, French and Portuguese.

Everything here is written in the *normalised* form ``classify`` compares against: lower case, accents
removed, apostrophes dropped ("don't" -> "dont", "m'envoyez" -> "menvoyez"), other punctuation and emoji
turned into spaces. Sources: Twilio's default opt-out keywords, CTIA's handbook, FCC 47 CFR 64.1200(a)(10),
the Telnyx / Plivo / AWS / Sinch keyword lists, and phrase lists SMS vendors published from observed replies.
The words of the compositional reading (frames, actions, objects, sense guards) are data, per language, in
``lexicons/*.toml`` (read by domain/reading.py).
"""

from __future__ import annotations

# Whole-message keywords: the reply is this word (or phrase) and nothing else but politeness filler.
# value: (intent, language or "" when the word is shared by several languages)
OPTOUT_KEYWORDS: dict[str, str] = {
    # Twilio, CTIA, FCC, Telnyx/Plivo, AWS, Sinch
    "stop": "en", "stopall": "en", "stop all": "en", "unsubscribe": "en", "unsub": "en",
    "cancel": "en", "end": "en", "quit": "en", "revoke": "en", "optout": "en", "opt out": "en",
    "remove": "en", "remove me": "en", "unsubscribe me": "en", "unsubscribe all": "en", "cancel all": "en",
    "stop texting": "en", "stop messaging": "en", "stop sending": "en", "stop text": "en",
    "stop texts": "en", "stop messages": "en", "stop msgs": "en", "stop sms": "", "stop now": "en",
    "stop it": "en", "stop this": "en", "stop that": "en", "stop them": "en", "stop these": "en",
    "stop marketing": "en", "stop ads": "en", "stop promotions": "en", "stop promos": "en",
    "unsubscribe marketing": "en", "cancel marketing": "en", "quit marketing": "en",
    "td": "", "block": "en", "block me": "en", "blocked": "en", "spam": "en", "no more": "en",
    "no more texts": "en", "no more messages": "en", "no more text": "en", "no texts": "en",
    "no more msgs": "en", "no messages": "en", "shut up": "en", "go away": "en", "leave me alone": "en",
    "not interested": "en", "im not interested": "en", "wrong number": "en", "wrong person": "en",
    "wrong #": "en", "do not text": "en", "dont text": "en", "do not contact": "en", "dont contact": "en",
    "do not message": "en", "dont message": "en", "do not call": "en", "dont call": "en", "dnc": "en",
    "delete": "en", "delete me": "en", "take me off": "en", "opt me out": "en", "i opt out": "en",
    "fuck off": "en", "f off": "en", "piss off": "en", "stfu": "en", "enough": "en", "get lost": "en",
    "i am not interested": "en", "not interested thanks": "en", "no longer interested": "en",
    "unsubscribe from this list": "en", "remove this number": "en", "remove number": "en", "stop everything": "en",
    "cancel subscription": "en", "cancel my subscription": "en", "stop 2": "en", "stop2": "en",
    "do not disturb": "en", "dnd": "en", "end all": "en", "quit all": "en", "revoke all": "en", "opt out all": "en", "unsub all": "en",
    "remove from list": "en", "remove from the list": "en", "remove me from list": "en", "go to hell": "en",
    "not interested anymore": "en", "stahp": "en", "stopit": "en", "unsubscribe from all": "en",
    # Spanish
    "alto": "es", "parar": "", "para": "es", "baja": "es", "darme de baja": "es", "dar de baja": "es",
    "de baja": "es", "cancelar": "", "detener": "es", "detente": "es", "no mas": "es", "salir": "es",
    "basta": "es", "basta ya": "es", "ya basta": "es", "terminar": "es", "fin": "", "desuscribir": "es",
    "desuscribirme": "es", "eliminar": "es", "borrar": "es", "no mas mensajes": "es",
    "no me interesa": "es", "numero equivocado": "es", "detener marketing": "es", "salir marketing": "es",
    "cancelar suscripcion": "es", "ya no": "es", "paren": "es", "detengan": "es", "desactivar": "",
    "darse de baja": "es", "baja total": "es", "basta de mensajes": "es", "no molestar": "es", "anular": "es", "retirar": "", "quitar": "es",
    "no estoy interesado": "es", "no estoy interesada": "es", "no me interesa gracias": "es", "alto marketing": "es", "baja marketing": "es",
    # French
    "arret": "fr", "arrete": "fr", "arreter": "fr", "arretez": "fr", "stopsms": "fr",
    "desabonner": "fr", "desabonnement": "fr", "desabonnez moi": "fr", "desinscrire": "fr",
    "desinscription": "fr", "desinscrivez moi": "fr", "annuler": "fr", "stoppez": "fr",
    "plus de messages": "fr", "plus de sms": "fr", "mauvais numero": "fr", "pas interesse": "fr",
    "ca suffit": "fr", "laissez moi tranquille": "fr", "quitter": "fr", "supprimer": "fr", "resilier": "fr",
    "pas interessee": "fr", "je ne suis pas interesse": "fr", "je ne suis pas interessee": "fr", "ne plus recevoir": "fr", "plus de pub": "fr",
    # Portuguese
    "sair": "pt", "remover": "pt", "pare": "", "parem": "pt", "chega": "pt", "descadastrar": "pt",
    "descadastre": "pt", "cancelar inscricao": "pt", "numero errado": "pt", "nao quero": "pt",
    "nao quero mais": "pt", "excluir": "pt", "desinscrever": "pt", "fim": "pt", "bloquear": "pt",
    "descadastro": "pt", "sair da lista": "pt", "me tira da lista": "pt", "nao tenho interesse": "pt", "descadastre me": "pt",
    "nao quero receber": "pt",
}  # fmt: skip

# Ambiguous short replies: a person should look (review) before anything changes. Intent is optout because
# that is what they most often mean after a marketing text, but they never unsubscribe automatically.
AMBIGUOUS_OPTOUT: dict[str, str] = {
    "no": "", "nope": "en", "nah": "en", "n": "", "x": "", "s": "", "nao": "pt", "non": "fr",
    "no thanks": "en", "no thank you": "en", "no thx": "en", "no gracias": "es", "non merci": "fr",
    "nao obrigado": "pt", "nao obrigada": "pt", "q": "",
}  # fmt: skip

OPTIN_KEYWORDS: dict[str, str] = {
    "start": "en", "unstop": "en", "yes": "en", "subscribe": "en", "continue": "en", "resume": "en",
    "begin": "en", "join": "en", "opt in": "en", "optin": "en", "start marketing": "en",
    "subscribe marketing": "en", "start ads": "en", "resubscribe": "en", "restart": "en",
    "si": "es", "volver": "es", "recibir": "es", "alta": "es", "suscribir": "es", "comenzar": "es",
    "iniciar": "", "reanudar": "es", "oui": "fr", "reprendre": "fr", "abonner": "fr", "commencer": "fr",
    "continuar": "", "continuer": "fr", "reiniciar": "", "empezar": "es", "activar": "es", "inscrire": "fr", "demarrer": "fr", "reactiver": "fr",
    "inscrever": "pt", "ativar": "pt", "subscribe me": "en", "sign me up": "en", "start again": "en", "opt me in": "en",
    "sim": "pt", "voltar": "pt", "receber": "pt", "assinar": "pt", "comecar": "pt", "retomar": "",
}  # fmt: skip

HELP_KEYWORDS: dict[str, str] = {
    "help": "en", "info": "", "infos": "fr", "information": "en", "soporte": "es", "suporte": "pt", "help me": "en", "ayuda": "es", "informacion": "es",
    "aide": "fr", "ajuda": "pt", "informacao": "pt", "socorro": "",
}  # fmt: skip

# Words that may surround a keyword without changing it: "stop please!!", "STOP thanks", "ok stop".
FILLER = frozenset(
    [
        "please",
        "pls",
        "plz",
        "plse",
        "pleas",
        "now",
        "thanks",
        "thank",
        "you",
        "thx",
        "ty",
        "ok",
        "okay",
        "k",
        "asap",
        "immediately",
        "already",
        "again",
        "por",
        "favor",
        "gracias",
        "merci",
        "svp",
        "sil",
        "vous",
        "plait",
        "obrigado",
        "obrigada",
        "porfa",
        "pf",
        "xfa",
        "ya",
        "just",
        "sms",
        "text",
        "txt",
        "messages",
    ]
)

# Shouting and swearing around an opt-out keyword ("wtf STOP", "omg stop already") changes nothing.
_EMPHASIS_WORDS = (
    "wtf omg ugh dude man bro seriously god jesus fuck fucking fuckin fck damn hell shit bloody freaking "
    "srsly yo hey oh ffs i said again"
)
EMPHASIS = frozenset(_EMPHASIS_WORDS.split())

FILLER = FILLER | {"anymore", "veuillez", "ever"}

# Common misspellings of whole-message keywords, beyond what repeated-letter squeezing and transposition fix.
MISSPELLINGS: dict[str, str] = {
    "stp": "stop", "sop": "stop", "stopp": "stop", "sotp": "stop", "stpo": "stop", "tsop": "stop",
    "stoop": "stop", "stip": "stop", "srop": "stop", "atop": "stop", "dtop": "stop", "stoo": "stop",
    "unsubscibe": "unsubscribe", "unsubcribe": "unsubscribe", "unsuscribe": "unsubscribe",
    "unsubscrib": "unsubscribe", "unsubsribe": "unsubscribe", "unsubscriber": "unsubscribe",
    "unsubcribe me": "unsubscribe", "unsuscribe me": "unsubscribe", "unsubscibe me": "unsubscribe",
    "unsubscribed": "unsubscribe", "unsuscribirme": "desuscribirme", "stopall": "stopall",
    "cancle": "cancel", "cancell": "cancel", "opt put": "opt out", "opt-out": "opt out",
    "arrette": "arret", "arett": "arret", "aret": "arret", "desabonne": "desabonner", "hlep": "help",
    "hepl": "help", "halp": "help",
}  # fmt: skip

# Function words that tell languages apart when no keyword or phrase did (a cheap vote, not a model).
LANGUAGE_HINTS: dict[str, frozenset[str]] = {
    "en": frozenset(
        [
            "the",
            "you",
            "me",
            "my",
            "i",
            "is",
            "are",
            "and",
            "to",
            "this",
            "that",
            "please",
            "dont",
            "not",
            "your",
            "it",
            "of",
            "for",
            "with",
        ]
    ),
    "es": frozenset(
        [
            "el",
            "la",
            "los",
            "las",
            "de",
            "que",
            "no",
            "me",
            "mi",
            "por",
            "favor",
            "quiero",
            "mas",
            "mensajes",
            "gracias",
            "ya",
            "usted",
            "es",
            "y",
        ]
    ),
    "fr": frozenset(
        [
            "le",
            "la",
            "les",
            "de",
            "je",
            "ne",
            "pas",
            "plus",
            "me",
            "mes",
            "vous",
            "merci",
            "sil",
            "est",
            "et",
            "des",
            "un",
            "une",
        ]
    ),
    "pt": frozenset(
        [
            "o",
            "a",
            "os",
            "as",
            "de",
            "que",
            "nao",
            "me",
            "meu",
            "por",
            "favor",
            "quero",
            "mais",
            "mensagens",
            "obrigado",
            "voce",
            "e",
            "um",
            "uma",
        ]
    ),
}
