"""The HTML page of a report: its Markdown rendered by Python-Markdown (tables, lists, emphasis)
into a Jinja2 page, every picture embedded as a data URI so the one file opens anywhere.

Text in the reports comes partly from an LLM: ``<`` and ``&`` are escaped before rendering, so
an answer can never become markup on the page.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import jinja2
import markdown

_ENVIRONMENT = jinja2.Environment(loader=jinja2.PackageLoader("ultrarl.report", "templates"), autoescape=True)
_IMAGE = re.compile(r'<img alt="([^"]*)" src="([^"]*)"[^>]*>')
_LINK = re.compile(r'<a href="([^"]*)"[^>]*>(.*?)</a>', re.S)


def render_page(text: str, title: str, base_dir: Path) -> str:
    """``text`` (Markdown) as a self-contained page; image paths are relative to ``base_dir``."""
    source = text.replace("&", "&amp;").replace("<", "&lt;")
    body = markdown.markdown(source, extensions=["tables", "sane_lists"], output_format="html")

    def embed(match: re.Match[str]) -> str:
        """Only the report's own PNGs, inside its directory, become pictures."""
        alt, src = match.group(1), html.unescape(match.group(2))
        path = (base_dir / src).resolve()
        if path.suffix != ".png" or not path.is_relative_to(base_dir.resolve()) or not path.is_file():
            return f'<span class="missing">[picture not found: {html.escape(src)}]</span>'
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img alt="{alt}" src="data:image/png;base64,{data}">'

    body = _LINK.sub(lambda match: match.group(2), _IMAGE.sub(embed, body))  # the reports link nowhere
    page = _ENVIRONMENT.get_template("page.html.j2")
    return page.render(title=title, body=jinja2.utils.markupsafe.Markup(body))
