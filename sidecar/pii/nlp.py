"""spaCy for Presidio, loaded lean and never downloaded.

Vanilla Presidio runs the whole en_core_web_sm pipeline (tok2vec, tagger, parser,
attribute ruler, lemmatizer, ner) on every text. Its recognizers need only tokens and
named entities, and in the `sm` models `ner` carries its own tok2vec, so:

- a policy that asks for NER entities (PERSON, LOCATION, ...) gets a pipeline with `ner`
  alone: the same entities as the full pipeline (checked on 500 corpus sentences), in
  under half the time;
- a policy that asks for pattern entities only gets the tokenizer alone (no model
  weights run at all); context words still work because they need only tokens.

Lemmas, which Presidio uses to match context words, come from the lemmatizer we drop; we
use the lower-cased token instead. Presidio matches context words as substrings, so
regular inflections ("emails", "called") still match.
"""

from __future__ import annotations

import bisect
import itertools
import re
import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine

from sidecar import abandon
from sidecar.errors import ConfigError
from sidecar.pii.entities import NER_ENTITIES, NER_ENTITY_MAPPING

__all__ = ["NER_ENTITIES", "NER_ENTITY_MAPPING"]  # their home is sidecar.pii.entities


# What spaCy is given is a same-length copy of the text (so every offset stays valid, and
# recognizers still see the original) with two costs taken out:
# - the tokenizer splits a whitespace-free run by re-searching its rest after every
#   prefix, suffix or infix it strips: quadratic in a run of punctuation, URLs or emoji
#   (spaCy issues #1765, #4362, #5122; 16,000 emoji in a row took 36 s). A run longer
#   than RUN (a URL, a hash, base64, minified JSON) becomes spaces: NER does not look
#   inside it. Turning only its punctuation into spaces kept more words, but NER then
#   took "https   si0" for a PERSON; pattern recognizers still read the original;
# - NER costs ~0.1 ms a token and every symbol is a token: a megabyte of "!!!" took
#   114 s. Runs of 8+ symbols (spaces between them or not) become spaces, which are no
#   tokens at all; no entity is made of them.
# Both rules look only at the characters around them, never at a position, so a window
# of a streamed completion is cut as the whole text is.
RUN = 256
MAX_TEXT_CHARS = 64 * 1024 * 1024  # the highest max_text_bytes allows
_LONG_RUN = re.compile(rf"\S{{{RUN + 1},}}")
_SYMBOL_RUN = re.compile(r"[^\w\s](?:\s*[^\w\s]){7,}")
_NOT_SPACE = re.compile(r"\S")


def for_tokenizer(text: str) -> str:
    """`text` as spaCy should see it: same length, without the runs that cost it most."""
    if len(text) <= 8:
        return text
    text = _SYMBOL_RUN.sub(lambda run: _NOT_SPACE.sub(" ", run.group()), text)
    if len(text) <= RUN:
        return text
    return _LONG_RUN.sub(lambda run: " " * len(run.group()), text)


_cache: dict[tuple[str, bool], Any] = {}
_cache_lock = threading.Lock()
# spaCy's memory_zone() is not thread-safe: one thread leaving its zone frees strings
# another thread's Doc still uses (seen as recall falling from 0.78 to 0.24 with two
# inspect threads). Every analysis holds this lock; parallelism comes from processes.
NLP_LOCK = threading.Lock()


@contextmanager
def memory_zone(nlp: Any) -> Iterator[None]:
    """spaCy's `nlp.memory_zone()`, left in order even when the block raises.

    spaCy's zones are generator context managers with their clean-up after the `yield`
    and no `finally`: a block that raises skips it. The lexemes the block made then stay
    indexed while their memory pool is dropped at the next zone: the next request that
    held one of those words read freed memory (seen as an AssertionError in
    `Vocab.get`, the request failing by its policy's `on_error`; freed memory can also
    read as another word). One request whose analysis raised -- any bug, a MemoryError --
    took down the requests after it, and its batch's others when they were retried
    alone. So the zone is always left as a normal exit leaves it; the error then goes on.
    """
    zone = nlp.memory_zone()
    zone.__enter__()
    try:
        yield
    finally:
        zone.__exit__(None, None, None)


