"""Synthetic chat tasks that a small model can learn and an evaluation can score exactly:
repeat a sentence, give its first or last word, count its words, and look a number up in a
short passage. Each task has several phrasings in every language, so that the instruct model
learns the task and not one string; it is fine-tuned on the original languages' phrasings
only, and the evaluation asks in all four (the new languages' phrasings are never trained).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

TASKS = ("repeat", "first_word", "last_word", "count_words", "lookup")

PROMPTS = {
    "en": {
        "repeat": ["Repeat this sentence: {s}", "Say this again: {s}", "Please repeat: {s}",
                   "Copy this sentence exactly: {s}"],
        "first_word": ["What is the first word of this sentence? {s}", "Which word comes first here? {s}",
                       "Give me the first word: {s}"],
        "last_word": ["What is the last word of this sentence? {s}", "Which word comes last here? {s}",
                      "Give me the last word: {s}"],
        "count_words": ["How many words are in this sentence? {s}", "Count the words in this sentence: {s}",
                        "How many words does this have? {s}"],
        "lookup": ["{facts} What is the number of {name}?", "{facts} Which number does {name} have?",
                   "{facts} Tell me the number of {name}."],
    },
    "es": {
        "repeat": ["Repite esta frase: {s}", "Dilo otra vez: {s}", "Por favor, repite: {s}",
                   "Copia esta frase exactamente: {s}"],
        "first_word": ["¿Cuál es la primera palabra de esta frase? {s}", "¿Qué palabra va primero aquí? {s}",
                       "Dame la primera palabra: {s}"],
        "last_word": ["¿Cuál es la última palabra de esta frase? {s}", "¿Qué palabra va al final aquí? {s}",
                      "Dame la última palabra: {s}"],
        "count_words": ["¿Cuántas palabras hay en esta frase? {s}", "Cuenta las palabras de esta frase: {s}",
                        "¿Cuántas palabras tiene esto? {s}"],
        "lookup": ["{facts} ¿Cuál es el número de {name}?", "{facts} ¿Qué número tiene {name}?",
                   "{facts} Dime el número de {name}."],
    },
    "it": {
        "repeat": ["Ripeti questa frase: {s}", "Dillo di nuovo: {s}", "Per favore, ripeti: {s}",
                   "Copia questa frase esattamente: {s}"],
        "first_word": ["Qual è la prima parola di questa frase? {s}", "Quale parola viene prima qui? {s}",
                       "Dammi la prima parola: {s}"],
        "last_word": ["Qual è l'ultima parola di questa frase? {s}", "Quale parola viene per ultima qui? {s}",
                      "Dammi l'ultima parola: {s}"],
        "count_words": ["Quante parole ci sono in questa frase? {s}", "Conta le parole di questa frase: {s}",
                        "Quante parole ha questa frase? {s}"],
        "lookup": ["{facts} Qual è il numero di {name}?", "{facts} Che numero ha {name}?",
                   "{facts} Dimmi il numero di {name}."],
    },
    "ru": {
        "repeat": ["Повтори это предложение: {s}", "Скажи это ещё раз: {s}", "Пожалуйста, повтори: {s}",
                   "Скопируй это предложение точно: {s}"],
        "first_word": ["Какое первое слово в этом предложении? {s}", "Какое слово здесь идёт первым? {s}",
                       "Назови первое слово: {s}"],
        "last_word": ["Какое последнее слово в этом предложении? {s}", "Какое слово здесь идёт последним? {s}",
                      "Назови последнее слово: {s}"],
        "count_words": ["Сколько слов в этом предложении? {s}", "Посчитай слова в этом предложении: {s}",
                        "Сколько здесь слов? {s}"],
        "lookup": ["{facts} Какое число стоит у имени {name}?", "{facts} Какой номер у имени {name}?",
                   "{facts} Назови число для имени {name}."],
    },
}

NAMES = {
    "en": ["Anna", "Tom", "Mary", "John", "Kate", "Peter", "Lucy", "Mark"],
    "es": ["Ana", "Juan", "María", "Pedro", "Lucía", "Carlos", "Sofía", "Diego"],
    "it": ["Francesca", "Giorgio", "Anna", "Davide", "Laura", "Stefano", "Elisa", "Andrea"],
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


def usable(s: str, min_words: int = 3, max_words: int = 9) -> bool:
    """A task input: 3-9 words, no digits (the count task answers with digits), every
    whitespace token a word, at most 80 characters."""
    toks = s.split()
    return (min_words <= len(toks) <= max_words and not re.search(r"\d", s)
            and len(words(s)) == len(toks) and len(s) <= 80)


def sentences(paragraphs: list[str]) -> list[str]:
    """Short sentences usable as task inputs (no attribution lines)."""
    out = []
    for p in paragraphs:
        p = p.split(" -- ")[0]
        for s in re.split(r"(?<=[.!?])\s+", p):
            s = s.strip()
            if usable(s):
                out.append(s)
    return list(dict.fromkeys(out))


def make(lang: str, task: str, sentence: str, rng: random.Random, names: list[str] | None = None) -> Example:
    """One example; the phrasing is drawn from the language's phrasings of the task."""
    template = rng.choice(PROMPTS[lang][task])
    w = words(sentence)
    if task == "repeat":
        return Example(lang, task, template.format(s=sentence), sentence)
    if task == "first_word":
        return Example(lang, task, template.format(s=sentence), w[0])
    if task == "last_word":
        return Example(lang, task, template.format(s=sentence), w[-1])
    if task == "count_words":
        return Example(lang, task, template.format(s=sentence), str(len(w)))
    picked = rng.sample(names or NAMES[lang], 3)
    values = [rng.randint(1, 9) for _ in picked]
    facts = " ".join(f"{n}: {v}." for n, v in zip(picked, values))
    k = rng.randrange(len(picked))
    return Example(lang, task, template.format(facts=facts, name=picked[k]), str(values[k]))


def examples(lang: str, pool: list[str], count: int, seed: int) -> list[Example]:
    """`count` examples cycling through the tasks, each on a sentence drawn from `pool`."""
    rng = random.Random(seed)
    return [make(lang, TASKS[k % len(TASKS)], rng.choice(pool), rng) for k in range(count)]
