"""Meaning units: runs of words that are kept or dropped as a whole, never split.

Cutting a word out of one of these changes what the prompt says: "not available" without "not" inverts it,
"at least 12 characters" without "at least" states another rule, "48 muffins" without "muffins" is a number a
reader cannot use, "Claire Dubois" without "Dubois" is someone else, "April 30, 2025" without "30" is a month.
The compressor treats each unit as one item: it keeps all of its words or none.

* **negation** with what it negates: "not available", "never share", "no longer supported", "cannot be
  restored", "must not", "without a receipt" (and German *nicht/kein/ohne*, French *ne … pas/jamais/sans*,
  Spanish *no/nunca/sin*);
* **bound** with its number, date or unit: "more than 50 units", "at least 12 characters", "no later than April
  30, 2025", "up to 3 devices", "within 30 days";
* **quantity**: a number with its unit or object ("3 years", "€38,500", "450 watts", "48 muffins", "$3 each",
  "every 8 hours");
* **name**: consecutive capitalised words, with *of/de/van/von/da/du/la* inside ("Claire Dubois", "Holland
  America Line", "Bank of New Zealand");
* **date** and **time**: month and weekday names with their day and year, ISO dates, clock times with am/pm or a
  time zone ("Monday, 3 March", "2025-04-30", "10:30 am", "14:00 CET");
* **quotation**: a short quoted span, up to eight words ("Have I Told You Lately", 'James P. Flynn', « Le Monde »):
  titles, names and terms in quotes, where one dropped word makes another title (`Told You Lately"` is not the
  song).

Rules, not a parser: fast (a few milliseconds for a thousand words) and good enough that the reader-measured
benchmarks can tell.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .graph import NUMBER_WORDS, STOPWORDS, normalize

NEGATION_WORDS = frozenset("""not no never none nothing nobody neither nor without cannot can't won't don't doesn't
    didn't isn't aren't wasn't weren't shouldn't mustn't couldn't wouldn't hasn't haven't hadn't needn't
    nicht kein keine keinen keinem keiner keines nie niemals ohne jamais aucun aucune sans pas nunca jamás sin
    ningún ninguna ninguno""".split())
# words a negation reaches through to what it negates
_REACH = frozenset("""be been being is are was were am to a an the any anyone anything longer yet more further
    ever also currently still always get got have has had do does did it this that these those them us you
    your our their its his her my be able allowed permitted possible sont est sera ist sind wird werden
    sein le la les un une des de du es está están son ser se""".split())
_AUX = frozenset("""can could will would shall should must may might do does did is are was were has have had
    need needs ne n'""".split())
BOUND_HEADS = (
    ("no", "later", "than"), ("no", "earlier", "than"), ("not", "later", "than"), ("no", "more", "than"),
    ("not", "more", "than"), ("no", "less", "than"), ("no", "fewer", "than"), ("more", "than"), ("less", "than"),
    ("fewer", "than"), ("greater", "than"), ("higher", "than"), ("lower", "than"), ("at", "least"),
    ("at", "most"), ("up", "to"), ("a", "maximum", "of"), ("a", "minimum", "of"), ("at", "the", "latest"),
    ("au", "moins"), ("au", "plus"), ("al", "menos"), ("como", "máximo"), ("nicht", "später", "als"),
    ("spätestens",), ("mindestens",), ("höchstens",), ("maximal",), ("minimum",), ("maximum",), ("max",), ("min",),
    ("within",), ("under",), ("over",), ("above",), ("below",), ("exceeding",), ("exceeds",), ("until",),
    ("before",), ("after",), ("between",), ("every",), ("bis",), ("avant",), ("hasta",),
    ("antes", "de"), ("jusqu'au",), ("innerhalb",), ("dans", "les"), ("≥",), ("≤",), (">",), ("<",),
)
# longest first, so "no later than" wins over "no"
_HEADS_BY_FIRST: dict = {}
for _head in sorted(BOUND_HEADS, key=len, reverse=True):
    _HEADS_BY_FIRST.setdefault(_head[0], []).append(_head)
MONTHS = frozenset("""january february march april may june july august september october november december
    jan feb mar apr jun jul aug sep sept oct nov dec januar februar märz mai juni juli oktober dezember
    janvier février mars avril juin juillet août septembre octobre novembre décembre enero febrero marzo
    abril mayo junio julio agosto septiembre octubre noviembre diciembre""".split())
