"""A report page shows an LLM's words as text: no markup, link or picture can come from them."""

from __future__ import annotations

from pathlib import Path

from ultrarl.report.markdown import cell
from ultrarl.report.page import render_page

HOSTILE = ("<script>alert(1)</script> [click](javascript:alert(1)) ![x](/etc/hostname) "
           '![y](http://example.invalid/p.png "t") **bold** | extra cell\nnew row')


def test_llm_text_in_a_table_stays_text(tmp_path: Path) -> None:
    (tmp_path / "curve.png").write_bytes(b"\x89PNG fake")
    text = "\n".join(["# report", "", "| reason |", "|---|", f"| {cell(HOSTILE)} |", "",
                      "![learning curve](curve.png)", "", "![outside](../../etc/hostname)"])
    body = render_page(text, "t", tmp_path).split("<body>")[1]
    assert "<script>" not in body and "&lt;script&gt;" in body
    assert "<a " not in body and "href=" not in body and 'src="http' not in body
    assert body.count("<tr>") == 2  # header and one row: neither "|" nor the newline split the answer
    assert body.count("<img") == 1 and 'alt="learning curve" src="data:image/png;base64,' in body
    assert "picture not found: ../../etc/hostname" in body  # outside the report's directory: never read
    assert "<strong>" not in body and "**bold**" in body
