"""A minimal PDF writer for tests: real PDF 1.4 files (Helvetica text, one page per list of
paragraphs), with a correct cross-reference table, read back by pypdf like any PDF."""

from __future__ import annotations

import textwrap
from pathlib import Path


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def write_pdf(path: Path, pages: list[list[str]], *, title: str | None = None) -> Path:
    objects: list[bytes] = []  # object n is objects[n - 1]
    page_ids: list[int] = []
    font_id = 3
    objects.append(b"")  # 1: catalog (filled in below)
    objects.append(b"")  # 2: pages
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica "
                   b"/Encoding /WinAnsiEncoding >>")
    for paragraphs in pages:
        lines: list[str] = []
        for paragraph in paragraphs:
            lines.extend(textwrap.wrap(paragraph, 90) or [""])
            lines.append("")
        ops = ["BT", "/F1 11 Tf", "14 TL", "50 790 Td"]
        ops += [f"({_escape(line)}) Tj T*" for line in lines]
        ops.append("ET")
        stream = "\n".join(ops).encode("cp1252")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        content_id = len(objects)
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
                       b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
                       % (font_id, content_id))
        page_ids.append(len(objects))
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    kids = b" ".join(b"%d 0 R" % i for i in page_ids)
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))
    info_id = None
    if title:
        objects.append(b"<< /Title (%s) >>" % _escape(title).encode("cp1252"))
        info_id = len(objects)
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    trailer = b"<< /Size %d /Root 1 0 R" % (len(objects) + 1)
    if info_id:
        trailer += b" /Info %d 0 R" % info_id
    out += b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    path.write_bytes(bytes(out))
    return path


WARRANTY_PAGES = [
    ["Warranty and repair guarantee",
     "Every new bicycle sold by Harbor Bikes comes with a two-year warranty on the frame and "
     "a one-year warranty on all other parts. The warranty does not cover normal wear such "
     "as tyres, brake pads and chains.",
     "Repairs done in our workshop are guaranteed for 90 days. If the same fault comes back "
     "within 90 days, we fix it again for free."],
    ["Warranty claims",
     "To make a warranty claim, bring the bicycle and the receipt to the workshop. The "
     "workshop manager, Lena Okafor, decides every claim within three working days."],
]

if __name__ == "__main__":  # regenerate examples/knowledge/docs/warranty.pdf
    root = Path(__file__).resolve().parents[1]
    write_pdf(root / "examples/knowledge/docs/warranty.pdf", WARRANTY_PAGES,
              title="Warranty and repair guarantee")
