"""What does a reply mean: opt out, opt in, ask for help, or something else? Pure, deterministic, explainable.

Order of the rules, each one naming itself in ``reason``:
1. whole-message keywords (``STOP``, ``stop please!!``, ``STOPPPP``, ``sotp``, ``ARRÊT``, ``AYUDA``, ``START``);
2. ambiguous short replies (``no``, ``x``, ``S``): optout, but ``review`` — a person decides;
3. forwarded ads ("Reply STOP to 80000") are cut out before anything else looks at the text;
4. a clause that is itself a strong keyword ("I never signed up for this, stop");
5. the compositional reading (domain/reading.py, lexicons in domain/lexicons/*.toml): a request frame, an
   action and its object, with negation scope and sense guards — "composed:es:dejen de mandarme+mensajes" is
   an opt-out, "other-sense:en:stop calling+mom" is not, and a clause read as another sense is closed to 6;
6. free-text phrases per language ("please take me off this list"), each refused when negated ("don't stop
   the deals") or used in another sense ("stop by", "bus stop"), and put through the reading's object check
   ("take me off the waiting list" is another sense; "no me manden la camisa azul" goes to review);
7. the review tier: a request or negation about sending with no confident reading ("can you cancel it?",
   "don't text me till Monday") is ``other`` with ``review`` set; the inbound service holds marketing for
   it only when it answers a recent marketing message.
Opt-in and help only ever come from whole-message keywords: nobody is re-subscribed by free text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from optline.domain import lexicon as lx
from optline.domain import reading as reading_
from optline.domain.reading import Verdict


class Intent(StrEnum):
    OPTOUT = "optout"
    OPTIN = "optin"
    HELP = "help"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Classification:
    intent: Intent
    confidence: float  # 0..1: how sure the rule that decided is
    language: str  # en, es, fr, pt, or "und" when nothing tells
    reason: str  # the rule and the words that decided, e.g. "keyword:stop" or "phrase:en:stop texting"
    review: bool = False  # a person should look before anything changes
    brand_wide: bool = False  # "STOPALL", "stop all", "unsubscribe me from everything"


# --- normalisation ----------------------------------------------------------------------------------------

# ASCII punctuation to spaces and apostrophes removed in one C-level pass; the rest only when non-ASCII.
_ASCII_BYTES = bytes(c if (chr(c).isalnum() or chr(c) == "#") else 32 for c in range(256))
_ASCII_TABLE: dict[int, str | None] = {c: " " for c in range(128) if not (chr(c).isalnum() or chr(c) in "#")}
_ASCII_TABLE.update({ord("'"): None, ord("`"): None})
_APOSTROPHES = str.maketrans({"’": None, "‘": None, "´": None, "ʼ": None})
_NON_WORD = re.compile(r"[^a-z0-9#\s]+")
_REPEATS = re.compile(r"([a-z])\1{2,}")  # three or more of the same letter: "stopppp", "pleeease"
_CLAUSES = re.compile(r"[.!?;,:\n\r()\[\]\"…¡¿]+|\s-\s")
_HTML_ENTITY = re.compile(r"&[a-z#0-9]+;")
_SPACES = re.compile(r"\s+")


def _fold(text: str) -> str:
    """Lower case, no accents, no apostrophes, entities removed (still has punctuation)."""
    text = text.casefold()
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
        text = "".join(ch for ch in text if not unicodedata.combining(ch))
    if "&" in text:
        text = _HTML_ENTITY.sub(" ", text)
    return text


def _words(folded: str) -> str:
    """Punctuation and emoji to spaces, runs of repeated letters squeezed, whitespace collapsed."""
    if folded.isascii():
        text = folded.encode().translate(_ASCII_BYTES, b"'`").decode()
    else:
        text = _NON_WORD.sub(" ", folded.translate(_ASCII_TABLE))
    if _REPEATS.search(text):
        text = _REPEATS.sub(r"\1", text)
    return " ".join(text.split())


def normalise(text: str) -> str:
    """The form every rule and lexicon entry is written in (exposed for tests and the CLI)."""
    return _words(_fold(text))


# --- whole-message keywords -------------------------------------------------------------------------------


_DOUBLES = re.compile(r"([a-z])\1+")


def _anchors(words: str) -> frozenset[str]:
    return frozenset(words.split())


def _squeeze(word: str) -> str:
    """All doubled letters to one: 'arrett' -> 'aret', so 'ARRETT' finds 'arret'."""
    return _DOUBLES.sub(r"\1", word)


def _transpositions(word: str) -> set[str]:
    return {word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(len(word) - 1)}


def _edits1(word: str) -> set[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = {a + b[1:] for a, b in splits if b}
    replaces = {a + c + b[1:] for a, b in splits if b for c in letters}
    inserts = {a + c + b for a, b in splits for c in letters}
    return deletes | replaces | inserts | _transpositions(word)


def _build_keywords() -> dict[str, tuple[Intent, str, str]]:
    """phrase -> (intent, language, canonical keyword), including squeezed forms and safe misspellings."""
    table: dict[str, tuple[Intent, str, str]] = {}
    for intent, words in (
        (Intent.OPTOUT, lx.OPTOUT_KEYWORDS),
        (Intent.OPTIN, lx.OPTIN_KEYWORDS),
        (Intent.HELP, lx.HELP_KEYWORDS),
    ):
        for word, lang in words.items():
            table[word] = (intent, lang, word)
    exact = dict(table)
    # Squeezed forms ("arrett" -> "aret"), single words only, never shadowing another exact keyword.
    for word, value in exact.items():
        squeezed = _squeeze(word)
        if squeezed not in exact:
            table.setdefault(squeezed, value)
    # Typos of long single-word opt-out keywords ("unsubscibe"), and transpositions of short ones ("stpo").
    for word, value in exact.items():
        if value[0] is not Intent.OPTOUT or " " in word:
            continue
        if len(word) >= 8:
            variants = _edits1(word)
        elif len(word) >= 5:  # deletions and swaps only: a substitution turns "cancel" into "cancer"
            variants = _transpositions(word) | {word[:i] + word[i + 1 :] for i in range(len(word))}
        else:
            variants = _transpositions(word) if len(word) >= 4 else set()
        for variant in variants:
            if variant not in exact:
                table.setdefault(variant, value)
    for typo, word in lx.MISSPELLINGS.items():
        if word in exact:
            table.setdefault(typo, exact[word])
    return table


_KEYWORDS = _build_keywords()
_STRONG = frozenset({"stop", "stopall", "stop all", "unsubscribe", "unsub", "optout", "opt out", "arret"})
# Single words that are (a spelling of) a strong keyword: the clause rule only runs when one is present.
_STRONG_TOKENS = frozenset(
    w for w, (_, _, canon) in _KEYWORDS.items() if canon in _STRONG and " " not in w
) | {"opt"}
# Every word a keyword reply can consist of.
_VOCABULARY = frozenset(t for w in _KEYWORDS for t in w.split()) | lx.FILLER | lx.EMPHASIS
# Every word of every opt-out keyword: a short message with none of them cannot hold a keyword clause.
_OPTOUT_TOKENS = frozenset(
    t for w, (intent, _, _) in _KEYWORDS.items() if intent is Intent.OPTOUT for t in w.split()
)
_INTERNATIONAL = frozenset({"stop", "stopall", "stop all", "stop sms", "info", "ok"})
_STOP_EMOJI = ("🛑", "⛔", "🚫", "✋", "🤚")
_BRAND_WIDE = frozenset({"stopall", "stop all", "unsubscribe all", "cancel all"})


def _keyword(words: str, tokens: list[str] | None = None) -> tuple[Intent, str, str] | None:
    """The keyword a whole message (or clause) is, with filler around it allowed."""
    hit = _KEYWORDS.get(words)
    if hit:
        return hit
    if tokens is None:
        tokens = words.split()
    if not tokens or len(tokens) > 8:
        return None
    if not _VOCABULARY.issuperset(tokens):
        # Words that are no keyword, filler or emphasis: at most two misspelled ones ("STOPP", "ARRETT")
        # may still become keywords once doubled letters are squeezed; anything else is not a keyword reply.
        unknown = [t for t in tokens if t not in _VOCABULARY]
        if len(unknown) > 2 or any(_squeeze(t) not in _VOCABULARY for t in unknown):
            return None
        tokens = [_squeeze(t) if t in unknown else t for t in tokens]
    core = [t for t in tokens if t not in lx.FILLER]
    if not core:
        return None
    # "stop stop stop", "STOP STOP"
    deduped = list(dict.fromkeys(core))
    for candidate in (" ".join(core), " ".join(deduped)):
        hit = _KEYWORDS.get(candidate) or _KEYWORDS.get(_squeeze(candidate))
        if hit:
            return hit
    # Opt-out words stacked or shouted around: "STOP UNSUBSCRIBE", "arrete stop", "wtf stop", "omg STOP".
    loud = [t for t in deduped if t not in lx.EMPHASIS]
    hits = [_KEYWORDS.get(t) for t in loud]
    if loud and all(h is not None and h[0] is Intent.OPTOUT for h in hits):
        return _KEYWORDS.get(" ".join(loud)) or hits[0]
    return None


# --- forwarded ads and context guards ---------------------------------------------------------------------

_KW = r"(?:stop|stopall|end|unsubscribe|unsub|quit|cancel|optout|opt out|help|info|start|yes|arret|alto|baja|parar|sair)"
# "Reply STOP to opt out", "text STOP to 80000", "send STOP 2 12345", "STOP to end", "txt STOP to cancel".
_AD = re.compile(
    rf"\b(?:reply|text|txt|send|sms|msg|respond|responda|responde|envie|envoyez|repondez|envia|manda)"
    rf"(?: with| the word| back)? {_KW}\b(?: (?:to|2|para|au|pour|a|al)\b(?: [a-z0-9#]+){{0,3}})?"
    rf"|\b{_KW} (?:to|2|para|pour|au) (?:opt out|optout|unsubscribe|unsub|end|cancel|stop|quit|[0-9]+|"
    r"cancelar|salir|desabonner|sair|cancel\w*)\b"
)

_AD_ANCHORS = _anchors(
    "reply text txt send sms msg respond responda responde envie envoyez repondez envia manda"
)

# --- free-text phrases ------------------------------------------------------------------------------------

_NEG = r"(?<!\bdont )(?<!\bnot )(?<!\bnever )(?<!\bcant )(?<!\bwont )(?<!\bno )(?<!\bwouldnt )(?<!\bdidnt )"
_VERB_TEXT = (
    r"(?:text\w*|txt\w*|tx|messag\w*|msg\w*|send\w*|contact\w*|call\w*|spam\w*|bother\w*|harass\w*|"
    r"email\w*|sms\w*|hit\w* me up|writ\w*|ping\w*|notif\w*)"
)
_OBJ = (
    r"(?:texts?|txts?|messages?|msgs?|sms|spam|ads|adverts?|advertis\w*|marketing|promo\w*|notifications?|"
    r"alerts?|offers?|deals|emails?|subscription|membership|nonsense|bullshit|garbage|harassment|madness|junk|crap|shit|bs|stuff|things|updates)"
)
_INTENS = r"(?:ing|fucking|fuckin|fking|fkn|freaking|frickin|effing|bloody|damn|goddamn|god damn|f|the|all|your|ur|these|those|this|with the|with)"
_PROFANITY = r"(?:fuck\w*|fck\w*|fk|shit\w*|damn|stfu|wtf|asshole|bitch\w*|bastard\w*|crap)"


# The spellings _PROFANITY's prefixes take in replies: a rule that needs one runs only when one is present.
_PROFANE_WORDS = (
    "fuck fucks fucked fucking fuckin fucken fuckn fuckers fucker fuckoff fuckery fck fcking fckin fcked fk "
    "shit shits shitty shitting damn stfu wtf asshole assholes bitch bitches bitching bitchin bastard bastards crap"
)
_STOPS = "stop stopp stp sotp quit cease"
_TEXTING = "text texts texting textin txt txts txting messages message msgs msg messaging sending send sms"
_NEGS = "dont do never no didnt did"


@dataclass(frozen=True, slots=True)
class _Rule:
    language: str
    name: str
    pattern: re.Pattern[str]
    anchors: frozenset[str]  # the rule runs only when the message has one of these words (speed)
    max_tokens: int = 10_000  # some phrases only mean "leave me alone" in a short reply
    brand_wide: bool = False
    also: frozenset[str] = frozenset()  # when set, the message must also have one of these words


def _rule(
    lang: str,
    name: str,
    pattern: str,
    anchors: str,
    max_tokens: int = 10_000,
    brand: bool = False,
    also: str = "",
) -> _Rule:
    return _Rule(lang, name, re.compile(pattern), _anchors(anchors), max_tokens, brand, _anchors(also))


_OBJ_WORDS = (
    "text texts txt txts message messages msg msgs sms spam ads advert adverts advertising advertisements "
    "marketing promo promos promotion promotions promotional notification notifications alert alerts offer "
    "offers deals email emails subscription membership nonsense bullshit garbage harassment madness junk crap "
    "shit bs stuff things updates contacted texted messaged"
)
_VERB_WORDS = (
    "text texting texts textin txt txting txts message messaging messages msg msging msgs contact contacting "
    "spam spamming email emailing emails sms send sending call calling"
)


_PHRASES: list[_Rule] = [
    _rule("en", "stop-texting", rf"{_NEG}\b(?:stop|quit|cease|stp|sotp|stopp)(?: {_INTENS}){{0,2}} {_VERB_TEXT}\b", _STOPS),
    _rule("en", "stop-the-texts", rf"{_NEG}\b(?:stop|quit|cease|end|cancel|no more|unsubscribe)(?: [a-z]+){{0,2}} {_OBJ}\b(?! (?:coming|going|flowing|rolling))", _STOPS + " end cancel more unsubscribe", also=_OBJ_WORDS),
    _rule("en", "dont-text-me", r"\b(?:dont|do not|never|quit|stop|no more)(?: ever| even| again)? (?:text\w*|txt\w*|messag\w*|msg\w*|contact\w*|spam\w*|email\w*|sms\w*)(?: [a-z]+)? (?:me|us|this (?:number|phone|cell|line)|my (?:number|phone|cell))\b", _NEGS + " quit stop more", also=_VERB_WORDS),
    _rule("en", "dont-call-me", r"^(?:please |pls |plz )?(?:dont|do not|never|stop|quit) (?:call\w*|ring\w*)(?: me| this number)?(?: (?:again|anymore|any more|ever|please|pls))*$", _NEGS + " stop quit", max_tokens=8),
    _rule("en", "dont-text", r"^(?:please |pls |plz )?(?:dont|do not|never) (?:text|txt|message|msg|contact|call|email|sms|send)(?: (?:again|anymore|any more|ever))?$", _NEGS, max_tokens=8),
    _rule("en", "remove-me", r"\b(?:remove|delete|erase|lose|wipe|unlist|unenroll|unregister|purge) (?:me|my (?:number|name|info\w*|phone|contact\w*|#|cell|details|data|num)|this (?:number|phone|cell|#))\b(?! (?:up|a |an |in |home|there))", "remove delete erase lose wipe unlist unenroll unregister purge"),
    _rule("en", "off-your-list", r"\b(?:(?:remove|take|get|delete|drop|erase|unsubscribe|opt out|opt)(?: me| us| my \w+| this \w+)?|me|my (?:number|name|info|phone|#|cell)|this number) (?:off|from|out of) (?:of )?(?:(?:your|ur|the|this|all|these|every|that|ya|yalls|yall|any|ure) )?(?:\w+ )?(?:list|lists|database|system|contacts|mailing|records|distribution)\b(?! (?:for|of|to|and|from))", "list lists database system contacts mailing records distribution"),
    _rule("en", "take-me-off", r"\b(?:take|get|drop|scratch|cross|strike) (?:me|my (?:number|name|info|phone|#|cell)) (?:off|out)\b(?! (?:at|here|there|by|near|in|on the way|home|early|work|school))(?! \w+ (?:at|street|st|station|road|rd|ave))", "take get drop scratch cross strike", also="off out"),
    _rule("en", "unsubscribe", r"\b(?:unsubscribe|unsubscibe|unsuscribe|unsubcribe|unsub|optout|opt me out|opt out|opting out|opted out)\b", "unsubscribe unsubscibe unsuscribe unsubcribe unsub optout opt opting opted"),
    _rule("en", "dont-want", r"\b(?:dont|do not|no longer|never|didnt|did not) (?:want|wish|need|like|care|asked|ask|agree|consent|give)\w*(?: to)?(?: (?:receive|get|getting|keep|be|any|more|these|your|this|those|the|ur|any more|further|future|keep getting|receiving|continue)){0,3} (?:texts?|txts?|messages?|msgs?|sms|ads|marketing|promo\w*|notifications?|alerts?|emails?|spam|offers?|updates|contacted|texted|messaged)\b", "dont do longer never didnt did", also=_OBJ_WORDS),
    _rule("en", "never-signed-up", r"\b(?:never|didnt|did not|dont remember|do not remember) (?:signed|sign|opted|opt|subscribed|subscribe|registered|register|agreed|gave you|give you)\b", "never didnt did dont do remember", also="signed sign opted opt subscribed subscribe registered register agreed gave give"),
    _rule("en", "why-texting", r"\bwhy (?:do|are|r|does|is) (?:you|u|yall|ya|this number|this company) (?:keep |still |always )?(?:texting|messaging|sending|contacting|spamming|txting|msging|bothering)\b", "why", also="texting messaging sending contacting spamming txting msging bothering"),
    _rule("en", "how-got-number", r"\bhow (?:did|do) (?:you|u|yall) (?:get|got|have) (?:my|this) (?:number|#|phone|cell)", "how", also="number # phone cell"),
    _rule("en", "wrong-number", r"\b(?:wrong (?:number|#|person|phone|no)|not (?:the right|the correct) (?:number|person)|no one by that name|nobody by that name|you have the wrong)\b", "wrong right correct name"),
    _rule("en", "leave-alone", r"\b(?:leave me alone|stop harass\w*|stop bother\w*|stop spam\w*|this is harassment|harassing me|reporting (?:you|this|u) to|report (?:you|this) to the|(?:i blocked|blocking|block) (?:you|this|u|ur|your) ?(?:number|#)?$|do not call list|dnc list|cease and desist)\b", "leave harassment harassing reporting report blocked blocking block list dnc cease"),
    _rule("en", "profanity", rf"(?:^|\b(?:stop|quit|go|just) ){_PROFANITY}(?: \w+)?(?: off| you| u| yourself| outta here)\b|^(?:go away|shut up|get lost|buzz off|bugger off|piss off|screw you)\b", "fuck fucking fuckin fck fk shit stfu go shut get buzz bugger piss screw", max_tokens=6),
    _rule("en", "profanity-texts", rf"\b{_PROFANITY} (?:\w+ )?(?:texts?|messages?|msgs?|spam|number|list)\b", "texts text messages message msgs spam number list", also=_PROFANE_WORDS),
    _rule("en", "no-more", r"\bno (?:more|further|additional) (?:texts?|txts?|messages?|msgs?|sms|ads|marketing|promo\w*|notifications?|alerts?|contact|spam|offers?|emails?)\b|^no more (?:please|pls|thanks|thank you|thx)$", "more further additional", also=_OBJ_WORDS + " please pls thanks thank thx contact"),
    _rule("en", "all-brand", r"\b(?:unsubscribe|remove|take|opt) (?:me )?(?:out )?(?:from|of|off) (?:everything|all|every)\b", "everything all every", brand=True, also="unsubscribe remove take opt"),
    _rule("en", "how-to-stop", r"\bhow (?:do|can|to) (?:i |u |you )?(?:stop|unsubscribe|opt out|get off|cancel|end) (?:this|these|it|them|getting|receiving|the|your|ur|texts?|messages?)\b", "how", also="stop unsubscribe opt get cancel end"),
    _rule("en", "dont-send", r"\b(?:dont|do not|never|stop|quit|pls dont|please dont)(?: ever)? send\w*(?: me| us| this number)?(?: any| anymore| any more| more| these| those| your| ur| this| the| such| further)* (?:texts?|txts?|messages?|msgs?|sms|ads|promo\w*|spam|stuff|offers?|deals|marketing|notifications?|alerts?)\b", "dont do never stop quit", also="send sending sent"),
    _rule("en", "told-you-stop", r"\b(?:said|told (?:you|u|ya|yall)|asked (?:you|u|yall)|asking (?:you|u|yall)|requested|request|begging you|how many times)(?: (?:to|many times|before|already|multiple times|again|several times|a million times|twice|please|you))* (?:stop|unsubscribe|remove me|opt out|take me off|quit)\b", "said told asked asking requested request begging times", also="stop unsubscribe remove opt take quit"),
    _rule("en", "spam-report", r"\b(?:this is spam|(?:reported|reporting|report) (?:this |you |u )?(?:as |for |to )?(?:spam|the ftc|the fcc|ftc|fcc|attorney general)|(?:spam|scam)(?: bot| text| message)?$)\b", "spam ftc fcc general scam"),
    _rule("es", "no-enviar", r"\b(?:favor de |por favor )?no (?:me )?(?:enviar|mandar|escribir|contactar|llamar|molestar)\w*(?: (?:mas|nada))?\b|\bno (?:estoy|estamos) interesad[oa]s?\b", "no", also="enviar mandar escribir contactar llamar molestar enviarme mandarme escribirme contactarme llamarme molestarme estoy estamos"),
    _rule("pt", "nao-enviar", r"\bnao (?:me )?(?:enviar|mandar|escrever|contatar|ligar|incomodar)\w*(?: mais)?\b|\bnao tenho interesse\b|\bnao estou interessad[oa]\b", "nao", also="enviar mandar escrever contatar ligar incomodar tenho estou"),
    # Spanish
    _rule("es", "dejen-de", r"\b(?:deja|dejen|dejar|deje|dejes|dejan|para|paren|pare|parar|basta|termine|terminen|acaben|cese|cesen|detengan|detenga) de (?:me )?(?:mand|envi|escrib|textear|llam|molest|contact|spam)\w*", "deja dejen dejar deje dejes dejan para paren pare parar basta termine terminen acaben cese cesen detengan detenga", also="de"),
    _rule("es", "no-me-manden", r"\bno (?:me )?(?:mandes|manden|mande|envies|envien|envie|escribas|escriban|escriba|llames|llamen|llame|molestes|molesten|moleste|contactes|contacten|contacte)(?: (?:mas|nada|nunca|ningun\w*))?\b", "no", also="mandes manden mande envies envien envie escribas escriban escriba llames llamen llame molestes molesten moleste contactes contacten contacte"),
    _rule("es", "no-quiero", r"\b(?:no|ya no) (?:quiero|deseo|necesito|me interesa\w*|acepto)(?: (?:mas|seguir|recibir|estos|sus|tus|los|ningun|ninguna|ningunos|que me))* (?:recibir|mensajes|textos|sms|mas|nada|promociones|publicidad|anuncios|este|esto|estos|manden|envien|escriban)\b", "quiero deseo necesito interesa acepto"),
    _rule("es", "ya-no", r"^ya no\b(?: (?:mas|quiero|gracias|por favor|mandar|manden|envien))*$", "ya"),
    _rule("es", "no-mas-mensajes", r"\b(?:no|ningun|ninguna) mas (?:mensajes|textos|sms|promociones|publicidad|por favor|gracias)\b|^no mas$", "mas", also="no ningun ninguna"),
    _rule("es", "sacame", r"\b(?:sacame|sacarme|saquenme|saqueme|quitame|quitenme|quiteme|borrame|borrenme|borreme|eliminame|eliminenme|elimineme|borren|borra|borre|quiten|quite|saquen|saque|eliminen|elimine|remuevan|remueve|remueva) (?:mi |mis |el |de |me de )?(?:numero|telefono|cel\w*|lista|datos|su lista|la lista|sus listas|contacto)\b|\b(?:sacame|saquenme|quitame|quitenme|borrame|borrenme|eliminame|eliminenme|darme de baja|dar de baja|denme de baja|deme de baja|desuscribirme|desuscribir|desinscribirme|desuscribanme)\b", "sacame sacarme saquenme saqueme quitame quitenme quiteme borrame borrenme borreme eliminame eliminenme elimineme borren borra borre quiten quite saquen saque eliminen elimine remuevan remueve remueva baja desuscribirme desuscribir desinscribirme desuscribanme"),
    _rule("es", "numero-equivocado", r"\b(?:numero equivocado|numero incorrecto|se equivoco de numero|equivocado de numero|no soy (?:esa|ese|la|el) persona)\b", "equivocado incorrecto soy"),
    _rule("es", "dejame-en-paz", r"\b(?:dejame en paz|dejenme en paz|dejeme en paz|no molesten|no molestes|no me molesten|ya basta|basta ya|que fastidio)\b", "paz molesten molestes basta fastidio"),
    # French
    _rule("fr", "arretez-de", r"\b(?:arretez|arrete|arreter|cessez|cesse|cesser|stop|stoppez|arret) (?:de |d)?(?:m|me |nous |lenvoi |les )?(?:envoy|ecri|contact|appel|harcel|spam|texto|sms|message)\w*", "arretez arrete arreter cessez cesse cesser stop stoppez arret"),
    _rule("fr", "ne-menvoyez-plus", r"\bne (?:m|me |nous )?(?:envoyez|envoie|envoyer|ecrivez|ecris|ecrire|contactez|contacte|contacter|appelez|appelle|harcelez|derangez) ?(?:plus|jamais|pas)\b|\bne plus (?:recevoir|menvoyer|me contacter|etre contacte)|\bne menvoyez (?:plus|pas|jamais)\b", "ne"),
    _rule("fr", "je-ne-veux-plus", r"\b(?:je ne veux|je veux|veux) (?:plus|pas|plus jamais) (?:de |d)?(?:recevoir|messages?|sms|textos?|vos|ces|pub|publicit\w*|promo\w*|etre contacte|rien)\b|\bje ne (?:souhaite|desire) plus\b|\bje ne suis (?:pas|plus) interesse", "veux souhaite desire interesse interessee"),
    _rule("fr", "desabonnez-moi", r"\b(?:desabonnez|desinscrivez|desabonne|desinscris|desabonner|desinscrire)(?: moi| me| mon numero| de)?\b|\b(?:retirez|supprimez|enlevez|effacez|rayez) (?:moi|mon numero|mes coordonnees|de la liste|de votre liste)\b|\bme (?:desabonner|desinscrire|retirer de|desabonne|desinscris)\b", "desabonnez desinscrivez desabonne desinscris desabonner desinscrire retirez supprimez enlevez effacez rayez retirer"),
    _rule("fr", "plus-de", r"\bplus (?:de|d) (?:messages?|sms|textos?|pub\w*|promo\w*|spam|notifications?)\b", "plus"),
    _rule("fr", "mauvais-numero", r"\b(?:mauvais numero|faux numero|erreur de numero|vous vous etes trompe|pas la bonne personne)\b", "mauvais faux erreur trompe personne"),
    _rule("fr", "laissez-moi", r"\b(?:laissez moi tranquille|lachez moi|fichez moi la paix|foutez moi la paix|ca suffit)\b", "laissez lachez fichez foutez suffit"),
    # Portuguese
    _rule("pt", "pare-de", r"\b(?:pare|parem|parar|para|deixe|deixem|deixa|chega) de (?:me )?(?:mand|envi|escrev|lig|incomod|contat|spam|perturb)\w*", "pare parem parar para deixe deixem deixa chega", also="de"),
    _rule("pt", "nao-quero", r"\bnao (?:quero|desejo|preciso|aceito|tenho interesse)(?: (?:mais|receber|continuar|essas|estas|suas|seus|as|os|nenhuma|nenhum|a|o))* (?:receber|mensagens?|sms|textos?|mais|nada|promocoes|propaganda|publicidade|isso|contato|ser contatado|ser contactado)\b", "nao", also="quero desejo preciso aceito tenho"),
    _rule("pt", "nao-me-mande", r"\bnao (?:me )?(?:mande|mandem|envie|enviem|escreva|escrevam|ligue|liguem|contate|contatem|incomode|incomodem|perturbe)\w*(?: (?:mais|nada|nunca))?\b", "nao", also="mande mandem envie enviem escreva escrevam ligue liguem contate contatem incomode incomodem perturbe"),
    _rule("pt", "me-tire", r"\b(?:me )?(?:tira|tire|tirem|tirar|remova|removam|remover|retire|retirem|retirar|exclua|excluam|excluir|apague|apaguem|apagar|descadastre|descadastrem|delete|deletem) (?:me |o meu |meu |o |a minha |minha |da |de |dessa |desta |do |deste |desse )?(?:sua |seu )?(?:numero|telefone|contato|cadastro|dados|lista)\b|\b(?:descadastrar|descadastre|descadastrem|me descadastr\w*|quero sair|sair da lista|cancelar (?:inscricao|assinatura|cadastro))\b", "tira tirar remover retirar excluir apagar tire tirem remova removam retire retirem exclua excluam apague apaguem descadastre descadastrem delete deletem descadastrar descadastra descadastrei descadastrado descadastro descadastrando sair cancelar"),
    _rule("pt", "numero-errado", r"\b(?:numero errado|numero engano|engano de numero|nao sou (?:essa|esse|a|o) pessoa|foi engano)\b", "errado engano sou"),
    _rule("pt", "chega", r"\b(?:me deixe em paz|me deixem em paz|deixa me em paz|chega de (?:mensagens|sms|spam|propaganda)|para de encher)\b", "paz chega encher"),
]  # fmt: skip

# anchor word -> the rules (by position, which is their priority) that need it: a message only runs the
# rules its own words can start.
_RULES_BY_ANCHOR: dict[str, tuple[int, ...]] = {}
for _i, _r in enumerate(_PHRASES):
    for _w in _r.anchors:
        _RULES_BY_ANCHOR[_w] = (*_RULES_BY_ANCHOR.get(_w, ()), _i)

# The words without which no rule below can match: the gate in front of them. Function words that opt-out
# phrases share with everyday talk ("me", "not", "do") are left out; a phrase always has a content word too.
_COMMON = frozenset(
    [
        "me",
        "i",
        "am",
        "im",
        "not",
        "do",
        "no",
        "my",
        "this",
        "the",
        "you",
        "it",
        "that",
        "all",
        "to",
        "of",
        "de",
        "la",
        "le",
        "a",
        "o",
        "e",
        "me",
        "mi",
        "ya",
        "u",
        "ur",
    ]
)
_ANCHORS = frozenset(_RULES_BY_ANCHOR)
# Every word without which no rule, keyword clause, forwarded ad or reading (domain/reading.py) can apply.
# A keyword clause holds every word of its keyword: one word of each (its longest, "shut" of "shut up",
# "wrong" of "wrong #") is enough to let it through.
_KEYWORD_CORES = frozenset(
    max([t for t in w.split() if t not in _COMMON] or [""], key=len)
    for w, (intent, _, _) in _KEYWORDS.items()
    if intent is Intent.OPTOUT
) - {""}
_ANY_GATE = _ANCHORS | _AD_ANCHORS | _STRONG_TOKENS | _KEYWORD_CORES | reading_.ACTION_WORDS
# A clause can be an opt-out keyword only with one of these ("ya no" is the one keyword of common words).
_CLAUSE_NEEDS = _KEYWORD_CORES | {"ya"}


_RULE_NEEDS = tuple((r.max_tokens, r.also) for r in _PHRASES)


def _rules_for(token_set: frozenset[str], size: int) -> list[int]:
    """The phrase rules (by priority) a message's own words can satisfy: an anchor, and an ``also`` word."""
    hits = _ANCHORS.intersection(token_set)
    if not hits:
        return []
    if len(hits) == 1:
        found: tuple[int, ...] | list[int] = _RULES_BY_ANCHOR[next(iter(hits))]
    else:
        found = sorted({i for t in hits for i in _RULES_BY_ANCHOR[t]})
    out = []
    for i in found:
        max_tokens, also = _RULE_NEEDS[i]
        if size <= max_tokens and (not also or not also.isdisjoint(token_set)):
            out.append(i)
    return out


