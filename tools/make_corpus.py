"""Rebuild the demo model's corpus: Jane Austen's six novels from Debian's r-cran-janeaustenr.

    python tools/make_corpus.py --out data/corpus            # needs apt-get and dpkg-deb

Steps: ``apt-get download r-cran-janeaustenr`` (MIT packaging; the novels are public
domain), ``dpkg-deb -x`` into a temporary directory, then read
``usr/lib/R/site-library/janeaustenr/data/Rdata.rdb`` with the standard library only.

Rdata.rdb is six records, one per book.  A record is a 4-byte big-endian length and a zlib
stream; inside is R's XDR serialization ("X\\n") of a character vector::

    int32 version (3), int32 R version, int32 minimum R version,
    int32 n + n bytes of native encoding name            (version 3 only)
    int32 flags   (low byte 16 = STRSXP: a character vector)
    int32 length  (number of lines)
    per line: int32 flags (low byte 9 = CHARSXP), int32 byte length (-1 = NA), bytes (UTF-8)

All integers are big-endian.  The books are joined in the order janeaustenr's
``austen_books()`` uses (Sense and Sensibility, Pride and Prejudice, Mansfield Park, Emma,
Northanger Abbey, Persuasion), one line per package line: that text is austen.txt.  Then the
hard line wraps are collapsed into paragraphs (a paragraph = lines between blank lines,
joined with single spaces) and every 20th paragraph is held out for validation.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import struct
import subprocess
import sys
import tempfile
import zlib

RDB = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
ORDER = ["SENSE AND SENSIBILITY", "PRIDE AND PREJUDICE", "MANSFIELD PARK", "EMMA",
         "NORTHANGER ABBEY", "Persuasion"]


def records(blob: bytes):
    """Yield the decompressed payload of every (length, zlib stream) record."""
    off = 0
    while off < len(blob):
        if off + 4 > len(blob):
            raise ValueError(f"Rdata.rdb: truncated record header at byte {off}")
        n = struct.unpack(">I", blob[off:off + 4])[0]
        dec = zlib.decompressobj()
        raw = dec.decompress(blob[off + 4:])
        if len(raw) != n:
            raise ValueError(f"Rdata.rdb: record at byte {off} inflates to {len(raw)} bytes, header says {n}")
        off = len(blob) - len(dec.unused_data)
        yield raw


def character_vector(raw: bytes) -> list[str]:
    """Decode R's XDR serialization of a character vector (see the module docstring)."""
    if raw[:2] != b"X\n":
        raise ValueError("not an XDR serialization")
    pos = 2

    def i32():
        nonlocal pos
        (v,) = struct.unpack(">i", raw[pos:pos + 4])
        pos += 4
        return v

    version = i32()
    i32(), i32()
    if version == 3:
        n = i32()           # (not `pos += i32()`: that would read pos before i32 moves it)
        pos += n
    if i32() & 0xFF != 16:
        raise ValueError("not a character vector (STRSXP)")
    lines = []
    for _ in range(i32()):
        if i32() & 0xFF != 9:
            raise ValueError("vector element is not a CHARSXP")
        n = i32()
        if n == -1:
            lines.append("")
            continue
        lines.append(raw[pos:pos + n].decode("utf-8"))
        pos += n
    return lines


def austen_text(rdb_path: str) -> str:
    with open(rdb_path, "rb") as f:
        books = [character_vector(r) for r in records(f.read())]
    by_title = {b[0]: b for b in books}
    return "\n".join("\n".join(by_title[t]) for t in ORDER) + "\n"


def paragraphs(text: str) -> list[str]:
    """Collapse hard wraps: blank-line separated blocks, each joined with single spaces."""
    out, cur = [], []
    for line in text.split("\n"):
        if line.strip():
            cur.append(line.strip())
        elif cur:
            out.append(" ".join(cur))
            cur = []
    if cur:
        out.append(" ".join(cur))
    return out


def split(paras: list[str]):
    """(train, validation): every 20th paragraph (index 19, 39, ...) is held out."""
    train = [p for i, p in enumerate(paras) if i % 20 != 19]
    valid = [p for i, p in enumerate(paras) if i % 20 == 19]
    return "\n".join(train) + "\n", "\n".join(valid) + "\n"


def fetch_rdb(workdir: str) -> str:
    subprocess.run(["apt-get", "download", "r-cran-janeaustenr"], cwd=workdir, check=True)
    deb = glob.glob(os.path.join(workdir, "r-cran-janeaustenr_*.deb"))[0]
    subprocess.run(["dpkg-deb", "-x", deb, os.path.join(workdir, "x")], check=True)
    return os.path.join(workdir, "x", RDB)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="corpus", help="output directory")
    ap.add_argument("--rdb", default=None, help="an already extracted Rdata.rdb (skips apt-get)")
    ap.add_argument("--check", default=None, help="a reference austen.txt that must match exactly")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        text = austen_text(args.rdb or fetch_rdb(tmp))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "austen.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    train, valid = split(paragraphs(text))
    for name, body in (("train.txt", train), ("valid.txt", valid)):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            f.write(body)
    print(f"austen.txt {len(text.encode())} bytes, sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}; "
          f"train {len(train)} chars, valid {len(valid)} chars")
    if args.check:
        with open(args.check, encoding="utf-8") as f:
            if f.read() != text:
                print(f"MISMATCH with {args.check}", file=sys.stderr)
                return 1
        print(f"identical to {args.check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
