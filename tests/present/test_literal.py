"""File-derived text inside markdown is shown literally."""

from __future__ import annotations

import re

import pytest

from pneumo.present.text import WORD_JOINER, literal


@pytest.mark.parametrize(
    "text",
    ["**bold**", "[link](javascript:alert(1))", "<img src=x onerror=alert(1)>", "$x^2$", ":smile:", "# heading",
     "a_b_c", "line\nbreak", "back\\slash"],
)  # fmt: skip
def test_every_markdown_character_is_escaped(text):
    out = literal(text)
    unescaped = [c for i, c in enumerate(out) if c in "*[]()<>$:#_\\" and (i == 0 or out[i - 1] != "\\")]
    assert not [c for c in unescaped if c != "\\"] and "\n" not in out
    assert out.replace("\\", "") == " ".join(text.split()).replace("\\", "")  # nothing else changes


def test_markdown_renders_the_escaped_text_as_it_was():
    from markdown_it import MarkdownIt

    html = MarkdownIt().render(literal("**x** [a](b) `c` <i>"))
    assert "<strong>" not in html and "<a " not in html and "<code>" not in html and "<i>" not in html
    assert "**x** [a](b) `c` &lt;i&gt;" in html


@pytest.mark.parametrize(
    ("name", "stem"),
    [("chest.png", "chest"), ("![b](http://127.0.0.1:9/x.png)", "x"), ("$$.png", "image"), ("..\\..\\evil.dcm", "evil"),
     ("Röntgen Bild.jpeg", "Röntgen_Bild"), ("scan\u202egnp.exe", "scan_gnp"), ("a\nb\x1b[31m.png", "a_b_31m"),
     ("=cmd|' /C calc'!A0.png", "C_calc_A0"), ("x" * 200 + ".png", "x" * 80)],
)  # fmt: skip
def test_download_names_keep_only_plain_characters(name, stem):
    from pneumo.present.text import download_stem

    assert download_stem(name) == stem


# The patterns with which GFM (mdast-util-gfm-autolink-literal, used by Streamlit's markdown) links bare URLs and
# e-mail addresses in text that has already been unescaped.
GFM_URL = re.compile(r"(https?://|www(?=\.))([-.\w]+)", re.IGNORECASE)
GFM_EMAIL = re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)")


@pytest.mark.parametrize(
    "text", ["![b](http://127.0.0.1:9/x.png)", "HTTPS://evil.example/a", "www.example.org", "wwww.x.org",
             "mail doe@example.org now", "ftp://x.y"],
)  # fmt: skip
def test_bare_urls_and_addresses_are_not_linked(text):
    out = literal(text)
    unescaped = re.sub(r"\\(.)", r"\1", out)  # what markdown's text node holds after escapes are resolved
    assert not GFM_URL.search(unescaped) and not GFM_EMAIL.search(unescaped), unescaped
    assert GFM_URL.search(text) or GFM_EMAIL.search(text) or text.startswith("ftp"), "control: the raw text would link"
    assert unescaped.replace(WORD_JOINER, "") == text  # only invisible joiners were added