def load_pipeline(model_name: str, with_ner: bool) -> Any:
    """Load (once per process) `model_name` with only what is needed: `ner`, or nothing."""
    key = (model_name, with_ner)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _load(model_name, with_ner)
        return _cache[key]


def matmul_with_numpy(model: Any) -> None:
    """Make every layer of `model` multiply matrices with numpy's BLAS, not thinc's BLIS.

    thinc's CPU backend multiplies with the BLIS library by default. On the small
    matrices a prompt makes (20 tokens x 288 x 288 in the NER model's encoder) the BLIS
    of the pinned wheels took 135-180 us a product where numpy's OpenBLAS took 30-46 us,
    one thread each; the NER model makes seven a call. Whole PII pipeline, in-process,
    six alternating rounds over 400 corpus documents: 4.33 -> 3.66 CPU-ms a document
    alone, 2.70 -> 2.18 in batches of 8, with identical findings and scores. Public API:
    `NumpyOps(use_blis=False)` and `Model.ops`, which is what `Model.to_cpu()` sets.

    OpenBLAS must run one thread per process: left to itself it starts a thread per
    core, which spins between products and made the same batches of 8 cost 3.82 CPU-ms.
    Every `guardrail` process sets OPENBLAS_NUM_THREADS=1 before numpy loads
    (`sidecar.cli.main`), and workers are spawned with it (`sidecar.workers`).
    """
    from thinc.api import NumpyOps

    ops = NumpyOps(use_blis=False)
    for node in model.walk():
        node.ops = ops


def _load(model_name: str, with_ner: bool) -> Any:
    import spacy

    if not (spacy.util.is_package(model_name) or Path(model_name).exists()):
        raise ConfigError(
            f"spaCy model '{model_name}' is not installed (the sidecar never downloads models): "
            "run `make setup`, or set GUARDRAIL_SPACY_MODEL to an installed model")
    try:
        meta = spacy.util.get_model_meta(spacy.util.get_package_path(model_name)) \
            if spacy.util.is_package(model_name) else spacy.util.get_model_meta(Path(model_name))
    except Exception as err:
        raise ConfigError(f"spaCy model '{model_name}' cannot be read: {err}") from None
    components = list(meta.get("components") or meta.get("pipeline") or [])
    if with_ner and "ner" not in components:
        raise ConfigError(f"spaCy model '{model_name}' has no 'ner' component")
    keep = {"ner"} if with_ner else set()
    try:
        nlp = spacy.load(model_name, exclude=[c for c in components if c not in keep])
    except Exception as err:
        raise ConfigError(f"spaCy model '{model_name}' failed to load: {err}") from None
    if not with_ner:
        # Without a model, a token needs only what the context enhancer reads: its lower
        # case and stop-word and punctuation flags. spaCy computes ~20 attributes for
        # every word it has not seen (and, in a memory zone, every request's words are
        # unseen); computing three halves the tokenizer's time on 1 KB prompts. The NER
        # model reads other attributes (norm, prefix, suffix, shape), so it keeps them.
        from spacy.attrs import IS_PUNCT, IS_STOP, LOWER

        vocab: Any = nlp.vocab
        vocab.lex_attr_getters = {attr: getter for attr, getter in vocab.lex_attr_getters.items()
                                  if attr in (LOWER, IS_STOP, IS_PUNCT)}
    if with_ner:
        ner: Any = nlp.get_pipe("ner")
        matmul_with_numpy(ner.model)
    # spaCy refuses texts over 1,000,000 characters (a guard for the parser's memory, which
    # we never load); our own limit (max_text_bytes, at most 64 MiB) is the one that holds.
    nlp.max_length = MAX_TEXT_CHARS
    warm_vocabulary(nlp)
    return nlp


