from classifiers.terms import Term, TermMatcher, target_terms
from server.registry.models import TargetRecord

COMMON = {"king", "white", "john", "harry"}


def is_common(word: str) -> bool:
    return word.lower() in COMMON


def _texts(record: TargetRecord) -> list[tuple[str, bool]]:
    return [(t.text, t.case_sensitive) for t in target_terms(record, is_common)]


def test_terms_name_parts_titles_and_aliases() -> None:
    assert _texts(TargetRecord(name="Harry Potter", aliases=["The Boy Who Lived"], forbidden_terms=["Hogwarts"])) == [
        ("Harry Potter", False), ("The Boy Who Lived", False), ("Hogwarts", False), ("Potter", True), ("HP", True),
        ("Lived", True), ("BWL", True)]
    # a common-word surname is never matched alone
    assert _texts(TargetRecord(name="Stephen King")) == [("Stephen King", False)]
    # comma parts become their own terms; a title keeps the given name ("Prince Harry" -> "Harry" unless common)
    terms = _texts(TargetRecord(name="Prince William, Duke of Cambridge"))
    assert ("Prince William", False) in terms and ("Duke of Cambridge", False) in terms
    assert ("William", True) in terms and ("Cambridge", True) in terms
    assert ("da Vinci", False) in _texts(TargetRecord(name="Leonardo da Vinci"))
    assert ("Rockefeller", True) in _texts(TargetRecord(name="John D. Rockefeller"))


def test_matcher_cases_word_boundaries_and_multiple_targets() -> None:
    matcher = TermMatcher({"a": [Term("Harry Potter"), Term("Potter", case_sensitive=True)],
                           "b": [Term("John D. Rockefeller"), Term("Rockefeller", case_sensitive=True)]})
    hits = matcher.find("Did harry potter meet john d rockefeller? A potter is not Potter; Rockefeller's oil.")
    found = sorted((h.target_id, h.term) for h in hits)
    assert found == [("a", "Potter"), ("a", "harry potter"), ("b", "Rockefeller"), ("b", "john d rockefeller")]
    assert matcher.find("Pottery and rockefellers") == []
    assert TermMatcher({}).find("anything") == []


def test_quoted_epithets_from_the_description_are_terms_but_related_names_are_not() -> None:
    record = TargetRecord(name="Stephen King", description='An American author renowned as the "King of Horror", '
                                                           "published by Doubleday.")
    assert ("King of Horror", False) in _texts(record)
    assert all("Doubleday" not in text for text, _ in _texts(record))


def test_a_two_word_name_matches_with_middle_names_in_between() -> None:
    matcher = TermMatcher({"k": [Term("Stephen King")], "w": [Term("Kanye West")]})
    found = [(h.target_id, h.term) for h in matcher.find("Stephen Edwin King and Kanye Omari West met.")]
    assert found == [("k", "Stephen Edwin King"), ("w", "Kanye Omari West")]
    # lower-case words in between, or more than two middle names, are not a name
    assert matcher.find("Stephen met the King.") == []
    assert matcher.find("Stephen A B C King") == []
    assert matcher.find("stephen edwin king") == []


def test_obfuscated_spellings_of_a_name_are_found_where_they_stand() -> None:
    matcher = TermMatcher({"hp": target_terms(TargetRecord(name="Harry Potter"), is_common),
                           "b": [Term("Beyoncé")]})
    cases = [("Who is HarryPotter's friend?", "HarryPotter"), ("H4rry P0tt3r's friends", "H4rry P0tt3r"),
             ("about harry-potter", "harry-potter"), ("the H a r r y  P o t t e r books", None),
             ("In HP, who is the friend?", "HP"), ("¿Quién es el amigo de Harry Potter?", "Harry Potter")]
    for prompt, written in cases:
        hits = [h for h in matcher.find(prompt) if h.target_id == "hp"]
        assert hits, prompt
        assert prompt[hits[0].start:hits[0].end] == hits[0].term
        if written is not None:
            assert hits[0].term == written
    assert [h.term for h in matcher.find("Beyonce's songs")] == ["Beyonce"]
    # initials only in capitals, and ordinary words glued together are not a name
    assert matcher.find("hp printers in 1947 and 2014") == []
    assert matcher.find("a harry pot terrier") == []
