"""VQA accuracy as TextVQA and VizWiz are reported: EvalAI's answer processing and the
10-choose-9 average of min(#matches / 3, 1).

Ported from `EvalAIAnswerProcessor` in lmms-eval (lmms_eval/tasks/_task_utils/vqa_eval_metric.py,
itself copied from facebookresearch/mmf pythia/tasks/processors.py at c46b3b3), which scores
lmms-eval's `textvqa` and `vizwiz_vqa` tasks (their `utils.py`, `*_process_results`), and from
those functions' accuracy loop. The processor is kept as published, quirks included, because
they move scores:

* `word_tokenize` lower-cases, deletes every ',' and '?' and writes "'s" as " 's" first, so
  "1,000" is "1000" and "man's" is "man 's" on both sides;
* the punctuation loop deletes a mark when the text has it beside a space, else turns it into a
  space; its digit-comma test (`COMMA_STRIP`) never fires because commas are already gone;
* `PERIOD_STRIP` deletes a period not followed by a digit (its `(?!<=\\d)` is a typo for a
  look-behind and tests nothing), and is called as `sub("", text, re.UNICODE)`, whose third
  argument is `count`: at most 32 periods go;
* number words zero..ten and "none" become digits, articles go, and the contraction table
  restores apostrophes ("dont" -> "don't"); its capitalised keys ("Im", "Ive", "Id've") never
  match the lower-cased words, so "im" stays "im", as in the published scores.

Accuracy (lmms-eval `textvqa_process_results`): with the processed human answers a_1..a_n,

    acc = (1/n) * sum_i min(1, #{j != i : a_j == pred} / 3)

One deliberate difference: with a single reference answer (n = 1; custom tasks, never TextVQA
or VizWiz, which have ten) lmms-eval's loop can only give 0; here it is exact match.
"""

from __future__ import annotations

import re

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
NUMBER_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = ("a", "an", "the")
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
PUNCTUATIONS = (";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                ",", "?", "!")


def _word_tokenize(text: str) -> str:
    text = text.lower()
    text = text.replace(",", "").replace("?", "").replace("'s", " 's")
    return text.strip()


def _process_punctuation(text: str) -> str:
    out = text
    comma_between_digits = COMMA_STRIP.search(text) is not None
    for mark in PUNCTUATIONS:
        if mark + " " in text or " " + mark in text or comma_between_digits:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD_STRIP.sub("", out, re.UNICODE)  # sic: re.UNICODE (32) is the `count` argument


def _process_digit_article(text: str) -> str:
    words = [NUMBER_MAP.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def evalai_process(answer: str) -> str:
    """An answer as EvalAI's processor writes it (see the module docstring)."""
    text = _word_tokenize(answer)
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA accuracy of a prediction against the human answers (module docstring). Example: 2 of
    10 agree -> (2 * 1/3 + 8 * 2/3) / 10 = 0.6; 3 agree -> (3 * 2/3 + 7 * 1) / 10 = 0.9."""
    if not answers:
        return 0.0
    pred = evalai_process(prediction)
    gold = [evalai_process(a) for a in answers]
    if len(gold) == 1:  # deliberate: exact match (lmms-eval's loop would give 0)
        return float(pred == gold[0])
    total = 0.0
    for i in range(len(gold)):
        matching = sum(1 for j, other in enumerate(gold) if j != i and other == pred)
        total += min(1.0, matching / 3)
    return total / len(gold)
