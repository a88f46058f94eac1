"""Built-in detectors a policy can switch on with `builtin: secrets | prompt_injection`.

Every detector is an RE2 pattern (linear time) run on one of four views of the text:
the original, the `visible` view (invisible characters removed, case kept), the `clean`
view (structure such as chat-template markers) or the `skeleton` view (wording, so
leetspeak and homoglyphs do not evade it; see `sidecar.content.normalize`). Skeleton
patterns are written in plain words and put through the same folding at compile time.

secrets — every detector runs twice: on the visible view, case-sensitive as the format
is, so a zero-width, bidi or tag character inside `AKIA…` or `ghp_…` does not hide it;
and, case-insensitively, on the folded view (the clean view with spaced-out letters
left apart), so neither do compatibility forms (NFKD:
fullwidth `ＡＫＩＡ…`, math alphabets, circled letters), Latin look-alikes (Cyrillic `А`)
or combining marks. A disguised key is not usable as written, but it is one decoding
step from usable, which is how a prompt asks a model to smuggle one out. Spans map back
to the text as sent, over the disguised characters. Catches:
  aws_access_key_id    AKIA/ASIA/ABIA/ACCA + 16 upper-case alphanumerics
  aws_secret_key       a 40+-character key after `aws_secret_access_key`, `SecretAccessKey`…
  github_token         ghp_/gho_/ghu_/ghs_/ghr_ tokens and github_pat_ fine-grained tokens
  gitlab_token         glpat-, gldt-, glrt-, glptt- tokens
  slack_token          xoxb-/xoxp-/xoxa-/xoxr-/xoxs- tokens and hooks.slack.com webhooks
  google_api_key       AIza + 35 characters
  stripe_key           sk_live_/rk_live_ keys
  private_key          PEM private-key blocks (RSA, EC, DSA, OpenSSH, PKCS#8, PGP), from
                       BEGIN to END (or to the end of the text when END is missing)
  jwt                  three base64url segments whose first two start with `eyJ`
  openai_api_key       sk-proj-/sk-svcacct-/sk-admin-/sk-None- + 40+ base64url characters,
                       and sk- + 32+ alphanumerics (legacy keys, OpenAI-compatible hosts)
  anthropic_api_key    sk-ant-api03-…, sk-ant-admin01-… (sk-ant-<kind><NN>- + 32+)
  huggingface_token    hf_ (and api_org_) + 34+ alphanumerics
  npm_token            npm_ + 36 alphanumerics
  pypi_token           pypi-AgEIcHlwaS5vcmc… (and the test.pypi.org prefix) + 50+
  twilio_key           SK + 32 hex (API key SID); an auth token (32 hex) on the same line
                       after the account SID (AC + 32 hex); a 32-character value assigned
                       to a name containing `twilio`
  sendgrid_key         SG.<22>.<43>
  azure_storage_key    AccountKey=/SharedAccessKey= in connection strings
  azure_sas_token      a SAS query string: sv=<date>…&sig=… (either order)
  gcp_service_account  "type": "service_account" and a "private_key"/"private_key_id"
                       field of the same JSON object, in either order, quotes escaped or not
                       (the PEM itself is also caught by private_key)
  url_password         scheme://user:password@host (also an empty user: redis://:pw@host)
  generic_api_key      a name containing api_key/apikey/secret/token/password/passwd/
                       passphrase or ending in _pwd (`DB_PASSWORD`, `FOO_API_KEY`,
                       `x-api-key`, `dbPassword`, `SECRET_KEY_BASE`…), written `=`, `:`,
                       `:=`, `=>`, quoted or not (env, `export`, JSON, YAML, PHP, Go, HTTP
                       headers) or as an XML element (`<password>…`), with a value of 16+
                       characters that holds a digit or a symbol and has >= 3.0
                       bits/character of entropy; a quoted value runs to its quote (any
                       printable ASCII but whitespace, quotes, braces, `<>` and `\\`), an
                       unquoted one to the first character outside [A-Za-z0-9_-/.+=~!@#$%^&*]
  authorization_header `Authorization: Bearer|Token|Basic <value>`, same value rule
  Provider tokens must also have >= 2.0 bits/character in their random part.
secrets — deliberately does not catch:
  - placeholders and weak demo values: `sk-xxxx…`, `ghp_XXXX…` (one or two repeated
    symbols), `password=changeme` (short: a bad password, not a leaked credential),
    values with no digit and none of `+=~!@#$%^&*` (`your-secret-key-here`, and code that
    reads a secret instead of holding it: `config.database.password`,
    `settings.SECRET_KEY`, `process.env.OPENAI_API_KEY`, `getenv(...)`); the price is a
    letters-only password such as `CorrectHorseBatteryStaple`, and passphrases with spaces;
  - `PWD=`/`OLDPWD=` (shell working directories), URL templates whose password is
    `${VAR}`, `{{var}}` or `<password>`, `user@host` and `host:port` without a password;
  - a Twilio account SID alone (an identifier), test keys (sk_test_), public keys and
    certificates;
  - a short-prefix token glued to a preceding letter or digit (`xhf_…`, `xsk-…`, `xSK…`:
    the word boundary keeps these prefixes from matching inside longer identifiers);
  - secrets split across messages, spaced out letter by letter, in leetspeak, or
    re-encoded (base64, hex, reversed): those need a decoder, not a pattern.

prompt_injection — catches:
  instruction_override   "ignore/disregard/forget/override all previous instructions",
                         "new instructions:", "from now on you will…"
  roleplay_jailbreak     DAN / "do anything now", "developer mode", "pretend/act as
                         … without restrictions/filters", "you are no longer bound by…"
  prompt_extraction      "reveal/print/repeat your system prompt", "what were your
                         instructions", "repeat the text above"
  delimiter_smuggling    chat-template markers in user text (<|im_start|>, [INST],
                         <<SYS>>, <|endoftext|>, "### system:"), and Unicode tag
                         characters (invisible ASCII smuggling)
  encoding_smuggling     "decode this base64/rot13/hex…" next to a long encoded blob
prompt_injection — deliberately does not catch: injections phrased indirectly or in
  other languages, instructions hidden inside retrieved documents that read as normal
  prose, anything that needs a classifier. It is a tripwire for the common forms, not a
  model: pair it with `flag` to measure before you `block`.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from sidecar.content.normalize import View, skeleton_of, words
from sidecar.regex import compile_re2

ViewName = Literal["original", "visible", "folded", "clean", "skeleton", "words",
                   "despaced"]
BUILTINS = ("secrets", "prompt_injection")


@dataclass(frozen=True)
class Detector:
    id: str
    view: ViewName
    regex: Any  # a compiled RE2 program
    # When set, a match counts only if this group's value has at least this entropy.
    min_entropy: float = 0.0
    group: int = 0
    # The clean-view twin of a visible-view secrets detector counts only matches whose
    # text holds a non-ASCII character (a disguise: fullwidth, look-alike, accent). An
    # all-ASCII match is the visible twin's to judge, case and all, so whether a span is
    # a secret never depends on what else the text holds, and an ASCII text skips the
    # twin (and the clean view) altogether.
    disguise_only: bool = False


def _words(*phrases: str) -> str:
    """An RE2 alternation of phrases as the `words` view reads them (skeleton form,
    punctuation as spaces), spaces matching one space."""
    return "(?:" + "|".join(re.escape(words(View(skeleton_of(p), range(len(skeleton_of(p))),
                                                 p)).text.strip()).replace(r"\ ", " ")
                            for p in phrases) + ")"


def shannon_entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


@functools.cache
def detectors(name: str) -> tuple[Detector, ...]:
    if name == "secrets":
        return _secrets()
    if name == "prompt_injection":
        return _prompt_injection()
    raise KeyError(name)


# Bits per character a generated token's body must reach: random keys sit far above it
# (the lowest of 100,000 random 16-character AWS bodies measured 2.48), placeholders made
# of one or two repeated symbols (`ghp_xxxx…`, `sk-0000…`) far below.
ISSUED_ENTROPY = 2.0
# For values people choose (`password=…`): 3.0 keeps all but about 2 in 100,000 random
# 16-character passwords (measured), while repeated filler stays out.
CHOSEN_ENTROPY = 3.0
# An assigned secret's value: characters that read as a name (`_PLAIN`) and characters
# that make it look generated rather than named (`_MARKED`, of which it needs one).
# Unquoted, it ends at the first character that code or prose would put after it (`(`,
# `,`, `;`...); quoted, it runs to the quote, so `(`, `[`, `:`, `?`, `|`... count too.
# Neither takes whitespace, braces, angle brackets or backslashes: those are templates
# (`${VAR}`, `{{ var }}`, `<your-key>`) and escapes, not values.
_PLAIN = r"A-Za-z_\-/."
_MARKED = r"0-9+=~!@#$%^&*"
_MARKED_QUOTED = r"0-9!#$%&()*+,:;=?@\[\]^|~"


def _value(marked: str, minimum: int = 16) -> str:
    """A group matching a run of `_PLAIN` and `marked` characters, at least `minimum`
    long, holding at least one `marked` character. RE2 has no lookahead, so it is written
    out by the position of the first marked character: exactly one branch can match a
    given run, and it takes the whole run."""
    run = f"[{_PLAIN}{marked}]"
    branches = [f"[{_PLAIN}]{{{before}}}[{marked}]{run}{{{minimum - 1 - before},}}"
                for before in range(minimum - 1)]
    branches.append(f"[{_PLAIN}]{{{minimum - 1},}}[{marked}]{run}*")
    return "(" + "|".join(branches) + ")"


def _secrets() -> tuple[Detector, ...]:
    """Each detector twice: on the visible view, exactly as written (case matters to
    these formats), and on the folded view (the clean view with spaced-out letters
    left apart), case-insensitively, so that compatibility forms, look-alikes and
    combining marks inside a token do not hide it either. For an
    undisguised token both find the same span, and the stage keeps one hit."""
    def both(id_: str, pattern: str, **kw: Any) -> tuple[Detector, ...]:
        return (Detector(id_, "visible", compile_re2(pattern), **kw),
                Detector(id_, "folded", compile_re2(pattern, ignore_case=True),
                         disguise_only=True, **kw))

    def issued(id_: str, pattern: str) -> tuple[Detector, ...]:
        """A provider's token whose random body is group 1."""
        return both(id_, pattern, group=1, min_entropy=ISSUED_ENTROPY)

    quote = r"\\?[\"']"  # a JSON quote, possibly escaped (JSON pasted inside a string)
    marker = rf"{quote}type{quote}\s*:\s*{quote}service_account{quote}"
    private = rf"{quote}private_key(?:_id)?{quote}\s*:\s*{quote}[^\"']{{8,}}"
    names = (r"(?i:(?:api[_-]?key|apikey|secrets?|tokens?|passwords?|passwd|passphrase|"
             r"[_-]pwd)(?:[_.-][A-Za-z0-9_]{1,30})?)")
    # `=`, `:`, `:=` or `=>`, the name quoted or not; the value quoted (or in an XML
    # element) or not.
    assign = r"[\"']?\s*(?::=|=>|[:=])\s*"
    opened = rf"(?:{assign}[\"'`]|>)"
    return (
        *issued("aws_access_key_id", r"\b(?:AKIA|ASIA|ABIA|ACCA)([0-9A-Z]{16})\b"),
        *both("aws_secret_key",
              r"(?i:aws[_-]?secret[_-]?(?:access[_-]?)?key|secret[_-]?access[_-]?key)"
              rf"{assign}[\"'`]?([A-Za-z0-9/+]{{40,}}={{0,2}})", group=1,
              min_entropy=ISSUED_ENTROPY),
        *issued("github_token",
                r"(gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{60,255})"),
        *issued("gitlab_token", r"(?:glpat|gldt|glrt|glptt)-([A-Za-z0-9_\-]{20,})"),
        *issued("slack_token", r"(xox[abprs]-[A-Za-z0-9-]{10,}|https://hooks\.slack\.com/"
                               r"services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+)"),
        *issued("google_api_key", r"AIza([0-9A-Za-z_\-]{35})"),
        *issued("stripe_key", r"[rs]k_live_([0-9A-Za-z]{20,})"),
        *both("private_key",
              r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY"
              r"(?: BLOCK)?-----(?s:.*?)(?:-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\z)"),
        *both("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        *both("generic_api_key", rf"{names}{assign}{_value(_MARKED)}",
              group=1, min_entropy=CHOSEN_ENTROPY),
        *both("generic_api_key", rf"{names}{opened}{_value(_MARKED_QUOTED)}",
              group=1, min_entropy=CHOSEN_ENTROPY),
        *both("authorization_header",
              rf"(?i:\bauthorization){assign}[\"'`]?(?i:bearer|token|basic)\s+"
              rf"{_value(_MARKED)}", group=1, min_entropy=CHOSEN_ENTROPY),
        *issued("openai_api_key",
                r"\bsk-((?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{40,}|[A-Za-z0-9]{32,})"),
        *issued("anthropic_api_key", r"sk-ant-[a-z]{2,10}[0-9]{2}-([A-Za-z0-9_-]{32,})"),
        *issued("huggingface_token", r"\b(?:hf_|api_org_)([A-Za-z0-9]{34,})"),
        *issued("npm_token", r"npm_([A-Za-z0-9]{36,})"),
        *both("pypi_token",
              r"pypi-(?:AgEIcHlwaS5vcmc|AgENdGVzdC5weXBpLm9yZw)[A-Za-z0-9_-]{50,}"),
        *issued("twilio_key", r"\bSK([0-9a-fA-F]{32})\b"),
        *issued("twilio_key", r"\bAC[0-9a-f]{32}\b[^\n]{1,100}?\b([0-9a-f]{32})\b"),
        *issued("twilio_key", rf"(?i:twilio[A-Za-z0-9_.-]{{0,30}}){assign}[\"'`]?"
                              r"([0-9A-Za-z]{32})\b"),
        *issued("sendgrid_key", r"SG\.([A-Za-z0-9_-]{20,24}\.[A-Za-z0-9_-]{40,50})"),
        *issued("azure_storage_key",
                r"(?i:\b(?:Account|SharedAccess)Key)\s*=\s*([A-Za-z0-9+/]{30,}={0,2})"),
        *both("azure_sas_token",
              r"\bsv=[0-9]{4}-[0-9]{2}-[0-9]{2}&[^\s\"'<>]*?\bsig=[A-Za-z0-9%+/]{30,}=*|"
              r"\bsig=[A-Za-z0-9%+/]{30,}=*&[^\s\"'<>]*?\bsv=[0-9]{4}-[0-9]{2}-[0-9]{2}"),
        *both("gcp_service_account",
              rf"{marker}[^{{}}]*?{private}|{private}[^{{}}]*?{marker}"),
        *both("url_password",
              r"\b[A-Za-z][A-Za-z0-9+.-]{1,30}://[^\s/?#@:\[\]\"'<>{}]*:"
              r"[^\s/?#\[\]\"'<>{}]+@[A-Za-z0-9._~%\[\]:-]+"),
    )


