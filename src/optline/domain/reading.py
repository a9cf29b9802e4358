"""A compositional reading of a free-text reply: [request frame] [negator] action [object].

Keywords and fixed phrases only know the sentences someone wrote down. A reading knows the parts: an
*action* that ends or removes something ("stop", "cancel", "delete", "dejen de", "arrêtez", "parem de"), a
messaging verb that counts only when negated or under a stop verb ("don't text me", "stop sending"), and
the *object* the action is about. The object decides:

- messages, alerts, promotions, the programme itself, the person or their data -> an opt-out;
- an order, invoice, package, appointment or another person -> another sense ("stop the order", "no me
  mandes la factura", "stop calling my mom"), never an opt-out;
- a pronoun, an unknown word or a time limit ("don't text me till 5") -> no confident reading: a cue that a
  person should look at the reply (the review tier).

Two more kinds of action need no messaging word: a *dismissal* ("go away", "bloqueia esse número") and an
*exit* ("I want out", "count me out", "quiero salir de la lista"); they read only as the whole request (a
subject, frame or filler before them, nothing else), and their object decides the same way. A negation
reaches across *helper* verbs ("no me vuelvan a escribir", "n'essayez plus de me contacter", "não continuem
mandando"). The fixed phrases of classify go through the same object check (``phrase_object``).

The words of each role live in per-language data files (``lexicons/*.toml``), not in code. A message is read
with the four lexicons at once: replies mix languages, and most words belong to one of them anyway.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources

LANGUAGES = ("en", "es", "fr", "pt")

# Roles of a lexicon file. Actions first: a word that is both an action and something else is an action.
ACTIONS = (
    "uninterested", "refuse", "nomore", "stop", "cancel", "remove", "exit", "dismiss", "send_negated", "send",
    "send_weak",
)  # fmt: skip
OBJECTS = ("messaging", "service", "other", "person", "anaphor")
OTHER_ROLES = (
    "frame", "negator", "blocker", "skip", "guard_after", "temporal", "temporal_send", "third", "article",
    "verb_endings", "helper", "subject", "determiner", "wish", "clitic_me", "participle", "receive", "break", "mine", "own",
)  # fmt: skip
_WINDOW = 6  # how far after an action its object may be (in lexicon units)
# Words that end the search for an object: what follows is another thought ("stop texting me about my order").
_BREAKS = frozenset(
    ["about", "because", "since", "but", "and", "or", "pero", "porque", "et", "if", "cause", "cuz", "bc"]
)


class Verdict(StrEnum):
    OPTOUT = "optout"  # a confident opt-out reading
    OTHER_SENSE = "other-sense"  # an opt-out verb about something else
    CUE = "cue"  # a request or negation about sending, but no confident reading: review


@dataclass(frozen=True, slots=True)
class Unit:
    text: str
    roles: frozenset[str]
    langs: frozenset[str]
    action: str | None = None  # the first of ACTIONS among roles, worked out once at load time


@dataclass(frozen=True, slots=True)
class Reading:
    verdict: Verdict
    language: str  # "" when the words belong to several languages
    action: str
    object: str  # the object words, or a marker: "(none)", "(unknown)", "(temporal)"
    confidence: float
    framed: bool  # a request frame ("could you", "je voudrais", "gostaria") came with it
    # Clauses read as another sense or as a pause ("don't text me till Monday"): fixed phrases must not read
    # them again as an opt-out.
    guarded: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        """ "composed:en:stop texting+me", "other-sense:es:mandes+factura", "cue:en:cancel+it"."""
        kind = "composed" if self.verdict is Verdict.OPTOUT else self.verdict.value
        return f"{kind}:{self.language or 'und'}:{self.action}+{self.object}"


def _load() -> tuple[dict[str, Unit], int]:
    """phrase -> Unit over all languages, and the longest phrase in words."""
    roles: dict[str, set[str]] = {}
    langs: dict[str, set[str]] = {}
    folder = resources.files("optline.domain") / "lexicons"
    for lang in LANGUAGES:
        data = tomllib.loads((folder / f"{lang}.toml").read_text(encoding="utf-8"))
        for role, phrases in data.items():
            if role not in ACTIONS + OBJECTS + OTHER_ROLES:
                raise ValueError(f"lexicons/{lang}.toml: unknown role {role!r}")
            if role == "verb_endings":
                continue  # suffixes, see _load_endings
            for phrase in phrases:
                roles.setdefault(phrase, set()).add(role)
                langs.setdefault(phrase, set()).add(lang)
    table = {
        p: Unit(p, frozenset(r), frozenset(langs[p]), next((a for a in ACTIONS if a in r), None))
        for p, r in roles.items()
    }
    return table, max(len(p.split()) for p in table)


TABLE, _LONGEST = _load()


def _load_endings() -> dict[str, tuple[str, ...]]:
    folder = resources.files("optline.domain") / "lexicons"
    out = {}
    for lang in LANGUAGES:
        data = tomllib.loads((folder / f"{lang}.toml").read_text(encoding="utf-8"))
        out[lang] = tuple(data.get("verb_endings", ()))
    return out


_ENDINGS = _load_endings()  # verb endings are suffixes, not phrases: kept out of TABLE
# One word per action phrase, its longest (the content word: "want" of "dont want", "receber" of "de nao
# receber"): a message or clause with none of them has no reading, so most ordinary SMS skip the reader.
_FUNCTION = frozenset(
    ["not", "dont", "did", "didnt", "never", "do", "no", "ne", "nao", "de", "me", "je", "ya", "i", "to", "de"]
)
_SENDS = frozenset({"send", "send_weak"})
# Every messaging verb (its object is what is sent: "no me mandes audio" is about audio).
SEND_WORDS = frozenset(p for p, u in TABLE.items() if u.action in ("send", "send_weak", "send_negated"))
_SENDING = frozenset(
    {"send", "send_weak", "send_negated"}
)  # "ne continuez pas à m'envoyer": "a" is no article


def _anchor(phrase: str) -> str:
    words = [w for w in phrase.split() if w not in _FUNCTION] or phrase.split()
    return max(words, key=len)


def _needs(roles: frozenset[str]) -> dict[str, tuple[str, ...]]:
    """anchor word -> the action phrases it anchors, padded for a substring test ("more" -> " no more ")."""
    needs: dict[str, set[str]] = {}
    for phrase, unit in TABLE.items():
        if not unit.roles.isdisjoint(roles):
            needs.setdefault(_anchor(phrase), set()).add(f" {phrase} ")
    return {anchor: tuple(sorted(phrases)) for anchor, phrases in needs.items()}


_NEEDS = _needs(frozenset(a for a in ACTIONS if a not in _SENDS))
_STRONG = frozenset(_NEEDS)
_SINGLE = frozenset(anchor for anchor, phrases in _NEEDS.items() if f" {anchor} " in phrases)
_SEND_WORDS = frozenset(_needs(_SENDS))
# Single-word negators only: "dont", "no", "ne", "nao" ("do not" has "not"; "please dont" has "dont").
_NEG_WORDS = frozenset(
    p for p, u in TABLE.items() if not u.roles.isdisjoint({"negator", "blocker"}) and " " not in p
)  # blockers too: after a wish frame they negate ("I'd rather you didn't text me")
ACTION_WORDS = _STRONG | _SEND_WORDS


def may_read(words: str, tokens: list[str], present: frozenset[str]) -> bool:
    """Whether a reading is possible at all (the cheap gate in front of it): a stop, remove or refusal phrase
    as written, or a messaging verb with a negator just before it (a messaging verb alone asks for more)."""
    hits = ACTION_WORDS.intersection(present)
    if not hits:
        return False
    strong = _STRONG.intersection(hits)
    if strong:
        if not _SINGLE.isdisjoint(strong):
            return True  # a one-word action ("stop", "remove", "cancelen") is its own phrase
        padded = f" {words} "
        for anchor in strong:
            if any(phrase in padded for phrase in _NEEDS[anchor]):
                return True
    if _NEG_WORDS.isdisjoint(present) or _SEND_WORDS.isdisjoint(hits):
        return False
    for i, token in enumerate(tokens):
        if token in _SEND_WORDS and not _NEG_WORDS.isdisjoint(tokens[max(0, i - 6) : i]):
            return True
    return False


_SIZES: dict[str, tuple[int, ...]] = {}  # first word -> lengths of the phrases it starts, longest first
for _p in TABLE:
    _w = _p.split()
    _SIZES[_w[0]] = tuple(sorted({*_SIZES.get(_w[0], ()), len(_w)}, reverse=True))
_NO_ROLES: frozenset[str] = frozenset()
_UNKNOWN: dict[str, Unit] = {}  # units of words in no lexicon, made once (they are immutable)


def segment(tokens: list[str]) -> list[Unit]:
    """Greedy longest match of lexicon phrases; words in no lexicon become units without roles."""
    units: list[Unit] = []
    i, n = 0, len(tokens)
    while i < n:
        for size in _SIZES.get(tokens[i], ()):
            if i + size > n:
                continue
            unit = TABLE.get(" ".join(tokens[i : i + size]) if size > 1 else tokens[i])
            if unit is not None:
                units.append(unit)
                i += size
                break
        else:
            unit = _UNKNOWN.get(tokens[i])
            if unit is None:
                if len(_UNKNOWN) > 20_000:  # a bound on memory; the common words come back at once
                    _UNKNOWN.clear()
                unit = _UNKNOWN[tokens[i]] = Unit(tokens[i], _NO_ROLES, _NO_ROLES)
            units.append(unit)
            i += 1
    return units


def _negated(units: list[Unit], i: int, langs: frozenset[str], kind: str) -> tuple[bool, bool]:
    """(negated, to a third person): a negator of the action's language a few units before it, with only
    clitics, fillers and frames between ("no me mandes", "would you mind not messaging", "no le escriban").
    A stop or remove verb is also negated by a statement ("I can't stop laughing", "it won't end")."""
    third = False
    roles = {"negator", "blocker"} if kind in _ENDING else {"negator"}
    for k in range(i - 1, max(-1, i - 6), -1):
        u = units[k]
        if not u.roles.isdisjoint(roles) and not u.langs.isdisjoint(
            langs
        ):  # "no" negates "mandes", not "stop"
            return True, third
        if "blocker" in u.roles and kind in _SENDING and _wished(units, k):
            return True, third  # "I'd prefer you didn't text me": a statement made into a request
        if "third" in u.roles:  # "no le escriban", "ne lui envoyez pas": about someone else
            third = True
            continue
        if u.roles & {"person", "skip", "frame", "helper"} or u.action == "nomore":
            # "no me vuelvan a escribir", "please do not try to contact me", "n'essayez plus de me contacter"
            continue
        return False, third
    return False, third


def _person_guarded(units: list[Unit], j: int) -> bool:
    """The first word after the action (at ``j``) is the person and a place word follows: "drop me off at"."""
    for k in range(j, min(len(units), j + 3)):
        u = units[k]
        if "guard_after" in u.roles or not u.roles & {"skip", "determiner"}:
            return "person" in u.roles and k + 1 < len(units) and "guard_after" in units[k + 1].roles
    return False


def _imperative_negation(units: list[Unit], i: int) -> bool:
    """A negator proper ("don't", "no", "não"), not a statement ("can't", "won't"), just before ``i``."""
    return any("negator" in u.roles and "blocker" not in u.roles for u in units[max(0, i - 3) : i])


def _wished(units: list[Unit], k: int) -> bool:
    """A wish frame a few units before ``k`` ("I'd rather you", "preferiría que", "je préférerais que")."""
    return any("wish" in u.roles for u in units[max(0, k - 3) : k])


# Actions that end or leave something: a negation makes them the opposite of an opt-out ("don't stop").
_ENDING = frozenset({"stop", "cancel", "remove", "exit", "dismiss"})
# Actions that make a reading only as the whole request: "go away", "I want out", not "the pain won't go away".
_WHOLE = frozenset({"exit", "dismiss", "uninterested"})
_BEFORE_WHOLE = frozenset({"frame", "skip", "subject", "person"})


def _object(units: list[Unit], j: int, sending: bool = False, verbal: bool = False) -> tuple[str, str, bool]:
    """(role, words, temporal) of what an action at j-1 is about, looking forward. ``sending``: the action
    is a negated messaging verb, for which "now" also makes a pause."""
    person = anaphor = ""
    unknown = 0
    temporal = mine = False
    pause = {"temporal", "temporal_send"} if sending else {"temporal"}
    for k in range(j, min(len(units), j + _WINDOW)):
        u = units[k]
        if u.text in _BREAKS or "break" in u.roles:
            break
        if not u.roles.isdisjoint(pause):
            temporal = True
            break
        if "mine" in u.roles:
            mine = True
        for role in ("messaging", "service", "other"):
            if role in u.roles:
                if (
                    mine
                    and "own" in u.roles
                    and (k + 1 >= len(units) or "messaging" not in units[k + 1].roles)
                ):
                    return "other", "(own) " + u.text, temporal  # "delete my last message": theirs, not ours
                if role != "other" and _to_someone_else(units, k + 1):
                    return "other", u.text + " (to someone else)", temporal
                if role == "other" and _of(units, k + 1) == "messaging":  # "cancelem o envio de mensagens"
                    return "messaging", u.text + " of messages", temporal
                owner = _of(units, k + 1, _OWNER) if role == "service" else ""
                if owner == "other" or (owner == "unknown" and u.text not in _LISTS):
                    return owner, u.text + " of something else", temporal  # "la suscripción del gimnasio"
                return role, u.text, temporal
        # A pronoun after unknown words belongs to them: "stop singing it" is not "stop it".
        if "person" in u.roles and not person and not anaphor and not unknown:
            person = u.text
            if sending and k + 1 < len(units) and not units[k + 1].roles and " " not in u.text:
                person += "+name"  # "don't call me sweetie"
            source = _of(units, k + 1, _SOURCE)  # "tira o meu nome da escala", "take me off the team"
            if source in ("other", "unknown"):
                return source, u.text + " from something else", temporal
            continue
        if "anaphor" in u.roles and not anaphor and not unknown:
            anaphor = u.text
            if verbal:  # "stop sending these, that would be great": after a messaging verb, the messages
                break
            continue
        if u.roles & {"skip", "frame", "negator", "determiner"} or u.action == "nomore":
            continue
        if not u.roles or u.roles <= _TALK:  # "stop it I'm laughing": a new subject is a new thought;
            # "go away for the weekend": a noun with no role in the reading is an object nobody named
            if person:  # "stop texting me about…": the person was the object
                break
            if anaphor:  # "tired of them shoving stuff": the pronoun is the subject of another verb
                unknown += 1
                break
            unknown += 1
            if unknown > 2:
                break
            continue
        break  # another action: its own reading
    for k in range(j, min(len(units), j + _WINDOW)):  # a time limit anywhere after: a pause, not a revocation
        if not units[k].roles.isdisjoint(pause):
            temporal = True
    if person:
        return "person", person, temporal
    if anaphor and not unknown:
        return "anaphor", anaphor, temporal
    # "stop it I'm laughing so hard": the pronoun is not the messages when the clause talks on about
    # something else; ask rather than guess.
    return ("unknown", "(unknown)", temporal) if unknown else ("none", "(none)", temporal)


_TALK = frozenset({"subject", "helper", "article", "determiner", "guard_after", "mine"})
# A messaging verb, or receiving, right after a stop verb or a refusal is part of the action ("stop receiving").
_VERBAL = frozenset({"send", "send_weak", "send_negated", "receive"})
_LISTS = frozenset(["list", "lists", "lista", "listas", "liste", "listes", "mailing list"])
# "of": what an object belongs to or is made of ("the sending of messages", "la suscripción del gimnasio").
_GENITIVE = frozenset(["of", "de", "del", "da", "do", "das", "dos", "du", "des", "d"])
# Where a person's name or number is taken from: "tira o meu nome da escala", "remove me from the team".
_SOURCE = _GENITIVE | frozenset(
    ["from", "off", "de la", "de mi", "de su", "de sus", "dessa", "desse", "dela"]
)
# What a service belongs to, also by place: "mi inscripción al curso", "minha inscrição no curso".
_OWNER = _GENITIVE | frozenset(["no", "na", "en", "in", "at", "au", "al", "for"])


def _of(units: list[Unit], k: int, words: frozenset[str] = _GENITIVE) -> str:
    """The role of the noun after a genitive (or one of ``words``) at ``k`` ("" when there is none):
    messaging, service, person, other or unknown."""
    if k >= len(units) or units[k].text not in words:
        return ""
    yours = False
    for u in units[k + 1 : k + 4]:
        for role in ("messaging", "service", "person", "other"):
            if role in u.roles:
                return role
        if u.text in _YOUR:
            yours = True
        if u.roles & {"skip", "determiner"} and u.text not in words:
            continue
        if yours and words is _SOURCE:
            return "yours"  # "retirez mon numéro de vos fichiers": the sender's records, whatever their name
        return "unknown" if not u.roles or u.roles <= _TALK else ""
    return ""


# The sender's: "from your files", "de sus registros", "de vos fichiers", "dos seus cadastros".
_YOUR = frozenset(["your", "ur", "yr", "su", "sus", "vos", "votre", "seu", "seus", "sua", "suas"])


_BE = frozenset(["be", "being", "get", "ser", "etre", "sea", "seja"])
_TO = frozenset(["to", "pro", "pra", "para", "a", "al", "au", "aux"])


def _to_someone_else(units: list[Unit], k: int) -> bool:
    """ "não mandem mensagem pro meu filho", "don't send texts to my wife": a recipient who is not the person."""
    if k >= len(units) or units[k].text not in _TO:
        return False
    for u in units[k + 1 : k + 4]:
        if "other" in u.roles or "third" in u.roles:
            return True
        if not u.roles & {"skip"}:
            return False
    return False


def _subject(units: list[Unit], i: int, person: bool = False) -> tuple[str, str]:
    """What stops, when it comes before the verb: "I want these messages to stop", "make the texts stop";
    with ``person``, the person's data too ("I want my number removed")."""
    roles = ("messaging", "service", "other", "person") if person else ("messaging", "service", "other")
    for k in range(i - 1, max(-1, i - 5), -1):
        u = units[k]
        if person and "person" in u.roles and " " not in u.text:
            break  # "me": the one who speaks, not data
        for role in roles:
            if role in u.roles:
                return role, u.text
        if "anaphor" in u.roles:
            return "anaphor", u.text
        if u.roles & {"skip", "frame", "determiner"}:
            continue
        break
    return "none", "(none)"


