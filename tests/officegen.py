"""Small Office documents generated for the tests: linked images, comments, fields.

Each function writes a minimal but valid file that LibreOffice 7.4 opens; the ``url`` arguments
are what the document links to (``http://127.0.0.1:PORT/...`` or ``file:///...``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

ODF_NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
    'xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0" '
    'xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0" '
    'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:xlink="http://www.w3.org/1999/xlink" office:version="1.2"'
)
ODF_TYPES = {
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "odp": "application/vnd.oasis.opendocument.presentation",
    "odg": "application/vnd.oasis.opendocument.graphics",
}


def _frame(href: str) -> str:
    return (
        '<draw:frame draw:name="linked" svg:x="1cm" svg:y="1cm" svg:width="12cm" '
        'svg:height="12cm" text:anchor-type="paragraph"><draw:image xlink:href="'
        + href
        + '" xlink:type="simple" xlink:show="embed" xlink:actuate="onLoad"/></draw:frame>'
    )


def odf(path: Path, body: str, *, extra: dict[str, bytes] | None = None) -> Path:
    """Write an OpenDocument package of the type ``path``'s extension names."""
    kind = path.suffix.lstrip(".")
    mime = ODF_TYPES[kind]
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ODF_NS}>'
        f"<office:body>{body}</office:body></office:document-content>"
    )
    entries = "".join(
        f'<manifest:file-entry manifest:full-path="{name}" manifest:media-type=""/>'
        for name in (extra or {})
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
        'manifest:version="1.2">'
        f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{mime}"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        f"{entries}</manifest:manifest>"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", mime, zipfile.ZIP_STORED)
        zf.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
        for name, data in (extra or {}).items():
            zf.writestr(name, data, zipfile.ZIP_DEFLATED)
        zf.writestr("META-INF/manifest.xml", manifest, zipfile.ZIP_DEFLATED)
    return path


def odf_linked_image(path: Path, url: str) -> Path:
    """An ODT, ODS, ODP or ODG whose only content is an image linked (not embedded) from ``url``."""
    kind = path.suffix.lstrip(".")
    frame = _frame(url)
    body = {
        "odt": f"<office:text><text:p>Linked</text:p><text:p>{frame}</text:p></office:text>",
        "ods": (
            '<office:spreadsheet><table:table table:name="S"><table:shapes>'
            f"{frame}</table:shapes><table:table-row><table:table-cell/></table:table-row>"
            "</table:table></office:spreadsheet>"
        ),
        "odp": f'<office:presentation><draw:page draw:name="p1">{frame}</draw:page>'
        "</office:presentation>",
        "odg": f'<office:drawing><draw:page draw:name="p1">{frame}</draw:page></office:drawing>',
    }[kind]
    return odf(path, body)


def odt_with_svg(path: Path, url: str) -> Path:
    """An ODT embedding an SVG picture whose ``<image>`` links to ``url``."""
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        'width="400" height="400" viewBox="0 0 400 400">'
        '<rect x="0" y="0" width="400" height="400" fill="#ffffff"/>'
        f'<image x="0" y="0" width="400" height="400" xlink:href="{url}" href="{url}"/>'
        "</svg>"
    ).encode()
    body = f"<office:text><text:p>{_frame('Pictures/linked.svg')}</text:p></office:text>"
    return odf(path, body, extra={"Pictures/linked.svg": svg})


def odt_with_section(path: Path, url: str) -> Path:
    """An ODT with a section linked to another document at ``url``."""
    body = (
        "<office:text><text:p>Section follows</text:p>"
        '<text:section text:name="S1"><text:section-source xlink:href="'
        + url
        + '" xlink:type="simple"/><text:p>cached</text:p></text:section></office:text>'
    )
    return odf(path, body)


def odt_with_comment(path: Path) -> Path:
    """An ODT whose paragraph carries a comment (``office:annotation``)."""
    body = (
        "<office:text><text:p>Commented text<office:annotation><dc:creator>Reviewer</dc:creator>"
        "<dc:date>2024-01-01T00:00:00</dc:date><text:p>A remark</text:p></office:annotation>"
        "</text:p></office:text>"
    )
    return odf(path, body)


