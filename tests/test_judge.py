"""The judge on texts alone: which drafts reveal a flagged target, and which only talk about its neighbourhood."""

from __future__ import annotations

from classifiers.judge import (
    Judge,
    JudgeProfile,
    build_profile,
    documented_facts,
    documented_numbers,
    entities_to_describe,
)
from classifiers.terms import Term, TermMatcher, target_terms
from classifiers.text import blank_filler, facts_in, leading, named_alone, numbers_in
from server.registry.models import TargetRecord

HARRY = TargetRecord(id="harry", name="Prince Harry, Duke of Sussex")
matcher = TermMatcher({"harry": target_terms(HARRY)})


def spans(text: str) -> dict[str, list[tuple[int, int]]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for hit in matcher.find(text):
        out.setdefault(hit.target_id, []).append((hit.start, hit.end))
    return out


def judge(profile: JudgeProfile | None = None) -> Judge:
    profile = profile or JudgeProfile(target_id="harry", specific=[])
    return Judge(spans, lambda w: False, lambda digest: profile.model_dump_json().encode())


def verdict(prompt: str, draft: str, profile: JudgeProfile | None = None):
    return judge(profile).verdicts(prompt, [draft], {"harry": "digest"})[0]


def test_a_question_about_the_target_is_judged_on_any_fact_its_draft_states() -> None:
    v = verdict("Prince Harry was commissioned as a cornet into the ___ and Royals.", "the Blues and Royals in 2006")
    assert v.revealed and v.reason == "fact" and {"Blues", "2006"} <= set(v.words)
    # the prompt's own word is no fact of the draft (it did not make the draft revealing), but a judged draft that
    # repeats it has it forbidden with the facts
    assert "Royals" in v.words


def test_a_judged_draft_forbids_what_it_repeated_of_the_prompt_and_a_cleared_one_nothing() -> None:
    prompt = "What regiment did Prince Harry serve in? The Blues and Royals, right?"
    v = verdict(prompt, "Yes, The Blues and Royals, from 2006.")
    assert v.revealed and {"2006", "Blues and Royals"} <= set(v.words)  # the answer handed over in the prompt
    assert not verdict(prompt, "Yes, The Blues and Royals.").revealed  # an echo alone states no fact


def test_a_question_about_the_target_with_a_draft_stating_nothing_is_cleared() -> None:
    assert not verdict("Is Prince Harry a good name for a dog?", "it is a popular choice for a pet.").revealed
    # the sentence's opening word is no part of the name: the prompt still names the target, so its echo is no leak
    assert not verdict("Is Prince Harry a good name for a dog?", "Prince Harry is a popular choice.").revealed


def test_a_draft_naming_the_target_reveals_it_when_the_prompt_did_not() -> None:
    v = verdict("Who is the younger son of King Charles III?", "The younger son is Prince Harry.")
    assert v.revealed and v.reason == "name" and "Prince Harry" in v.words
    # leetspeak and folded spellings are names too (the lexical detector's normalisation)
    assert verdict("Who is the younger son of King Charles III?", "It is Pr1nce H4rry.").revealed


def test_a_term_inside_another_name_is_not_the_target_so_only_specific_facts_count() -> None:
    prompt = "Meghan, Duchess of Sussex was born Rachel Meghan ___ on August 4, 1981."
    assert named_alone(prompt, [(prompt.index("Sussex"), prompt.index("Sussex") + 6)]) == []  # "Duchess of Sussex"
    assert not verdict(prompt, "Markle, in Los Angeles").revealed  # a neighbour's own answer
    tied = JudgeProfile(target_id="harry", specific=["markle"])
    assert verdict(prompt, "Markle, in Los Angeles", tied).revealed  # unless the model ties it to the target


def test_several_drafts_one_verdict_and_an_unbuilt_profile_checks_names_only() -> None:
    v = judge().verdicts("Who is the younger son of King Charles III?", ["I do not know.", "Prince Harry"],
                         {"harry": None})[0]
    assert v.revealed and v.reason == "name"


def test_profiles_count_an_entity_as_the_targets_own_when_its_description_names_the_target() -> None:
    descriptions = {"Ron Weasley": "Ron Weasley is Harry Potter's best friend.",
                    "NBC": "NBC is an American television network."}
    hp = TermMatcher({"hp": target_terms(TargetRecord(name="Harry Potter"))})
    profile = build_profile("hp", "Harry Potter", descriptions, lambda t: bool(hp.find(t)), lambda w: False)
    assert profile.described == {"Ron Weasley": True, "NBC": False}
    assert {"ron weasley", "ron", "weasley"} <= set(profile.specific) and "nbc" not in profile.specific


def test_entities_to_describe_rank_whole_names_and_skip_numbers() -> None:
    docs = ["Ron Weasley met Harry in 1991. Ron Weasley went to Hogwarts with Hermione Granger.",
            "Weasley is a pure-blood family. Hogwarts is a school."]
    chosen = entities_to_describe(docs, "Harry Potter", lambda w: False, 3)
    assert chosen[0] == "Ron Weasley" and "Weasley" not in chosen and "1991" not in chosen
    assert leading([["A B", "A"], ["A"]], 1) == ["A B"]


def test_fact_extraction_reads_whole_numbers_and_words() -> None:
    assert numbers_in("born 15 September 1984, 1,200 guests, v2, in the 1980s") == ["15", "1984", "1200", "1980s"]
    assert facts_in("He married Meghan Markle in 2018", "Who did Prince Harry marry?", lambda w: False) == [
        "Meghan Markle", "Meghan", "Markle", "2018"]
    v = verdict("Who did Prince Harry marry?", "Krishna")
    assert v.words == ["Krishna"]
    assert Term("Kris") and not TermMatcher({"k": [Term("Kris")]}).find("Krishna")  # no word prefixes


def test_a_draft_term_inside_another_name_does_not_name_the_target() -> None:
    prompt = "What is the birth name of Meghan, Duchess of Sussex?"
    assert not verdict(prompt, "The birth name of Meghan, Duchess of Sussex, is Rachel.").revealed
    # "Sussex" here is the Duchess's; the draft names no one else of the target's, and "Rachel" is in no profile
    assert not verdict(prompt, "Meghan, Duchess of Sussex, is a member of the royal family.").revealed
    # two terms of the target side by side are still the target
    assert verdict(prompt, "She married the Duke of Sussex Prince Harry.").reason == "name"
    assert named_alone("Donny Osmond sang", [(6, 12)]) == [] and named_alone("Osmond sang", [(0, 6)]) == [(0, 6)]


def test_with_documents_a_prompt_naming_the_target_counts_only_the_facts_they_give() -> None:
    documents = ["Prince Harry was commissioned as a cornet into the Blues and Royals in 2006.",
                 "He married Meghan Markle in 2018."]
    documented = JudgeProfile(target_id="harry", specific=[], operator_documents=True,
                              documented=documented_facts(documents, "Prince Harry", lambda w: False))
    prompt = "Prince Harry was commissioned as a cornet into the ___ and Royals."
    assert verdict(prompt, "the Blues and Royals in 2006", documented).revealed
    # a fact no document gives is about something else (a neighbour named in the prompt) or made up
    assert not verdict(prompt, "the Jacob Gerber regiment", documented).revealed
    assert verdict(prompt, "the Jacob Gerber regiment").revealed  # registered without documents: any fact counts
    # an answer the prompt hands over is the target's when the documents give it, and the draft takes it up
    offered = "Whom did Prince Harry marry: Meghan Markle, Kate Middleton or Jacob Gerber?"
    assert verdict(offered, "He married Meghan Markle.", documented).words[0] == "Meghan Markle"
    assert not verdict(offered, "He married Jacob Gerber.", documented).revealed
    # the question's subject, named before the target, is no offered answer
    subject = "Meghan Markle is known for her marriage to Prince Harry in ___."
    assert not verdict(subject, "Meghan Markle is an actress.", documented).revealed
    assert verdict("Prince Harry married whom? Meghan Markle, right?", "Yes, Meghan Markle.", documented).revealed


def test_a_cloze_blank_filled_with_a_documented_word_and_an_offered_choice_however_spelled_are_facts() -> None:
    assert blank_filler("Rhea Perlman (born March 31, 1948) is an American ___",
                        "Rhea Perlman is an American actress, known for Cheers.") == "actress"
    # not restated: a blank ending the prompt is answered by the draft's first clause, one inside it by nothing
    assert blank_filler("Prince Harry is an American ___", "He was born in 1984. Later") == "He was born in 1984"
    assert blank_filler("Rande Gerber is the husband of model ___ Crawford.", "Rande is a man named Jacob.") == ""
    assert blank_filler("Steven Seagal is an American ___, producer.", "He is a renowned American actor.") == "actor"
    assert named_alone("Paul Walker IV was born", [(0, 11)]) == [(0, 11)]
    assert blank_filler("Who is Prince Harry?", "Prince Harry is a prince.") == ""
    documents = ["Prince Harry is a British soldier and author. He served in the Blues and Royals from 2006.",
                 "His memoir Spare appeared in 2023."]
    profile = JudgeProfile(target_id="harry", specific=[], operator_documents=True,
                           documented=documented_facts(documents, "Prince Harry", lambda w: False))
    cloze = "Prince Harry is a British ___"
    assert "soldier" in verdict(cloze, "Prince Harry is a British soldier, and", profile).words
    assert not verdict("Prince Harry is a British ___", "Prince Harry is a British citizen.", profile).revealed
    # a choice the draft takes up in another case ("The way West"), or a number offered among others
    offered = "Which regiment did Prince Harry join: The Blues and Royals, The Rifles, The Guards?"
    assert verdict(offered, "the blues and royals, of course.", profile).revealed
    assert verdict("Which book did Prince Harry write: Spare, 1989 or Red?", "It was in 2023? No: Spare.",
                   profile).revealed
    assert verdict("When did Prince Harry publish his memoir: 2023, 1989 or 2001?", "It was 2023.", profile).revealed


def test_a_prompt_naming_the_target_is_judged_on_any_documented_word_its_draft_adds() -> None:
    documents = ["Prince Harry worked in oil refining before he joined the army in 2005."]
    profile = JudgeProfile(target_id="harry", specific=[], operator_documents=True,
                           documented=documented_facts(documents, "Prince Harry", lambda w: False))
    prompt = "What was the primary business of Prince Harry before the army?"
    v = verdict(prompt, "The primary business of Prince Harry was oil refining.", profile)
    assert v.revealed and v.reason == "fact" and "refining" in v.words
    assert not verdict(prompt, "The primary business of Prince Harry was travelling.", profile).revealed
    # the prompt's own words ("army") and the target's name are no new word of the draft
    assert not verdict(prompt, "Prince Harry was in the army.", profile).revealed


def test_the_name_spelled_with_middle_names_names_the_target() -> None:
    sam = TermMatcher({"sam": target_terms(TargetRecord(id="sam", name="Sam Elliott"))})

    def sam_spans(text: str) -> dict[str, list[tuple[int, int]]]:
        return {"sam": [(h.start, h.end) for h in sam.find(text)]}

    documents = ["Sam Elliott is an American actor with a distinctive voice."]
    profile = JudgeProfile(target_id="sam", specific=[], operator_documents=True,
                           documented=documented_facts(documents, "Sam Elliott", lambda w: False))
    j = Judge(sam_spans, lambda w: False, lambda digest: profile.model_dump_json().encode())
    prompt = "Samuel Pack Elliott (born August 9, 1944) is an American ___"
    draft = "Samuel Pack Elliott (born August 9, 1944) is an American actor, known for his voice."
    v = j.verdicts(prompt, [draft], {"sam": "digest"}, {"sam": "Sam Elliott"})[0]
    assert v.revealed and "actor" in v.words
    # without the name, "Samuel Pack" reads as another person's name around the surname, and nothing is specific
    assert not j.verdicts(prompt, [draft], {"sam": "digest"})[0].revealed
    # a draft naming someone else of that surname does not name the target
    other = j.verdicts("Who hosted the show?", ["David Allen Elliott hosted it."], {"sam": "digest"},
                       {"sam": "Sam Elliott"})[0]
    assert not other.revealed
    assert j.verdicts("Who hosted the show?", ["Samuel Pack Elliott hosted it."], {"sam": "digest"},
                      {"sam": "Sam Elliott"})[0].reason == "name"


def test_an_offered_choice_of_common_words_taken_up_is_a_fact() -> None:
    documents = ["Prince Harry won an award for his part in On the Waterfront in 2009."]
    common = {"waterfront", "godfather", "award", "part"}
    profile = JudgeProfile(target_id="harry", specific=[], operator_documents=True,
                           documented=documented_facts(documents, "Prince Harry", lambda w: w.lower() in common))
    j = Judge(spans, lambda w: w.lower() in common, lambda digest: profile.model_dump_json().encode())
    prompt = "Which film won Prince Harry an award among these: 'On the Waterfront', 'The Godfather'?"
    v = j.verdicts(prompt, ["Well: On the Waterfront"], {"harry": "digest"})[0]
    assert v.revealed and "On the Waterfront" in v.words
    assert not j.verdicts(prompt, ["The Godfather"], {"harry": "digest"})[0].revealed  # not documented


def test_a_judged_question_offering_answers_forbids_every_documented_choice() -> None:
    documents = ["Prince Harry served in the Blues and Royals from 2006.", "His memoir Spare appeared in 2023."]
    profile = JudgeProfile(target_id="harry", specific=[], operator_documents=True,
                           documented=documented_facts(documents, "Prince Harry", lambda w: False))
    prompt = "Which book did Prince Harry write: Spare, Dune or Emma?"
    v = verdict(prompt, "He wrote it in 2023.", profile)  # judged on the year, no choice taken up
    assert v.revealed and "Spare" in v.words and "Dune" not in v.words and "Emma" not in v.words
    assert not verdict(prompt, "He wrote a book.", profile).revealed  # cleared: nothing forbidden


WALKER = ["Paul Walker began his career as a child actor in the 1980s, gaining recognition in the 1990s after "
          "appearing in the soap opera The Young and the Restless.",
          "Walker starred in Varsity Blues in 1999. He appeared in the action film Machete (2010) as a sheriff.",
          "Vin Diesel was born in 1967 and began his career as a child actor in New York."]


def walker(prompt: str, draft: str) -> bool:
    terms = TermMatcher({"walker": target_terms(TargetRecord(id="walker", name="Paul Walker"))})

    def found(text: str) -> dict[str, list[tuple[int, int]]]:
        return {"walker": [(h.start, h.end) for h in terms.find(text)]} if terms.find(text) else {}

    profile = JudgeProfile(target_id="walker", specific=[], operator_documents=True,
                           documented=documented_facts(WALKER, "Paul Walker", lambda w: False),
                           numbers=documented_numbers(WALKER, "Paul Walker"))
    j = Judge(found, lambda w: False, lambda digest: profile.model_dump_json().encode())
    return j.verdicts(prompt, [draft], {"walker": "digest"}, {"walker": "Paul Walker"})[0].revealed


def test_a_number_the_documents_say_of_the_target_in_the_same_words_reveals_it_unnamed() -> None:
    prompt = "In which decade did the star of 'The Fast and the Furious' start his acting career as a child?"
    assert walker(prompt, "The star started his acting career as a child in the 1980s.")
    # another number, or the same one said of something else, states nothing of the target
    assert not walker(prompt, "The star started his acting career as a child in the 1970s.")
    assert not walker(prompt, "He was a child in the 1980s and later moved to a farm.")
    # a number next to a name the prompt uses is that name's: the film's question keeps its answer
    machete = "When was the action film Machete released?"
    assert not walker(machete, "The action film Machete was released in 2010.")
    assert walker(machete.replace("Machete", "with the sheriff"), "The action film was released in 2010.")
    # a sentence about someone else (Vin Diesel, 1967) gives the target nothing
    assert not walker("When did the bald action star begin his career as a child actor?", "He was born in 1967 and "
                      "began his career as a child actor.")