# Another sense of "stop" or "end" in the same clause: "stop by", "bus stop", "stop and shop", "end of".
_OTHER_SENSE = re.compile(
    r"\b(?:stop (?:by|in|over|at|on|off|somewhere|for|and shop|sign|light|watch|motion|loss)|"
    r"(?:bus|next|last|first|pit|truck|one|non|train|tram|subway|rest|full|cup) stop|nonstop|"
    r"(?:dont|never|cant|wont|not|didnt|couldnt|wouldnt) (?:ever )?stop)\b"
)


_EVERYTHING = re.compile(r"\b(?:everything|all (?:of )?(?:your|ur|the|these) |todo|todos|tout|tous|tudo)")

# Enum members looked up once: attribute access on an Enum class is slow in the hot path (Python 3.11).
_OTHER, _OPTOUT = Intent.OTHER, Intent.OPTOUT
_V_OPTOUT, _V_SENSE = Verdict.OPTOUT, Verdict.OTHER_SENSE


_MARK = " qqclauseqq "  # survives _words (letters only, no triple letters) and no message holds it


def _clause_words(folded: str, ad: bool) -> list[str]:
    """Each clause in normal form, a forwarded ad's "Reply STOP to 12345" cut out."""
    if not _CLAUSES.search(folded):
        clauses = [_words(folded)]
    else:  # one normalising pass, the clause breaks kept as a marker word
        clauses = [c.strip() for c in _words(_CLAUSES.sub(_MARK, folded)).split(_MARK.strip())]
    if ad:
        clauses = [_SPACES.sub(" ", _AD.sub(" ", cw)).strip() if cw else cw for cw in clauses]
    return clauses


