"""Markdown for untrusted text (guidelines, answers): rendered, then sanitized with nh3."""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

# html=False: raw HTML in the source is shown as text, never passed through.
_md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")

_ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li",
    "ol", "p", "pre", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul", "del",
}  # fmt: skip
# An ordered list keeps its first number: the answer "15." is a list starting at 15, and
# without `start` it would read "1.".
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"}, "code": {"class"}, "th": {"align"}, "td": {"align"}, "ol": {"start"},
}  # fmt: skip
# Each paragraph finds its own direction, so Arabic or Hebrew text reads right to left beside
# English (and every element with `dir` is a bidi isolate: its text cannot reorder the page's).
_DIR_AUTO = {
    tag: {"dir": "auto"}
    for tag in ("p", "li", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "td", "th")
}


def render_markdown(text: str | None) -> Markup:
    html = _md.render(text or "")
    clean = nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values=_DIR_AUTO,
    )
    return Markup(clean)  # noqa: S704 - sanitized by nh3 just above
