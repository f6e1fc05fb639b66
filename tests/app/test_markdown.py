"""Safe Markdown for user text: code, lists and tables render; raw HTML and scripts never do."""

from app.markdown import render_markdown
from app.web import templates


def test_code_blocks_lists_and_tables_render():
    html = render_markdown("Steps:\n\n1. one\n2. two\n\n- a\n- b\n\n```python\nif x < 1:\n    pass\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |")
    assert "<ol>" in html and "<li>one</li>" in html and "<ul>" in html
    assert '<pre><code class="language-python">if x &lt; 1:\n    pass\n</code></pre>' in html
    assert "<table>" in html and "<td>2</td>" in html


def test_raw_html_is_shown_as_text():
    html = render_markdown('<script>alert(1)</script>\n\n<b onclick="x()">hi</b> <img src=x onerror=alert(1)>')
    assert "<script" not in html and "<b " not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_links_are_checked_and_images_never_fetched():
    html = render_markdown("[bad](javascript:alert(1)) [ok](https://example.org) ![cat <3](http://evil.example/x.png)")
    assert "href=\"javascript" not in html
    assert '<a href="https://example.org" rel="nofollow noopener noreferrer">ok</a>' in html
    assert "evil.example" not in html and "[image: cat &lt;3]" in html


def test_jinja_filter_is_registered_and_not_double_escaped():
    out = templates.env.from_string("{{ t | markdown }}").render(t="**bold** & <i>")
    assert out.strip() == "<p><strong>bold</strong> &amp; &lt;i&gt;</p>"


def test_very_long_text_stays_plain_and_escaped():
    out = render_markdown("<b>" + "x" * 250_000)
    assert out.startswith("<pre>&lt;b&gt;") and "<b>" not in out
