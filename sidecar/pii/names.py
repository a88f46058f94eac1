"""PERSON names that the words around them announce, where the NER model does not see one.

Why: en_core_web_sm finds a name by how the sentence around it reads. It misses names
that stand where the sentence gives it little to go on, which are also where prompts
hold most names: after a title or a greeting ("Dear Mr Okonkwo,", "Hi Jonas,"), in a
field of a record ("customer": "Yasmin Khoury", `Name: Juliusz Kwiatkowski`) and in
the name columns of pasted CSV. On the hand-labelled corpus these were 20 of the 56
PERSON spans the pipeline let through. Each cue is a fact about the text, not about
the name, so it holds for names from any culture:

- `title`: a personal title (Mr, Mrs, Ms, Dr, Prof, Herr, Frau, M., Mme, Sig.ra, ...)
  followed by capitalised words: the words are a name (the title is left out of the
  span, as the labelling rules say). Score 0.85.
- `greeting`: a greeting (Dear, Hi, Hello, Bonjour, Hola, Liebe, ...) followed by one to
  three capitalised words and a comma, a colon, an exclamation mark or the end of the
  line. Words that greet a group or a role (`Dear Team,`, `Hi all,`, `Hello Support:`)
  are listed in `_NOT_A_NAME`. Score 0.75.
- `field`: the value of a key that names a person (`name`, `full_name`, `customer`,
  `patient`, `cardholder`, ...) in JSON (`"customer": "Yasmin Khoury"`) or on a line of
  its own (`Patient: Danielle Fortin`), when it is one to four words of letters with a
  capital among them. Score 0.85.
- `column`: in lines split by one delimiter (`,` `;` tab `|`), a header row with a name
  column (`name`, `first_name`, `surname`, `customer`, ...) makes that column's cells
  in the rows below names, when they are letters only, with a capital. Score 0.85.

A name here is one to four words that start with a capital letter (particles such as
`de`, `van`, `Ó`, `bin` may stand between them), except in a field or a column, where a
value of letters is taken as written. Everything is a single pass of RE2 or of the
lines, with bounded windows: linear time.
"""

from __future__ import annotations

import functools
from typing import Any

from sidecar.pii.finder import Span
from sidecar.regex import compile_re2

ENTITY = "PERSON"
NAME = "NameByContextRecognizer"

_WORD = r"\p{Lu}[\p{L}\p{M}'\x{2019}]*(?:-\p{Lu}[\p{L}\p{M}'\x{2019}]*)?"
_PARTICLE = (r"(?:de|del|della|di|da|do|dos|das|du|van|von|der|den|ter|le|la|bin|binti|ibn|"
             r"al|el|Ó|Ní|Mac|Mc|St\.?)")
_NAME = rf"{_WORD}(?:[ \t]+(?:{_PARTICLE}[ \t]+)?{_WORD}){{0,3}}"
_TITLES = (r"Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Sir|Dame|Rev|Herr|Frau|Fräulein|Mme|Mlle|Sra|Srta|"
           r"Dña|Sig\.ra|Sig|Dott\.ssa|Dott|Mevr|Dhr")
_TITLE = rf"(?:\b(?:{_TITLES})\.?|\bM\.)[ \t]+({_NAME})"
_TITLE_WORDS = frozenset(_TITLES.replace("\\", "").split("|")) | {"M"}
_GREETINGS = (r"Dear|Hi|Hello|Hey|Hiya|Greetings|Morning|Bonjour|Bonsoir|Salut|Cher|Chère|"
              r"Hola|Estimado|Estimada|Querido|Querida|Ciao|Caro|Cara|Gentile|Hallo|Liebe|"
              r"Lieber|Hej|Hei|Olá|Prezado|Prezada|Beste|Geachte")
_GREETING = rf"(?m)(?:^|[\s\"'(>])(?:{_GREETINGS})[ \t]+({_NAME})[ \t]*(?:[,:!;]|$)"
_FIELD_KEYS = (r"name|full[ _]?name|first[ _]?name|last[ _]?name|given[ _]?name|"
               r"family[ _]?name|surname|customer|customer[ _]name|client|client[ _]name|"
               r"patient|patient[ _]name|employee|employee[ _]name|contact|contact[ _]name|"
               r"recipient|sender|passenger|guest|account[ _]?holder|card[ _]?holder|"
               r"beneficiary|payee|tenant|applicant|attn|attention")
_VALUE = r"\p{L}[\p{L}\p{M}'\x{2019}.\- ]{0,78}[\p{L}.]"
_JSON_FIELD = rf"\"(?i:{_FIELD_KEYS})\"[ \t]*:[ \t]*\"({_VALUE})\""
_LINE_FIELD = rf"(?m)^[ \t]*(?i:{_FIELD_KEYS})[ \t]*[:=][ \t]*({_VALUE})[ \t]*$"