def rtf(path: Path, body: str) -> Path:
    """An RTF document with ``body`` (RTF control words) after a one-font header."""
    path.write_text("{\\rtf1\\ansi\\deff0{\\fonttbl{\\f0 Arial;}}\\f0\\fs24 " + body + "}", "ascii")
    return path


def rtf_includepicture(path: Path, target: str) -> Path:
    """An RTF whose ``INCLUDEPICTURE`` field names ``target`` (a URL or a local path)."""
    field = '{\\field{\\*\\fldinst { INCLUDEPICTURE "' + target + '" \\\\d }}{\\fldrslt }}'
    return rtf(path, "Picture: " + field + "\\par ")


def rtf_with_comment(path: Path) -> Path:
    """An RTF with an annotation (comment) on its text."""
    body = (
        "{\\*\\atrfstart 1}Commented text{\\*\\atrfend 1}"
        "{\\*\\atnid R}{\\*\\atnauthor Reviewer}\\chatn"
        "{\\*\\annotation{\\*\\atnref 1}\\pard A remark}\\par "
    )
    return rtf(path, body)


W_NS = (
    'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
    'xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing" '
    'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
    'xmlns:pic="http://schemas.openxmlformats.org/drawingml/2006/picture"'
)
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
_CT_MAIN = "application/vnd.openxmlformats-officedocument."


def _rels(items: list[tuple[str, str, str, bool]]) -> str:
    rows = "".join(
        f'<Relationship Id="{rid}" Type="{_REL}{kind}" Target="{target}"'
        + (' TargetMode="External"' if external else "")
        + "/>"
        for rid, kind, target, external in items
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships '
        f'xmlns="http://schemas.openxmlformats.org/package/2006/relationships">{rows}'
        "</Relationships>"
    )


def _content_types(overrides: list[tuple[str, str]]) -> str:
    """``[Content_Types].xml`` of an OOXML package: rels and xml defaults, then ``overrides``."""
    rows = "".join(
        f'<Override PartName="{name}" ContentType="{ctype}"/>' for name, ctype in overrides
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        f'<Default Extension="xml" ContentType="application/xml"/>{rows}</Types>'
    )


def docx(
    path: Path,
    body: str,
    *,
    rels: list[tuple[str, str, str, bool]] = (),  # type: ignore[assignment]
    parts: dict[str, tuple[str, str]] | None = None,
    settings: str | None = None,
    settings_rels: list[tuple[str, str, str, bool]] = (),  # type: ignore[assignment]
) -> Path:
    """Write a DOCX with ``body`` (WordprocessingML inside ``w:body``).

    Args:
        path: Where to write.
        body: Paragraphs.
        rels: Relationships of the main part: (id, type suffix, target, external).
        parts: Extra parts: name -> (content type, XML).
        settings: ``w:settings`` content (a settings part is added with its relationship).
        settings_rels: Relationships of the settings part.
    """
    parts = dict(parts or {})
    rels = list(rels)
    if settings is not None:
        parts["word/settings.xml"] = (
            _CT_MAIN + "wordprocessingml.settings+xml",
            f'<?xml version="1.0" encoding="UTF-8"?><w:settings {W_NS}>{settings}</w:settings>',
        )
        rels.append(("rIdSettings", "settings", "settings.xml", False))
    types = _content_types(
        [("/word/document.xml", _CT_MAIN + "wordprocessingml.document.main+xml")]
        + [("/" + name, ctype) for name, (ctype, _xml) in parts.items()]
    )
    document = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document {W_NS}>'
        f"<w:body>{body}</w:body></w:document>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", types)
        zf.writestr("_rels/.rels", _rels([("rId1", "officeDocument", "word/document.xml", False)]))
        zf.writestr("word/_rels/document.xml.rels", _rels(rels))
        zf.writestr("word/document.xml", document)
        for name, (_ctype, xml) in parts.items():
            zf.writestr(name, xml)
        if settings_rels:
            zf.writestr("word/_rels/settings.xml.rels", _rels(list(settings_rels)))
    return path


