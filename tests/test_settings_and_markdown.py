from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import DEFAULT_SECRET_KEY, Settings
from app.web.markdown import render_markdown


def test_default_secret_is_refused_outside_demo_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLHF_SECRET_KEY", raising=False)
    monkeypatch.delenv("RLHF_DEMO_MODE", raising=False)
    with pytest.raises(ValidationError, match="RLHF_SECRET_KEY is left at its default"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    demo = Settings(_env_file=None, demo_mode=True)  # type: ignore[call-arg]
    assert demo.secret_key.get_secret_value() == DEFAULT_SECRET_KEY


def test_settings_come_from_rlhf_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_SECRET_KEY", "x" * 40)
    monkeypatch.setenv("RLHF_DATABASE_URL", "postgresql+psycopg://u@db/rlhf")
    monkeypatch.setenv("RLHF_BROKER_URL", "redis://cache:6379/0")
    monkeypatch.setenv("RLHF_LEASE_MINUTES", "45")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.database_url, s.broker_url, s.lease_minutes) == (
        "postgresql+psycopg://u@db/rlhf", "redis://cache:6379/0", 45,
    )  # fmt: skip
    assert not s.is_sqlite and not s.broker_is_embedded
    assert "x" * 40 not in repr(s)  # the secret never shows in logs


def test_wrong_types_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_SECRET_KEY", "x" * 40)
    monkeypatch.setenv("RLHF_LEASE_MINUTES", "soon")
    with pytest.raises(ValidationError, match="lease_minutes"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_short_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_SECRET_KEY", "short")
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("source", "absent"),
    [
        ("<script>alert(1)</script>", "<script>"),
        ("[x](javascript:alert(1))", 'href="javascript'),
        ("<img src=x onerror=alert(1)>", "<img"),
        ("<a href='#' onclick='x()'>a</a>", "<a "),
    ],
)
def test_markdown_is_sanitized(source: str, absent: str) -> None:
    assert absent not in render_markdown(source)


def test_markdown_renders_code_and_tables() -> None:
    html = render_markdown("```python\nprint('<b>')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |")
    assert "<pre><code class=\"language-python\">print('&lt;b&gt;')" in html
    assert "<table>" in html and '<td dir="auto">1</td>' in html


def test_a_numbered_answer_keeps_its_number() -> None:
    assert '<ol start="15">' in render_markdown("15.")
    assert '<ol start="3">' in render_markdown("3. third\n4. fourth")


def test_each_paragraph_of_markdown_finds_its_own_direction() -> None:
    html = render_markdown("Translate:\n\n- مرحبا\n\n> שלום\n\n```\ncode stays\n```")
    assert '<p dir="auto">Translate:</p>' in html
    assert '<li dir="auto">مرحبا</li>' in html and '<blockquote dir="auto">' in html
    assert "<pre><code>code stays" in html  # code keeps the page's direction


def test_bidi_controls_a_value_opens_are_closed_at_its_end() -> None:
    from markupsafe import Markup

    from app.web.bidi import close_bidi

    rlo, pdf, rli, pdi = "\u202e", "\u202c", "\u2067", "\u2069"
    assert close_bidi("plain text") == "plain text"
    assert close_bidi(f"evil{rlo}name") == f"evil{rlo}name{pdf}"
    assert close_bidi(f"{rlo}closed{pdf}") == f"{rlo}closed{pdf}"
    assert close_bidi(f"{rli}a{rlo}b") == f"{rli}a{rlo}b{pdf}{pdi}"
    assert close_bidi(f"{rli}a{rlo}b{pdi}") == f"{rli}a{rlo}b{pdi}"  # the PDI closed both
    assert close_bidi(f"{pdf}{pdi}stray") == f"{pdf}{pdi}stray"
    assert isinstance(close_bidi(Markup("<b>") + rlo), Markup)
