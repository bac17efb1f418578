"""What a file is, from its first bytes (magic numbers): never from its name or the declared type."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileType:
    kind: str  # image or pdf
    content_type: str
    label: str  # how the transcript names it


_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1")


def sniff(head: bytes) -> FileType | None:
    """The accepted type of a file starting with `head` (at least 12 bytes), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return FileType("image", "image/jpeg", "照片")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return FileType("image", "image/png", "照片")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return FileType("image", "image/webp", "照片")
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return FileType("image", "image/heic", "照片")
    if head.startswith(b"%PDF-"):
        return FileType("pdf", "application/pdf", "PDF 文件")
    return None


ACCEPTED = "照片（JPG、PNG、WEBP、HEIC）或 PDF 文件"
