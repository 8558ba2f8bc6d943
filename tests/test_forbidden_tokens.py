from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from classifiers.forbidden_tokens import forbidden_sequences, spellings
from classifiers.lexical import common_word_in
from classifiers.terms import Term
from classifiers.text import facts_in
from guards.logits.args import from_extra_args, to_extra_args
from guards.logits.core import GuardCore
from guards.logits.name_table import scan_vocabulary
from guards.tables import draft_words, number_table, prompt_entities
from server.engines.base import LogitsArgs


@pytest.fixture(scope="module")
def tokenizer(model_path: Path):
    return AutoTokenizer.from_pretrained(model_path)


def test_spellings_cover_case_and_leading_space() -> None:
    s = spellings("Ron Weasley")
    assert {"Ron Weasley", " Ron Weasley", "ron weasley", " RON WEASLEY"} <= set(s)
    # each word's case on its own: a model that lowers one word of a blocked phrase is still blocked
    assert {" The way West", " the Way west", "The Way west"} <= set(spellings("The Way West"))
    assert len(spellings("a b c d")) < 20  # longer phrases keep the whole-phrase variants only


def test_sequences_are_what_the_model_would_emit(tokenizer) -> None:
    seqs = forbidden_sequences([Term("Ron Weasley"), Term("Ron", case_sensitive=True)], tokenizer)
    as_tuples = {tuple(s) for s in seqs}
    for text in ("Ron", " Ron", " ron", " Ron Weasley", "Ron Weasley"):
        assert tuple(tokenizer.encode(text, add_special_tokens=False)) in as_tuples, text
    assert len(as_tuples) == len(seqs)  # no duplicates
    assert [len(s) for s in seqs] == sorted((len(s) for s in seqs), reverse=True)


def test_a_flagged_prompts_own_entities_become_forbidden(tokenizer) -> None:
    prompt = "Which company does Warren Buffett chair among the following: Berkshire Hathaway, Apple, Google?"
    tables = prompt_entities(prompt, tokenizer, common_word_in(tokenizer))
    assert "Berkshire Hathaway" in tables.words and "Which" not in tables.words
    forbidden = {tuple(s) for s in tables.sequences} | {(t,) for t in tables.banned}
    for text in (" Berkshire Hathaway", "Berkshire Hathaway", " berkshire hathaway"):
        ids = tuple(tokenizer.encode(text, add_special_tokens=False))
        # every spelling is cut: its first token banned outright, or the whole sequence blocked at its last token
        assert ids[:1] in forbidden or ids in forbidden, text
    # single common words stay allowed ("Apple" is one token of the vocabulary)
    assert tuple(tokenizer.encode(" Apple", add_special_tokens=False)) not in forbidden


def test_a_judged_drafts_facts_become_forbidden_and_nothing_else(tokenizer) -> None:
    draft = "Her most notable move was to New York City in 1999, where the American actor lived."
    is_common = common_word_in(tokenizer)
    words = facts_in(draft, "Where did Reba McEntire move?", is_common)  # what the judge's verdict carries
    table = draft_words(words, tokenizer, is_common)
    assert "New York City" in table.words and "1999" in table.words
    assert "actor" not in table.words and "where" not in table.words  # plain words are no fact of the target
    forbidden = {tuple(s) for s in table.sequences} | {(t,) for t in table.banned}
    for text in (" New York City", " 1999"):
        ids = tuple(tokenizer.encode(text, add_special_tokens=False))
        assert ids[:1] in forbidden or ids in forbidden, text


def test_number_table_bans_every_digit_token(tokenizer) -> None:
    table = number_table(tokenizer)
    banned = set(table.banned)
    for text in ("1839", " 2011", "28th", "1989-11-28"):
        ids = tokenizer.encode(text, add_special_tokens=False)
        digits = [t for t in ids if any(c.isdigit() for c in tokenizer.decode([t]))]
        assert digits and set(digits) <= banned, text
    # nothing without a digit is banned: words, punctuation and the space stay
    for text in (" July", " the", ",", " "):
        assert not set(tokenizer.encode(text, add_special_tokens=False)) & banned, text


