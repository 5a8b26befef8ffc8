"""Cheap text checks used by the mixture: a duplicate key and an English-language heuristic.

Duplicates: two conversations are the same if their texts match after Unicode normalisation (NFKC), case
folding and collapsing whitespace, role by role. That catches re-shared and re-formatted copies; it does not
try to catch paraphrases.

Language (is it English?): no model, just counts over the conversation's prose, after fenced code blocks,
inline code and URLs are removed (code is neither English nor not):

* the share of letters that are Latin script (code points below U+0250), which rejects Chinese, Korean,
  Japanese, Russian, Arabic, ... text outright;
* the share of words that are common English function words ("the", "and", "is", "you", ...): 25-50 % in
  English prose;
* the share of words that are function words of other Latin-script languages ("que", "und", "les", "của", ...),
  a few percent in English and 15-35 % in Spanish, French, German, Italian, Dutch or Vietnamese.

A text passes with at least 80 % Latin letters and, if it has at least 8 words, at least 4 % English function
words and more English than foreign ones. Short texts ("hi there", "lol") are judged on the script alone; long
lists, tables and code with almost no prose ("continue" answered by 200 lines of JSON) fail the 4 % bar, which
costs little. On a 4,000-conversation sample of the packaged ShareGPT data it drops 0.7 %: about two thirds
of that is not English, the rest is code or lists without prose, or English mixed with another script. It keeps
99.9 % of chit-chat.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from chatforge.chat import Message

MIN_LATIN_SHARE = 0.8
MIN_ENGLISH_SHARE = 0.04
MIN_WORDS_FOR_STOPWORDS = 8

_ENGLISH_STOPWORDS_TEXT = """
    a about above after again all also am an and any are as at be because been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here hers
    herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off
    on once only or other our ours ourselves out over own same she should so some such than that the their theirs
    them themselves then there these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your yours yourself yourselves i'm it's don't can't you're
"""
ENGLISH_STOPWORDS = frozenset(_ENGLISH_STOPWORDS_TEXT.split())

# Frequent function words of the Latin-script languages most common in chat data (Spanish, French, Italian,
# German, Portuguese, Dutch, Vietnamese, Indonesian), leaving out any that are also English words or common
# tokens in English technical text ("a", "in", "come", "per", "van", "com", "os", "em", "mit", ...), so that
# they count only against English.
_FOREIGN_STOPWORDS_TEXT = """
    el los las del que y en una por con para es está se lo como más pero sus este sí porque esta entre cuando
    muy sin sobre también hasta hay donde quien desde todo nos durante todos uno les ni otros eso ellos esto qué
    unos otro otras él ella estar estas algo nosotros
    le des du et une est qui dans pour pas sur au avec ce il elle sont vous nous je tu ne plus mais ou où sa ses
    leur cette aux été être fait comme
    gli di da della che è non sono questo questa anche più si nel alla dei delle
    der das und ist nicht ein eine zu von sich auf für dem auch als wie aus bei nach wir ich sie oder aber wenn
    noch
    dos é um não ao ele você
    het een dat niet te zijn met voor ik wat maar ook bij
    và của là các có những được cho trong không với một này để người đã khi từ theo như về
    yang ini itu dengan untuk tidak dari dalam akan pada juga saya ke karena
"""
FOREIGN_STOPWORDS = frozenset(_FOREIGN_STOPWORDS_TEXT.split()) - ENGLISH_STOPWORDS

_CODE_BLOCK = re.compile(r"```.*?(```|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_URL = re.compile(r"https?://\S+|www\.\S+")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def normalised_text(messages: Sequence[Message]) -> str:
    parts = []
    for m in messages:
        text = unicodedata.normalize("NFKC", m.content).casefold()
        parts.append(f"{m.role}:{' '.join(text.split())}")
    return "\x1e".join(parts)


def duplicate_key(messages: Sequence[Message]) -> str:
    """Equal for conversations that differ only in case, spacing or Unicode form."""
    return hashlib.sha256(normalised_text(messages).encode("utf-8", "surrogatepass")).hexdigest()


def prose(text: str) -> str:
    """The text without code and links, which say nothing about the language it is written in."""
    return _URL.sub(" ", _INLINE_CODE.sub(" ", _CODE_BLOCK.sub(" ", text)))


@dataclass(frozen=True)
class LanguageScores:
    latin: float  # share of letters in Latin script
    english: float  # share of words that are English function words
    foreign: float  # share of words that are function words of other Latin-script languages
    words: int


def language_scores(text: str) -> LanguageScores:
    text = prose(text)
    letters = [c for c in text if c.isalpha()]
    latin = sum(1 for c in letters if ord(c) < 0x250)
    words = _WORD.findall(text.lower())
    english = sum(1 for w in words if w in ENGLISH_STOPWORDS)
    foreign = sum(1 for w in words if w in FOREIGN_STOPWORDS)
    return LanguageScores(
        latin=latin / len(letters) if letters else 1.0,
        english=english / len(words) if words else 0.0,
        foreign=foreign / len(words) if words else 0.0,
        words=len(words),
    )


def looks_english(text: str) -> bool:
    scores = language_scores(text)
    if scores.latin < MIN_LATIN_SHARE:
        return False
    if scores.words < MIN_WORDS_FOR_STOPWORDS:
        return True
    return scores.english >= MIN_ENGLISH_SHARE and scores.english > scores.foreign


def conversation_looks_english(messages: Sequence[Message]) -> bool:
    """Judged on the user turns and replies together, so a one-word user turn does not decide it alone."""
    return looks_english("\n".join(m.content for m in messages if m.role != "system"))