def _language(*units: Unit) -> str:
    for u in units:
        if len(u.langs) == 1:
            return next(iter(u.langs))
    return ""


def _verdict(kind: str, verbal: bool, role: str, size: int, words: str = "") -> Verdict | None:
    """The table of the reading: an action kind with an object role (its ``words``), in a message of
    ``size`` words."""
    if role == "person" and " " in words and kind == "cancel" and not words.startswith(("me ", "us ")):
        return Verdict.OPTOUT  # "drop my number", "cancel this number": not "drop me a line"
    if role in ("messaging", "service"):
        return Verdict.OPTOUT
    if role == "other":
        return Verdict.OTHER_SENSE
    if kind in _WHOLE:  # "I want out (of this list)", "go away", "bloqueia esse número", "je veux sortir"
        if role == "person":
            return Verdict.OPTOUT
        if role == "anaphor":
            return Verdict.OPTOUT if size <= 8 else Verdict.CUE
        if role == "none":
            return Verdict.OPTOUT if size <= 6 else Verdict.CUE
        return None  # "I'm out of town": an unknown object is no request about messages
    if role == "person" and kind == "send_weak" and words.endswith("+name"):
        return None  # "don't call me sweetie": a name, not a call
    if role == "person":
        if kind == "send_weak":  # "don't call me" alone, yes; "don't call me, I'm in a meeting", ask
            return Verdict.OPTOUT if size <= 5 else Verdict.CUE
        return Verdict.OPTOUT if kind in ("remove", "send", "send_negated") or verbal else Verdict.CUE
    if role == "anaphor" and verbal:  # "stop sending these"
        return Verdict.OPTOUT
    if role == "anaphor":  # "stop it" is the messages; "cancel it" may be an order: ask
        return Verdict.OPTOUT if kind in ("stop", "nomore", "refuse") and size <= 8 else Verdict.CUE
    if role == "none":
        if verbal:  # "stop texting", "paren de escribir"
            return Verdict.OPTOUT
        if kind in ("send", "send_negated"):  # "don't text back", "no me escriban"
            return Verdict.OPTOUT if size <= 6 else Verdict.CUE
        if kind in ("stop", "nomore", "send_weak"):  # "no stop", "make it stop", "don't call"
            return Verdict.OPTOUT if size <= 3 else Verdict.CUE
        return Verdict.CUE if kind in ("remove", "cancel") else None
    # unknown object: "no more my size", "enough gas" are no requests about messages
    return None if kind in ("refuse", "nomore") else Verdict.CUE


