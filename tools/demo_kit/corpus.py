"""Text for the demo kit, from the Debian archive only: the debian-reference manual (the same
manual in each language) and fortune cookies.

Every language's paragraphs are split into train and held-out parts by a hash of the text,
so the split does not depend on the order the packages list their files in.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

# The original languages (the base and instruct models know them) and the new ones (the
# continued pretraining teaches them). Italian is close to Spanish (shared words, the same
# script): a toy model can stand on that ground to follow an instruction it was never
# tuned on. Russian is far (another script), which makes routing visible and shows that
# distance matters. German was the kit's first far language; it gave DeltaMoE no
# instruction-following at all (demo/README.md). Japanese's Debian prose is too small to
# pretrain on (about 0.2 MB once the command listings are dropped).
ORIGINAL = ("en", "es")
NEW = ("it", "ru")
LANGUAGES = ORIGINAL + NEW

DEBIAN_PACKAGES = {
    "en": ["debian-reference-en", "fortunes"],
    "es": ["debian-reference-es", "fortunes-es"],
    "it": ["debian-reference-it", "fortunes-it"],
    "ru": ["fortunes-ru"],
}

# Fortune files that are not prose or not for a classroom (ASCII art, the collections
# marked offensive); plain files are read (in fortunes-ru they link to the .u8 ones).
SKIPPED_FORTUNES = re.compile(r"(^|/)(off|art|ascii-art|banner|sex|.*\.dat|.*\.u8)$")


@dataclass
class Corpus:
    """Per language: training paragraphs, held-out paragraphs, and where they came from."""

    train: dict[str, list[str]]
    heldout: dict[str, list[str]]
    sources: dict[str, list[str]]


def run(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def fetch(work: Path) -> dict[str, str]:
    """Downloads (without installing) every package into `work`; returns package versions."""
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    packages = sorted({p for ps in DEBIAN_PACKAGES.values() for p in ps})
    if not all(any(debs.glob(f"{p}_*.deb")) for p in packages):
        run(["apt-get", "download", *packages], debs)
    versions = {}
    for p in packages:
        deb = next(debs.glob(f"{p}_*.deb"))
        versions[p] = deb.name.split("_")[1].replace("%3a", ":")
        target = work / "pkg" / p
        if not target.exists():
            target.mkdir(parents=True)
            run(["dpkg", "-x", str(deb), str(target)], work)
    return versions


def paragraphs_of_text(text: str) -> list[str]:
    """Blank-line separated paragraphs, each joined into one line."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        line = " ".join(block.split())
        if line:
            out.append(line)
    return out


def is_prose(p: str, lang: str) -> bool:
    """Keeps sentences; drops tables of contents, command lines, URLs and listings."""
    if len(p) < 40:
        return False
    if re.match(r"^[\d.]+\s", p) or "http" in p or "$ " in p or "# " in p:
        return False
    symbols = sum(ch in "/\\|{}[]<>=_*$#@~`" for ch in p)
    if symbols > len(p) * 0.03:
        return False
    letters = sum(ch.isalpha() for ch in p)
    return letters > len(p) * 0.7


def debian_reference(work: Path, lang: str) -> list[str]:
    path = work / "pkg" / f"debian-reference-{lang}" / "usr/share/debian-reference" / f"debian-reference.{lang}.txt.gz"
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    return [p for p in paragraphs_of_text(text) if is_prose(p, lang)]


def fortunes(work: Path, package: str, lang: str) -> list[str]:
    root = work / "pkg" / package / "usr/share/games"
    out = []
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if not path.is_file() or SKIPPED_FORTUNES.search(rel) or "/off/" in f"/{rel}":
            continue
        raw = path.read_bytes()
        text = raw.decode("utf-8") if is_utf8(raw) else raw.decode("latin-1")
        for entry in re.split(r"^%$", text, flags=re.M):
            p = " ".join(entry.split())
            if is_prose(p, lang) and len(p) < 600:
                out.append(p)
    return out


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def heldout(p: str) -> bool:
    """About one paragraph in 20, by content."""
    return hashlib.sha256(p.encode()).digest()[0] < 13


def build(work: Path) -> Corpus:
    versions = fetch(work)
    train, held, sources = {}, {}, {}
    for lang in LANGUAGES:
        paras = []
        for package in DEBIAN_PACKAGES[lang]:
            paras += debian_reference(work, lang) if package.startswith("debian-reference") else fortunes(work, package, lang)
        paras = list(dict.fromkeys(paras))  # drop repeats, keep order
        train[lang] = [p for p in paras if not heldout(p)]
        held[lang] = [p for p in paras if heldout(p)]
        sources[lang] = [f"{p} {versions[p]} (Debian)" for p in DEBIAN_PACKAGES[lang]]
    return Corpus(train, held, sources)


if __name__ == "__main__":
    import sys

    c = build(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/demo-build"))
    for lang in LANGUAGES:
        chars = sum(map(len, c.train[lang]))
        print(f"{lang}: {len(c.train[lang])} train paragraphs ({chars} chars), {len(c.heldout[lang])} held out")
        print("   ", c.train[lang][len(c.train[lang]) // 2][:160])