def warm_vocabulary(nlp: Any) -> int:
    """Make a lexeme, once, for every word of the model's own string table; their count.

    Why: each request is analysed inside a memory zone (so the vocabulary does not grow
    with every request), and inside a zone every word the vocabulary has no lexeme for
    gets one made -- its norm, shape, prefix, suffix and flags computed -- and freed at
    the end. A loaded `sm` model has lexemes for ~760 strings only, so "the", "call" and
    "email" were made again on every request: 6% of a worker's CPU on the PII corpus
    (cProfile: `Vocab._new_lexeme`). The model's string table holds the ~75,000 words
    and numbers of its training text; lexemes made for them outside any zone stay, and
    a request then makes only its rarer words. Measured: 3.86 -> 3.62 CPU-ms a corpus
    document, for +17 MiB and ~1 s of CPU per worker at start. A lexeme's attributes do
    not depend on when it is made (the same getters run), so findings are unchanged.
    """
    vocab = nlp.vocab
    words = [text for text in list(vocab.strings) if text.isalnum()]
    for word in words:
        vocab[word]  # creates and keeps the lexeme
    return len(words)


# Words one step of `tokenizer_cache_steps` tokenizes: ~5 ms of a worker's idle time.
CACHE_FILL_WORDS = 500
_filled: set[int] = set()  # id() of the pipelines whose tokenizer cache is full