def _prompt_injection() -> tuple[Detector, ...]:
    def skel(id_: str, pattern: str) -> Detector:
        return Detector(id_, "words", compile_re2(pattern))

    override_verb = _words("ignore", "disregard", "forget", "override", "bypass", "skip",
                           "drop", "abandon")
    quantifier = _words("all", "any", "every", "the", "your", "my", "these", "those", "of",
                        "and")
    earlier = _words("previous", "prior", "above", "earlier", "preceding", "initial",
                     "original", "old", "system", "given", "existing")
    rules = _words("instructions", "instruction", "prompts", "prompt", "rules", "directions",
                   "guidelines", "directives", "commands", "context", "constraints")
    you = _words("you", "u")
    restrictions = _words("restrictions", "restriction", "limits", "limitations", "filters",
                          "rules", "guidelines", "censorship", "boundaries", "safeguards",
                          "policies")
    reveal = _words("reveal", "show", "print", "repeat", "output", "display", "tell me",
                    "give me", "share", "leak", "dump", "write out", "spell out")
    hidden = _words("system", "initial", "hidden", "secret", "original", "internal",
                    "developer", "pre-prompt", "preprompt")
    prompt_words = _words("prompt", "instructions", "message", "rules", "configuration")
    jailbreak_names = _words("do anything now", "developer mode", "jailbreak mode",
                             "jailbroken", "god mode", "evil mode", "dan mode")
    dan = _words("you are dan", "you are now dan", "act as dan")
    persona = _words("pretend", "act as", "roleplay as", "role-play as", "imagine",
                     "you are now", "behave as")
    without = _words("without", "with no", "free of", "free from", "no")
    wording = (
        skel("instruction_override",
             rf"\b{override_verb} (?:{quantifier} ){{0,3}}(?:{earlier} )?{rules}\b"),
        skel("instruction_override", rf"\b{_words('new instructions', 'updated instructions')}"
                                     r" ?:"),
        skel("instruction_override",
             rf"\b{_words('from now on')},? {you} {_words('will', 'must', 'shall', 'are')}\b"),
        skel("roleplay_jailbreak", rf"\b(?:{jailbreak_names}|{dan})\b"),
        skel("roleplay_jailbreak",
             rf"\b{persona}\b.{{0,80}}\b{without} (?:{quantifier} ){{0,2}}"
             rf"(?:{_words('ethical', 'moral', 'safety', 'content')} )?{restrictions}\b"),
        skel("roleplay_jailbreak",
             rf"\b{you} {_words('are no longer', 'are not', 'are not longer')} "
             rf"{_words('bound by', 'restricted by', 'limited by', 'subject to')}\b"),
        skel("prompt_extraction",
             rf"\b{reveal} (?:{_words('me')} )?(?:{quantifier} ){{0,2}}{hidden} {prompt_words}\b"),
        skel("prompt_extraction",
             rf"\b{_words('what', 'which')} {_words('is', 'are', 'were', 'was')} {_words('your')}"
             rf" (?:{hidden} )?{_words('instructions', 'system prompt', 'rules', 'prompt')}\b"),
        skel("prompt_extraction",
             rf"\b{_words('repeat', 'print', 'output', 'recite')} "
             rf"{_words('the', 'all the', 'everything', 'all')} "
             rf"(?:{_words('text', 'words', 'lines', 'content')} )?"
             rf"{_words('above', 'before this', 'preceding')}\b"),
        Detector("delimiter_smuggling", "clean", compile_re2(
            r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|"
            r"end_header_id)\|>|\[/?inst\]|<</?sys>>|#{2,} ?(?:system|instructions?) ?:")),
        Detector("delimiter_smuggling", "original", compile_re2(
            # A subdivision flag (🏴 + tag letters + cancel tag: England, Scotland,
            # Wales) is an emoji, not smuggled text: the first branch takes it, and a
            # match counts only when the second one (group 1) did.
            "\U0001F3F4[\U000E0030-\U000E0039\U000E0061-\U000E007A]{2,6}\U000E007F"
            "|([\U000E0000-\U000E007F]+)"), group=1),
        Detector("encoding_smuggling", "clean", compile_re2(
            r"\b(?:decode|decoded|base64|b64|rot13|rot-13|hex|hexadecimal)\b.{0,60}?"
            r"(?:[a-z0-9+/]{32,}={0,2}|(?:[0-9a-f]{2}\s?){24,})")),
    )
    # Each wording detector again for letters spaced out across the words
    # (`r.e.p.e.a.t t.h.e t.e.x.t a.b.o.v.e` joins into `repeatthetextabove`): on the
    # words view without its spaces, counted only where the match holds a join (see
    # ContentStage._scan), so glued identifiers are not read as sentences.
    return wording + tuple(Detector(d.id, "despaced", compile_re2(_despaced(d.regex.pattern)))
                           for d in wording if d.view == "words")


def _despaced(pattern: str) -> str:
    """A words-view pattern for the words view without spaces: no spaces, no \\b."""
    return pattern.replace("\\b", "").replace(" ?", "").replace(" ", "")