def read_clause(tokens: list[str], size: int) -> list[Reading]:
    """Every reading of one clause (``size`` is the length of the whole message, in words)."""
    units = segment(tokens)
    readings: list[Reading] = []
    framed: bool | None = None  # worked out once, at the first action
    for i, u in enumerate(units):
        kind = u.action
        if kind is None:
            continue
        if framed is None:
            framed = any("frame" in x.roles for x in units)
        if i and "article" in units[i - 1].roles and kind not in _SENDING:
            continue  # a noun, not a request: "the end of March", "la parada", "un arrêt"
        if i + 1 < len(units) and units[i + 1].text in _BREAKS:
            continue  # "don't text and drive": the verb is one of two things done, not a request
        if kind in _WHOLE and any(x.roles.isdisjoint(_BEFORE_WHOLE) for x in units[:i]):
            continue  # "the pain will go away", "vou sair mais cedo": a statement, not a request
        negated, third = (True, False) if kind == "send_negated" else _negated(units, i, u.langs, kind)
        if kind in _ENDING and negated:
            if _imperative_negation(units, i):
                # "no dejen de mandar las ofertas", "don't stop the deals": the opposite of an opt-out, read
                # as another sense so that no fixed phrase reads the clause again as one.
                lang = _language(u)
                readings.append(Reading(Verdict.OTHER_SENSE, lang, u.text, "(negated)", 0.8, bool(framed)))
            continue  # "don't stop the deals", "ne pas annuler": the opposite of an opt-out
        if kind in ("send", "send_weak") and not negated:
            continue  # "send me the info", "text me when you're home"
        j, verbal = i + 1, False
        # "stop texting", "dejen de mandarme", "arrêtez de m'envoyer", "pare de mandar": the messaging verb
        # becomes part of the action and its object is the object of the whole.
        if kind in ("stop", "cancel", "nomore", "refuse"):
            k = j  # over a few fillers and clitics: "no quiero que me contacten", "dejen de mandarme"
            while (
                k < len(units)
                and k < j + 3
                and "skip" in units[k].roles
                and _VERBAL.isdisjoint(units[k].roles)
            ):
                k += 1
            if k < len(units) and not _VERBAL.isdisjoint(units[k].roles):
                j = k
        if j < len(units) and kind in ("stop", "cancel", "refuse") and not _VERBAL.isdisjoint(units[j].roles):
            verbal, j = True, j + 1
        first = next(
            (x for x in units[j : j + 3] if "guard_after" in x.roles or not x.roles & {"skip", "determiner"}),
            None,
        )
        if not verbal and kind in ("stop", "cancel") and first is not None and _other_activity(first, u):
            continue  # "stop knowing me so well", "quit smoking": another activity, not the messages
        if (
            not verbal
            and first is not None
            and "guard_after" in first.roles
            and kind in ("stop", "cancel", "remove")
        ):
            continue  # "stop by", "stop in", "sair às 19h", "para mim"
        if kind == "cancel" and _person_guarded(units, j):
            continue  # "drop me off at the corner"
        role, words, temporal = _object(
            units, j, sending=kind.startswith("send") and not verbal, verbal=verbal
        )
        # "mandarme", "ne m'écriviez plus"; "retirez-moi de vos fichiers clients"
        if "clitic_me" in units[j - 1].roles and (
            role == "none" or (role == "unknown" and _of(units, j, _SOURCE) in ("yours", "person"))
        ):
            role, words = "person", "(" + units[j - 1].text + ")"
        if (
            role == "none"
            and kind in ("remove", "send", "send_weak")
            and i
            and units[i - 1].text == "me"
            and "en" not in u.langs
        ):
            role, words = "person", "me"  # "me retire", "favor me excluir", "me retirer", "não me chame"
        if role == "none" and kind == "remove" and u.text in _PARTICIPLES:
            back, back_words = _subject(units, i, person=True)  # "I want my number removed"
            if back != "none":
                role, words = back, back_words
            elif i and units[i - 1].text in _BE:
                role, words = "person", "(self)"  # "I would like to be removed", "quero ser removido"
        if role == "none" and kind in ("stop", "cancel", "nomore"):
            role, words = _subject(units, i)
            if role == "none" and not verbal and any(not x.roles for x in units[:i]):
                continue  # "next stop", "the end": a bare stop verb only counts as the whole request
        if size > _LONG and role not in ("messaging", "service", "other"):
            continue  # in a long message, "don't contact me" may be part of a story: phrases decide
        if third:
            role, words = "other", "(third person)"
        verdict = _verdict(kind, verbal, role, size, words)
        if verdict is None:
            continue
        if (
            verdict is Verdict.CUE
            and role == "anaphor"
            and negated
            and kind in _SENDING
            and size <= 8
            and any("helper" in x.roles for x in units[max(0, i - 3) : i])
        ):
            verdict = Verdict.OPTOUT  # "não continuem mandando isso", "don't keep sending this": the messages
        if temporal and verdict is Verdict.OPTOUT:
            verdict, words = Verdict.CUE, words + "(temporal)"
        action = u.text + (" " + units[j - 1].text if verbal else "")
        confidence = {Verdict.OPTOUT: 0.85, Verdict.OTHER_SENSE: 0.8, Verdict.CUE: 0.4}[verdict]
        if verdict is Verdict.OPTOUT and (framed or negated or role in ("messaging", "service")):
            confidence = 0.9
        lang = _language(u, units[j - 1]) if verbal else _language(u)
        readings.append(Reading(verdict, lang, action, words, confidence, bool(framed)))
    return readings


