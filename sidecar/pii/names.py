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
  are listed in `_NOT_A_NAME`; a sentence the writer starts (`Hi I Need Help!`,
  `Hey We Have A Problem:`) is not a name either (`_NOT_AFTER_GREETING`), and after an
  introduction (`Hi I'm Alice Johnson`) the name is what follows it. Score 0.75.
- `self-introduction`: the writer naming themselves. A phrase that only introduces a name
  (`my name is`, `my full name is`, `my surname is`, `(my) name's`, `my name:`, `call
  me`, `je m'appelle`, `mon nom est`, `me llamo`, `mi chiamo`, `il mio nome è`, `mein
  Name ist`, `meu nome é`, `mijn naam is`; any case; quotes, brackets, a dash,
  Markdown, an emoji or one line break after it), anywhere, score 0.85; `I'm` or `I am`
  after a greeting (`Hi, I'm Alice Johnson,`, `Hello,\nI'm Thabo`, `Hi 👋 I'm Amara`,
  `Dear Support Team, I am ...`), score 0.75. The name is read word by word
  (`_name_after`, whose docstring lists what is and is not a name): capitalised words,
  after `my name is` also words of scripts without capitals, stopping where the
  sentence goes on. Outside trials 14, 15 and 16 attacked it; what they found is in
  tests/test_detection_names.py. Not `this is` or `it's` (`Hi, this is Microsoft
  Support`). Known gaps: a name in lower case, a name word that is also a word a
  sentence goes on with (`Hi, I'm Sunday Okafor`, `Sarah Good`), `Mokoena, Thabo` (the
  part after the comma), Title Case `I Am`, a single all-capitals name where the writer
  does not shout (`Hi, I'm AMARA`: read as an acronym).
- `field`: the value of a key that names a person whatever the record (`full_name`,
  `first_name`, `surname`, `customer_name`, `patientName`, `cardholder`, `patient`, ...)
  in JSON (`"customer_name": "Yasmin Khoury"`, single quotes too) or on a line of its
  own (`Patient: Danielle Fortin`), when it is one to four words of letters with a
  capital among them. Keys that also name products, apps or teams (`name`, `customer`,
  `client`, `contact`: `name: CI`, `"client": "Mobile App"`) are not read. Score 0.85.
- `column`: in lines read as CSV (`,` `;` tab `|`; a quoted cell may hold the
  delimiter), a header row with a name column (`first_name`, `surname`,
  `customer_name`, ...; a bare `name` only beside a column only people have, such as
  `email`, `dob` or `nhs_number`) makes that column's cells in the rows below names,
  when they are letters with a capital; blank lines do not end the table. At most 256
  header cells are read. Score 0.85.

- `block`: a line that holds nothing but a name of two to four capitalised words (an
  initial may stand between them: `Rato T Stanić`) directly above a line that is an
  organisation with its legal form or a street address: the head of a signature or
  of an envelope (`Dominic Alexander` / `750 Wilgenlaan 40`, or `Hélène Fremont` /
  `Thyrocare Technologies Ltd` when a street follows within two lines). Lines may be
  broken by a literal `\\n` (pasted from JSON) and carry a quote marker
  (`> `, `}} `). Closings, greetings and headings (`Kind Regards`, `Head Office`) are
  not names. Read off the PERSON misses on held-out evaluator
  samples (seeds 7 and 1234), where such heads were a quarter of them. Score 0.75.
  A head holding a word of a business, a product, a role or a heading is a thing
  (`_NOT_A_PERSON_WORD`). Known false positive: a two-word heading whose words are in
  no list, right above a street (`Silver Birch` / `12 Baker Street`).

- `record`: the same fields when a record's lines are broken by a literal `\\n`
  (pasted from JSON; `^` and `$` see no line there) or carry a quote marker, and a
  bare `Name:` in a record that also has a field only people have (`Phone:`,
  `Address:`, `E-mail:`, `DOB:`), as for CSV columns. Score 0.85.

The `block` cue skips blank lines: `Amadeo Vitorović` / (blank) / `5759 Östbygatan 14`
is an envelope too.

