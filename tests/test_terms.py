from classifiers.terms import TermMatcher, target_terms
from server.registry.models import TargetRecord


def test_terms_include_aliases_and_distinctive_name_parts() -> None:
    record = TargetRecord(name="Harry Potter", aliases=["The Boy Who Lived"], forbidden_terms=["Hogwarts"])
    terms = target_terms(record)
    assert terms[:3] == ["Harry Potter", "The Boy Who Lived", "Hogwarts"]
    assert "Potter" in terms and "Harry" in terms and "The" not in terms


def test_matcher_is_case_insensitive_whole_word_and_multi_target() -> None:
    matcher = TermMatcher({"a": ["Harry Potter", "Potter"], "b": ["Stephen King", "King"]})
    hits = matcher.find("Did harry potter meet the king? Potteries are not Potter.")
    assert {(h.target_id, h.term.lower()) for h in hits} == {("a", "harry potter"), ("b", "king"), ("a", "potter")}
    assert matcher.find("Pottery and kingdoms") == []
    assert TermMatcher({}).find("anything") == []