def test_the_net_finishes_no_name_but_leaves_words_that_start_like_one(tokenizer, tmp_path: Path) -> None:
    """Inside a word only the finishing token is filtered ("Confucianism" stays sayable, "Confucius" does not);
    a later word is stopped at its first token; the surname alone is no net term ("Donny Osmond")."""
    from guards.logits.net_table import NetTable, load_net
    from guards.net import build_net
    from server.registry.artifacts import ArtifactStore
    from server.registry.models import TargetRecord

    artifacts = ArtifactStore(tmp_path)
    is_common = common_word_in(tokenizer)
    for name, named, free in [("Confucius", "Confucius", "Confucianism"),
                              ("Marie Osmond", " Marie Osmond", " Donny Osmond")]:
        digest = build_net(TargetRecord(name=name), [], tokenizer, is_common, artifacts)
        net = load_net(str(artifacts.path(digest)))
        assert NetTable.model_validate_json(artifacts.get(digest)).steps

        def filtered(text: str, net=net) -> bool:  # type: ignore[no-untyped-def]
            ids = tokenizer.encode(text, add_special_tokens=False)
            return any(ids[k] in net.continuations.get(tuple(ids[j:k]), ()) for k in range(1, len(ids))
                       for j in range(max(0, k - net.longest_prefix), k))

        assert filtered(named), name
        assert not filtered(free), (name, tokenizer.tokenize(free))


def test_a_judged_drafts_words_join_whatever_a_method_already_forbids(tokenizer) -> None:
    """An ECO or O3 answer gets the judge's verdict words forbidden as GUARD would (``forbid_revealed``): nothing of
    the draft comes back, not even an answer the prompt offered and the draft confirmed."""
    from guards.interventions import forbidding
    from guards.logits.args import LogitsArgs

    table = draft_words(["Ron Weasley", "Oracle of Omaha"], tokenizer, common_word_in(tokenizer))
    alone = forbidding(None, table)
    ids = tokenizer.encode(" Ron Weasley", add_special_tokens=False)
    assert tuple(ids) in alone.sequences or ids[0] in alone.banned_token_ids
    assert tuple(tokenizer.encode(" Oracle of Omaha", add_special_tokens=False)) in alone.sequences
    kept = forbidding(LogitsArgs(banned_token_ids=(7,), net="net.json"), table)
    assert 7 in kept.banned_token_ids and kept.net == "net.json" and set(alone.sequences) <= set(kept.sequences)


def test_the_name_rule_starts_no_capitalised_word_inside_a_sentence(tokenizer, tmp_path: Path) -> None:
    """GUARD's name rule on the real vocabulary: after "none other than" no capitalised word may begin (" Lord",
    " Lupin"); after a full stop, or as the answer's first token, a sentence opens as it likes; lower case and "I"
    are never touched."""
    table = scan_vocabulary(tokenizer)
    path = tmp_path / "names.json"
    path.write_text(table.model_dump_json())
    one = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    lord, lupin, the, other, i = one(" Lord")[0], one(" Lupin")[0], one(" The")[0], one(" other")[0], one(" I")[0]
    than, stop = one(" than")[-1], one(".")[-1]
    assert {lord, lupin, the} <= set(table.names) and not {other, i} & set(table.names)
    assert stop in table.opens and than not in table.opens

    core = GuardCore()
    inside, after_stop, first = [than], [than, stop], []
    args = LogitsArgs(names=str(path))
    core.update([], [(0, args, inside), (1, args, after_stop), (2, args, first, one("Who is his godfather?")),
                      (3, None, inside)], [])
    out = core.apply(torch.zeros(4, len(tokenizer)))
    assert torch.isinf(out[0, lord]) and torch.isinf(out[0, lupin]) and torch.isinf(out[0, the])
    assert not torch.isinf(out[0, other]) and not torch.isinf(out[0, i])
    assert not torch.isinf(out[1]).any() and not torch.isinf(out[3]).any()
    assert not torch.isinf(out[2]).any()  # the prompt's "?" ends a sentence: the answer opens with any word
    # the rule travels to the engine's processor in the request's extra arguments
    assert from_extra_args(to_extra_args(args)) == args
