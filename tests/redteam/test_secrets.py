"""Red team: the `secrets` builtin against generated credentials, disguised and placed.

How the attacks are made (none replays a fixed string, apart from the reported leaks):

1. A generator per kind of credential builds a fresh one in its issuer's format: prefix,
   then a body of the right alphabet and length drawn from `random.Random(seed)` with a
   seed from Hypothesis (so a shrunk example is still a random-looking key, never
   `AAAA…`, which is a placeholder, not a key). Kinds whose meaning needs context
   (AWS secret keys, generic `password=` assignments, Twilio auth tokens, Azure strings,
   GCP service-account JSON, URLs with a password) generate the whole statement.
2. A bare token is placed as people paste it: alone, `NAME=…`, `export NAME="…"`,
   `name: …`, `"name": "…"`, `name = '…'`, `Authorization: Bearer …`, in backticks.
3. A disguise is applied to the credential's own characters: invisible characters
   (zero-width, word joiner, BOM, soft hyphen, bidi and tag characters, variation
   selectors) at random positions inside it; compatibility forms (fullwidth, math
   alphabets, circled); Latin look-alikes (Cyrillic, Greek...); combining marks; or a mix.
4. It is put inside arbitrary text (any Unicode, or printable ASCII) with whitespace
   between, and must be caught by its own detector id, through the real ContentStage,
   with a violation whose span covers the disguised credential in the original text.

Benign look-alikes (must not be flagged by any secrets detector) are generated too, from
the shapes that sit next to real credentials in what an assistant reads and writes:
hashes and ids (git SHAs, UUIDs, MD5s, a Twilio account SID alone), placeholders (`sk-xxx…`,
`<your-api-key>`, `${OPENAI_API_KEY}`), code that reads a secret instead of holding it
(`os.environ[...]`, `config.database.password`), weak demo passwords (`password=changeme`),
URLs and addresses without a password (`http://host:8080/path`, `user@example.com`,
`git@host:org/repo.git`, `postgres://user:${DB_PASSWORD}@db`), base64 image data, hex
colours, `sk-` inside prose (`risk-free`), and arbitrary text.

Not attacked here, by design (see the docstring of sidecar.content.builtins): a secret
split across messages, spaced out, leetspeak or re-encoded (base64, reversed), and a
token glued to a preceding letter or digit for the short prefixes (`hf_`, `sk-`, `SK`).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import random
import string
import unicodedata
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar.content.normalize import _homoglyphs, clean
from sidecar.pipeline import Pipeline
from sidecar.policy.model import ContentConfig
from sidecar.pseudonyms import finish_locally
from sidecar.stages.content import ContentStage
from sidecar.streaming import CompletionStream, StreamLimits
from sidecar.types import Decision, Direction, Inspection, Verdict
from tests.conftest import Sidecar, make_settings
from tests.redteam.conftest import SCALE, TALLY

# Per kind of credential: 22 kinds, so about 700 disguised variants in `make test`.
PER_KIND = settings(max_examples=30 * SCALE, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

UPPER = string.ascii_uppercase
LETTERS = string.ascii_letters
ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "_-"
HEX = "0123456789abcdef"


@dataclass(frozen=True)
class Secret:
    """A statement holding a credential: text[start:end] is the credential itself."""

    detector: str
    text: str
    start: int
    end: int

    @property
    def token(self) -> str:
        return self.text[self.start:self.end]


def body(r: random.Random, alphabet: str, size: int) -> str:
    return "".join(r.choice(alphabet) for _ in range(size))


def b64(r: random.Random, size: int, alphabet: str = "standard") -> str:
    raw = bytes(r.getrandbits(8) for _ in range(size))
    if alphabet == "url":
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return base64.b64encode(raw).decode()


def statement(detector: str, template: str, token: str, **fields: str) -> Secret:
    """`template` with `{tok}` standing for the credential (and other `{fields}`)."""
    before, after = template.split("{tok}")
    head = before.format(**fields)
    return Secret(detector, head + token + after.format(**fields), len(head),
                  len(head) + len(token))


# -- generators, one per detector --------------------------------------------------------

# A bare token's placements; {name} comes from NAMES.
FORMS = ["{tok}", "{name}={tok}", 'export {name}="{tok}"', "{name}: {tok}",
         '"{name}": "{tok}"', "{name} = '{tok}'", "Authorization: Bearer {tok}", "`{tok}`",
         '{{"{name}": "{tok}", "region": "eu"}}']
NAMES = ["OPENAI_API_KEY", "api_key", "GITHUB_TOKEN", "HF_TOKEN", "key", "NPM_TOKEN",
         "credentials", "x-api-key", "apiKey", "SECRET", "config_value", "TOKEN_2"]


def placed(detector: str, make: Callable[[random.Random], str]) -> Callable[[random.Random],
                                                                           Secret]:
    def generate(r: random.Random) -> Secret:
        return statement(detector, r.choice(FORMS), make(r), name=r.choice(NAMES))
    return generate


def openai(r: random.Random) -> str:
    if r.random() < 0.3:  # legacy user key: 48 characters around "OpenAI" in base64
        return "sk-" + body(r, ALNUM, 20) + "T3BlbkFJ" + body(r, ALNUM, 20)
    half = r.choice([58, 74])
    return (f"sk-{r.choice(['proj', 'svcacct', 'admin'])}-" + body(r, URLSAFE, half)
            + "T3BlbkFJ" + body(r, URLSAFE, half))


def github(r: random.Random) -> str:
    if r.random() < 0.3:
        return "github_pat_" + body(r, ALNUM, 22) + "_" + body(r, ALNUM, 59)
    return f"gh{r.choice('pousr')}_" + body(r, ALNUM, 36)


def slack(r: random.Random) -> str:
    if r.random() < 0.3:
        return ("https://hooks.slack.com/services/T" + body(r, UPPER + string.digits, 8)
                + "/B" + body(r, UPPER + string.digits, 10) + "/" + body(r, ALNUM, 24))
    digits = string.digits
    return (f"xox{r.choice('bpa')}-" + body(r, digits, 12) + "-" + body(r, digits, 13) + "-"
            + body(r, ALNUM, 24))


def private_key(r: random.Random) -> Secret:
    kind = r.choice(["RSA ", "EC ", "OPENSSH ", "", "ENCRYPTED "])
    lines = [b64(r, 48) for _ in range(r.randint(2, 8))]
    pem = (f"-----BEGIN {kind}PRIVATE KEY-----\n" + "\n".join(lines)
           + f"\n-----END {kind}PRIVATE KEY-----")
    return Secret("private_key", pem, 0, len(pem))


def jwt(r: random.Random) -> str:
    header = {"alg": r.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
    claims = {"sub": str(r.randint(1, 10**9)), "iat": r.randint(1_600_000_000, 1_800_000_000),
              "name": body(r, LETTERS, r.randint(3, 12))}
    return ".".join(base64.urlsafe_b64encode(part).decode().rstrip("=") for part in (
        json.dumps(header).encode(), json.dumps(claims).encode(),
        bytes(r.getrandbits(8) for _ in range(32))))


def aws_secret(r: random.Random) -> Secret:
    name = r.choice(["aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "aws_secret_key",
                     "SecretAccessKey", "aws-secret-access-key"])
    form = r.choice(["{name} = {tok}", "{name}={tok}", 'export {name}="{tok}"',
                     '"{name}": "{tok}"', "{name}: {tok}"])
    return statement("aws_secret_key", form, body(r, ALNUM + "/+", 40), name=name)


GENERIC_NAMES = ["DB_PASSWORD", "db_password", "FOO_API_KEY", "x-api-key", "apiKey",
                 "client_secret", "SECRET_KEY", "TOKEN", "AUTH_TOKEN", "password", "Passwd",
                 "MYSQL_ROOT_PASSWORD", "api-key", "SECRETS", "passphrase", "DB_PWD",
                 "accessToken", "PASSWORD_PROD", "smtp.password"]
GENERIC_FORMS = ["{name}={tok}", 'export {name}="{tok}"', "{name}: {tok}", '"{name}": "{tok}"',
                 "{name} = '{tok}'", '{name} := "{tok}"', "'{name}' => '{tok}'",
                 "{name}: '{tok}'", "<{name}>{tok}</{name}>", "set {name}={tok}"]
# What a password generator (or a person asked for a strong password) produces: any
# printable symbol inside quotes; unquoted, the symbols a shell or .env line keeps whole.
PASSWORD_CHARS = ALNUM + "!@#$%^&*_-+=~."
QUOTED_PASSWORD_CHARS = ALNUM + "!#$%&()*+,-./:;=?@[]^_|~"
STRONG = string.digits + "!@#$%^&*+=~"


def generic(r: random.Random) -> Secret:
    form = r.choice(GENERIC_FORMS)
    quoted = form.split("{tok}")[0][-1] in "\"'`>"
    value = list(body(r, QUOTED_PASSWORD_CHARS if quoted else PASSWORD_CHARS,
                      r.randint(16, 40)))
    value[r.randrange(len(value))] = r.choice(STRONG)  # see "deliberately not" in builtins
    return statement("generic_api_key", form, "".join(value), name=r.choice(GENERIC_NAMES))


def authorization(r: random.Random) -> Secret:
    token = body(r, ALNUM + "._~+/-", r.randint(24, 60)) + r.choice(string.digits)
    form = r.choice(["Authorization: Bearer {tok}", '-H "Authorization: Token {tok}"',
                     '"authorization": "Bearer {tok}"', "authorization: basic {tok}"])
    return statement("authorization_header", form, token)


def twilio(r: random.Random) -> Secret:
    choice = r.randrange(3)
    if choice == 0:
        return placed("twilio_key", lambda r: "SK" + body(r, HEX, 32))(r)
    if choice == 1:
        form = r.choice(['client = Client("AC{sid}", "{tok}")', "AC{sid}:{tok}",
                         "account AC{sid} auth token {tok}"])
        return statement("twilio_key", form, body(r, HEX, 32), sid=body(r, HEX, 32))
    name = r.choice(["TWILIO_AUTH_TOKEN", "twilio_token", "TwilioApiSecret"])
    form = r.choice(["{name}={tok}", '"{name}": "{tok}"', "{name}: {tok}"])
    return statement("twilio_key", form, body(r, r.choice([HEX, ALNUM]), 32), name=name)


def azure_key(r: random.Random) -> Secret:
    account = body(r, string.ascii_lowercase + string.digits, r.randint(3, 24))
    if r.random() < 0.5:
        form = ("DefaultEndpointsProtocol=https;AccountName={account};AccountKey={tok};"
                "EndpointSuffix=core.windows.net")
        return statement("azure_storage_key", form, b64(r, 64), account=account)
    form = ("Endpoint=sb://{account}.servicebus.windows.net/;"
            "SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={tok}")
    return statement("azure_storage_key", form, b64(r, 32), account=account)


def azure_sas(r: random.Random) -> Secret:
    params = ["sv=2022-11-02", "ss=bfqt", "srt=sco", "sp=rwdlacupiytfx",
              "se=2026-01-01T00:00:00Z", "spr=https", "sig={tok}"]
    middle = params[1:-1]
    r.shuffle(middle)
    ordered = [params[0], *middle, params[-1]] if r.random() < 0.7 else \
        [params[-1], *middle, params[0]]
    account = body(r, string.ascii_lowercase, 8)
    form = f"https://{account}.blob.core.windows.net/data/report.csv?" + "&".join(ordered)
    return statement("azure_sas_token", form, urllib.parse.quote(b64(r, 32), safe=""))


def gcp(r: random.Random) -> Secret:
    project = body(r, string.ascii_lowercase, 8) + "-" + body(r, string.digits, 6)
    fields = {"type": "service_account", "project_id": project,
              "private_key_id": body(r, HEX, 40),
              "private_key": "-----BEGIN PRIVATE KEY-----\n" + b64(r, 96) +
                             "\n-----END PRIVATE KEY-----\n",
              "client_email": f"bot@{project}.iam.gserviceaccount.com",
              "client_id": body(r, string.digits, 21)}
    keys = list(fields)
    r.shuffle(keys)
    text = json.dumps({k: fields[k] for k in keys}, indent=r.choice([None, 2]))
    if r.random() < 0.2:  # the JSON pasted as a string inside other JSON
        text = json.dumps(text)[1:-1]
    start = text.index("service_account")
    return Secret("gcp_service_account", text, start, start + len("service_account"))


URL_PASSWORD_CHARS = ALNUM + "-._~!$&()*+,;=%"


def url_password(r: random.Random) -> Secret:
    scheme = r.choice(["postgres", "postgresql", "mysql", "mongodb+srv", "redis", "rediss",
                       "amqp", "https", "http", "ftp", "smtp"])
    user = "" if scheme.startswith("redis") and r.random() < 0.5 else \
        body(r, string.ascii_lowercase + string.digits + "_.", r.randint(1, 10))
    host = body(r, string.ascii_lowercase, r.randint(2, 10)) + r.choice(
        [".example.com", ".internal", "", ".db.svc.cluster.local"])
    tail = r.choice(["", ":5432", ":6379/0", "/app", ":5432/app?sslmode=require"])
    form = f"{scheme}://{user}:{{tok}}@{host}{tail}"
    return statement("url_password", form, body(r, URL_PASSWORD_CHARS, r.randint(4, 24)))


KINDS: dict[str, Callable[[random.Random], Secret]] = {
    "aws_access_key_id": placed("aws_access_key_id", lambda r: r.choice(["AKIA", "ASIA"])
                                + body(r, UPPER + "234567", 16)),
    "aws_secret_key": aws_secret,
    "github_token": placed("github_token", github),
    "gitlab_token": placed("gitlab_token", lambda r: "glpat-" + body(r, URLSAFE, 20)),
    "slack_token": placed("slack_token", slack),
    "google_api_key": placed("google_api_key", lambda r: "AIza" + body(r, URLSAFE, 35)),
    "stripe_key": placed("stripe_key", lambda r: r.choice(["sk_live_", "rk_live_"])
                         + body(r, ALNUM, r.choice([24, 99]))),
    "private_key": private_key,
    "jwt": placed("jwt", jwt),
    "generic_api_key": generic,
    "authorization_header": authorization,
    "openai_api_key": placed("openai_api_key", openai),
    "anthropic_api_key": placed("anthropic_api_key", lambda r: "sk-ant-" + r.choice(
        ["api03", "admin01"]) + "-" + body(r, URLSAFE, 93) + "AA"),
    "huggingface_token": placed("huggingface_token", lambda r: "hf_" + body(r, LETTERS, 34)),
    "npm_token": placed("npm_token", lambda r: "npm_" + body(r, ALNUM, 36)),
    "pypi_token": placed("pypi_token", lambda r: "pypi-AgEIcHlwaS5vcmc"
                         + body(r, URLSAFE, r.randint(60, 180))),
    "twilio_key": twilio,
    "sendgrid_key": placed("sendgrid_key", lambda r: "SG." + body(r, URLSAFE, 22) + "."
                           + body(r, URLSAFE, 43)),
    "azure_storage_key": azure_key,
    "azure_sas_token": azure_sas,
    "gcp_service_account": gcp,
    "url_password": url_password,
}

# -- disguises ---------------------------------------------------------------------------

INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u2062", "\u2063",
             "\u202a", "\u202c", "\u2066", "\u2069", "\ufe0f", "\u034f", "\U000e0020",
             "\U000e0041", "\U000e007f", "\U000e0100",
             # control characters that are not whitespace (trial 18: `AKIAI\x00OSF...`)
             "\x00", "\x08", "\x1b", "\x7f", "\x80", "\x9f"]
MARKS = ["\u0301", "\u0300", "\u0308", "\u0327", "\u0336", "\u20dd"]


@functools.cache
def look_alikes() -> dict[str, tuple[str, ...]]:
    """Latin letter → non-Latin letters the clean view reads as it (same confusables
    data, inverted, kept only where the fold agrees)."""
    out: dict[str, list[str]] = {}
    for char, latin in _homoglyphs().items():
        if len(char) == 1 and not char.isascii() and char.isalpha() and \
                clean(char).text == latin:
            out.setdefault(latin, []).append(char)
    return {letter: tuple(chars) for letter, chars in out.items()}


@functools.cache
def compatibility_forms() -> dict[str, tuple[str, ...]]:
    """ASCII character → compatibility forms whose NFKD is it: fullwidth forms of every
    printable character; math alphanumerics, circled and other forms of letters and
    digits."""
    out: dict[str, list[str]] = {chr(c - 0xFEE0): [chr(c)] for c in range(0xFF01, 0xFF5F)}
    for start, stop in ((0x1D400, 0x1D800), (0x2460, 0x24EA), (0x2070, 0x20A0)):
        for code in range(start, stop):
            char = chr(code)
            decomposed = unicodedata.normalize("NFKD", char)
            if len(decomposed) == 1 and decomposed.isascii() and decomposed.isalnum():
                out.setdefault(decomposed, []).append(char)
    return {ascii_: tuple(chars) for ascii_, chars in out.items()}


DISGUISES = ["plain", "invisible", "compatibility", "look-alike", "marks", "mixed"]


def disguise(r: random.Random, secret: Secret, how: str) -> tuple[str, int, int]:
    """The statement with its credential disguised; returns (text, start, end) where
    [start, end) runs from the credential's first character to its last."""
    chars = list(secret.token)
    if how in ("compatibility", "mixed"):
        for index in r.sample(range(len(chars)), k=max(1, len(chars) // r.randint(1, 4))):
            forms = compatibility_forms().get(chars[index]) or \
                compatibility_forms().get(chars[index].lower())
            if forms:
                chars[index] = r.choice(forms)
    if how == "look-alike":
        for index in range(len(chars)):
            forms = look_alikes().get(chars[index].lower())
            if forms and r.random() < 0.5:
                chars[index] = r.choice(forms)
    if how == "marks":
        for index in r.sample(range(len(chars)), k=r.randint(1, 4)):
            chars[index] += r.choice(MARKS)
    hidden = [""] * len(chars)  # invisible characters put before each character
    if how in ("invisible", "mixed"):
        for _ in range(r.randint(1, 4)):
            hidden[r.randrange(1, len(chars))] += r.choice(INVISIBLE)
    token = "".join(h + c for h, c in zip(hidden, chars, strict=True))
    text = secret.text[:secret.start] + token + secret.text[secret.end:]
    last = len(token) - len(chars[-1])  # where the last credential character is
    return text, secret.start, secret.start + last + 1


# Context the attacker or the conversation supplies: anything, ASCII or not.
context = st.one_of(st.text(max_size=40), st.text(alphabet=string.printable, max_size=40),
                    st.sampled_from(["", "é", "\u2019", "\U0001f642", "naïve café",
                                     "日本語の設定"]))
gap = st.sampled_from([" ", "\n", "\t", " (", ": ", "\n\n", " — "])


@functools.cache
def stage() -> ContentStage:
    return ContentStage(ContentConfig.model_validate({"rules": [
        {"id": "secrets", "action": "block", "builtin": "secrets"}]}))


def violations(text: str) -> list[tuple[str, int, int]]:
    result = stage().run(Inspection.of_text(text, Direction.PROMPT))
    return [(v.rule_id, v.start, v.end) for v in result.violations]


def covering(text: str, detector: str, start: int, end: int) -> list[tuple[int, int]]:
    return [(s, e) for rule, s, e in violations(text)
            if rule == f"secrets/{detector}" and s <= start and e >= end]


# -- 1. generated credentials, disguised, in context -------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
@PER_KIND
@given(how=st.sampled_from(DISGUISES), seed=st.integers(0, 2**32 - 1), before=context,
       after=context, left=gap, right=gap)
def test_a_disguised_credential_is_caught_anywhere(kind: str, how: str, seed: int,
                                                   before: str, after: str, left: str,
                                                   right: str) -> None:
    r = random.Random(seed)
    secret = KINDS[kind](r)
    disguised, start, end = disguise(r, secret, how)
    text = before + left + disguised + right + after
    offset = len(before) + len(left)
    TALLY[f"secrets/{kind}"]["tried"] += 1
    hits = covering(text, secret.detector, offset + start, offset + end)
    assert hits, (how, text, violations(text))
    TALLY[f"secrets/{kind}"]["caught"] += 1


# -- 2. the leaks reported in issue 16 (item 4), and the examples named with it -----------

REPORTED = [
    ("generic_api_key", "DB_PASSWORD=Xk9#mP2$vL8@qR5!nT3w", "Xk9#mP2$vL8@qR5!nT3w"),
    ("openai_api_key", "OPENAI_API_KEY=sk-proj-" + "Ab3_xY9-Qr7Lm2Np" * 5,
     "sk-proj-" + "Ab3_xY9-Qr7Lm2Np" * 5),
    ("generic_api_key", "OPENAI_API_KEY=sk-proj-" + "Ab3_xY9-Qr7Lm2Np" * 5,
     "sk-proj-" + "Ab3_xY9-Qr7Lm2Np" * 5),
    ("openai_api_key", "key: sk-" + "T3BlbkFJ" + "aZ09" * 10, "sk-T3BlbkFJ" + "aZ09" * 10),
    ("anthropic_api_key", "sk-ant-api03-" + "Zx_9-kQ2" * 12 + "AA",
     "sk-ant-api03-" + "Zx_9-kQ2" * 12 + "AA"),
    ("anthropic_api_key", "sk-ant-admin01-" + "Zx_9-kQ2" * 12 + "AA",
     "sk-ant-admin01-" + "Zx_9-kQ2" * 12 + "AA"),
    ("huggingface_token", "HF_TOKEN=hf_" + "kQwErTyUiOpAsDfGhJkLzXcVbNmQwErTyU",
     "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"),
    ("npm_token", "//registry.npmjs.org/:_authToken=npm_" + "a1B2c3D4e5F6" * 3,
     "npm_" + "a1B2c3D4e5F6" * 3),
    ("pypi_token", "password = pypi-AgEIcHlwaS5vcmc" + "CJDk4Yz-ZmNk_ZjE3" * 5,
     "pypi-AgEIcHlwaS5vcmc" + "CJDk4Yz-ZmNk_ZjE3" * 5),
    ("twilio_key", "SK" + "0123456789abcdef" * 2, "SK" + "0123456789abcdef" * 2),
    ("sendgrid_key", "SG." + "aB3dE5fG7hJ9kL1mN3pQ5r" + "." + "x" * 3 + "Yz0-_" * 8,
     "SG.aB3dE5fG7hJ9kL1mN3pQ5r." + "xxx" + "Yz0-_" * 8),
    ("azure_storage_key", "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey="
     + "Zm9vYmFyYmF6cXV4" * 5 + "AB==;EndpointSuffix=core.windows.net",
     "Zm9vYmFyYmF6cXV4" * 5 + "AB=="),
    ("gcp_service_account", '{"type": "service_account", "project_id": "acme-1", '
     '"private_key_id": "' + "0a1b2c3d4e" * 4 + '"}', "service_account"),
    ("url_password", "postgres://user:pass@host", ":pass@"),
    ("url_password", "https://u:p@h", ":p@"),
    ("url_password", "redis://:hunter2@cache:6379/0", ":hunter2@"),
    ("aws_access_key_id", "AKIA\u200bIOSFODNN7EXAMPLE", "AKIA\u200bIOSFODNN7EXAMPLE"),
    ("github_token", "ghp_aB3dE5fG7hJ9kL1\u200bmN3pQ5rS7tU9vW1xY3zA5",
     "ghp_aB3dE5fG7hJ9kL1\u200bmN3pQ5rS7tU9vW1xY3zA5"),
    ("aws_access_key_id", "\uff21\uff2b\uff29\uff21IOSFODNN7EXAMPLE",
     "\uff21\uff2b\uff29\uff21IOSFODNN7EXAMPLE"),
]


@pytest.mark.parametrize(("detector", "text", "token"), REPORTED,
                         ids=[f"{d}-{i}" for i, (d, _, _) in enumerate(REPORTED)])
def test_the_reported_leaks_are_caught(detector: str, text: str, token: str) -> None:
    start = text.index(token)
    assert covering(text, detector, start, start + len(token)), violations(text)


# -- 3. benign look-alikes ---------------------------------------------------------------


def benign(r: random.Random) -> str:
    """One text that looks like a credential to a careless detector and is not one."""
    word = body(r, string.ascii_lowercase, r.randint(3, 9))
    makers: list[Callable[[], str]] = [
        lambda: f"commit {body(r, HEX, 40)} (HEAD -> main) and {body(r, HEX, 7)}",
        lambda: f"request id {uuid.UUID(int=r.getrandbits(128), version=4)}",
        lambda: f"md5 {body(r, HEX, 32)}  {word}.tar.gz; sha256 {body(r, HEX, 64)}",
        lambda: f"Your account SID is AC{body(r, HEX, 32)}.",
        lambda: r.choice(["password=changeme", "password: hunter2", "token: abc123",
                          "PASSWORD=password", "secret=changemechangeme",
                          "password = 'correct horse battery staple'"]),
        lambda: r.choice(["OPENAI_API_KEY=sk-...", "api_key = '<your-api-key>'",
                          "OPENAI_API_KEY=${OPENAI_API_KEY}", "export HF_TOKEN=hf_xxx",
                          "sk-" + "x" * 48, "ghp_" + "X" * 36, "AKIA" + "X" * 16,
                          "sk-proj-" + "x" * 100, "npm_" + "0" * 36,
                          "api_key: YOUR_API_KEY_HERE", "password: ********************"]),
        lambda: r.choice(['api_key = os.environ["OPENAI_API_KEY"]',
                          "password = config.database.password",
                          'token = request.headers.get("Authorization")',
                          "secret_key = settings.SECRET_KEY",
                          "api_key = process.env.OPENAI_API_KEY",
                          "password = getpass.getpass(prompt='Password: ')",
                          "token_url: https://oauth2.googleapis.com/token",
                          "secret_file: /etc/secrets/db-password.txt",
                          "PWD=/home/alice/src/project-x", "tokenizer: bert-base-uncased",
                          "password_policy: min-length-sixteen"]),
        lambda: f"http://{word}.example.com:{r.randint(1, 65535)}/{word}/path",
        lambda: f"https://{word}.example.com/{word}@{r.randint(1, 9)}.x",
        lambda: f"{word}@example.com",
        lambda: f"git@github.com:{word}/{word}.git and ssh://git@github.com/{word}/x",
        lambda: f"postgres://{word}@db.internal:5432/{word}",
        lambda: f"postgres://{word}:${{DB_PASSWORD}}@db:5432/app",
        lambda: f"mailto:{word}@example.org?subject=hi",
        lambda: "data:image/png;base64," + b64(r, r.randint(60, 600)),
        lambda: f"color: #{body(r, HEX, 6)}; background: #{body(r, HEX, 3)};",
        lambda: r.choice(["a risk-free plan", "a task-based sk-learn model", "whisk-proj-x",
                          "desk-admin-controller", "the disk-None-policy"]),
        lambda: f"eyJhbGciOiJIUzI1NiJ9 is only a header, {word}",
        lambda: f"AccountName={word};EndpointSuffix=core.windows.net",
        lambda: "?sv=2022-11-02&ss=b&srt=sco&sp=r",
        lambda: '{"type": "service_account", "project_id": "' + word + '"}',
        lambda: f"hf_hub_download(repo_id='{word}/{word}')",
    ]
    return r.choice(makers)()


@settings(max_examples=300 * SCALE, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), before=context, after=context, left=gap, right=gap)
def test_benign_look_alikes_are_not_flagged(seed: int, before: str, after: str, left: str,
                                            right: str) -> None:
    text = before + left + benign(random.Random(seed)) + right + after
    flagged = [v for v in violations(text) if v[0].startswith("secrets/")]
    TALLY["secrets/benign"]["benign"] += 1
    TALLY["secrets/benign"]["flagged"] += bool(flagged)
    assert not flagged, (text, flagged)


@settings(max_examples=200 * SCALE, deadline=None)
@given(text=st.text(max_size=300))
def test_arbitrary_text_is_not_flagged(text: str) -> None:
    TALLY["secrets/benign"]["benign"] += 1
    flagged = violations(text)
    TALLY["secrets/benign"]["flagged"] += bool(flagged)
    assert not flagged, (text, flagged)


# -- 4. through the real pipeline: streamed, and over gRPC --------------------------------

POLICY = """\
name: secrets
content:
  rules:
    - {id: secrets, action: redact, replacement: "[SECRET]", builtin: secrets}
"""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    policies = tmp_path_factory.mktemp("secrets-policies")
    (policies / "secrets.yaml").write_text(POLICY)
    return Pipeline.from_settings(make_settings(tmp_path_factory.mktemp("secrets"),
                                                policies=Path(policies)))


def streamed(pipeline: Pipeline, text: str, sizes: list[int]) -> tuple[Decision, str]:
    template = Inspection.of_text("", Direction.COMPLETION, tenant="secrets")

    async def analyze(window: Inspection) -> Verdict:
        return finish_locally(window, pipeline.run(window))

    async def drive() -> tuple[Decision, str]:
        completion = CompletionStream(template, analyze, StreamLimits())
        shown: list[str] = []
        position = turn = 0
        while position < len(text) and not completion.blocked:
            size = sizes[turn % len(sizes)]
            completion.add(text[position:position + size])
            position, turn = position + size, turn + 1
            shown.extend(r.text for r in await completion.advance(final=False))
        if not completion.blocked:
            shown.extend(r.text for r in await completion.advance(final=True))
        return completion.summary()[1].decision, "".join(shown)

    return asyncio.run(drive())


@settings(max_examples=40 * SCALE, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(KINDS)), how=st.sampled_from(["plain", "invisible"]),
       seed=st.integers(0, 2**32 - 1), before=st.text(string.printable, max_size=300),
       sizes=st.lists(st.integers(1, 400), min_size=1, max_size=4))
