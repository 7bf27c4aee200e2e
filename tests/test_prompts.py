import pytest

from busnb.prompts import PAPER_PROMPTS, parse_phrase, to_gdino_text, translate


def test_gdino_text_format():
    assert to_gdino_text("Dark  Oval") == "dark oval."
    assert to_gdino_text(PAPER_PROMPTS) == "dark oval. dark round. dark lobulated."
    assert to_gdino_text("dark oval. dark round.") == "dark oval. dark round."
    with pytest.raises(ValueError, match="empty prompt"):
        to_gdino_text(" . ")


def test_translate_birads_to_appearance():
    assert translate({"echo": "hypoechoic", "shape": "oval"}) == "dark oval"
    assert translate({"echo": "hypoechoic", "margin": "microlobulated", "shape": "oval"}) == "dark lobulated oval"
    assert translate({"echo": "x"}, translator=lambda d: "Dark Round.") == "dark round"
    with pytest.raises(KeyError, match="known"):
        translate({"shape": "star"})


def test_parse_phrase_synonyms():
    assert parse_phrase("hypoechoic circular mass") == parse_phrase("dark round")
    a = parse_phrase("tumor")
    assert a.intensity is None and a.shape is None
    assert parse_phrase("bright spiculated").shape == "irregular"


def test_describe_phrase_says_what_the_appearance_backend_reads():
    from busnb.prompts import describe_phrase

    assert describe_phrase("dark oval") == "dark, oval"
    assert describe_phrase("tumor") == "either polarity, any shape"
    assert describe_phrase("hypoechoic mass") == "dark, any shape"