def tokenizer_cache_steps(pipelines: list[Any] | None = None) -> Iterator[None]:
    """Fill the tokenizer cache of every pipeline this process loaded with the model's own
    words, a few milliseconds a step; a worker takes the steps while it waits for work.

    Why: requests are tokenized inside a memory zone, where spaCy's tokenizer saves
    nothing to its cache, so every whitespace-delimited chunk ran the prefix, suffix,
    infix and URL patterns again on every request: 4-9 us a known word, 0.7 from the
    cache. On the PII corpus in-process (batches of 5; bench/tokenizer_cache.py) the
    tokenizer took 0.25-0.32 CPU-ms a document, 0.19-0.24 with the cache (~3% of a
    worker's CPU). The cache is spaCy's own, keyed by the chunk, and gives what the
    patterns give (that is what it is for; tests/test_nlp_vocabulary.py compares tokens,
    lexeme attributes and entities with an unfilled model); only chunks equal to one of
    the model's words are in it, never a request's text (requests are tokenized inside
    a memory zone, where nothing is saved to it). Filling costs ~0.8 s of CPU, which is
    why it is done in idle steps rather than at load (every worker start and every
    `guardrail inspect` would pay).

    Two details of spaCy's tokenizer shape it: it caches at most `max_cache_size`
    chunks (10,000 by default; raised to hold every word), and after a special case
    ("cannot", "gonna") it caches nothing more of the same call, so special cases are
    left out and words with a digit, which the affix rules may split, go one at a time.
    Must run outside any memory zone (a worker's loop, between batches). `pipelines`:
    these instead of every loaded one.
    """
    for nlp in list(_cache.values()) if pipelines is None else pipelines:
        if id(nlp) in _filled:
            continue
        tokenizer = nlp.tokenizer
        words = [text for text in list(nlp.vocab.strings) if text.isalnum()]
        special = set(tokenizer.rules or {})
        tokenizer.max_cache_size = max(tokenizer.max_cache_size, len(words) + 10_000)
        letters = [word for word in words if word.isalpha() and word not in special]
        others = [word for word in words if not word.isalpha() and word not in special]
        yield
        for start in range(0, len(letters), CACHE_FILL_WORDS):
            with NLP_LOCK:
                tokenizer(" ".join(letters[start:start + CACHE_FILL_WORDS]))
            yield
        for start in range(0, len(others), CACHE_FILL_WORDS // 5):
            with NLP_LOCK:
                for word in others[start:start + CACHE_FILL_WORDS // 5]:
                    tokenizer(word)
            yield
        _filled.add(id(nlp))


# NER's scratch memory grows with the characters one pass holds, about 2.8 KB each (the
# tok2vec and state arrays of every token in the batch at once): one 1 MiB prompt took a
# worker from 170 MiB to 3 GiB, and a batch of requests adds up the same way. So NER sees
# a long text in segments of NER_SEGMENT_CHARS, each read with NER_OVERLAP_CHARS of the
# text around it (an entity at a seam is found whole, with its context), and one
# `nlp.pipe` call holds at most NER_PASS_CHARS, read in one model call (`one_ner_call`;
# it was four or two, of a pass twice as long, with the same peak). An entity belongs to
# the segment it starts in. The model's view is local (a 4-token CNN window, a greedy
# left-to-right state that forgets at every "O"), so 256 characters (~50 tokens) of
# overlap give the whole text's entities (checked in tests/test_nlp_segments.py).
# Cuts fall where whitespace-delimited chunks start, as `for_tokenizer` looks only at
# the characters around it: the same text is cut the same way wherever it came from.
NER_SEGMENT_CHARS = 8192
NER_OVERLAP_CHARS = 256
NER_PASS_CHARS = 16384
# Docs one pass may hold, however short: each costs a few KB whatever its length (16,000
# one-word JSON leaves in one pass held 400 MB). 64 in one call peak as 256 did in
# spaCy's own sub-batches of 64.
NER_PASS_DOCS = 64


def ner_segments(text: str, size: int = NER_SEGMENT_CHARS,
                 overlap: int = NER_OVERLAP_CHARS) -> list[tuple[int, int, int, int]]:
    """(start, core_start, core_end, end) of each segment NER reads `text` in.

    The cores tile the text; a segment is its core widened by about `overlap` on each
    side. Every boundary is a chunk start (or the text's ends), so a segment's tokens
    are the whole text's tokens there; a run without whitespace longer than `size` is
    cut inside it (`for_tokenizer` never leaves such a run). No segment is longer than
    3 * `size` + `size` // 4 + 2 * `overlap` characters.
    """
    if len(text) <= size + 2 * overlap:
        return [(0, 0, len(text), len(text))]
    cores = [0]
    while cores[-1] < len(text):
        abandon.check()  # 1 MB of base64 or "1/": seconds of finding chunk starts
        cut = _chunk_start_from(text, cores[-1] + size)
        if cut - cores[-1] > 2 * size:
            cut = cores[-1] + size
        if len(text) - cut < size // 4:  # no sliver of a last segment
            cut = len(text)
        cores.append(cut)
    segments = []
    for low, high in itertools.pairwise(cores):
        start = low if low == 0 else _chunk_start_from(text, low - overlap)
        end = high if high == len(text) else min(_chunk_start_from(text, high + overlap),
                                                 high + overlap + size)
        segments.append((min(start, low), low, high, max(end, high)))
    return segments


class LeanSpacyEngine(SpacyNlpEngine):
    """Presidio NLP engine over a lean pipeline from `load_pipeline`."""

    def __init__(self, model_name: str, with_ner: bool, language: str = "en") -> None:
        super().__init__(
            models=[{"lang_code": language, "model_name": model_name}],
            ner_model_configuration=NerModelConfiguration(
                model_to_presidio_entity_mapping=NER_ENTITY_MAPPING),
        )
        self.model_name = model_name
        self.with_ner = with_ner
        self.language = language
        # How NER reads long texts (see NER_SEGMENT_CHARS); tests make seams frequent.
        self.segment_chars = NER_SEGMENT_CHARS
        self.overlap_chars = NER_OVERLAP_CHARS
        self.pass_chars = NER_PASS_CHARS

    def load(self) -> None:
        pipeline = load_pipeline(self.model_name, self.with_ner)
        if self.with_ner:
            # Labels with no Presidio meaning (CARDINAL, MONEY, ...) are dropped here rather
            # than warned about on every request.
            self.ner_model_configuration.labels_to_ignore = [
                label for label in pipeline.get_pipe("ner").labels
                if label not in NER_ENTITY_MAPPING]
        self.nlp = {self.language: pipeline}  # type: ignore[assignment]

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        artifacts: NlpArtifacts = next(self.process_batch([text], language))[1]
        return artifacts

    def process_batch(self, texts: Any, language: str, batch_size: int = 1,
                      n_process: int = 1, as_tuples: bool = False,
                      **kwargs: Any) -> Generator[Any, Any, None]:
        """(text, artifacts) per text, in order, in bounded memory (see NER_SEGMENT_CHARS).

        NER reads the texts in passes of at most `pass_chars` (a text up to one segment
        long whole, batched with others; a longer one in segments), and each pass's Docs
        are dropped once their entities are read. The artifacts are `LazyArtifacts`
        holding those entities: tokens come, as for pattern-only policies, from windows
        around findings. A Doc kept per text cost ~5 KB even for one word, so a JSON
        completion's 110,000 string leaves held 550 MB of Docs. `batch_size`,
        `n_process` and `as_tuples` are Presidio's; only the defaults are supported.
        """
        if as_tuples or n_process != 1 or kwargs:
            raise ValueError("LeanSpacyEngine.process_batch takes plain texts, one process")
        nlp = self.get_nlp(language)
        texts = [str(text) for text in texts]
        # One piece per segment: (text index, start, core start, core end, end).
        pieces = [(index, *segment) for index, text in enumerate(texts)
                  for segment in ner_segments(text, self.segment_chars, self.overlap_chars)]
        found: list[list[Entity]] = [[] for _ in texts]
        for group in _passes(pieces, self.pass_chars):
            abandon.check()  # a pass is up to 16 KiB of NER: ~0.5 s
            parts = [texts[index][start:end] for index, start, _, _, end in group]
            for (index, start, low, high, _), doc in zip(
                    group, nlp.pipe(parts, batch_size=len(parts),
                                    component_cfg=one_ner_call(len(parts))), strict=True):
                found[index].extend(
                    Entity(ent.start_char + start, ent.end_char + start, ent.label_)
                    for ent in doc.ents if low <= ent.start_char + start < high)
        default = self.ner_model_configuration.default_score
        score = 0.85 if default is None else float(default)
        for text, entities in zip(texts, found, strict=True):
            ordered: list[Any] = _disjoint(entities)
            kept, scores = self._get_updated_entities(  # Presidio's label mapping
                ordered, [score] * len(ordered))
            yield text, LazyArtifacts(self, text, language, entities=kept, scores=scores)

    def _doc_to_nlp_artifact(self, doc: Any, language: str) -> NlpArtifacts:
        """Presidio's artifacts, read from the Doc's arrays rather than token by token.

        Presidio builds a Token object per token twice (offsets, lemmas) and looks every
        lemma up in the vocabulary twice more (stop word? punctuation?) to pick keywords;
        inside a memory zone each lookup of an unseen word creates a lexeme. The same
        values come from one `Doc.to_array` call (`_rows_of`, which windows use too).
        """
        entities, scores = self._get_updated_entities(
            doc.ents, self._get_scores_for_entities(doc))
        rows = _rows_of(doc)
        return _Artifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=[offset for offset, _, _, _ in rows],
            lemmas=[lemma for _, lemma, _, _ in rows],
            nlp_engine=self,
            language=language,
            scores=scores,
            keywords=[part for _, lemma, _, keyword in rows if keyword
                      for part in lemma.split(":")],
        )


def one_ner_call(docs: int) -> dict[str, dict[str, int]]:
    """`component_cfg` for `nlp.pipe` that has `ner` read `docs` texts in one model call.

    spaCy's transition parser (which `ner` is) cuts every batch it is handed into
    sub-batches of `batch_size // 4` texts, each its own `predict` call (spacy
    transition_parser.pyx, `Parser.pipe`: sorting by length pays off for the dependency
    parser's long documents). Each call has a fixed cost of thinc layers and parser
    state set-up, so a batch of 8 requests made four calls: 2.8-3.1 CPU-ms a corpus
    document, against 2.1-2.3 in one call (700 presidio-evaluator sentences, batches of
    8; batches of 4: 2.7-2.9 -> 2.2-2.6), with the same entities for every document.
    Only the speed depends on this: if spaCy changes how it cuts, results stay the same
    (tests/test_nlp_segments.py counts the calls). Memory is still bounded by the pass
    (NER_PASS_CHARS, NER_PASS_DOCS), which one call now holds whole.
    """
    return {"ner": {"batch_size": 4 * max(1, docs)}}


def _passes(pieces: list[tuple[int, int, int, int, int]], most: int
            ) -> Iterator[list[tuple[int, int, int, int, int]]]:
    """The pieces in order, grouped so that one pass reads at most `most` characters (a
    piece longer than that goes alone) and NER_PASS_DOCS pieces."""
    group: list[tuple[int, int, int, int, int]] = []
    chars = 0
    for piece in pieces:
        length = piece[4] - piece[1]
        if group and (chars + length > most or len(group) >= NER_PASS_DOCS):
            yield group
            group, chars = [], 0
        group.append(piece)
        chars += length
    if group:
        yield group


@dataclass(slots=True)
class Entity:
    """What Presidio's SpacyRecognizer reads of an entity (a Span would keep its Doc)."""

    start_char: int
    end_char: int
    label_: str


def _disjoint(entities: list[Entity]) -> list[Entity]:
    """In order; where two segments' entities overlap (one reached past its core), the
    earlier one stays."""
    kept: list[Entity] = []
    for entity in sorted(entities, key=lambda e: (e.start_char, e.end_char)):
        if not kept or entity.start_char >= kept[-1].end_char:
            kept.append(entity)
    return kept


class _Artifacts(NlpArtifacts):
    """NlpArtifacts whose keywords are computed by the engine, not looked up again."""

    def __init__(self, *, keywords: list[str], nlp_engine: Any, **kwargs: Any) -> None:
        super().__init__(nlp_engine=None, **kwargs)
        self.nlp_engine = nlp_engine
        self.keywords = keywords


class LazyArtifacts(NlpArtifacts):
    """Artifacts of a text that is tokenized only when something reads them.

    Without NER, tokens serve one purpose: the context words around a finding. A text in
    which no recognizer finds anything (most prompts) then never meets the tokenizer.

    A text with findings is tokenized only in windows around them (`context_words`), each
    stretch once, however many windows cover it: on 1 KB prompts this took one email from
    2.5 to 1.2 ms, and PII-dense prompts from 4.7 to 3.5 ms. Every value is still the
    eager one: spaCy tokenizes each whitespace-delimited chunk on its own, so a window that
    starts and ends where chunks start holds exactly the whole text's tokens there.
    """

    def __init__(self, engine: LeanSpacyEngine, text: str, language: str, *,
                 entities: list[Any] | None = None,
                 scores: list[float] | None = None) -> None:
        # NlpArtifacts.__init__ is not called: its attributes come from the real artifacts.
        self._engine = engine
        self._text = text
        self._language = language
        if entities is not None:  # found by NER already (LeanSpacyEngine.process_batch)
            self.entities: list[Any] = entities
            self.scores = scores if scores is not None else [0.85] * len(entities)
        self._made: NlpArtifacts | None = None
        self._colon_parts: frozenset[str] | None = None
        # Tokenized stretches: row offsets (sorted), rows, and the stretches covered.
        self._starts: list[int] = []
        self._row_list: list[_Row] = []
        self._covered: list[tuple[int, int]] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._made is None:  # tokens only: entities, if any, are set already
            nlp = self._engine.get_nlp(self._language)
            self._made = self._engine._doc_to_nlp_artifact(nlp.make_doc(self._text),
                                                           self._language)
        return getattr(self._made, name)

    def context_words(self, start: int, before: int, after: int) -> list[str] | None:
        """The keyword lemmas Presidio's enhancer collects for a finding at `start`:
        `before` + 1 walking back from its token (itself included), `after` + 1 walking
        forward. None when no token is at or after `start` (the eager path raises)."""
        text = self._text
        back, ahead = WINDOW_CHARS, WINDOW_CHARS // 4
        while True:
            low = _chunk_start_from(text, start - back)
            if low > start:  # no chunk starts in [start - back, start]
                back *= 2
                continue
            high = _chunk_start_from(text, start + ahead)
            rows = self._rows(low, high)
            if not rows:
                return None
            # BisectContextEnhancer._find_index_of_match_token, on the window's rows
            index = bisect.bisect_right([row[0] for row in rows], start) - 1
            if index >= 0 and rows[index][0] != start and start >= rows[index][0] + rows[index][2]:
                index += 1
            if index >= len(rows):
                if high == len(text):
                    return None  # beyond the last token: the eager path says so
                ahead *= 2
                continue
            index = max(index, 0)
            backward = self._walk(rows, index, -1, before + 1)
            if len(backward) <= before and low > 0:
                back *= 2
                continue
            forward = self._walk(rows, index, 1, after + 1)
            if len(forward) <= after and high < len(text):
                ahead *= 2
                continue
            return list(set(backward + forward))

    def _walk(self, rows: list[_Row], index: int, step: int, wanted: int) -> list[str]:
        """Presidio's `_add_n_words` over a window's rows. A lemma is a keyword if its own
        token is one, or if an "a:b" token anywhere made it one; Presidio lower-cases it
        again first, which changes nothing (str.lower is idempotent on every code point)."""
        found: list[str] = []
        parts = self._parts()
        while 0 <= index < len(rows) and len(found) < wanted:
            _, lemma, _, keyword = rows[index]
            if lemma in parts or (keyword and ":" not in lemma):
                found.append(lemma)
            index += step
        return found

    def _parts(self) -> frozenset[str]:
        """What "a:b" tokens add to the text's keywords: "a" and "b", wherever they are."""
        if self._colon_parts is None:
            parts: set[str] = set()
            for chunk in _COLON_CHUNK.finditer(self._text):
                high = _chunk_start_from(self._text, chunk.end())
                for _, lemma, _, keyword in self._rows(chunk.start(), high):
                    if ":" in lemma and keyword:
                        parts.update(lemma.split(":"))
            self._colon_parts = frozenset(parts)
        return self._colon_parts

    def _rows(self, low: int, high: int) -> list[_Row]:
        """The rows of the tokens in text[low:high] (both chunk starts, or the ends of the
        text); each stretch of text is tokenized once, however many windows cover it."""
        starts, rows, covered = self._starts, self._row_list, self._covered
        gaps, cursor = [], low
        for begin, end in covered:
            if end <= cursor or begin >= high:
                continue
            if begin > cursor:
                gaps.append((cursor, begin))
            cursor = max(cursor, end)
        if cursor < high:
            gaps.append((cursor, high))
        for begin, end in gaps:
            at = bisect.bisect_left(starts, begin)
            fresh = self._tokenize(begin, end)
            starts[at:at] = [row[0] for row in fresh]
            rows[at:at] = fresh
            covered.append((begin, end))
        if gaps:
            covered.sort()
            merged = [covered[0]]
            for begin, end in covered[1:]:
                if begin <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], end))
                else:
                    merged.append((begin, end))
            self._covered = merged
        return rows[bisect.bisect_left(starts, low):bisect.bisect_left(starts, high)]

    def _tokenize(self, low: int, high: int) -> list[_Row]:
        doc = self._engine.get_nlp(self._language).make_doc(self._text[low:high])
        return _rows_of(doc, low)