def test_a_streamed_credential_never_reaches_the_reader(pipeline: Pipeline, kind: str,
                                                        how: str, seed: int, before: str,
                                                        sizes: list[int]) -> None:
    r = random.Random(seed)
    disguised, start, end = disguise(r, KINDS[kind](r), how)
    text = f"{before}\n{disguised}\nThat is all."
    inspection = Inspection.of_text(text, Direction.COMPLETION, tenant="secrets")
    expected = finish_locally(inspection, pipeline.run(inspection))
    TALLY["stream/secrets"]["tried"] += 1
    decision, shown = streamed(pipeline, text, sizes)
    assert (decision, shown) == (expected.decision, expected.text), (text, sizes)
    token = disguised[start:end]
    assert token not in shown
    TALLY["stream/secrets"]["caught"] += 1


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_is_blocked_over_grpc(sidecar: Sidecar, kind: str) -> None:
    r = random.Random(kind)
    secret = KINDS[kind](r)
    for how in ("plain", "invisible"):
        disguised, start, end = disguise(r, secret, how)
        text = f"Here is the config you asked for:\n{disguised}\nThanks!"
        offset = text.index(disguised)
        reply = sidecar.prompt(text, tenant="content")
        assert reply.decision == pb.BLOCK, (how, text)
        assert any(v.rule_id == f"secrets/{secret.detector}" and v.start <= offset + start
                   and v.end >= offset + end for v in reply.violations), \
            [(v.rule_id, v.start, v.end) for v in reply.violations]
        # Messages name the detector, never the text (GCP's marker is in its id).
        assert all(secret.token not in v.message.replace(secret.detector, "")
                   for v in reply.violations)


@PER_KIND
@given(token=st.from_regex(r"(?i:akia[a-z0-9]{16}|ghp_[a-z0-9]{36}|hf_[a-z]{34}|"
                           r"sk-ant-api03-[a-z0-9]{40}|aiza[a-z0-9]{35})", fullmatch=True),
       before=st.text(max_size=20), after=st.text(max_size=20))
def test_whether_an_ascii_span_is_a_secret_never_depends_on_the_text_around_it(
        token: str, before: str, after: str) -> None:
    """The clean-view twins count only disguised (non-ASCII) matches, so an ASCII span
    is judged by the case-sensitive visible detectors alone, emoji or accents nearby or
    not: a lower-case `akia…` is not an AWS key in any text."""
    def secret_spans(text: str, offset: int) -> set[tuple[int, int]]:
        result = stage().run(Inspection.of_text(text, Direction.PROMPT))
        return {(v.start - offset, v.end - offset) for v in result.violations
                if offset <= v.start and v.end <= offset + len(token)}

    alone = secret_spans(f" {token} ", 1)
    assert secret_spans(f"{before} {token} {after}", len(before) + 1) == alone
    assert secret_spans(f"é🙂 {token} \u2019", 3) == alone
