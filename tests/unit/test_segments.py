from optline.domain import segments


def test_plain_gsm7_single_and_multi_segment_boundaries() -> None:
    assert segments.count("a" * 160).segments == 1
    assert segments.count("a" * 161).segments == 2
    assert segments.count("a" * 306).segments == 2
    assert segments.count("a" * 307).segments == 3
    assert segments.count("").segments == 0


def test_extension_characters_count_two() -> None:
    info = segments.count("€" * 80)
    assert info.encoding == "GSM-7" and info.units == 160 and info.segments == 1
    assert segments.count("a" * 159 + "[").segments == 2


def test_one_curly_quote_forces_ucs2_and_is_named_with_a_rewrite() -> None:
    text = "Acme: it\u2019s sale day " + "a" * 60
    info = segments.count(text)
    assert info.encoding == "UCS-2" and info.ucs2_chars == ("\u2019",)
    assert info.segments == 2  # 80 units > 70
    assert info.rewrite == "Acme: it's sale day " + "a" * 60
    assert segments.count(info.rewrite).segments == 1
    assert "U+2019" in segments.describe(info)


def test_ucs2_boundaries_and_emoji_surrogates() -> None:
    assert segments.count("\u0436" * 70).segments == 1
    assert segments.count("\u0436" * 71).segments == 2
    assert segments.count("\u0436" * 134).segments == 2
    assert segments.count("\u0436" * 135).segments == 3
    emoji = segments.count("hi \U0001f600")
    assert emoji.units == 5 and emoji.rewrite is None and emoji.ucs2_chars == ("\U0001f600",)
