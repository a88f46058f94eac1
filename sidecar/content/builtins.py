"""Built-in detectors a policy can switch on with `builtin: secrets | prompt_injection`.

Every detector is an RE2 pattern (linear time) run on one of three views of the text:
the original (secrets have case-sensitive formats), the `clean` view (structure such as
chat-template markers) or the `skeleton` view (wording, so leetspeak and homoglyphs do
not evade it; see `sidecar.content.normalize`). Skeleton patterns are written in plain
words and put through the same folding at compile time.

secrets — catches:
  aws_access_key_id   AKIA/ASIA/ABIA/ACCA + 16 upper-case alphanumerics
  aws_secret_key      a 40-character key next to `aws_secret_access_key` (or similar)
  github_token        ghp_/gho_/ghu_/ghs_/ghr_ tokens and github_pat_ fine-grained tokens
  gitlab_token        glpat-, gldt-, glrt-, glptt- tokens
  slack_token         xoxb-/xoxp-/xoxa-/xoxr-/xoxs- tokens and hooks.slack.com webhooks
  google_api_key      AIza + 35 characters
  stripe_key          sk_live_/rk_live_ keys
  private_key         PEM private-key blocks (RSA, EC, DSA, OpenSSH, PKCS#8, PGP), from
                      BEGIN to END (or to the end of the text when END is missing)
  jwt                 three base64url segments whose first two start with `eyJ`
  generic_api_key     `api_key=`, `secret:`, `token =`, `password=`… assignments whose
                      value is 16+ characters with Shannon entropy >= 3.5 bits/character
secrets — deliberately does not catch: test keys (sk_test_), public keys and
  certificates, short or low-entropy assignments (`password=changeme` is a bad
  password, not a leaked credential), secrets split across messages.

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

from sidecar.content.normalize import skeleton_of
from sidecar.regex import compile_re2

ViewName = Literal["original", "visible", "clean", "skeleton"]
BUILTINS = ("secrets", "prompt_injection")


@dataclass(frozen=True)
class Detector:
    id: str
    view: ViewName
    regex: Any  # a compiled RE2 program
    # When set, a match counts only if this group's value has at least this entropy.
    min_entropy: float = 0.0
    group: int = 0


def _words(*phrases: str) -> str:
    """An RE2 alternation of phrases in skeleton form, spaces matching one space."""
    return "(?:" + "|".join(re.escape(skeleton_of(p)).replace(r"\ ", " ")
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


def _secrets() -> tuple[Detector, ...]:
    def original(id_: str, pattern: str, **kw: Any) -> Detector:
        return Detector(id_, "original", compile_re2(pattern), **kw)

    return (
        original("aws_access_key_id", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
        original("aws_secret_key",
                 r"(?i:aws_?secret_?(?:access_?)?key|secret_?access_?key)[\"']?\s*[:=]\s*"
                 r"[\"']?([A-Za-z0-9/+=]{40})\b", group=1),
        original("github_token",
                 r"\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{60,255})\b"),
        original("gitlab_token", r"\b(?:glpat|gldt|glrt|glptt)-[A-Za-z0-9_\-]{20,}"),
        original("slack_token",
                 r"\bxox[abprs]-[A-Za-z0-9-]{10,}|https://hooks\.slack\.com/services/"
                 r"T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+"),
        original("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}"),
        original("stripe_key", r"\b[rs]k_live_[0-9A-Za-z]{20,}"),
        original("private_key",
                 r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY"
                 r"(?: BLOCK)?-----(?s:.*?)(?:-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\z)"),
        original("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        original("generic_api_key",
                 r"(?i:\b(?:api[_-]?key|apikey|secret[_-]?key|client[_-]?secret|secret|"
                 r"access[_-]?token|auth[_-]?token|token|password|passwd|pwd))[\"']?\s*"
                 r"[:=]\s*[\"']?([A-Za-z0-9_\-+/=.~!@#$%^&*]{16,})",
                 group=1, min_entropy=3.5),
    )


def _prompt_injection() -> tuple[Detector, ...]:
    def skel(id_: str, pattern: str) -> Detector:
        return Detector(id_, "skeleton", compile_re2(pattern))

    override_verb = _words("ignore", "disregard", "forget", "override", "bypass", "skip",
                           "drop", "abandon")
    quantifier = _words("all", "any", "every", "the", "your", "my", "these", "those", "of")
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
    return (
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
            "[\U000E0000-\U000E007F]+")),
        Detector("encoding_smuggling", "clean", compile_re2(
            r"\b(?:decode|decoded|base64|b64|rot13|rot-13|hex|hexadecimal)\b.{0,60}?"
            r"(?:[a-z0-9+/]{32,}={0,2}|(?:[0-9a-f]{2}\s?){24,})")),
    )