_ORDER = tuple(Verdict)
_LONG = 15  # words: beyond this, only a messaging or service object (or a sense guard) makes a reading


def _other_activity(unit: Unit, action: Unit) -> bool:
    """An unknown word with a verb ending of the action's language right after a stop verb: the person
    stops doing something else ("stop knowing me so well"). Endings per language in the lexicons (English
    only so far)."""
    if unit.roles:
        return False
    return any(unit.text.endswith(e) and len(unit.text) > len(e) + 2 for e in _verb_endings(action.langs))


def _verb_endings(langs: frozenset[str]) -> tuple[str, ...]:
    return tuple(e for lang in langs for e in _ENDINGS.get(lang, ()))


def read(clauses: list[list[str]], size: int) -> Reading | None:
    """The reading of a message: an opt-out anywhere wins; else another sense (with the clauses it covers);
    else a cue; else None."""
    found: list[tuple[Reading, list[str]]] = []
    for tokens in clauses:
        if not tokens or (len(clauses) > 1 and ACTION_WORDS.isdisjoint(tokens)):
            continue
        if len(clauses) == 1 or may_read(" ".join(tokens), tokens, frozenset(tokens)):
            found.extend((r, tokens) for r in read_clause(tokens, size))
    if len(clauses) > 1 and size <= 12:
        found = [(_resolved(r, clauses), t) for r, t in found]
    guarded = tuple(
        " ".join(t) for r, t in found if r.verdict is Verdict.OTHER_SENSE or r.object.endswith("(temporal)")
    )
    for verdict in _ORDER:
        hit = next((r for r, _ in found if r.verdict is verdict), None)
        if hit is not None:
            return hit if verdict is Verdict.OPTOUT else Reading(*_fields(hit), guarded=guarded)
    return None


