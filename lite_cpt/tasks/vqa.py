"""Open visual question answering: TextVQA, VizWiz (VQA accuracy), GQA, PathVQA (exact match
after normalisation) and the POPE benchmark (yes/no, with its precision/recall/F1 report)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from lite_cpt.data import loaders
from lite_cpt.data.images import FileImage, ImageRef, TableImage
from lite_cpt.data.loaders import SplitTable, open_split
from lite_cpt.data.quality import cell_text
from lite_cpt.data.spec import Archive, DatasetSpec, hub_download
from lite_cpt.tasks.base import BENCHMARK_TYPES, TASK_TYPES, Sample, exact_match
from lite_cpt.tasks.real import SHORT_ANSWER, RealTask
from lite_cpt.tasks.vqa_eval import evalai_process, vqa_accuracy  # noqa: F401  (re-exported)

# Answer normalisation and accuracy: EvalAI's, as lmms-eval scores TextVQA and VizWiz with it
# (lite_cpt.tasks.vqa_eval).

normalize_vqa_answer = evalai_process


def majority_answer(answers: list[str]) -> str:
    """The most frequent answer after normalisation (first seen wins a tie), as first written."""
    if not answers:
        return ""
    normalised = [normalize_vqa_answer(a) for a in answers]
    best = Counter(normalised).most_common(1)[0][0]
    return answers[normalised.index(best)].strip()


def normalized_exact_match(prediction: str, answers: list[str]) -> float:
    """Exact match after the official VQA normalisation of both sides."""
    return exact_match(prediction, answers, normalize_vqa_answer)


# ---------------------------------------------------------------------------------------------
# Task types

VIZWIZ_URL = "https://vizwiz.cs.colorado.edu/VizWiz_final"
GQA_URL = "https://downloads.cs.stanford.edu/nlp/data/gqa"


class VQATask(RealTask):
    """Ten human answers per question, scored with the official VQA accuracy."""

    id_column = "question_id"

    def to_sample(self, row: dict, sample_id: str, images: tuple[ImageRef, ...]) -> Sample:
        answers = _answer_strings(row.get("answers"))
        return Sample(
            id=sample_id,
            question=cell_text(row.get("question")),
            answer=majority_answer(answers),
            images=images,
            answers=answers,
            meta=self.meta(row),
        )

    def meta(self, row: dict) -> dict:
        return {}

    def reward(self, prediction: str, sample: Sample) -> float:
        return vqa_accuracy(prediction, sample.answers or [sample.answer])

    def binary_reward(self, prediction: str, sample: Sample) -> float:
        """1.0 when the answer matches the majority human answer (the one ground truth a
        single-answer RL dataset grades against, as EasyR1's r1v reward does), else 0.0."""
        return normalized_exact_match(prediction, [sample.answer])


def _answer_strings(answers: Any) -> list[str]:
    """Answers as strings: VQA-style `[{"answer": ..., "answer_confidence": ...}]` or plain strings;
    none when one of them is null or empty (the row is then skipped as missing its answer)."""
    if not answers:
        return []
    texts = [cell_text(a.get("answer") if isinstance(a, dict) else a) for a in answers]
    return texts if all(texts) else []  # a null or empty human answer: the row is unusable


@TASK_TYPES.register
class TextVQATask(VQATask):
    """lmms-lab/textvqa (facebook/textvqa): image, question, answers (10), question_id."""

    type_name = "textvqa"

    dataset = DatasetSpec(
        path="textvqa", hf_id="lmms-lab/textvqa", train_split="train", test_split="validation",
        download=hub_download("lmms-lab/textvqa"),
    )


@TASK_TYPES.register
class VizWizTask(VQATask):
    """The official VizWiz-VQA release: `train.json` / `val.json`, each a JSON array of
    {image (file name), question, answers [{answer, answer_confidence}] x 10, answer_type,
    answerable}, beside the `train/` and `val/` image folders. Only this release has a train
    split; lmms-lab/VizWiz-VQA (image, question, answers, category; `val` and `test` only) can
    serve evaluation through `source: {hf_id: lmms-lab/VizWiz-VQA}`."""

    type_name = "vizwiz"

    dataset = DatasetSpec(
        path="vizwiz", hf_id=None, train_split="train", test_split="val", layout="vizwiz",
        download=(
            "mkdir -p data/vizwiz && cd data/vizwiz && u=https://vizwiz.cs.colorado.edu/VizWiz_final && "
            "wget -q $u/vqa_data/Annotations.zip $u/images/train.zip $u/images/val.zip && "
            "unzip -jq Annotations.zip && unzip -q train.zip && unzip -q val.zip"
        ),
        archives=(
            Archive(f"{VIZWIZ_URL}/vqa_data/Annotations.zip", flatten=True,
                    members={s: (f"{s}.json", f"*/{s}.json") for s in ("train", "val")},
                    targets={s: (f"{s}.json",) for s in ("train", "val")}),
            Archive(f"{VIZWIZ_URL}/images/train.zip", members={"train": ("train/*",)}, targets={"train": ("train",)}),
            Archive(f"{VIZWIZ_URL}/images/val.zip", members={"val": ("val/*",)}, targets={"val": ("val",)}),
        ),
    )
    answer_instruction = (
        "When the provided information is insufficient, respond with 'Unanswerable'. " + SHORT_ANSWER
    )

    def sample_id(self, row: dict, split: str, index: int) -> str:
        if row.get("question_id") in (None, "") and isinstance(row.get("image"), str):
            return row["image"]  # the original annotations name each question by its image
        return super().sample_id(row, split, index)

    def meta(self, row: dict) -> dict:
        return {
            "answer_type": row.get("answer_type") or row.get("category"),
            "answerable": row.get("answerable"),
        }


class ShortAnswerTask(RealTask):
    """One reference answer, exact match after VQA normalisation."""

    def to_sample(self, row: dict, sample_id: str, images: tuple[ImageRef, ...]) -> Sample:
        answer = cell_text(row.get("answer"))
        return Sample(
            id=sample_id,
            question=cell_text(row.get("question")),
            answer=answer,
            images=images,
            answers=[answer],
            meta=self.meta(row),
        )

    def meta(self, row: dict) -> dict:
        return {}

    def reward(self, prediction: str, sample: Sample) -> float:
        return normalized_exact_match(prediction, sample.answers or [sample.answer])


@TASK_TYPES.register
class GQATask(ShortAnswerTask):
    """GQA, balanced questions: question, answer, fullAnswer, imageId. Two layouts:

    * the official release (`questions1.2.zip` + `images.zip`): `{split}_balanced_questions.json`,
      one JSON object keyed by question id, beside `images/<imageId>.jpg`;
    * lmms-lab/GQA: the questions in config `{split}_balanced_instructions` (with an `id`
      column), the images in config `{split}_balanced_images` (`id`, `image`), joined by imageId.
    """

    type_name = "gqa"

    dataset = DatasetSpec(
        path="gqa", hf_id="lmms-lab/GQA", hf_config="{split}_balanced_instructions",
        train_split="train", test_split="testdev",
        download=(
            "hf download lmms-lab/GQA --repo-type dataset --include 'train_balanced_*/*' "
            "'testdev_balanced_*/*' --cache-dir data/hub"
        ),
        # questions1.2.zip (1.4 GB) also holds the unbalanced "all" questions (tens of GB
        # unpacked): only the balanced file of each split is unpacked
        archives=(
            Archive(f"{GQA_URL}/questions1.2.zip", flatten=True,
                    members={s: (f"{s}_balanced_questions.json", f"*/{s}_balanced_questions.json")
                             for s in ("train", "val", "testdev")},
                    targets={s: (f"{s}_balanced_questions.json",) for s in ("train", "val", "testdev")}),
            Archive(f"{GQA_URL}/images.zip", members={s: ("images/*",) for s in ("train", "val", "testdev")},
                    targets={s: ("images",) for s in ("train", "val", "testdev")}),
        ),
    )
    id_column = "id"
    _FIELDS = ("imageId", "question", "answer", "fullAnswer")

    def open(self, split: str) -> SplitTable:
        location = self.location()
        name = loaders.parse_split(split)[0]
        local = location.local(name) if location.local_exists() else None
        questions = local / f"{name}_balanced_questions.json" if local is not None else None
        if questions is not None and questions.is_file():
            return loaders.open_keyed_json(questions, split, "id", self._FIELDS)
        return super().open(split)

    def meta(self, row: dict) -> dict:
        return {"rationale": row.get("fullAnswer") or "", "image_id": row.get("imageId")}

    def hub_configs(self, split: str) -> list[str | None]:
        """lmms-lab/GQA: the questions' config and the images' one paired with it."""
        config = self.location().config_for(split)
        paired = config.replace("instructions", "images") if config and "instructions" in config else None
        return [config, paired] if paired else [config]

    def row_images(self, table: SplitTable, index: int, row: dict) -> tuple[ImageRef, ...]:
        if "image" in table.dataset.column_names or not row.get("imageId"):
            return super().row_images(table, index, row)
        image_id = str(row["imageId"])
        paired = self._paired_images(table.split)
        if paired is not None:
            found = paired.ref(image_id)
            return (found,) if found is not None else ()
        return (FileImage(f"{image_id}.jpg", (table.base_dir / "images", table.base_dir)),)

    def _paired_images(self, split: str) -> _ImageTable | None:
        """The `*_images` config that pairs with this `*_instructions` one (lmms-lab/GQA)."""
        location = self.location()
        if location.local_exists() or not location.config or "instructions" not in location.config:
            return None
        cache = self.__dict__.setdefault("_paired", {})
        if split not in cache:
            images = replace(location, config=location.config.replace("instructions", "images"))
            cache[split] = _ImageTable(open_split(images, split))
        return cache[split]


class _ImageTable:
    """imageId -> reference to the image of a table with `id` and `image` columns."""

    def __init__(self, table: SplitTable):
        self._arrow = loaders.table_arrow(table)
        ids = self._arrow.column("id").to_pylist()
        self._row_of = {str(image_id): row for row, image_id in enumerate(ids)}

    def ref(self, image_id: str) -> TableImage | None:
        row = self._row_of.get(image_id)
        return None if row is None else TableImage(self._arrow, row, "image")


@TASK_TYPES.register
class PathVQATask(ShortAnswerTask):
    """flaviagiammarino/path-vqa: image, question, answer (yes/no or open)."""

    type_name = "pathvqa"

    dataset = DatasetSpec(
        path="pathvqa", hf_id="flaviagiammarino/path-vqa", train_split="train", test_split="test",
        download=hub_download("flaviagiammarino/path-vqa"),
    )

    def meta(self, row: dict) -> dict:
        kind = "yes/no" if str(row["answer"]).strip().lower() in ("yes", "no") else "open"
        return {"answer_type": kind}


# ---------------------------------------------------------------------------------------------
# POPE


def _pope_words(prediction: str) -> list[str]:
    """The words POPE's script reads: the text before the first '.', commas deleted, split on
    single spaces (RUCAIBox/POPE `evaluate.py`)."""
    text = prediction
    if text.find(".") != -1:
        text = text.split(".")[0]
    return text.replace(",", "").split(" ")


def pope_yes_no(prediction: str) -> str:
    """'yes' or 'no', read exactly as POPE's own evaluation script reads an answer
    (RUCAIBox/POPE `evaluate.py`; LLaVA's `eval_pope.py` is the same): keep the text before the
    first '.', delete commas, split on single spaces; 'no' when one of the words is `No`, `no` or
    `not`, else 'yes'. The words are matched as written (case-sensitive, punctuation attached), so
    "NO", "Not" and "no!" read as 'yes', and an answer that is neither yes nor no counts as 'yes'.
    The task takes off leading and trailing whitespace before (as LLaVA writes its answers)."""
    words = _pope_words(prediction)
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def said_yes_no(prediction: str) -> str | None:
    """The `yes_no` metric of custom tasks (a training reward): POPE's reading of a denial
    (`pope_yes_no`), but 'yes' only when a word is 'yes' (any case), else None: an answer that
    says neither earns nothing, where POPE's benchmark rule would count it as 'yes'."""
    words = _pope_words(prediction.strip())
    if pope_yes_no(prediction.strip()) == "no":
        return "no"
    return "yes" if any(word.lower() == "yes" for word in words) else None


def pope_f1(predictions: list[str], samples: list[Sample]) -> dict[str, float]:
    """POPE report with 'yes' as the positive class:
    precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R),
    accuracy = (TP + TN) / N, yes_ratio = (TP + FP) / N (0 where a denominator is 0)."""
    if len(predictions) != len(samples):
        raise ValueError(f"{len(predictions)} predictions for {len(samples)} samples")
    tp = fp = tn = fn = 0
    for prediction, sample in zip(predictions, samples):
        said_yes = pope_yes_no(prediction) == "yes"
        is_yes = sample.answer.strip().lower() == "yes"
        tp += said_yes and is_yes
        fp += said_yes and not is_yes
        fn += (not said_yes) and is_yes
        tn += (not said_yes) and not is_yes
    n = len(samples)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (tp + tn) / n if n else 0.0,
        "yes_ratio": (tp + fp) / n if n else 0.0,
    }


