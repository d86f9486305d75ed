"""Text for the demo kit, from the Debian archive only: the debian-reference manual (the same
manual in each language) and fortune cookies.

Every language's paragraphs are split into train and held-out parts by a hash of the text,
so the split does not depend on the order the packages list their files in.
"""

from __future__ import annotations

import gzip
import hashlib
import math
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


# The languages debian-reference aligns paragraph for paragraph (the same DocBook source
# through po4a): the parallel text a lever of demo/README.md gives the base.
PARALLEL = ("en", "es", "it")


@dataclass
class Corpus:
    """Per language: training paragraphs, held-out paragraphs, and where they came from; and
    debian-reference's aligned training paragraphs, one tuple per paragraph in PARALLEL's
    order (none of them held out in its language)."""

    train: dict[str, list[str]]
    heldout: dict[str, list[str]]
    sources: dict[str, list[str]]
    parallel: list[tuple[str, ...]]


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


def debian_reference_paragraphs(work: Path, lang: str) -> list[str]:
    path = work / "pkg" / f"debian-reference-{lang}" / "usr/share/debian-reference" / f"debian-reference.{lang}.txt.gz"
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        return paragraphs_of_text(f.read())


def debian_reference(work: Path, lang: str) -> list[str]:
    return [p for p in debian_reference_paragraphs(work, lang) if is_prose(p, lang)]


def anchors(p: str) -> set[str]:
    """What a translation keeps: numbers, command and package names, paths, CamelCase."""
    return set(re.findall(r"[0-9]+|[A-Z][A-Za-z]*[A-Z0-9][A-Za-z0-9]*|[a-z]+\.[a-z]+|\S*/\S*", p))


def mismatch(a: str, b: str) -> float:
    """0 for a paragraph and its translation, larger the less alike their lengths and anchors."""
    sa, sb = anchors(a), anchors(b)
    shared = len(sa & sb) / len(sa | sb) if sa or sb else 1.0
    return abs(math.log((len(a) + 1) / (len(b) + 1))) + (1.0 - shared)


def align(a: list[str], b: list[str], band: int = 12, skip: float = 1.5) -> list[tuple[int, int]]:
    """Monotonic one-to-one alignment of two translations' paragraph lists (a Gale–Church
    dynamic programme on `mismatch`, within `band` of the diagonal; a paragraph either side
    may be left out at cost `skip`)."""
    inf = float("inf")
    n, m = len(a), len(b)
    cost = [dict() for _ in range(n + 1)]
    back = [dict() for _ in range(n + 1)]
    cost[0][0] = 0.0
    for i in range(n + 1):
        for j in range(max(0, i - band), min(m, i + band) + 1):
            d = cost[i].get(j, inf)
            if d == inf:
                continue
            for di, dj, step in ((1, 1, None), (1, 0, skip), (0, 1, skip)):
                if i + di > n or j + dj > m:
                    continue
                v = d + (mismatch(a[i], b[j]) if step is None else step)
                if v < cost[i + di].get(j + dj, inf):
                    cost[i + di][j + dj] = v
                    back[i + di][j + dj] = (di, dj)
    pairs, i, j = [], n, m
    while i or j:
        di, dj = back[i][j]
        if di and dj:
            pairs.append((i - 1, j - 1))
        i, j = i - di, j - dj
    return pairs[::-1]


def parallel_paragraphs(work: Path, max_mismatch: float = 1.0) -> list[tuple[str, ...]]:
    """debian-reference's paragraphs in every PARALLEL language, aligned to the first one's;
    kept where every member is prose, held out in none and close to the first in length and
    anchors."""
    paras = {lang: debian_reference_paragraphs(work, lang) for lang in PARALLEL}
    first = PARALLEL[0]
    maps = {first: {i: i for i in range(len(paras[first]))}}
    for lang in PARALLEL[1:]:
        maps[lang] = dict(align(paras[first], paras[lang]))
    out = []
    for i, p in enumerate(paras[first]):
        if not all(i in maps[lang] for lang in PARALLEL):
            continue
        group = tuple(paras[lang][maps[lang][i]] for lang in PARALLEL)
        if all(is_prose(q, lang) and not heldout(q) for q, lang in zip(group, PARALLEL)) and all(
            mismatch(p, q) < max_mismatch for q in group[1:]
        ):
            out.append(group)
    return list(dict.fromkeys(out))


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
    return Corpus(train, held, sources, parallel_paragraphs(work))


if __name__ == "__main__":
    import sys

    c = build(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/demo-build"))
    for lang in LANGUAGES:
        chars = sum(map(len, c.train[lang]))
        print(f"{lang}: {len(c.train[lang])} train paragraphs ({chars} chars), {len(c.heldout[lang])} held out")
        print("   ", c.train[lang][len(c.train[lang]) // 2][:160])
    print(f"parallel ({', '.join(PARALLEL)}): {len(c.parallel)} aligned paragraphs")
    for group in c.parallel[len(c.parallel) // 2 : len(c.parallel) // 2 + 2]:
        for q in group:
            print("   ", q[:120])