# What follows a greeting without being a name: a group, a role, a word of the greeting.
_NOT_A_NAME = frozenset((
    "team", "all", "everyone", "everybody", "there", "folks", "guys", "friends", "friend",
    "sir", "sirs", "madam", "madame", "colleagues", "colleague", "customer", "customers",
    "support", "world", "both", "again", "doctor", "doc", "mom", "mum", "dad", "hr", "it",
    "admin", "admins", "guest", "user", "users", "members", "member", "partner", "partners",
    "neighbour", "neighbor", "hiring", "manager", "recruiter", "reader", "readers",
    "everyone's", "community", "committee", "board", "staff", "class", "students",
    "parents", "sales", "finance", "legal", "ops", "devs", "engineers", "chat", "bot",
    "assistant", "claude", "chatgpt", "gpt", "gemini", "copilot", "siri", "alexa",
    "good", "morning", "afternoon", "evening", "and", "to", "from", "the", "my", "our",
    "you", "your", "thank", "thanks", "please", "sorry", "ok", "okay", "yes", "no",
))
_NAME_COLUMNS = frozenset((
    "name", "full_name", "fullname", "full name", "first_name", "firstname", "first name",
    "last_name", "lastname", "last name", "given_name", "given name", "family_name",
    "family name", "surname", "customer", "customer_name", "customer name", "client",
    "client_name", "patient", "patient_name", "patient name", "employee", "employee_name",
    "employee name", "contact", "contact_name", "contact name", "account_holder",
    "cardholder", "card_holder", "holder", "beneficiary", "payee", "passenger", "guest",
    "recipient", "tenant", "applicant"))
_DELIMITERS = (",", ";", "\t", "|")
@functools.cache
def _patterns() -> dict[str, Any]:
    return {"title": compile_re2(_TITLE, max_length=1 << 14),
            "greeting": compile_re2(_GREETING, max_length=1 << 14),
            "json field": compile_re2(_JSON_FIELD, max_length=1 << 14),
            "line field": compile_re2(_LINE_FIELD, max_length=1 << 14)}


_SCORES = {"title": 0.85, "greeting": 0.75, "json field": 0.85, "line field": 0.85}


def find(text: str) -> list[Span]:
    """(start, end, score, pattern) of names announced by a title, a greeting, a field
    or a column (see the module docstring); disjoint, in order."""
    found: list[Span] = []
    for cue, pattern in _patterns().items():
        for match in pattern.finditer(text):
            start, end = match.span(1)
            value = text[start:end]
            first = value.split()[0]
            if cue == "greeting" and (first.lower() in _NOT_A_NAME
                                      or first.rstrip(".") in _TITLE_WORDS):
                continue  # a group or a role; or a title, which the title cue reads
            if cue.endswith("field") and not _a_name(value):
                continue
            found.append((start, end, _SCORES[cue], f"name after a {cue}"))
    found.extend(_columns(text))
    return _disjoint(found)


def _a_name(value: str) -> bool:
    """A field's or cell's value that reads as a person's name: one to four words of
    letters, written with a capital somewhere (records write names so; `api-gateway`,
    `build` and `n/a` are values of other kinds)."""
    words = value.split()
    return 1 <= len(words) <= 4 and value.lower() not in _NOT_A_NAME and \
        any(char.isupper() for char in value) and \
        not any(char.isdigit() or char in "@/\\_" for char in value)


def _columns(text: str) -> list[Span]:
    """Cells of name columns in delimited rows under a header that names them."""
    found: list[Span] = []
    delimiter = ""
    columns: list[int] = []
    width = 0
    offset = 0
    for line in text.split("\n"):
        line_start, offset = offset, offset + len(line) + 1
        if columns and delimiter in line and len(line.split(delimiter)) >= width:
            cursor = line_start
            for index, cell in enumerate(line.split(delimiter)):
                if index in columns:
                    stripped = cell.strip().strip("\"'").strip()
                    if stripped and _a_name(stripped) and any(c.isalpha() for c in stripped):
                        start = cursor + cell.index(stripped)
                        found.append((start, start + len(stripped), 0.85,
                                      "name in a name column"))
                cursor += len(cell) + len(delimiter)
            continue
        columns, delimiter = [], ""
        for candidate in _DELIMITERS:
            cells = [cell.strip().strip("\"'").strip().lower() for cell in line.split(candidate)]
            if len(cells) >= 2:
                named = [index for index, cell in enumerate(cells) if cell in _NAME_COLUMNS]
                if named:
                    columns, delimiter, width = named, candidate, len(cells)
                    break
    return found


def _disjoint(found: list[Span]) -> list[Span]:
    """In order; where two overlap, the one starting first (then the longer) stays."""
    kept: list[Span] = []
    for span in sorted(found, key=lambda s: (s[0], -(s[1] - s[0]))):
        if not kept or span[0] >= kept[-1][1]:
            kept.append(span)
    return kept
