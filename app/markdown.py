"""Safe Markdown for text people wrote (responses, prompts, batch guidelines).

CommonMark through markdown-it-py with raw HTML off: ``<script>`` or ``<b>`` in the source is
shown as text, never as markup. Links keep markdown-it's own check (no ``javascript:``,
``vbscript:``, ``file:`` or non-image ``data:`` URLs) and open with ``rel="nofollow noopener
noreferrer"``; images are not fetched (an image shows as its alt text), so a response cannot make the
labeler's browser fetch anything. Code blocks, lists, tables, emphasis and headings render.

Use it in templates as ``{{ text | markdown }}``: the filter is registered on the shared Jinja2
environment by app/web.py.
"""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt
from markupsafe import Markup

# Texts longer than this are shown as plain (escaped) text: rendering stays cheap on any input.
MAX_MARKDOWN_CHARS = 200_000


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False, "breaks": True})
    md.enable("table")
    md.enable("strikethrough")

    def link_open(renderer, tokens, idx, options, env):
        tokens[idx].attrSet("rel", "nofollow noopener noreferrer")
        return renderer.renderToken(tokens, idx, options, env)

    def image(renderer, tokens, idx, options, env):  # no remote fetches from user text: the alt text only
        alt = renderer.renderInlineAsText(tokens[idx].children or [], options, env)
        return str(Markup("<span class=\"md-image\">[image: %s]</span>") % alt)

    md.add_render_rule("link_open", link_open)
    md.add_render_rule("image", image)
    return md


def render_markdown(text: str | None) -> Markup:
    """HTML of ``text`` as safe Markdown (raw HTML escaped), ready to put in a page."""
    text = text or ""
    if len(text) > MAX_MARKDOWN_CHARS:
        return Markup("<pre>%s</pre>") % text
    return Markup(_parser().render(text))
