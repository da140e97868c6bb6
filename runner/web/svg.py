"""The machine's drawing, made safe to put inside a page.

Graphviz escapes the labels it draws, and state and phase names are validated names;
still, the SVG is parsed and rebuilt from an allow-list before it reaches a page:
only drawing elements and attributes stay (no script, no foreign object, no event
handler, no link that is not a fragment), whatever a machine file holds.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

__all__ = ["clean_svg"]

SVG = "http://www.w3.org/2000/svg"
XLINK = "http://www.w3.org/1999/xlink"

_ELEMENTS = {
    "svg", "g", "title", "desc", "polygon", "polyline", "path", "ellipse", "circle",
    "rect", "line", "text", "tspan", "defs", "marker", "use",
}  # fmt: skip
_ATTRIBUTES = {
    "width", "height", "viewBox", "preserveAspectRatio", "transform", "id", "class",
    "fill", "stroke", "stroke-width", "stroke-dasharray", "stroke-opacity", "fill-opacity",
    "points", "d", "cx", "cy", "rx", "ry", "r", "x", "y", "x1", "y1", "x2", "y2",
    "text-anchor", "font-family", "font-size", "font-weight", "font-style", "opacity",
    "dx", "dy",
}  # fmt: skip


def clean_svg(data: bytes) -> str:
    """``data`` (an SVG document) as markup holding only allowed elements and
    attributes; raises ValueError when it is not SVG."""
    root = ET.fromstring(data)  # Graphviz's own output: no DTD, no entities
    if _local(root.tag) != "svg":
        raise ValueError("not an SVG document")
    _clean(root)
    ET.register_namespace("", SVG)
    ET.register_namespace("xlink", XLINK)
    return ET.tostring(root, encoding="unicode")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _clean(element: ET.Element) -> None:
    for child in list(element):
        if isinstance(child.tag, str) and _local(child.tag) == "a":
            # Graphviz wraps a node with a tooltip in a link: keep it as a group whose
            # title is the tooltip (text, escaped when written)
            tooltip = child.attrib.get(f"{{{XLINK}}}title")
            child.tag, child.attrib = f"{{{SVG}}}g", {}
            if tooltip:
                title = ET.Element(f"{{{SVG}}}title")
                title.text = tooltip
                child.insert(0, title)
        if not isinstance(child.tag, str) or _local(child.tag) not in _ELEMENTS:
            element.remove(child)  # comments, scripts, foreign objects, anchors
            continue
        _clean(child)
    for name in list(element.attrib):
        local = _local(name)
        value = element.attrib[name]
        if local == "href" and value.startswith("#"):
            continue
        if local not in _ATTRIBUTES or "javascript:" in value.lower():
            del element.attrib[name]