WEEKDAYS = frozenset("""monday tuesday wednesday thursday friday saturday sunday mon tue tues wed thu thur thurs
    fri sat sun montag dienstag mittwoch donnerstag freitag samstag sonntag lundi mardi mercredi jeudi vendredi
    samedi dimanche lunes martes miércoles jueves viernes sábado domingo""".split())
# clock words: part of a time only right after a number ("5 pm", "14:00 CET"), never alone ("IST" is also German)
_TIME_WORDS = frozenset("am pm a.m. p.m. utc gmt cet cest est edt pst pdt cst cdt bst ist jst aest h uhr heures".split())
NAME_JOINERS = frozenset("of de da van von der du la le del di dos das y".split())
# capitalised only because they open a sentence (or are articles of languages that capitalise nouns)
_SENTENCE_OPENERS = frozenset("""contact please call visit email ask send our this that these those there here
    when where what which who why how if then after before during while since because although however also
    note today tomorrow yesterday yes no dear hi hello thanks thank regards best all some many most each every
    der die das den dem des ein eine einer le la les un une el los las il lo gli""".split())
_CURRENCY_WORDS = frozenset("usd eur gbp chf jpy cad aud inr cny $ € £ ¥ rs".split())

_HAS_DIGIT = re.compile(r"\d")
_PRICE = re.compile(r"^[$€£¥]\d|^\d[\d,.]*(?:€|\$|£|%)")
_PRICE_LINKS = frozenset("for at costs cost costing priced is are was were".split())
#: What a quantity is counted per ("$12 an hour", "twice a week", "3 times a day", "$5 per person"): without it the
#: quantity means something else, so it belongs to the unit.
_PER_WORDS = frozenset("a an per each every".split())
_PER_NOUNS = frozenset("""second seconds minute minutes hour hours day days night nights week weeks weekend weekends
    month months year years quarter semester season shift session lesson class visit trip game meal person head
    kid child student guest customer page kilo kg pound lb ounce gram liter litre gallon mile km meter foot dozen
    piece unit item box bag pack""".split())
_DAY = re.compile(r"^\d{1,2}(?:st|nd|rd|th|er|\.)?,?$", re.IGNORECASE)
_YEAR = re.compile(r"^(?:1[5-9]|2[0-9])\d\d[,.]?$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}|^\d{1,2}/\d{1,2}/\d{2,4}|^\d{1,2}\.\d{1,2}\.\d{2,4}")
_CLOCK = re.compile(r"^\d{1,2}[:h.]\d{2}(?:[ap]\.?m\.?)?[,.]?$|^\d{1,2}(?:am|pm|a\.m\.|p\.m\.)[,.]?$", re.IGNORECASE)
_CLAUSE_END = re.compile(r"[.!?;:,)\]]$")
# a quotation opens on a word that starts with a quote mark and closes on the first word ending with its pair
_QUOTE_PAIRS = {'"': '"', "“": "”", "„": "“", "«": "»", "‘": "’", "'": "'"}
_QUOTE_CLOSE = re.compile(r"[.!?;:,)\]]*$")
MAX_QUOTATION_WORDS = 8  # longer quotations are ordinary text: their sentences are ranked and cut as any other


