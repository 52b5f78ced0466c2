"""The section's HTML pieces: cells, rows and a table on Locust's paper, an ok or FAIL mark, a note
in the secondary color, and a titled block whose `data-part` names it."""

from __future__ import annotations

from html import escape

__all__ = ["_block", "_cell", "_mark", "_note", "_row", "_table"]


def _cell(content: str, numeric: bool = False, css: str = "", span: int = 1) -> str:
    classes = " ".join(c for c in ("tc-num" if numeric else "", css) if c)
    attributes = (f" class='{classes}'" if classes else "") + (f" colspan='{span}'" if span > 1 else "")
    return f"<td{attributes}>{content}</td>"


def _table(name: str, headers: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return (f"<div class='tc-paper'><table data-table='{name}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _row(*cells: str) -> str:
    return "<tr>" + "".join(cells) + "</tr>"


def _mark(ok: bool, yes: str = "ok", no: str = "FAIL") -> str:
    return f"<span class='tc-ok'>{yes}</span>" if ok else f"<span class='tc-fail'>{no}</span>"


def _note(text: str) -> str:
    return f"<span class='tc-note'>{text}</span>"


def _block(title: str, body: str, name: str) -> str:
    return f"<div data-part='{name}'><h2>{escape(title)}</h2>{body}</div>"