def docx_with_comment(path: Path) -> Path:
    """A DOCX with one comment (``word/comments.xml``)."""
    comments = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:comments {W_NS}>'
        '<w:comment w:id="0" w:author="Reviewer" w:date="2024-01-01T00:00:00Z" w:initials="R">'
        "<w:p><w:r><w:t>A remark</w:t></w:r></w:p></w:comment></w:comments>"
    )
    body = (
        '<w:p><w:commentRangeStart w:id="0"/><w:r><w:t>Commented text</w:t></w:r>'
        '<w:commentRangeEnd w:id="0"/><w:r><w:commentReference w:id="0"/></w:r></w:p>'
    )
    return docx(
        path,
        body,
        rels=[("rId9", "comments", "comments.xml", False)],
        parts={"word/comments.xml": (_CT_MAIN + "wordprocessingml.comments+xml", comments)},
    )


def docx_linked_image(path: Path, url: str) -> Path:
    """A DOCX with a picture linked (``r:link``, external relationship) from ``url``."""
    body = (
        "<w:p><w:r><w:t>Linked picture</w:t></w:r></w:p><w:p><w:r><w:drawing>"
        '<wp:inline><wp:extent cx="1800000" cy="1800000"/><wp:docPr id="1" name="P1"/>'
        '<a:graphic><a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/picture">'
        '<pic:pic><pic:nvPicPr><pic:cNvPr id="1" name="P1"/><pic:cNvPicPr/></pic:nvPicPr>'
        '<pic:blipFill><a:blip r:link="rIdImg"/><a:stretch><a:fillRect/></a:stretch></pic:blipFill>'
        '<pic:spPr><a:xfrm><a:off x="0" y="0"/><a:ext cx="1800000" cy="1800000"/></a:xfrm>'
        '<a:prstGeom prst="rect"/></pic:spPr></pic:pic></a:graphicData></a:graphic>'
        "</wp:inline></w:drawing></w:r></w:p>"
    )
    return docx(path, body, rels=[("rIdImg", "image", url, True)])


def docx_includepicture(path: Path, url: str) -> Path:
    """A DOCX with an ``INCLUDEPICTURE`` field naming ``url``."""
    body = (
        '<w:p><w:r><w:t xml:space="preserve">Field: </w:t></w:r>'
        '<w:r><w:fldChar w:fldCharType="begin"/></w:r>'
        f'<w:r><w:instrText xml:space="preserve"> INCLUDEPICTURE "{url}" \\d </w:instrText></w:r>'
        '<w:r><w:fldChar w:fldCharType="separate"/></w:r>'
        '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
    )
    return docx(path, body)


def docx_external_template(path: Path, url: str) -> Path:
    """A DOCX whose settings attach a template at ``url``."""
    return docx(
        path,
        "<w:p><w:r><w:t>Templated</w:t></w:r></w:p>",
        settings='<w:attachedTemplate r:id="rIdT"/>',
        settings_rels=[("rIdT", "attachedTemplate", url, True)],
    )


_SAVE = """
import shutil, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import office_bridge as ob, uno
src, out, filter_name, password, work = sys.argv[2:7]
bridge = ob.Bridge(Path(work))
bridge.ensure()
P = ob._prop
doc = bridge.desktop.loadComponentFromURL(
    uno.systemPathToFileUrl(src), "_blank", 0,
    (P("Hidden", True), P("FilterName", "Text - txt - csv (StarCalc)"),
     P("FilterOptions", "44,34,76,1")))
doc.storeToURL(uno.systemPathToFileUrl(out), (P("FilterName", filter_name), P("Password", password)))
doc.close(True)
bridge.stop()
"""