# A token as artifacts see it: (offset, lemma, length, keyword by its own flags?).
_Row = tuple[int, str, int, bool]


def _rows_of(doc: Any, offset: int = 0) -> list[_Row]:
    """Every token's row, from one `Doc.to_array` call; offsets shifted by `offset`.

    Presidio's keyword rule: a token is one unless it is a stop word, punctuation or
    "be" (an "a:b" keyword contributes "a" and "b"). Its stop and punctuation flags are
    its lower-cased form's: spaCy derives both from the lower-cased string.
    """
    from spacy.attrs import IDX, IS_PUNCT, IS_STOP, LENGTH, LOWER

    if not len(doc):
        return []
    strings = doc.vocab.strings
    rows = []
    for idx, lower, length, stop, punct in doc.to_array(
            [IDX, LOWER, LENGTH, IS_STOP, IS_PUNCT]).tolist():
        lemma = strings[lower]
        rows.append((idx + offset, lemma, length, not stop and not punct and lemma != "be"))
    return rows

# Characters tokenized before a finding at first (a quarter of it after); a window
# doubles until it holds the context Presidio reads (6 keywords back, 1 forward).
WINDOW_CHARS = 64
_CHUNK_START = re.compile(r"(?<!\S)\S")  # where the tokenizer starts a whitespace-free chunk
_COLON_CHUNK = re.compile(r"(?<!\S)[^\s:]*:\S*")


def _chunk_start_from(text: str, position: int) -> int:
    """The first chunk start at or after `position` (0 if it is before the text)."""
    if position <= 0:
        return 0
    found = _CHUNK_START.search(text, position)
    return found.start() if found else len(text)