@dataclass(frozen=True)
class Units:
    """Meaning units of a prompt: ``spans[k] = (first word, one past the last word)``, ``kinds[k]`` its kind."""

    spans: tuple[tuple[int, int], ...]
    kinds: tuple[str, ...]

    def mask(self, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        for lo, hi in self.spans:
            out[lo:hi] = True
        return out

    def unit_of(self, n: int) -> np.ndarray:
        """Index of the unit each word belongs to (``-1`` for none)."""
        out = np.full(n, -1, dtype=np.int64)
        for k, (lo, hi) in enumerate(self.spans):
            out[lo:hi] = k
        return out

    def group(self, i: int, unit_of: np.ndarray) -> np.ndarray:
        """The words kept or dropped together with word ``i``: its whole unit, or itself (``unit_of``: :meth:`unit_of`)."""
        return np.arange(*self.spans[unit_of[i]]) if unit_of[i] >= 0 else np.asarray([i])

    def texts(self, words: Sequence[str]) -> list[str]:
        return [" ".join(words[lo:hi]) for lo, hi in self.spans]


@functools.lru_cache(maxsize=1 << 16)
def _is_number(norm: str) -> bool:
    return bool(_HAS_DIGIT.search(norm)) or any(p in NUMBER_WORDS for p in norm.split("-"))


_OPENS_AFTER = re.compile(r"[.!?:][\"')\]]*$")
_EDGE = re.compile(r"^[^\w]+|[^\w]+$")


def _opens_sentence(words: Sequence[str], i: int) -> bool:
    return i == 0 or bool(_OPENS_AFTER.search(words[i - 1]))


@functools.lru_cache(maxsize=1 << 16)
def _capitalised(word: str) -> bool:
    core = _EDGE.sub("", word)
    return bool(core) and core[0].isupper() and not core.isupper() or (core.isupper() and len(core) > 1 and core.isalpha())


def find_units(words: Sequence[str], breaks: Optional[Sequence[bool]] = None) -> Units:
    """Every meaning unit of ``words``; overlapping units merge into one. ``breaks[i]``: a line break comes
    before word ``i`` (a unit never runs across one: a heading and the line below it are not one name)."""
    n = len(words)
    norm = [normalize(w) for w in words]
    raw: list[tuple[int, int, str]] = []
    is_num = [_is_number(x) for x in norm]
    ends_clause = [bool(_CLAUSE_END.search(w)) for w in words]
    if breaks is not None:
        for i in range(n - 1):
            ends_clause[i] = ends_clause[i] or bool(breaks[i + 1])

    def content(i: int) -> bool:
        return bool(norm[i]) and norm[i] not in STOPWORDS and not is_num[i]

    def per_tail(hi: int) -> int:  # "$12" + "an hour", "twice" + "a week"
        if hi + 1 < n and not ends_clause[hi - 1] and not ends_clause[hi] and norm[hi] in _PER_WORDS \
                and norm[hi + 1] in _PER_NOUNS:
            return hi + 2
        return hi

    # quantities: a number with the next content word (its unit/object), currency words before it
    for i in range(n):
        if not is_num[i] or norm[i] in ("once", "one") and i + 1 < n and not content(i + 1):
            continue
        if _YEAR.match(norm[i]) and i > 0 and (norm[i - 1] in MONTHS or _DAY.match(norm[i - 1])):
            continue  # the year of a date ("April 30, 2025"): the date unit holds it, not a quantity
        lo, hi = i, i + 1
        if i > 0 and norm[i - 1] in _CURRENCY_WORDS:
            lo = i - 1
        # a price names what it is the price of just before it: "muffins for $3 each", "a ticket costs €12"
        if _PRICE.match(words[i]) and lo >= 2 and norm[lo - 1] in _PRICE_LINKS and content(lo - 2) \
                and not ends_clause[lo - 2] and not ends_clause[lo - 1]:
            lo -= 2
        j = i
        while j + 1 < n and is_num[j + 1] and not ends_clause[j]:  # "1 000", "twenty five", "3 1/2"
            j += 1
        hi = j + 1
        # a comparison names its object: "twice as many cookies", "30 more cookies", "half as much flour"
        k = j + 1
        if not ends_clause[j] and k + 1 < n and norm[k] == "as" and norm[k + 1] in ("many", "much") and not ends_clause[k]:
            k += 2
        elif not ends_clause[j] and k < n and norm[k] in ("more", "fewer", "less", "times", "extra"):
            k += 1
        if k > j + 1:
            if k < n and not ends_clause[k - 1] and content(k):
                k += 1
            raw.append((lo, per_tail(k), "quantity"))
            continue
        if not ends_clause[j] and j + 1 < n and (content(j + 1) or norm[j + 1] in ("each", "per", "percent", "%")):
            hi = j + 2
            if not ends_clause[j + 1] and j + 2 < n and norm[j + 1] in ("per", "each") and content(j + 2):
                hi = j + 3  # "$3 per kilo"
        raw.append((lo, per_tail(hi), "quantity"))

    # dates and times
    clock_word = [False] * n
    for i in range(1, n):
        clock_word[i] = norm[i] in _TIME_WORDS and (is_num[i - 1] or clock_word[i - 1])
    anchor = [x in MONTHS or x in WEEKDAYS or bool(_ISO_DATE.match(x)) or bool(_CLOCK.match(x)) or clock_word[i]
              for i, x in enumerate(norm)]
    dateish = [anchor[i] or bool(_DAY.match(norm[i] or "x")) or bool(_YEAR.match(norm[i] or "x")) for i in range(n)]

    def continues(j: int) -> bool:
        # a comma goes on ("April 30, 2025"); so does a German ordinal day before its month ("30. April")
        if not ends_clause[j] or words[j].endswith(","):
            return True
        return bool(re.match(r"^\d{1,2}\.$", words[j])) and j + 1 < n and norm[j + 1] in MONTHS

    i = 0
    while i < n:
        if dateish[i]:
            j = i
            while j + 1 < n and continues(j) and (dateish[j + 1] or (
                    norm[j + 1] in ("at", "of", "um", "à", "the") and j + 2 < n and dateish[j + 2])):
                j += 1
            if any(anchor[i : j + 1]):
                raw.append((i, j + 1, "date"))
            i = j + 1
        else:
            i += 1

    # bounds: a bound phrase followed (within its clause) by a number or date
    for i in range(n):
        for head in _HEADS_BY_FIRST.get(norm[i], ()):
            k = len(head)
            if tuple(norm[i : i + k]) != head:
                continue
            end = i + k
            j = end
            while j < n and j < end + 3 and not (is_num[j] or dateish[j]) and not ends_clause[j - 1]:
                j += 1
            if j < n and (is_num[j] or dateish[j]) and not ends_clause[j - 1]:
                raw.append((i, j + 1, "bound"))  # the number's own unit joins by merging with its quantity
            break

    # negations with what they negate
    for i in range(n):
        x = norm[i]
        if x not in NEGATION_WORDS and not x.endswith("n't") and x != "ne" and not x.startswith(("n'", "n’")):
            continue
        lo = i - 1 if i > 0 and norm[i - 1] in _AUX and not ends_clause[i - 1] else i
        j = i
        taken = 0
        while j + 1 < n and not ends_clause[j] and taken < 1 and j - i < 5:
            j += 1
            if norm[j] in NEGATION_WORDS or norm[j] in _REACH or norm[j].endswith("ly") and j + 1 < n:
                continue
            taken += 1
        raw.append((lo, j + 1, "negation"))

    # quotations: a short quoted span, within one line
    for i in range(n):
        w = words[i]
        close = _QUOTE_PAIRS.get(w[:1])
        if close is None or (len(w) == 1 and w != "«"):  # French spaces its guillemets: « Le Monde »
            continue
        if len(w) > 1 and (not (w[1].isalnum() or w[1] in _QUOTE_PAIRS) or _QUOTE_CLOSE.sub("", w[1:]).endswith(close)):
            continue  # not an opening quote, or a one-word quotation ("done"): nothing to hold together
        for j in range(i + 1, min(n, i + MAX_QUOTATION_WORDS + (len(w) == 1))):
            if breaks is not None and breaks[j]:
                break
            word = _QUOTE_CLOSE.sub("", words[j])
            if close == "'" and word.startswith("'"):
                continue  # "rock 'n' roll": apostrophes, not a closing quote
            if word.endswith(close):
                raw.append((i, j + 1, "quotation"))
                break

    # names: capitalised runs of two or more words, joiners inside
    i = 0
    while i < n:
        if _opens_sentence(words, i) and norm[i] in _SENTENCE_OPENERS:
            i += 1
            continue
        if _capitalised(words[i]) and norm[i] not in STOPWORDS and not is_num[i]:
            j = i
            while j + 1 < n and not ends_clause[j]:
                # "I" after a name is a numeral ("World War I", "Division I"), not the pronoun; after one word that
                # opens a sentence it is the pronoun ("Weeknights I cook")
                numeral = _EDGE.sub("", words[j + 1]) == "I" and (j > i or not _opens_sentence(words, i))
                if (_capitalised(words[j + 1]) or numeral) and not is_num[j + 1]:
                    j += 1
                elif norm[j + 1] in NAME_JOINERS and j + 2 < n and _capitalised(words[j + 2]) and not ends_clause[j + 1]:
                    j += 2
                else:
                    break
            if j > i:
                raw.append((i, j + 1, "name"))
            i = j + 1
        else:
            i += 1
    return _merge(raw)


def _merge(raw: list[tuple[int, int, str]]) -> Units:
    spans: list[list] = []
    for lo, hi, kind in sorted(raw):
        if spans and lo < spans[-1][1]:  # overlapping: one unit ("no later than April 30, 2025")
            spans[-1][1] = max(spans[-1][1], hi)
            if kind not in spans[-1][2]:
                spans[-1][2].append(kind)
        else:
            spans.append([lo, hi, [kind]])
    return Units(tuple((a, b) for a, b, _ in spans), tuple("+".join(k) for _, _, k in spans))


__all__ = ["BOUND_HEADS", "MONTHS", "NEGATION_WORDS", "Units", "WEEKDAYS", "find_units"]