def libreoffice_save(csv: Path, out: Path, filter_name: str, password: str) -> Path:
    """Save the CSV table ``csv`` as ``out`` with LibreOffice, encrypted with ``password``.

    Runs a private LibreOffice once, through the bridge module with Debian's python3-uno.
    """
    import subprocess
    import tempfile

    bridge_dir = Path(__file__).resolve().parents[1] / "converters"
    with tempfile.TemporaryDirectory(prefix="officegen-") as work:
        subprocess.run(
            [
                "/usr/bin/python3",
                "-c",
                _SAVE,
                str(bridge_dir),
                str(csv),
                str(out),
                filter_name,
                password,
                work,
            ],
            check=True,
            timeout=120,
            capture_output=True,
        )
    return out


_SS_NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
_R_NS = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'


def xlsx(path: Path, cells: str, *, external_link: str | None = None) -> Path:
    """Write a one-sheet XLSX whose row 1 holds ``cells`` (``<c>`` elements).

    Args:
        path: Where to write.
        cells: SpreadsheetML cells of row 1, e.g. a formula cell.
        external_link: URL of a workbook the formulas may reference as ``[1]``.
    """
    overrides = [
        ("/xl/workbook.xml", "spreadsheetml.sheet.main+xml"),
        ("/xl/worksheets/sheet1.xml", "spreadsheetml.worksheet+xml"),
    ]
    wb_rels = [("rId1", "worksheet", "worksheets/sheet1.xml", False)]
    external_refs = ""
    if external_link is not None:
        overrides.append(("/xl/externalLinks/externalLink1.xml", "spreadsheetml.externalLink+xml"))
        wb_rels.append(("rId2", "externalLink", "externalLinks/externalLink1.xml", False))
        external_refs = '<externalReferences><externalReference r:id="rId2"/></externalReferences>'
    types = _content_types([(name, _CT_MAIN + ctype) for name, ctype in overrides])
    workbook = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook {_SS_NS} {_R_NS}>'
        '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets>'
        f"{external_refs}</workbook>"
    )
    sheet = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet {_SS_NS}>'
        f'<sheetData><row r="1">{cells}</row></sheetData></worksheet>'
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", types)
        zf.writestr("_rels/.rels", _rels([("rId1", "officeDocument", "xl/workbook.xml", False)]))
        zf.writestr("xl/_rels/workbook.xml.rels", _rels(wb_rels))
        zf.writestr("xl/workbook.xml", workbook)
        zf.writestr("xl/worksheets/sheet1.xml", sheet)
        if external_link is not None:
            zf.writestr(
                "xl/externalLinks/externalLink1.xml",
                f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                f'<externalLink {_SS_NS} {_R_NS}><externalBook r:id="rId1">'
                '<sheetNames><sheetName val="Sheet1"/></sheetNames>'
                '<sheetDataSet><sheetData sheetId="0"><row r="1">'
                '<cell r="A1" t="str"><v>cached</v></cell></row></sheetData></sheetDataSet>'
                "</externalBook></externalLink>",
            )
            zf.writestr(
                "xl/externalLinks/_rels/externalLink1.xml.rels",
                _rels([("rId1", "externalLinkPath", external_link, True)]),
            )
    return path


def xlsx_webservice(path: Path, url: str) -> Path:
    """An XLSX whose A1 is ``WEBSERVICE(url)`` (no cached value, so a load may recalculate)."""
    return xlsx(
        path,
        f'<c r="A1" t="str"><f>WEBSERVICE("{url}")</f></c><c r="B1" t="inlineStr">'
        "<is><t>Hello</t></is></c>",
    )


def xlsx_external_workbook(path: Path, url: str) -> Path:
    """An XLSX whose A1 references cell A1 of the external workbook at ``url``."""
    return xlsx(
        path,
        '<c r="A1" t="str"><f>[1]Sheet1!A1</f><v>cached</v></c>'
        '<c r="B1" t="inlineStr"><is><t>Hello</t></is></c>',
        external_link=url,
    )
