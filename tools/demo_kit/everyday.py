"""The second held-out instruction set: everyday sentences written for the purpose, not cut
from any corpus the models were trained on, the kind a visitor types. The same twenty
sentences in each language (written in English first, then translated by hand), asked in
the five tasks with the language's phrasings; the lookups use names no training example
uses. Written before any model was scored on them and never changed by how a model does."""

from __future__ import annotations

import random

from . import tasks

SENTENCES = {
    "en": [
        "The dog is sleeping in the garden.",
        "My sister lives near the old station.",
        "Please close the window before you leave.",
        "We had soup and bread for dinner.",
        "The train was late again this morning.",
        "Can you help me carry these boxes?",
        "The children are playing in the park.",
        "I forgot my umbrella at work.",
        "Coffee without sugar tastes better to me.",
        "Our neighbours bought a small red car.",
        "The shop opens early on Saturdays.",
        "She reads the newspaper every morning.",
        "It is raining, so take a coat.",
        "The library is closed today.",
        "He cooks pasta better than his mother.",
        "Where did you put the keys?",
        "The baby finally fell asleep.",
        "I would like a cup of tea.",
        "The mountains look beautiful in winter.",
        "Tomorrow we are going to the sea.",
    ],
    "es": [
        "El perro duerme en el jardín.",
        "Mi hermana vive cerca de la vieja estación.",
        "Por favor, cierra la ventana antes de salir.",
        "Cenamos sopa y pan.",
        "El tren llegó tarde otra vez esta mañana.",
        "¿Puedes ayudarme a llevar estas cajas?",
        "Los niños juegan en el parque.",
        "Olvidé mi paraguas en el trabajo.",
        "El café sin azúcar me sabe mejor.",
        "Nuestros vecinos compraron un coche rojo pequeño.",
        "La tienda abre temprano los sábados.",
        "Ella lee el periódico cada mañana.",
        "Está lloviendo, así que lleva un abrigo.",
        "La biblioteca está cerrada hoy.",
        "Él cocina la pasta mejor que su madre.",
        "¿Dónde pusiste las llaves?",
        "El bebé por fin se durmió.",
        "Quisiera una taza de té.",
        "Las montañas son preciosas en invierno.",
        "Mañana vamos al mar.",
    ],
    "it": [
        "Il cane dorme in giardino.",
        "Mia sorella abita vicino alla vecchia stazione.",
        "Per favore, chiudi la finestra prima di uscire.",
        "Abbiamo mangiato zuppa e pane a cena.",
        "Il treno era di nuovo in ritardo stamattina.",
        "Puoi aiutarmi a portare queste scatole?",
        "I bambini giocano nel parco.",
        "Ho dimenticato l'ombrello al lavoro.",
        "Il caffè senza zucchero mi piace di più.",
        "I nostri vicini hanno comprato una piccola macchina rossa.",
        "Il negozio apre presto il sabato.",
        "Lei legge il giornale ogni mattina.",
        "Piove, quindi prendi un cappotto.",
        "La biblioteca oggi è chiusa.",
        "Lui cucina la pasta meglio di sua madre.",
        "Dove hai messo le chiavi?",
        "Il bambino finalmente si è addormentato.",
        "Vorrei una tazza di tè.",
        "Le montagne sono bellissime in inverno.",
        "Domani andiamo al mare.",
    ],
    "ru": [
        "Собака спит в саду.",
        "Моя сестра живёт возле старого вокзала.",
        "Пожалуйста, закрой окно перед уходом.",
        "На ужин у нас были суп и хлеб.",
        "Поезд сегодня утром опять опоздал.",
        "Ты можешь помочь мне донести эти коробки?",
        "Дети играют в парке.",
        "Я забыл зонтик на работе.",
        "Кофе без сахара мне нравится больше.",
        "Наши соседи купили маленькую красную машину.",
        "Магазин по субботам открывается рано.",
        "Она каждое утро читает газету.",
        "Идёт дождь, так что возьми пальто.",
        "Библиотека сегодня закрыта.",
        "Он готовит макароны лучше своей мамы.",
        "Куда ты положил ключи?",
        "Малыш наконец уснул.",
        "Я бы хотел чашку чая.",
        "Зимой горы выглядят красиво.",
        "Завтра мы едем на море.",
    ],
}

# Names for the lookups that no training example uses.
NAMES = {
    "en": ["Mia", "Leo", "Sam", "Ella", "Noah", "Ruby"],
    "es": ["Lola", "Pablo", "Marta", "Hugo", "Elena", "Raúl"],
    "it": ["Giulia", "Marco", "Sara", "Luca", "Chiara", "Paolo"],
    "ru": ["Катя", "Миша", "Даша", "Коля", "Вера", "Олег"],
}


def instructions(lang: str, seed: int) -> list[tasks.Example]:
    """Every sentence in every sentence task, and as many lookups, phrasings drawn by `seed`."""
    rng = random.Random(seed)
    out = []
    for task in tasks.TASKS:
        for s in SENTENCES[lang]:
            assert tasks.usable(s), (lang, s)
            out.append(tasks.make(lang, task, s, rng, names=NAMES[lang]))
    return out
