"""The personal opt-out token: well formed, unpredictable, every character equally likely in every place."""

from __future__ import annotations

from collections import Counter

from optline.domain import optout_links as links


def test_tokens_are_well_formed_and_distinct() -> None:
    tokens = [links.new_token() for _ in range(20_000)]
    assert all(links.is_well_formed(t) for t in tokens)
    assert len(set(tokens)) == len(tokens)


def test_every_character_is_used_evenly_in_every_position() -> None:
    # 56 characters x 40,000 draws: about 714 each; a biased or position-dependent mapping shows up as a
    # character that never (or far too often) appears somewhere. Bounds are ~8 standard deviations wide.
    tokens = [links.new_token() for _ in range(40_000)]
    expected = len(tokens) / len(links._ALPHABET)
    for position in range(links.TOKEN_LENGTH):
        counts = Counter(t[position] for t in tokens)
        assert set(counts) == set(links._ALPHABET), f"position {position} misses characters"
        assert all(abs(n - expected) < 8 * expected**0.5 for n in counts.values()), position


def test_malformed_tokens_are_recognised() -> None:
    assert not links.is_well_formed("short")
    assert not links.is_well_formed("0000000000")  # 0 is not in the alphabet (read-aloud safety)
    assert links.optout_url("https://acme.test/", "abcdefghij") == "https://acme.test/u/abcdefghij"
