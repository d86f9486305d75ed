"""Synthetic chat tasks that a small model can learn and an evaluation can score exactly:
repeat a sentence, give its first or last word, count its words, and look a number up in a
short passage. The same five tasks are phrased in every language; the instruct model is
fine-tuned on the original languages' phrasing only, and the evaluation asks in all four.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

TASKS = ("repeat", "first_word", "last_word", "count_words", "lookup")

PROMPTS = {
    "en": {
        "repeat": "Repeat this sentence: {s}",
        "first_word": "What is the first word of this sentence? {s}",
        "last_word": "What is the last word of this sentence? {s}",
        "count_words": "How many words are in this sentence? {s}",
        "lookup": "{facts} What is the number of {name}?",
    },
    "es": {
        "repeat": "Repite esta frase: {s}",
        "first_word": "¿Cuál es la primera palabra de esta frase? {s}",
        "last_word": "¿Cuál es la última palabra de esta frase? {s}",
        "count_words": "¿Cuántas palabras hay en esta frase? {s}",
        "lookup": "{facts} ¿Cuál es el número de {name}?",
    },
    "de": {
        "repeat": "Wiederhole diesen Satz: {s}",
        "first_word": "Was ist das erste Wort dieses Satzes? {s}",
        "last_word": "Was ist das letzte Wort dieses Satzes? {s}",
        "count_words": "Wie viele Wörter hat dieser Satz? {s}",
        "lookup": "{facts} Welche Zahl hat {name}?",
    },
    "ru": {
        "repeat": "Повтори это предложение: {s}",
        "first_word": "Какое первое слово в этом предложении? {s}",
        "last_word": "Какое последнее слово в этом предложении? {s}",
        "count_words": "Сколько слов в этом предложении? {s}",
        "lookup": "{facts} Какое число у {name}?",
    },
}

NAMES = {
    "en": ["Anna", "Tom", "Mary", "John", "Kate", "Peter", "Lucy", "Mark"],
    "es": ["Ana", "Juan", "María", "Pedro", "Lucía", "Carlos", "Sofía", "Diego"],
    "de": ["Anna", "Jonas", "Lena", "Paul", "Marie", "Felix", "Emma", "Lukas"],
    "ru": ["Анна", "Иван", "Мария", "Пётр", "Ольга", "Сергей", "Нина", "Борис"],
}

WORD_EDGES = re.compile(r"^[^\w]+|[^\w]+$")


@dataclass
class Example:
    lang: str
    task: str
    prompt: str
    answer: str


def words(sentence: str) -> list[str]:
    """Whitespace-separated words with leading and trailing punctuation removed."""
    return [w for w in (WORD_EDGES.sub("", t) for t in sentence.split()) if w]


def sentences(paragraphs: list[str], min_words: int = 3, max_words: int = 9) -> list[str]:
    """Short sentences usable as task inputs: no attribution lines, no digits (the count
    task answers with digits), every token a word."""
    out = []
    for p in paragraphs:
        p = p.split(" -- ")[0]
        for s in re.split(r"(?<=[.!?])\s+", p):
            s = s.strip()
            toks = s.split()
            if not (min_words <= len(toks) <= max_words) or re.search(r"\d", s):
                continue
            if len(words(s)) != len(toks) or len(s) > 80:
                continue
            out.append(s)
    return list(dict.fromkeys(out))


def make(lang: str, task: str, sentence: str, rng: random.Random) -> Example:
    template = PROMPTS[lang][task]
    w = words(sentence)
    if task == "repeat":
        return Example(lang, task, template.format(s=sentence), sentence)
    if task == "first_word":
        return Example(lang, task, template.format(s=sentence), w[0])
    if task == "last_word":
        return Example(lang, task, template.format(s=sentence), w[-1])
    if task == "count_words":
        return Example(lang, task, template.format(s=sentence), str(len(w)))
    names = rng.sample(NAMES[lang], 3)
    values = [rng.randint(1, 9) for _ in names]
    facts = " ".join(f"{n}: {v}." for n, v in zip(names, values))
    k = rng.randrange(len(names))
    return Example(lang, task, template.format(facts=facts, name=names[k]), str(values[k]))


def examples(lang: str, pool: list[str], count: int, seed: int) -> list[Example]:
    """`count` examples cycling through the tasks, each on a sentence drawn from `pool`."""
    rng = random.Random(seed)
    return [make(lang, TASKS[k % len(TASKS)], rng.choice(pool), rng) for k in range(count)]