def _language_vote(tokens: list[str] | frozenset[str], hint: str | None) -> str:
    present = tokens if isinstance(tokens, frozenset) else frozenset(tokens)
    best, best_score = "", 0
    for lang, words in _HINT_SETS:
        score = len(words & present)
        if score > best_score or (score == best_score and score and lang == hint):
            best, best_score = lang, score
    return best or (hint or "und")


_HINT_SETS = tuple(lx.LANGUAGE_HINTS.items())


def _lang(lang: str, tokens: list[str], hint: str | None) -> str:
    if lang:
        return lang
    if hint:
        return hint
    return _language_vote(tokens, None) if len(tokens) > 1 else "und"


def classify(text: str, language_hint: str | None = None) -> Classification:
    hint = language_hint.lower()[:2] if language_hint else None
    return _classify(text or "", hint)


@lru_cache(maxsize=4096)  # replies repeat a lot ("STOP", "Yes"); cached results are immutable
def _classify(text: str, hint: str | None) -> Classification:
    folded = _fold(text)
    words = _words(folded)
    tokens = words.split()
    if not tokens:
        # Only emoji or punctuation. A stop sign or "no entry" alone is a refusal a person should confirm.
        if any(sign in text for sign in _STOP_EMOJI):
            return Classification(_OPTOUT, 0.5, hint or "und", "ambiguous:stop-emoji", review=True)
        return Classification(_OTHER, 0.8, hint or "und", "empty-after-normalising")

    # 1. The whole message is a keyword.
    hit = _keyword(words, tokens)
    if hit:
        intent, lang, word = hit
        if hint and word in _INTERNATIONAL:
            lang = hint  # "STOP" is written the same in every language: the contact's language is the better guess
        exact = words == word or words == _squeeze(word)
        return Classification(
            intent,
            0.99 if exact else 0.95,
            _lang(lang, tokens, hint),
            f"keyword:{word}",
            brand_wide=word in _BRAND_WIDE or ("all" in tokens and intent is _OPTOUT),
        )

    # 2. Ambiguous short replies.
    amb = lx.AMBIGUOUS_OPTOUT.get(words) or (
        lx.AMBIGUOUS_OPTOUT.get(" ".join(t for t in tokens if t not in lx.FILLER))
        if len(tokens) <= 4
        else None
    )
    if amb is not None:
        return Classification(_OPTOUT, 0.5, _lang(amb, tokens, hint), f"ambiguous:{words}", review=True)

    # Cheap gate: most ordinary messages contain none of the words any rule needs.
    if _ANY_GATE.isdisjoint(tokens):
        return Classification(_OTHER, 0.9, _language_vote(tokens, hint), "no-rule-matched")
    token_set = frozenset(tokens)
    readable = reading_.may_read(words, tokens, token_set)
    rules = _rules_for(token_set, len(tokens))
    # 4. needs a short message with an opt-out word, or a strong one; 3. an ad needs its verb.
    short = len(tokens) <= 10 and not _CLAUSE_NEEDS.isdisjoint(token_set)
    strong = not _STRONG_TOKENS.isdisjoint(token_set)
    if not (readable or rules or short or strong) and _AD_ANCHORS.isdisjoint(token_set):
        return Classification(_OTHER, 0.9, _language_vote(token_set, hint), "no-rule-matched")

    # 3. Forwarded ads: cut "Reply STOP to 80000" out, then judge what is left.
    ad = _AD.search(words) if not _AD_ANCHORS.isdisjoint(token_set) else None
    if ad:
        words = _SPACES.sub(" ", _AD.sub(" ", words)).strip()

    # 4. A clause that is a strong keyword on its own: "I never signed up for this, STOP".
    # Clauses in normal form (ad cut out), computed once for the clause keywords and the reading.
    clause_words = _clause_words(folded, ad is not None) if short or strong else None
    for cw in clause_words or ():
        if not cw:
            continue
        chit = _keyword(cw)
        if chit and chit[0] is _OPTOUT and (chit[2] in _STRONG or (len(tokens) <= 10 and " " in chit[2])):
            return Classification(
                _OPTOUT,
                0.9,
                _lang(chit[1], tokens, hint),
                f"clause-keyword:{chit[2]}",
                brand_wide=chit[2] in _BRAND_WIDE,
            )

    # 5. The compositional reading (domain/reading.py): action + object, negation scope, sense guards.
    reading = None
    if readable and _CLAUSES.search(folded):
        # Clause by clause, so that an object or a negation is never taken from across a full stop or a
        # comma, and a request is read as the whole of its clause ("c'est bon, arrêtez").
        if clause_words is None:
            clause_words = _clause_words(folded, ad is not None)
        reading = reading_.read([cw.split() for cw in clause_words], len(tokens))
    elif readable:
        reading = reading_.read([words.split()], len(tokens))
    if reading is not None and reading.verdict is _V_OPTOUT:
        return Classification(
            _OPTOUT,
            reading.confidence,
            _lang(reading.language, tokens, hint),
            reading.reason,
            brand_wide=bool(_EVERYTHING.search(words)),
        )
    if reading is not None and reading.guarded:
        # Clauses about an order, an invoice or another person, or asking for a pause, are not read again
        # by the phrases below.
        for clause in reading.guarded:
            words = words.replace(clause, " ")
        words = _SPACES.sub(" ", words).strip()
        token_set = frozenset(words.split())

    # 6. Free-text phrases, refused when the match sits in another sense of the word.
    doubted = ""  # a phrase refused by the object check below, when nothing else decides
    for i in rules:
        rule = _PHRASES[i]
        if rule.also and rule.also.isdisjoint(token_set):
            continue  # its word sat in a clause read above as another sense or a pause
        m = rule.pattern.search(words)
        if not m:
            continue
        lang, name, brand = rule.language, rule.name, rule.brand_wide
        span = words[max(0, m.start() - 12) : m.end() + 16]
        if (
            lang == "en"
            and _OTHER_SENSE.search(span)
            and not re.search(r"stop (?:\w+ )?(?:texting|messag|sending)", span)
        ):
            continue
        # The phrase goes through the same object and sense check as the reading: "take me off the
        # waiting list" is about a waiting list, "no me manden la camisa azul" about a shirt.
        sense = reading_.phrase_object(m.group(0).split(), words[m.end() :].split())
        if (
            not sense
            and reading is not None
            and reading.object == "(unknown)"
            and reading.action.split()[-1] in m.group(0).split()
            and reading.action.split()[-1] in reading_.SEND_WORDS
        ):
            sense = "noun"  # the reading found the verb's object and knows it is not the messages: ask
        if sense:
            doubted = doubted or f"{sense}:{lang}:{name}:{m.group(0).strip()}"
            continue
        everything = brand or bool(_EVERYTHING.search(words))
        conf = 0.85 if len(tokens) <= 20 else 0.75
        return Classification(
            _OPTOUT,
            conf,
            lang,
            f"phrase:{lang}:{name}:{m.group(0).strip()}",
            brand_wide=everything,
        )

    if reading is not None:
        lang = _lang(reading.language, tokens, hint)
        if reading.verdict is _V_SENSE:
            return Classification(_OTHER, reading.confidence, lang, reading.reason)
        # 7. The review tier: a request or negation about sending with no confident reading. Not an opt-out
        # by itself; the inbound service holds marketing when it answers a recent marketing message.
        return Classification(_OTHER, reading.confidence, lang, "review:" + reading.reason, review=True)
    if doubted.startswith("other:"):
        return Classification(
            _OTHER, 0.8, _language_vote(token_set, hint), "other-sense:phrase:" + doubted[6:]
        )
    if doubted:  # a request about an object nobody named as messages: a person should look
        return Classification(
            _OTHER, 0.4, _language_vote(token_set, hint), "review:phrase:" + doubted, review=True
        )
    if ad:
        return Classification(_OTHER, 0.9, _language_vote(token_set, hint), "forwarded-ad:" + ad.group(0))
    return Classification(_OTHER, 0.8, _language_vote(token_set, hint), "no-rule-matched")
