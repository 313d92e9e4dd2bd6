"""Reading documents into plain text: Markdown, plain text, HTML and PDF.

Each reader returns an `Extracted` (title + text) or raises `Unreadable` with a message a
person can act on ("binary file, not text", "not UTF-8 text", "encrypted PDF"...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from ..errors import PipelineError

TEXT_SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text",
                 ".html": "html", ".htm": "html", ".pdf": "pdf"}


class Unreadable(PipelineError, ValueError):
    """A file that cannot be indexed; the message says why."""


@dataclass(frozen=True)
class Extracted:
    title: str
    text: str  # paragraphs separated by blank lines; Markdown headings kept as "# ..." lines
    kind: str  # markdown | text | html | pdf
    note: str | None = None  # something the operator should know (e.g. decoded as cp1252)


def kind_of(path: Path) -> str | None:
    return TEXT_SUFFIXES.get(path.suffix.lower())


def extract(path: Path, data: bytes) -> Extracted:
    kind = kind_of(path)
    if kind is None:
        raise Unreadable(f"unsupported file type {path.suffix or '(no suffix)'!r} "
                         f"(supported: {', '.join(sorted(TEXT_SUFFIXES))})")
    if not data.strip():
        raise Unreadable("empty file: nothing to index")
    if kind == "pdf":
        return _pdf(path, data)
    text, note = _decode(data)
    if kind == "html":
        title, body = _html(text)
        return _checked(Extracted(title or _title_from_name(path), body, kind, note))
    if kind == "markdown":
        match = re.search(r"^#\s+(.+)$", text, re.MULTILINE)
        title = match.group(1).strip() if match else _title_from_name(path)
        return _checked(Extracted(title, text, kind, note))
    return _checked(Extracted(_title_from_name(path), text, kind, note))


def _checked(doc: Extracted) -> Extracted:
    if not doc.text.strip():
        raise Unreadable("no text in this file: nothing to index")
    return doc


def _title_from_name(path: Path) -> str:
    return re.sub(r"[-_]+", " ", path.stem).strip().capitalize() or path.name


def _decode(data: bytes) -> tuple[str, str | None]:
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise Unreadable("binary file, not text")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), None
        except UnicodeDecodeError:
            raise Unreadable("not valid UTF-16 text (it starts with a UTF-16 mark)") from None
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        where = exc.start
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        raise Unreadable(f"not UTF-8 text (invalid byte at offset {where}); "
                         "convert it to UTF-8 and add it again") from None
    control = sum(1 for ch in text if ord(ch) < 32 and ch not in "\n\r\t\f")
    if control > len(text) // 100:
        raise Unreadable("binary file, not text")
    return text, (f"not UTF-8 (invalid byte at offset {where}): read as Windows-1252; "
                  "convert it to UTF-8 if characters look wrong")


class _HtmlText(HTMLParser):
    SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    BLOCK = {"p", "div", "section", "article", "li", "tr", "br", "table", "ul", "ol", "dd",
             "dt", "blockquote", "pre", "main", "header", "footer", "nav", "form"}
    HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self._skip += 1
        elif tag in self.HEADINGS:
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self.HEADINGS or tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(re.sub(r"\s+", " ", data))


def _html(text: str) -> tuple[str, str]:
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    body = "".join(parser.parts)
    body = "\n\n".join(p.strip() for p in re.split(r"\n\s*\n", body) if p.strip())
    return parser.title.strip(), body


def _pdf(path: Path, data: bytes) -> Extracted:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if not data.lstrip().startswith(b"%PDF"):
        raise Unreadable("not a PDF file (no %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise Unreadable("encrypted PDF: remove the password and add it again")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta = reader.metadata
        title = (meta.title if meta is not None and meta.title else "") or ""
    except Unreadable:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise Unreadable(f"unreadable PDF: {exc}") from None
    text = "\n\n".join(_pdf_paragraphs(p) for p in pages if p.strip())
    if not text.strip():
        raise Unreadable("no text in this PDF (scanned images need OCR first)")
    return Extracted(str(title).strip() or _title_from_name(path), text, "pdf")


def _pdf_paragraphs(page: str) -> str:
    # pypdf gives one line per text line; join lines into paragraphs at blank lines.
    paragraphs = re.split(r"\n\s*\n", page)
    return "\n\n".join(re.sub(r"\s*\n\s*", " ", p).strip() for p in paragraphs if p.strip())