@BENCHMARK_TYPES.register
class POPETask(RealTask):
    """lmms-lab/POPE: id, question_id, question, answer (yes/no), image_source, image,
    category (adversarial/popular/random); also the original POPE files (`text`, `label`)."""

    type_name = "pope"

    dataset = DatasetSpec(
        path="pope", hf_id="lmms-lab/POPE", train_split=None, test_split="test",
        download=hub_download("lmms-lab/POPE"),
    )
    id_column = "question_id"
    answer_instruction = "Answer yes or no."

    def to_sample(self, row: dict, sample_id: str, images: tuple[ImageRef, ...]) -> Sample:
        answer = cell_text(row.get("answer") if row.get("answer") is not None else row.get("label")).lower()
        question = cell_text(row.get("question") if row.get("question") is not None else row.get("text"))
        return Sample(
            id=sample_id,
            question=question,
            answer=answer,
            images=images,
            answers=[answer],
            meta={"category": row.get("category")},
        )

    def reward(self, prediction: str, sample: Sample) -> float:
        return 1.0 if pope_yes_no(prediction) == sample.answer else 0.0

    def summary(self, predictions: list[str], samples: list[Sample], cot: bool = False) -> dict[str, float]:
        answers = [self.extract_answer(p, cot) for p in predictions]
        return pope_report(answers, samples)


def pope_report(predictions: list[str], samples: list[Sample]) -> dict[str, float]:
    """`pope_f1` over all samples (`pooled/<figure>`) and per category (`<category>/<figure>`),
    as the benchmark reports it: adversarial, popular and random side by side."""
    report = {f"pooled/{k}": v for k, v in pope_f1(predictions, samples).items()}
    categories = sorted({str(s.meta.get("category")) for s in samples if s.meta.get("category")})
    for category in categories:
        keep = [i for i, s in enumerate(samples) if str(s.meta.get("category")) == category]
        figures = pope_f1([predictions[i] for i in keep], [samples[i] for i in keep])
        report.update({f"{category}/{k}": v for k, v in figures.items()})
    return report