_DETERMINERS = frozenset(p for p, u in TABLE.items() if "determiner" in u.roles)
_BEARERS = frozenset({"messaging", "service"})


def phrase_object(matched: list[str], after: list[str]) -> str:
    """What a fixed phrase's match is about, read like an action's object: "other" when an object in the
    match or after it names an order, a waiting list or another person ("take me off the waiting list",
    "stop sending texts about my order" is not: "about" starts another thought); "noun" when a determiner and
    an unknown word follow a match that names no messages ("no me manden la camisa azul", "stop sending my
    son's report"); "" when nothing speaks against the phrase."""
    units = segment(matched + after[:6])
    inside = len(segment(matched))
    bearer = any(not u.roles.isdisjoint(_BEARERS) for u in units[:inside])
    if bearer and "service" in units[inside - 1].roles:
        owner = _of(units, inside)  # "cancel the membership of my gym": the gym's, not the messages
        if owner in ("other", "unknown"):
            return "other" if owner == "other" else "noun"
    determiner = False  # an object position: "the waiting list", not the verb of "didn't sign up"
    for k, u in enumerate(units):
        if u.text in _BREAKS and k >= inside:
            break
        if "other" in u.roles and not bearer and (determiner or k >= inside):
            return "other"
        if not u.roles.isdisjoint(_BEARERS):
            return ""
        if u.text in _DETERMINERS:
            determiner = True
            continue
        if k < inside or bearer:
            continue
        if "person" in u.roles and " " in u.text:
            return ""  # "my number", "this phone"
        if "anaphor" in u.roles and "skip" not in u.roles:
            return ""  # "no me manden esto"
        if u.roles & {"skip", "temporal", "temporal_send"}:
            continue
        return "noun" if determiner and (not u.roles or u.roles <= _TALK) else ""
    return ""


_ANAPHORS = frozenset(p for p, u in TABLE.items() if "anaphor" in u.roles)
_PARTICIPLES = frozenset(p for p, u in TABLE.items() if "participle" in u.roles)


def _resolved(r: Reading, clauses: list[list[str]]) -> Reading:
    """A pronoun asked about ("remove it") that stands for the person's number or data named in another
    clause of a short message ("who gave you my number? remove it") is that number: an opt-out."""
    if r.verdict is not Verdict.CUE or r.object not in _ANAPHORS:
        return r
    for tokens in clauses:
        for u in segment(tokens):
            if "person" in u.roles and " " in u.text and not u.text.startswith(("me ", "us ")):
                return Reading(Verdict.OPTOUT, r.language, r.action, f"{r.object}={u.text}", 0.85, r.framed)
    return r


def _fields(r: Reading) -> tuple[Verdict, str, str, str, float, bool]:
    return r.verdict, r.language, r.action, r.object, r.confidence, r.framed
