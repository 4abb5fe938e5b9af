"""Which language a response is in, by writing system and common words: no model, no download.

Upstream IFEval asks ``langdetect`` (a character n-gram model) for the language. cai does not
depend on it; this heuristic decides in two steps instead:

1. the writing system that most of the letters belong to. Where a script is used by one language
   of :data:`LANGUAGES` it decides alone (Bengali, Gurmukhi -> pa, Gujarati, Tamil, Telugu,
   Kannada, Malayalam, Thai, Hangul -> ko, Hebrew, Greek; Han with kana -> ja, without -> zh);
2. otherwise the language of that script whose common function words ("the", "und", "что",
   "है", "في") and telltale letters (Vietnamese tone marks, Ukrainian і/ї/є, Persian پ/چ/گ,
   Urdu ے/ں/ٹ) appear most often.

Limits, said plainly: it knows only the languages in :data:`LANGUAGES` (every language in IFEval's
541 prompts is among them); a text in a language it does not know is called the nearest one it
does; a short Latin-script text with none of the listed function words is undetermined (None),
which the checkers count as followed, as upstream counts a text langdetect cannot read; mixed
text is called by the script of most of its letters, then by the language with most word hits.
Closely related languages (Hindi, Marathi and Nepali; Russian and Bulgarian) are told apart only
by their function words, so a few sentences are needed.
"""

from __future__ import annotations

import unicodedata
from collections import Counter

# ISO 639-1 code -> English name: the languages this module can tell.
LANGUAGES = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "pt": "Portuguese", "it": "Italian",
    "nl": "Dutch", "sw": "Swahili", "fi": "Finnish", "vi": "Vietnamese", "pl": "Polish",
    "ru": "Russian", "bg": "Bulgarian", "uk": "Ukrainian", "el": "Greek", "he": "Hebrew",
    "ar": "Arabic", "fa": "Persian", "ur": "Urdu", "hi": "Hindi", "mr": "Marathi", "ne": "Nepali",
    "bn": "Bengali", "pa": "Punjabi", "gu": "Gujarati", "ta": "Tamil", "te": "Telugu", "kn": "Kannada",
    "ml": "Malayalam", "th": "Thai", "ko": "Korean", "ja": "Japanese", "zh": "Chinese",
}

# (first, last) code point -> script
_SCRIPT_RANGES = (
    (0x0041, 0x024F, "latin"), (0x1E00, 0x1EFF, "latin"), (0x0370, 0x03FF, "greek"), (0x1F00, 0x1FFF, "greek"),
    (0x0400, 0x052F, "cyrillic"), (0x0590, 0x05FF, "hebrew"), (0x0600, 0x06FF, "arabic"), (0x0750, 0x077F, "arabic"),
    (0xFB50, 0xFDFF, "arabic"), (0xFE70, 0xFEFF, "arabic"), (0x0900, 0x097F, "devanagari"),
    (0x0980, 0x09FF, "bengali"), (0x0A00, 0x0A7F, "gurmukhi"), (0x0A80, 0x0AFF, "gujarati"),
    (0x0B80, 0x0BFF, "tamil"), (0x0C00, 0x0C7F, "telugu"), (0x0C80, 0x0CFF, "kannada"),
    (0x0D00, 0x0D7F, "malayalam"), (0x0E00, 0x0E7F, "thai"), (0x1100, 0x11FF, "hangul"),
    (0x3130, 0x318F, "hangul"), (0xAC00, 0xD7AF, "hangul"), (0x3040, 0x30FF, "kana"), (0x31F0, 0x31FF, "kana"),
    (0x3400, 0x4DBF, "han"), (0x4E00, 0x9FFF, "han"), (0xF900, 0xFAFF, "han"),
)
_SINGLE = {"greek": "el", "hebrew": "he", "bengali": "bn", "gurmukhi": "pa", "gujarati": "gu", "tamil": "ta",
           "telugu": "te", "kannada": "kn", "malayalam": "ml", "thai": "th", "hangul": "ko"}