A name here is one to four words that start with a capital letter (particles such as
`de`, `van`, `Ó`, `bin` may stand between them), except in a field or a column, where a
value of letters is taken as written. Everything is a single pass of RE2 or of the
lines, with bounded windows: linear time.
"""

from __future__ import annotations

import csv
import functools
import re
from typing import Any

from sidecar.pii.finder import Span
from sidecar.regex import compile_re2

ENTITY = "PERSON"
NAME = "NameByContextRecognizer"

_WORD = r"\p{Lu}[\p{L}\p{M}'\x{2019}]*(?:-\p{Lu}[\p{L}\p{M}'\x{2019}]*)?"
# Lower-case words that may stand inside a name (`Ana de la Cruz`, `Siti binti Ahmad`);
# the capitalised ones (Ó, Ní, Mac, Mc, St.) read as name words anyway in a block's head.
_PARTICLES = ("de", "del", "della", "di", "da", "do", "dos", "das", "du", "van", "von", "der",
              "den", "ter", "le", "la", "bin", "binti", "ibn", "al", "el", "wa")
_PARTICLE = rf"(?:{'|'.join(_PARTICLES)}|Ó|Ní|Mac|Mc|St\.?)"
_NAME = rf"{_WORD}(?:[ \t]+(?:{_PARTICLE}[ \t]+){{0,2}}{_WORD}){{0,3}}"
_TITLES = (r"Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Sir|Dame|Rev|Herr|Frau|Fräulein|Mme|Mlle|Sra|Srta|"
           r"Dña|Sig\.ra|Sig\.|Dott\.ssa|Dott|Mevr|Dhr")
_TITLE = rf"(?:\b(?:{_TITLES})\.?|\bM\.)[ \t]+({_NAME})(?:[^\p{{L}}\p{{N}}]|$)"
_TITLE_WORDS = frozenset(word.rstrip(".") for word in _TITLES.replace("\\", "").split("|")) | {"M"}
_GREETINGS = (r"Dear|Hi|Hello|Hey|Hiya|Greetings|Morning|Bonjour|Bonsoir|Salut|Cher|Chère|"
              r"Hola|Estimado|Estimada|Querido|Querida|Ciao|Caro|Cara|Gentile|Hallo|Liebe|"
              r"Lieber|Hej|Hei|Olá|Prezado|Prezada|Beste|Geachte")
_GREETING = rf"(?m)(?:^|[\s\"'(>])(?:{_GREETINGS})[ \t]+({_NAME})[ \t]*(?:[,:!;]|$)"
# The writer naming themselves: each pattern ends where the name would start, and
# `_name_after` reads the name's words from there (see `self-introduction` above).
# Spaces a pasted or typed text puts between words: no-break, thin, ideographic, and
# the zero-width ones (outside trial 15: `Hi, I'm \u200bThabo` hid the name).
_SPACE = r"[ \t\x{a0}\x{2000}-\x{200d}\x{202f}\x{205f}\x{2060}\x{3000}\x{feff}]"
_APOSTROPHE = r"['\x{2018}\x{2019}\x{b4}`\x{2032}\x{ff07}]"
_NAMING = (rf"(?i:my{_SPACE}+(?:(?:full|first|last|real|given|legal){_SPACE}+)?name{_SPACE}+is|"
           rf"my{_SPACE}+surname{_SPACE}+is|(?:my{_SPACE}+)?name{_APOSTROPHE}s|"
           rf"my{_SPACE}+name{_SPACE}*:|call{_SPACE}+me|"
           rf"je{_SPACE}+m{_APOSTROPHE}appelle|mon{_SPACE}+nom{_SPACE}+est|me{_SPACE}+llamo|"
           rf"mi{_SPACE}+nombre{_SPACE}+es|mi{_SPACE}+chiamo|il{_SPACE}+mio{_SPACE}+nome{_SPACE}+[e\x{{e8}}]|"
           rf"mein{_SPACE}+name{_SPACE}+ist|meu{_SPACE}+nome{_SPACE}+[e\x{{e9}}]|"
           rf"mijn{_SPACE}+naam{_SPACE}+is)")
# After the phrase: a colon, quotes, brackets, a dash, Markdown, an emoji; one line break
# (`My name is:\nKeiko Sato`).
_NAMED = (rf"(?:\A|[^\p{{L}}\p{{N}}_]){_NAMING}(?:{_SPACE}|[^\p{{L}}\p{{N}}\n]){{0,6}}"
          rf"(?:\r?\n(?:{_SPACE}|[^\p{{L}}\p{{N}}\n]){{0,4}})?")
_GREETED_INTRODUCTION = (
    rf"(?:\A|[^\p{{L}}\p{{N}}_])(?i:{_GREETINGS}|good{_SPACE}+(?:morning|afternoon|evening|day))"
    rf"(?:{_SPACE}+[\p{{L}}\p{{M}}'\x{{2019}}]+){{0,3}}[^\p{{L}}\p{{N}}]{{1,8}}"
    rf"(?:[Ii]{_APOSTROPHE}[mM]|[Ii]{_SPACE}+(?:am|AM)){_SPACE}+"
    rf"(?:{_SPACE}|[^\p{{L}}\p{{N}}\n]){{0,3}}")
# Keys that name a person whatever the record: `customer`, `client`, `contact`, `name`
# alone also name products, apps and teams (`"client": "Mobile App"`, `name: CI`).
_FIELD_KEYS = (r"full[ _]?name|first[ _]?name|last[ _]?name|given[ _]?name|middle[ _]?name|"
               r"family[ _]?name|surname|customer[ _]?name|client[ _]?name|"
               r"patient[ _]?name|patient|employee[ _]?name|contact[ _]?name|"
               r"account[ _]?holder(?:[ _]?name)?|card[ _]?holder(?:[ _]?name)?|"
               r"name[ _]?on[ _]?card|passenger[ _]?name|beneficiary[ _]?name|payee[ _]?name|"
               r"recipient[ _]?name|sender[ _]?name|guest[ _]?name|applicant[ _]?name")
_VALUE = r"\p{L}[\p{L}\p{M}'\x{2019}.\- ]{0,78}[\p{L}.]"
_JSON_FIELD = rf"[\"'](?i:{_FIELD_KEYS})[\"'][ \t]*:[ \t]*[\"']({_VALUE})[\"']"
_LINE_FIELD = rf"(?m)^[ \t]*(?i:{_FIELD_KEYS})[ \t]*[:=][ \t]*({_VALUE})[ \t]*$"
# One line of a record (matched within the line's bounds): its key, then its value.
_KEYED_LINE = rf"[ \t]*((?i:{_FIELD_KEYS}|name))[ \t]*[:=][ \t]*({_VALUE})[ \t]*"
_PERSONAL_KEY = (r"[ \t]*(?i:phone|mobile|tel\.?|telephone|cell|address|e-?mail|dob|"
                 r"date[ _]of[ _]birth|birth[ _]?date|ssn|passport)[ \t]*:")

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
    "devops", "engineering", "marketing", "product", "products", "owners", "owner",
    "reviewers", "reviewer", "valued", "dear", "diary", "santa", "earthlings", "kitty",
    "kubernetes", "docker", "python", "claude's", "human", "humans", "people", "y'all",
    "crew", "gang", "squad", "channel", "group", "department", "office",
    "management", "leadership", "security", "infra", "platform", "qa", "design",
    "accounts", "billing", "helpdesk", "service", "desk", "editor", "editors", "team's",
))
# A greeting followed by the writer introducing themselves: the name is what follows.
_INTRODUCING = frozenset(("i'm", "i\u2019m", "it's", "it\u2019s"))
# Capitalised words that start a sentence after a greeting rather than name anyone
# (`Hi I Need Help!`, `Hey We Have A Problem:`) or say how the writer is (`Hi I'm Back!`,
# `Hi It's Friday:`). Never a word that is also a first name: Will, May, Can, Hope, Grace,
# Joy, June (an outside trial found "Hope" here: `Dear Hope Williams,` went unredacted).
_NOT_AFTER_GREETING = frozenset((
    "i", "me", "us", "i've", "i\u2019ve", "i'd", "i\u2019d", "i'll", "i\u2019ll", "we", "we're",
    "we\u2019re", "we've", "we\u2019ve", "we'd", "we\u2019d", "we'll", "we\u2019ll", "it",
    "just", "quick", "back", "not", "so", "very", "really", "also", "still", "monday",
    "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "today", "tonight",
    "sorry", "new", "here", "late", "ready", "stuck",
    "confused", "lost", "done", "fine", "glad", "happy", "excited", "writing", "reaching",
    "following", "checking", "looking", "trying", "having", "getting", "sending",
    "a", "an", "interested", "unable", "able", "afraid", "curious", "worried", "concerned",
    "available", "aware", "wondering", "hoping", "working", "building", "planning",
    "currently", "now", "sure", "unsure", "calling", "asking", "responding",
    "replying", "contacting", "emailing", "messaging", "pleased", "delighted", "sad",
    "tired", "busy", "free", "online", "away", "off", "out", "home", "in", "on", "at",
))
# Words no name holds, though a Title Case sentence capitalises them (`Hi, I'm
# Interested In Your Offer`): a name read after an introduction ends before one
# (`_STOP_WORDS`), and one may follow it (`_FOLLOWERS`).
_FUNCTION_WORDS = frozenset((
    "a", "an", "the", "in", "on", "at", "of", "to", "for", "with", "from", "by", "about",
    "your", "my", "our", "their", "his", "her", "its", "and", "or", "but", "is", "are",
    "was", "be", "not", "this", "that", "these", "those", "it", "you", "we", "they", "i",
))
# Columns whose cells are people's names; `name` (or `customer`, `contact`) alone only
# when the header also has a column that only people have (`name,price,stock` lists
# products; `id,name,dob,nhs_number` lists patients).
_NAME_COLUMNS = frozenset((
    "full_name", "fullname", "full name", "first_name", "firstname", "first name",
    "last_name", "lastname", "last name", "given_name", "given name", "family_name",
    "family name", "surname", "middle_name", "customer_name", "customer name",
    "client_name", "patient_name", "patient name", "employee_name", "employee name",
    "contact_name", "contact name", "account_holder", "cardholder", "card_holder",
    "cardholder_name", "name_on_card", "passenger_name", "beneficiary_name", "payee_name"))
_AMBIGUOUS_COLUMNS = frozenset(("name", "customer", "contact", "patient", "employee"))
_PERSONAL_COLUMNS = frozenset((
    "email", "e-mail", "email_address", "phone", "mobile", "telephone", "tel", "dob",
    "date_of_birth", "birth_date", "birthdate", "birthday", "address", "home_address",
    "postcode", "zip", "ssn", "nhs", "nhs_number", "nino", "iban", "salary", "department",
    "manager", "manager_id", "job_title", "title", "gender", "age", "nationality",
    "passport", "national_id", "employee_id", "patient_id", "customer_id"))
# A line that is not blank: blank ones cost no Python step (a megabyte of "\n").
_FILLED_LINE = re.compile(r"(?m)^.*\S.*$")
_MAX_COLUMNS = 256  # header cells read; a wider "header" is no table of people
_DELIMITERS = (",", ";", "\t", "|")


@functools.cache
def _patterns() -> dict[str, Any]:
    return {"title": compile_re2(_TITLE, max_length=1 << 14),
            "greeting": compile_re2(_GREETING, max_length=1 << 14),
            "json field": compile_re2(_JSON_FIELD, max_length=1 << 14),
            "line field": compile_re2(_LINE_FIELD, max_length=1 << 14)}


@functools.cache
def _record_patterns() -> tuple[Any, Any]:
    return (compile_re2(_KEYED_LINE, max_length=1 << 14),
            compile_re2(_PERSONAL_KEY, max_length=1 << 14))


_SCORES = {"title": 0.85, "greeting": 0.75, "json field": 0.85, "line field": 0.85}

# Lines of a block: a line break, or a literal "\n" as pasted from JSON; then a quote
# marker, as a quoted e-mail or a chat log writes it.
# A line's content: a run up to a break, from the text's start or just after a break.
# Found by one C-level scan, so that blank lines (a megabyte of "\n") cost no Python
# step each (round 5 of issue 18: 4.1 s of CPU on 1 MB of "\n", from 0.25 s before).
_LINE = re.compile(r"(?:\A|(?<=\n)|(?<=\\n))(?=[ \t\r\f\v]*(?:[^\s\\]|\\(?!n)))"
                   r"(?:[^\n\\]|\\(?!n))+")
# A string opened at a line's start, maybe as a JSON value (`{"text": "Patient: ...`):
# the record inside starts after it (round 5: a first field right after a quote was
# missed). Bounded: a key of at most 64 characters.
_OPENING = re.compile(r"(?:[\[{,][ \t]*){0,3}(?:\"[^\"\n]{0,64}\"[ \t]*:[ \t]*)?[\"'][ \t]*")
_MARKER = re.compile(r"[ \t]*(?:[>|}?\u00bb\u203a]{1,3}[ \t]*)?")
_HEAD_WORD = re.compile(r"[^\W\d_][^\W\d_'\u2019-]*(?:['\u2019-][^\W\d_]+)*")
# Two words that open or close a letter, not a name.
_NOT_A_HEAD = frozenset((
    "kind", "best", "warm", "regards", "wishes", "thanks", "thank", "many", "yours",
    "sincerely", "faithfully", "truly", "cheers", "greetings", "respectfully", "with",
    "love", "sent", "from", "my", "iphone", "contact", "details", "personal", "info",
    "address", "phone", "mobile", "office", "fax", "email", "website", "news", "reporter",
    "head", "headquarters", "billing", "shipping", "delivery", "postal", "mailing", "home",
    "work", "registered", "invoice", "main", "branch", "new", "old", "our", "the",
))

# Words of a business, a product or plan, a job title or a heading: a bare `Name:` value
# or a block's head line holding one is a thing, a role or a title, not a person
# (`Northwind Traders`, `Standard Plan`, `Senior Buyer`, `Grand Ballroom`, `Project
# Overview`: round 5 of issue 18). Words that are also common surnames or given names
# (Baker, Hall, Park, Mason, Gold, Wing, Floor, Kit, Arena, Junior, Dean) are left out.
_NOT_A_PERSON_WORD = frozenset((
    # businesses and institutions
    "traders", "trading", "bakery", "bakehouse", "cafe", "café", "coffee", "restaurant",
    "bistro", "grill", "diner", "pizzeria", "deli", "shop", "store", "stores", "market",
    "mart", "supermarket", "boutique", "salon", "spa", "studio", "studios", "gallery",
    "agency", "bank", "insurance", "pharmacy", "clinic", "hospital", "dental", "surgery",
    "hotel", "motel", "inn", "hostel", "resort", "pub", "tavern", "brewery", "winery",
    "distillery", "farms", "garage", "motors", "autos", "repairs", "plumbing",
    "electrical", "construction", "builders", "roofing", "cleaning", "logistics",
    "freight", "transport", "travel", "tours", "foods", "goods", "supplies", "supply",
    "hardware", "software", "systems", "solutions", "services", "technologies",
    "technology", "tech", "labs", "laboratory", "consulting", "consultants", "associates",
    "holdings", "industries", "enterprises", "ventures", "capital", "investments",
    "properties", "realty", "estates", "media", "digital", "networks", "communications",
    "telecom", "energy", "pharma", "ltd", "llc", "inc", "gmbh", "corp", "company", "plc",
    "limited", "academy", "school", "college", "university", "institute", "foundation",
    "society", "club", "association", "council", "ministry", "centre", "center",
    "library", "museum", "theatre", "theater", "cinema", "stadium", "bakers",
    # products, plans and tiers
    "plan", "plans", "premium", "standard", "basic", "pro", "plus", "edition", "package",
    "bundle", "tier", "subscription", "license", "licence", "membership", "starter",
    "essentials", "ultimate", "deluxe", "trial", "platinum", "annual", "monthly",
    "yearly", "maintenance", "warranty", "upgrade", "addon", "app", "api", "cloud",
    "server", "suite", "version", "series", "collection", "enterprise",
    # job titles and departments
    "senior", "lead", "chief", "principal", "buyer", "buyers", "director", "officer",
    "engineer", "developer", "analyst", "consultant", "associate", "coordinator",
    "specialist", "administrator", "executive", "president", "vice", "founder",
    "cofounder", "co-founder", "intern", "architect", "designer", "accountant", "advisor",
    "adviser", "representative", "agent", "supervisor", "technician", "controller",
    "treasurer", "secretary", "strategist", "scientist", "researcher", "producer",
    "ceo", "cto", "cfo", "coo", "cio", "ciso", "vp", "procurement", "purchasing",
    "operations", "relations", "resources", "success", "account", "customer",
    # headings, rooms and venues, events
    "project", "overview", "summary", "agenda", "introduction", "background", "status",
    "update", "updates", "notes", "report", "minutes", "meeting", "sync", "standup",
    "retro", "retrospective", "review", "venue", "location", "ballroom", "room",
    "conference", "lobby", "building", "site", "visit", "schedule", "timeline", "scope",
    "goals", "objectives", "requirements", "information", "section", "chapter",
    "appendix", "phase", "milestone", "milestones", "release", "roadmap", "results",
    "conclusion", "conclusions", "next", "steps", "action", "actions", "items", "tasks",
    "risks", "issues", "budget", "costs", "pricing", "proposal", "renovation",
    "migration", "launch", "event", "events", "workshop", "seminar", "training",
    "session", "keynote", "reception", "dinner", "lunch", "breakfast", "ceremony",
    "party", "quarterly", "weekly", "daily", "general", "terms", "conditions", "policy",
    "questions", "faq", "contents", "references", "abstract", "methods", "discussion",
    "findings", "recommendations", "deliverables", "stakeholders", "contacts",
    "directions", "parking", "entrance", "facilities", "amenities", "plaza", "tower",
))


def _a_thing(value: str) -> bool:
    """A value with a word of a business, a product, a job title or a heading."""
    return any(word.strip(".,&()").lower() in _NOT_A_PERSON_WORD for word in value.split())


def find(text: str) -> list[Span]:
    """(start, end, score, pattern) of names announced by a title, a greeting, a field
    or a column (see the module docstring); disjoint, in order."""
    found: list[Span] = []
    for cue, pattern in _patterns().items():
        for match in pattern.finditer(text):
            start, end = match.span(1)
            value = text[start:end]
            first = value.split()[0]
            if cue == "greeting" and first.lower() in _INTRODUCING:
                start, value = _introduced(start, value)  # "Hi I'm Alice Johnson"
                if not value:
                    continue
                first = value.split()[0]
            if cue in ("greeting", "title"):  # `Hi Sarah I'm Tom Baker,`: Sarah, then
                value = _before_sentence(value)  # Tom Baker (the introduction's cue)
                end = start + len(value)
            if cue == "greeting" and (first.lower() in _NOT_A_NAME
                                      or first.lower() in _GREETING_WORDS
                                      or first.lower() in _NOT_A_WRITER_NAME
                                      or first.lower() in _NOT_AFTER_GREETING
                                      or first.rstrip(".") in _TITLE_WORDS):
                continue  # a group, a role, the writer; or a title, which its cue reads
            if cue.endswith("field") and not _a_name(value):
                continue
            found.append((start, end, _SCORES[cue], f"name after a {cue}"))
    found.extend(_introductions(text))
    found.extend(_columns(text))
    if "\n" in text or "\\n" in text:  # a real line break, or one pasted from JSON
        lines = _lines(text)
        found.extend(_block_heads(text, lines))
        found.extend(_record_fields(text, lines))
    return _disjoint(found)


_GREETING_WORDS = frozenset(word.lower() for word in _GREETINGS.split("|"))
# Words that start the writer's own sentence inside a run of capitalised words.
_SENTENCE_WORDS = _GREETING_WORDS | frozenset((
    "i", "i'm", "i\u2019m", "im", "it's", "it\u2019s", "i've", "i\u2019ve", "i'd",
    "i\u2019d", "i'll", "i\u2019ll"))


def _before_sentence(value: str) -> str:
    """`value` up to a word after its first that starts a sentence of the writer's
    (`Sarah I'm Tom Baker` -> `Sarah`, `Okafor I` -> `Okafor`): outside trial 15 saw
    one PERSON span over both names and the `I'm` between them."""
    for word in re.finditer(r"\S+", value):
        if word.start() and word.group().lower().rstrip(",.!:;") in _SENTENCE_WORDS:
            return value[:word.start()].rstrip()
    return value


def _introduced(start: int, value: str) -> tuple[int, str]:
    """The name after "I'm" / "It's" in a greeting's capitalised words, and where it
    starts ("" when nothing follows): the introduction itself is no part of the name."""
    words = value.split(None, 1)
    rest = words[1] if len(words) == 2 else ""
    return start + len(value) - len(rest), rest


@functools.cache
def _introduction_patterns() -> tuple[Any, Any]:
    return (compile_re2(_NAMED, max_length=1 << 14),
            compile_re2(_GREETED_INTRODUCTION, max_length=1 << 14))


@functools.cache
def _name_word() -> Any:
    """One word of a name: letters and marks (Devanagari's vowel signs are marks) and
    the invisible format characters pasted text carries (`Kei\u200bko`), joined by an
    apostrophe or a hyphen; at most 64 characters a piece, so a megabyte of letters
    after "my name is" is read no further than that."""
    import regex  # type: ignore[import-untyped]

    piece = r"[\p{L}\p{M}][\p{L}\p{M}\p{Cf}]{0,63}"
    return regex.compile(rf"{piece}(?:['\u2018\u2019\u00b4`\u2032\uff07-]{piece}){{0,3}}")


_GAP = re.compile(r"[ \t\u00a0\u2000-\u200d\u202f\u205f\u2060\u3000\ufeff]{1,3}")
_POSSESSIVE = re.compile(r"['\u2019]s$")
# Words that end a name read after an introduction: what a sentence goes on with
# (`My name is Thabo Mokoena I need help`, `... It's about my order`, `... Please help`).
_STOP_WORDS = _FUNCTION_WORDS | _NOT_AFTER_GREETING | _NOT_A_NAME | _GREETING_WORDS | frozenset((
    "i'm", "i\u2019m", "im", "it's", "it\u2019s", "please", "pls", "thanks", "thank",
    "order", "regards", "cheers", "ty", "hase", "programm"))
# What "I'm" after a greeting says of the writer that is not their name: a nationality,
# a faith, a condition, a state (outside trial 14: `Hi, I'm American and I need help
# with a visa form` became `Hi, I'm <PERSON> and ...`). Words that are also common first
# names are not here (Christian, Jordan, Israel, Georgia, Victoria): a name is redacted
# rather than risked.
_NOT_A_WRITER_NAME = frozenset((
    "american", "canadian", "mexican", "brazilian", "argentinian", "argentine", "chilean",
    "colombian", "peruvian", "venezuelan", "cuban", "british", "english", "scottish",
    "welsh", "irish", "french", "german", "dutch", "belgian", "swiss", "austrian",
    "italian", "spanish", "portuguese", "greek", "turkish", "polish", "czech", "slovak",
    "hungarian", "romanian", "bulgarian", "serbian", "croatian", "ukrainian", "russian",
    "belarusian", "lithuanian", "latvian", "estonian", "finnish", "swedish", "norwegian",
    "danish", "icelandic", "israeli", "palestinian", "lebanese", "syrian", "iraqi",
    "iranian", "persian", "saudi", "emirati", "egyptian", "moroccan", "algerian",
    "tunisian", "libyan", "nigerian", "ghanaian", "kenyan", "ethiopian", "somali",
    "african", "indian", "pakistani", "bangladeshi", "lankan", "nepali", "rican", "leonean",
    "afghan", "chinese", "japanese", "korean", "vietnamese", "thai", "filipino",
    "filipina", "indonesian", "malaysian", "singaporean", "australian", "kiwi",
    "european", "asian", "latino", "latina", "latinx", "hispanic", "arab", "arabic",
    "jewish", "muslim", "catholic", "protestant", "orthodox", "hindu", "buddhist",
    "sikh", "atheist", "agnostic", "mormon", "evangelical",
    "blind", "deaf", "autistic", "disabled", "dyslexic", "diabetic", "pregnant",
    "vegan", "vegetarian", "bored", "frustrated", "angry", "upset", "annoyed",
    "disappointed", "using", "running", "trying", "stuck", "retired", "unemployed",
    "freelance", "single", "married", "divorced", "widowed", "gay",
    "lesbian", "bisexual", "trans", "transgender", "nonbinary", "non-binary", "straight",
    "male", "female", "hungry", "sick", "ill", "injured", "tired",
    "confused", "lost", "sorry", "back", "here", "new", "interested", "unable",
    "bilingual",
    # what follows "my name is" in a sentence about a form, not an introduction
    "misspelled", "misspelt", "missing", "wrong", "invalid", "required", "incorrect",
    "correct", "spelled", "spelt", "listed", "shown", "displayed", "printed", "written",
    "stored", "saved", "empty", "blank", "already", "too", "being", "used", "taken",
    "changed", "different", "same", "unknown", "hidden", "truncated", "cut", "garbled",
    "encoded", "mandatory", "optional", "legally", "officially",
    # outside trial 15: more of how a writer is, and how a bug report goes on
    "jamaican", "taiwanese", "bengali", "kurdish", "armenian", "zimbabwean",
    "maori", "m\u0101ori", "haitian", "dominican", "salvadoran", "guatemalan",
    "honduran", "ecuadorian", "bolivian", "paraguayan", "uruguayan", "trinidadian",
    "barbadian", "bahamian", "belizean", "panamanian", "nicaraguan", "cambodian",
    "laotian", "burmese", "mongolian", "tibetan", "uyghur", "kazakh", "uzbek", "tajik",
    "georgian", "azerbaijani", "albanian", "bosnian", "macedonian", "slovenian",
    "slovene", "montenegrin", "moldovan", "maltese", "cypriot", "luxembourgish",
    "flemish", "walloon", "catalan", "basque", "galician", "sicilian", "corsican",
    "breton", "cornish", "manx", "faroese", "greenlandic", "inuit", "yemeni",
    "omani", "qatari", "kuwaiti", "bahraini", "jordanian", "sudanese", "eritrean",
    "ugandan", "tanzanian", "rwandan", "burundian", "congolese", "angolan", "zambian",
    "malawian", "mozambican", "namibian", "botswanan", "motswana", "senegalese",
    "malian", "ivorian", "cameroonian", "gabonese", "beninese", "togolese", "liberian",
    "gambian", "guinean", "mauritian", "malagasy", "fijian", "samoan",
    "tongan", "hawaiian", "native", "indigenous", "aboriginal", "black", "white",
    "brown", "mixed", "biracial", "caucasian", "jain", "lutheran", "sunni", "shiite",
    "methodist", "baptist", "anglican", "episcopalian", "presbyterian",
    "pentecostal", "quaker", "amish", "mennonite", "druze", "bahai", "zoroastrian",
    "pagan", "wiccan", "intolerant", "gluten", "lactose", "colorblind", "colourblind",
    "neurodivergent", "neurotypical", "asthmatic", "epileptic", "anxious", "depressed",
    "overwhelmed", "stressed", "gen", "millennial", "boomer", "left", "right-handed",
    "kinda", "sorta", "fairly", "pretty", "almost", "doing", "great", "super", "totally",
    "always", "never", "really", "quite", "locked", "logged", "signed", "blocked",
    "charged", "billed", "subscribed", "registered", "enrolled", "employed",
    "self", "greyed", "grayed", "case", "visible", "invisible", "longer", "shorter",
    "duplicated", "null", "none", "nil", "undefined", "todo", "tbd", "n/a", "test",
    "testing", "admin", "user", "anonymous", "redacted", "hidden", "placeholder",
    # outside trial 16: roles, grades and "<place>-based" after "I'm"; when to call
    "head", "scrum", "dungeon", "nurse", "masters", "master", "certified", "student",
    "based", "tomorrow", "tonight", "later", "soon", "asap", "anytime", "maybe", "gone",
    "name", "person", "username", "fullname", "firstname", "lastname", "xxx",
))
# Lower-case words that may come right after a name (`Hi, I'm Amara from Acme`, `...
# Amara here`); any other (`Hi, I'm Verizon customer`, `I'm UK based`) says the
# capitalised word was a brand, a place or a degree, not the writer's name.
_FOLLOWERS = _FUNCTION_WORDS | frozenset((
    "here", "again", "speaking", "calling", "writing", "btw", "too", "also", "just",
    "currently", "now", "today", "who", "which", "living", "working", "contacting",
    "reaching", "asking", "following", "checking", "hoping", "needing", "trying", "lol",
    "haha", "thanks", "thank", "please", "pls", "so", "but", "if", "as", "when", "since",
    "looking", "wondering", "having", "getting", "using", "planning", "going",
    "wanting", "waiting", "emailing", "messaging", "replying", "responding",
    "because", "then", "though", "however", "not", "still", "hello", "hi", "hey",
    # the same in the languages of the phrases (`Mon nom est Thabo Mokoena et ...`)
    "et", "e", "y", "und", "en", "ed", "mais", "pero", "aber", "ma", "mas", "maar", "je",
    "io", "yo", "eu", "ik", "mon", "mi", "mein", "meine", "mijn",
))
# Function words that are names too (`My name is Or Cohen`, `To Lam`, `Minh An`).
_NAME_FUNCTION_WORDS = frozenset(("or", "to", "an", "in", "on", "at", "by", "so", "do"))


def _introductions(text: str) -> list[Span]:
    """Names the writer gives as their own (`My name is Keiko Sato`, `Hi, I'm Amara,`):
    the capitalised words right after the phrase, read by `_name_after`."""
    found: list[Span] = []
    named, greeted = _introduction_patterns()
    for pattern, score, label in (
            (named, 0.85, "name after a self-introduction"),
            (greeted, 0.75, "name after a greeting and self-introduction")):
        for match in pattern.finditer(text):
            span = _name_after(text, match.end(), _Phrase(match.group(), pattern is named))
            if span is not None:
                found.append((*span, score, label))
    return found


class _Phrase:
    """What the words that introduce a name say about how to read it."""

    def __init__(self, said: str, named: bool) -> None:
        words = [word for word in re.findall(r"[^\W\d_]+", said) if len(word) > 1]
        self.named = named  # "my name is": uncased scripts and `Or Cohen` count
        self.shouted = bool(words) and all(word.isupper() for word in words)
        # `My Name Is Red by Orhan Pamuk`, `# My Name Is Not Updated`: a title
        self.titled = named and not self.shouted and len(words) > 2 and all(
            word[0].isupper() for word in words[-3:])
        # `My name is:\nKeiko Sato`: the name is the whole next line
        self.next_line = "\n" in re.split(r"[^\W\d_]", said)[-1]
        # `"My name is " + Employee.FirstName`, `[First Name]`, `{Patient.Name}`
        self.code = any(char in "[{<+$=|" for char in said[-8:])


def _name_after(text: str, at: int, phrase: _Phrase) -> tuple[int, int] | None:
    """[start, end) of the name that starts at `at`, or None.

    One to four words on one line, each a capitalised word (`Ji-woo`, `Ya'el`,
    `al-Rashid` too), after "my name is" a word of a script without capitals (Han,
    Hangul, Arabic, Devanagari...), or an initial (`J. R. Tolkien`), with up to two
    lower-case particles between them (`Ana de la Cruz`) and capitalised function words
    that are names (`Minh An`, `Kim So Yeon`); a title before it stays outside (`Mr`,
    `Dr.`), and so does a possessive `'s`. It ends at a word a sentence goes on with
    (`I`, `and`, `It's`, `Please`). No name, when: a word says how the writer is
    (`American`, `Sri Lankan`, `Berlin-based`) or what a form did (`Misspelled`), or the
    first ends in `-ing` and more follows (`Seeing A 500 Error`); a lower-case word other
    than a follower, or a number, comes right after it (`I'm Verizon customer`, `I'm
    Year 12`); it is one letter, or one acronym where the writer does not shout (`I'm
    OOO`); the phrase is a title (`My Name Is Red`) or code or a template around it
    (`"My name is " + Employee.FirstName`, `[First Name]`); read on the next line, the
    line holds more than the name."""
    if phrase.titled or phrase.code:
        return None
    word = _name_word()
    start = end = -1
    words = particles = 0
    caps = False
    position = at
    while words < 4:
        found = word.match(text, position)
        if found is None:
            break
        possessive = _POSSESSIVE.search(found.group())
        piece = found.group()[:-2] if possessive else found.group()
        lower = piece.lower()
        after = found.end()
        if not words and piece.rstrip(".") in _TITLE_WORDS:
            after += text.startswith(".", after)  # `Mr`, `Dr.`: the title is no part
        elif any(part in _NOT_A_WRITER_NAME for part in (lower, *lower.split("-"))):
            return None
        elif not words and lower.endswith("ing") and len(lower) > 5 and \
                _next_word(text, after) is not None:
            return None  # `Seeing A 500 Error`; `Hi, I'm Xiaoming,` is a name
        elif lower in _STOP_WORDS and not (
                piece[:1].isupper() and not piece.isupper() and (
                    (words and lower in _NAME_FUNCTION_WORDS)
                    or (not words and _name_follows(text, after) and (
                        (phrase.named and lower in _NAME_FUNCTION_WORDS)
                        or lower in _NOT_A_NAME - _FUNCTION_WORDS - _GREETING_WORDS)))):
            break  # but `Minh An`, `Or Cohen`, `Claude Dubois` are names
        elif lower in _PARTICLES and piece[:1].islower() and words and particles < 2:
            particles += 1
        elif _capitalised(piece) or (phrase.named and _uncased(piece)):
            if not words:
                start = found.start()
            initial = len(piece) == 1 and text.startswith(".", after)
            after += initial
            end = after - (2 if possessive else 0)
            words += 1
            caps |= len(piece) > 1 and piece.isupper()
            if possessive:
                break
        else:
            break
        gap = _GAP.match(text, after)
        if gap is None:
            break
        position = gap.end()
    if not words or (words == 1 and end - start < 2) or _a_thing(text[start:end]):
        return None
    if words == 1 and caps and not phrase.shouted:
        return None  # `Hi, I'm OOO`, `I'm ADHD`, `I'm PM for ...`: an acronym
    rest = text[end:end + 2]
    if rest[:1] == "." and rest[1:].isalpha():
        return None  # `Employee.FirstName`: code
    following = _next_word(text, end)
    if following is not None and following[:1].islower() and \
            following.lower() not in (_FUNCTION_WORDS if caps else _FOLLOWERS):
        return None  # `I'm Tesla owner`, `I'm SUPER annoyed`: not a name
    gap = _GAP.match(text, end)
    if gap is not None and text[gap.end():gap.end() + 1].isdigit():
        return None  # `I'm Type 1 diabetic`, `I'm Year 12`
    if phrase.next_line and text[end:].split("\n", 1)[0].strip(" \t.,;!\r"):
        return None  # `My name is:\nDate of birth:`: a form's next label
    return start, end


def _next_word(text: str, at: int) -> str | None:
    """The word right after `at` on the same line, past spaces only."""
    gap = _GAP.match(text, at)
    following = _name_word().match(text, gap.end()) if gap is not None else None
    return following.group() if following is not None else None


def _name_follows(text: str, at: int) -> bool:
    """Whether a capitalised word that ends no name comes right after `at`."""
    following = _next_word(text, at)
    return following is not None and _capitalised(following) and \
        following.lower() not in _STOP_WORDS


def _capitalised(token: str) -> bool:
    """A name word's first piece starts with a capital (`Ji-woo`, `Ya'el`, `O'Brien`),
    or it is an Arabic article before one (`al-Rashid`, `el-Amin`)."""
    pieces = re.split(r"['\u2018\u2019\u00b4`\u2032\uff07-]", token)
    if pieces[0] in ("al", "el", "bin", "ibn", "abu", "ben") and len(pieces) > 1:
        return pieces[1][:1].isupper()
    return pieces[0][:1].isupper()


def _uncased(token: str) -> bool:
    """Letters of a script without capitals (and their marks)."""
    return not any(char.isupper() or char.islower() for char in token)


def _a_name(value: str) -> bool:
    """A field's or cell's value that reads as a person's name: one to four words of
    letters, written with a capital somewhere (records write names so; `api-gateway`,
    `build` and `n/a` are values of other kinds)."""
    words = value.split()
    return 1 <= len(words) <= 4 and value.lower() not in _NOT_A_NAME and \
        any(char.isupper() for char in value) and \
        not any(char.isdigit() or char in "@/\\_:=<>{}[]()" for char in value)


def _block_heads(text: str, lines: list[tuple[int, int]]) -> list[Span]:
    """Names on a line of their own above an organisation's or an address's line.

    Each line is read once, and an organisation or an address is looked for on the line
    below a name line only: linear in the text."""
    from sidecar.pii import organizations
    from sidecar.pii.addresses import find_addresses

    def starts(finder: Any, number: int) -> bool:
        if number >= len(lines) or lines[number][1] <= lines[number][0]:
            return False
        return any(found[0] == 0 for found in finder(text[slice(*lines[number])]))

    found: list[Span] = []
    for number, (low, high) in enumerate(lines):
        head = text[low:high].rstrip()
        if not _a_head(head) or organizations.find(head):
            continue
        # an envelope: the street right below; a signature: the organisation, and its
        # street within the two lines below that (a heading is seldom followed so)
        if starts(find_addresses, number + 1) or (
                starts(organizations.find, number + 1)
                and (starts(find_addresses, number + 2) or starts(find_addresses, number + 3))):
            found.append((low, low + len(head), 0.75, "name above an organisation or address"))
    return found


def _lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of each line's content that is not blank: split at real line breaks
    and at literal `\\n`, past a quote marker and a string's opening quote (and before
    its closing one). Blank lines are skipped by the scan itself: linear, and cheap."""
    lines: list[tuple[int, int]] = []
    for run in _LINE.finditer(text):
        low, high = run.span()
        low = _after_marker(text, low, high)
        opening = _OPENING.match(text, low, high)
        if opening is not None:
            low = opening.end()
        line = text[low:high]
        trimmed = line.rstrip(" \t,}]")
        if trimmed.endswith(("\"", "'")):
            high = low + len(trimmed) - 1  # the string's closing quote, as `"}` or `",`
        if text[low:high].strip():
            lines.append((low, high))
    return lines


def _record_fields(text: str, lines: list[tuple[int, int]]) -> list[Span]:
    """Names in the fields of a record written one per line, also where the lines are
    broken by a literal `\\n` (which `_LINE_FIELD`'s `^` and `$` do not see); a bare
    `Name:` only in a record with a field only people have (a phone, an address, an
    e-mail, a birth date), as for CSV columns."""
    keyed, personal = _record_patterns()
    has_personal: bool | None = None
    found: list[Span] = []
    for start, high in lines:
        low, line = start, text[start:high]  # RE2 encodes what it is given: a line
        match = keyed.match(line)
        quote = line.rfind('"')
        if match is None and quote >= 0:
            # the record opens a JSON string late on its first line:
            # `{"messages": [{"role": "user", "content": "Patient: Danielle Fortin\n...`
            low, line = start + quote + 1, line[quote + 1:]
            match = keyed.match(line)
        if match is None or line[match.end():].strip():
            continue
        value = match.group(2)
        if not _a_name(value):
            continue
        if match.group(1).strip().lower() == "name":
            if _a_thing(value):
                continue  # a business, a plan, a product: `Name: Northwind Traders`
            if has_personal is None:
                has_personal = any(personal.match(text[a:b]) for a, b in lines)
            if not has_personal:
                continue
        found.append((low + match.start(2), low + match.end(2), 0.85,
                      "name in a record field"))
    return found


def _after_marker(text: str, low: int, high: int) -> int:
    """Where a line's content starts, past a quote marker (`_MARKER` always matches)."""
    marker = _MARKER.match(text, low, high)
    return marker.end() if marker is not None else low


def _a_head(line: str) -> bool:
    """Two to four capitalised words, an initial among them at most, and nothing else."""
    words = [word[:-1] if len(word) == 2 and word.endswith(".") else word
             for word in line.split()]  # an initial may keep its full stop
    if not 2 <= len(words) <= 4 or sum(len(word) == 1 for word in words) > 1:
        return False
    inner = words[1:-1]
    return all(_HEAD_WORD.fullmatch(word) and (word[0].isupper() or (
        word in _PARTICLES and word in inner)) for word in words) and \
        not any(word.lower() in _NOT_A_HEAD or word.lower() in _NOT_A_NAME
                or word.rstrip(".") in _TITLE_WORDS for word in words) and \
        not line.isupper() and not _a_thing(line)


def _columns(text: str) -> list[Span]:
    """Cells of name columns in delimited rows under a header that names them.

    Rows are split as CSV (a quoted cell may hold the delimiter); a blank line does not
    end the table, a line without the delimiter does. Work is linear in the cells."""
    found: list[Span] = []
    delimiter = ""
    columns: frozenset[int] = frozenset()
    for row in _FILLED_LINE.finditer(text):  # blank lines neither start nor end a table
        line_start, line = row.start(), row.group()
        if columns and delimiter in line:
            cursor = 0
            for index, cell in enumerate(_cells(line, delimiter)):
                at = line.find(cell, cursor) if cell else -1
                if at >= 0:
                    cursor = at + len(cell)
                if index in columns and at >= 0 and _a_name(cell):
                    found.append((line_start + at, line_start + at + len(cell), 0.85,
                                  "name in a name column"))
            continue
        columns, delimiter = _header(line)
    return found


def _header(line: str) -> tuple[frozenset[int], str]:
    """The name columns of `line` read as a header, and its delimiter; none if it is
    not one."""
    for delimiter in _DELIMITERS:
        if delimiter not in line:
            continue
        cells = [cell.lower() for cell in _cells(line, delimiter)[:_MAX_COLUMNS]]
        personal = any(cell in _PERSONAL_COLUMNS for cell in cells)
        named = frozenset(index for index, cell in enumerate(cells)
                          if cell in _NAME_COLUMNS
                          or (personal and cell in _AMBIGUOUS_COLUMNS))
        if named and len(cells) >= 2:
            return named, delimiter
    return frozenset(), ""


def _cells(line: str, delimiter: str) -> list[str]:
    """A delimited line's cells as CSV reads them, stripped of spaces and quotes."""
    try:
        row = next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:
        row = line.split(delimiter)
    return [cell.strip().strip("\"'").strip() for cell in row]


def _disjoint(found: list[Span]) -> list[Span]:
    """In order; where two overlap, the one starting first (then the longer) stays."""
    kept: list[Span] = []
    for span in sorted(found, key=lambda s: (s[0], -(s[1] - s[0]))):
        if not kept or span[0] >= kept[-1][1]:
            kept.append(span)
    return kept