_WORDS = {
    "en": "the and of to is in that it for you with are this was be on not as have or but they at by from "
          "what which will can your there their would should about",
    "de": "der die das und ist nicht ein eine ich sie es zu den mit sich auf für im dem des auch wie wir "
          "sind oder aber wenn noch nur kann",
    "fr": "le la les et est un une des du que qui dans pour pas sur au avec ce il elle sont nous vous je "
          "mais ou plus être cette",
    "es": "el la los las y es un una que de del en por para con no se lo al como más pero su sus está son "
          "muy también este esta",
    "pt": "o a os as e é um uma que de do da dos das em no na por para com não se ao como mais mas seu sua "
          "está são muito também você",
    "it": "il lo la gli le e è un una che di del della in per con non si al come più ma sono anche questo "
          "questa molto ci",
    "nl": "de het een en is van dat die in op te met voor niet zijn er aan ook als maar om bij dit wat "
          "wordt kan naar",
    "sw": "na ya wa kwa ni za la katika cha kuwa hii hiyo huo vya yake wako sana pia kama au lakini "
          "ambao ambayo kutoka",
    "fi": "ja on ei se että hän oli ovat mutta kuin tai myös ole olla joka jos niin tämä sen kanssa "
          "vain kun mitä minä",
    "vi": "và của là có không những được các cho một người này trong với để đã khi cũng như đến từ "
          "tôi bạn rất",
    "pl": "i w nie na się to jest z że do jak ale o co tak po za od są jego czy być przez dla lub",
    "ru": "и в не на что это как с он я по но из к у за то так же от вы все она они был его для ты "
          "мы бы",
    "bg": "и в не на че е са за да се от това как със по но към при които който която ще има като "
          "той тя те бъде",
    "uk": "і в не на що це як з та до у він я по але від ви все вона вони був його для ти ми є",
    "ar": "في من على إلى أن هذا التي الذي ما لا عن مع هذه كان هو هي كل بين قد ذلك أو لم",
    "fa": "و در به از که این را با است برای آن می یک تا هم شد بود نیز ها شده خود",
    "ur": "کے کی ہے میں اور کا سے کو یہ نہیں ہیں پر تھا ایک بھی تو وہ گیا ہو",
    "hi": "है हैं का की के में और से को यह पर नहीं था थे लिए भी एक तो हो कि जो",
    "mr": "आहे आहेत आणि च्या ला मध्ये हे होते नाही त्या करून साठी या व की एक तो ती होता",
    "ne": "छ छन् हो र को मा गर्न लागि पनि यो थियो हुन्छ गरेको भने तर एक त्यो",
}
_WORD_SETS = {lang: frozenset(words.split()) for lang, words in _WORDS.items()}
_CANDIDATES = {
    "latin": ("en", "de", "fr", "es", "pt", "it", "nl", "sw", "fi", "vi", "pl"),
    "cyrillic": ("ru", "bg", "uk"),
    "arabic": ("ar", "fa", "ur"),
    "devanagari": ("hi", "mr", "ne"),
}
# Letters that some languages of a script use and the others do not (or rarely): half a point
# for each of those languages per occurrence. Urdu writes every Persian letter and adds its own.
_LETTERS = (
    ("ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ", ("vi",)),
    ("äö", ("de", "fi")), ("üß", ("de",)), ("ąęłśźżćń", ("pl",)), ("ãõ", ("pt",)), ("ñ¿¡", ("es",)),
    ("èëœù", ("fr",)),
    ("ыэё", ("ru",)), ("іїєґ", ("uk",)), ("ъ", ("bg",)),
    ("پچژگکی", ("fa", "ur")), ("ٹڈڑںےھہ", ("ur",)), ("ةىيك", ("ar",)),
    ("ळ", ("mr",)),
)


def _script(ch: str) -> str | None:
    cp = ord(ch)
    for lo, hi, name in _SCRIPT_RANGES:
        if lo <= cp <= hi:
            return name
    return None


def _tokens(text: str) -> list[str]:
    """Words split at whitespace with punctuation trimmed: ``\\w`` would cut Indic words at their
    vowel signs, which are combining marks, not letters."""
    out = []
    for raw in text.lower().split():
        t = raw
        while t and unicodedata.category(t[0])[0] in "PS":
            t = t[1:]
        while t and unicodedata.category(t[-1])[0] in "PS":
            t = t[:-1]
        if t:
            out.append(t)
    return out


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of the language of ``text``, or None when it cannot tell (no letters,
    or a Latin-script text without any listed function word)."""
    scripts = Counter(s for ch in text if unicodedata.category(ch)[0] in "LM" and (s := _script(ch)))
    if not scripts:
        return None
    if scripts["han"] + scripts["kana"] >= max(scripts.values()):
        return "ja" if scripts["kana"] > 0.1 * (scripts["han"] + scripts["kana"]) else "zh"
    script = scripts.most_common(1)[0][0]
    if script in _SINGLE:
        return _SINGLE[script]
    candidates = _CANDIDATES.get(script)
    if not candidates:
        return None
    score = dict.fromkeys(candidates, 0.0)
    for tok in _tokens(text):
        hits = [lang for lang in candidates if tok in _WORD_SETS[lang]]
        for lang in hits:  # a word shared by k languages is weak evidence for each
            score[lang] += 1.0 / len(hits)
    chars = Counter(text.lower())
    for letters, langs in _LETTERS:
        n = sum(chars[ch] for ch in letters)
        for lang in langs:
            if lang in score:
                score[lang] += 0.5 * n
    best = max(candidates, key=lambda lang: score[lang])
    if score[best] > 0:
        return best
    # Non-Latin scripts have one default each; a Latin text with no evidence is undetermined.
    return {"cyrillic": "ru", "arabic": "ar", "devanagari": "hi"}.get(script)
