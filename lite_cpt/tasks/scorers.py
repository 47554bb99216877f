"""The metrics a task declared in a recipe (`type: custom`) can name, and rewards by import path.

Every metric is the scoring function of a built-in task type, reached through one registry
(`METRICS`), so a task declared in YAML is scored exactly as the built-in type it resembles:

| metric | built-in twin | score of an (extracted) answer |
|---|---|---|
| `exact` | PathVQA, GQA | 1 if it equals one of the answers after normalisation (`normalize`, default the VQA cleanup) |
| `vqa_accuracy` | TextVQA, VizWiz | VQA accuracy with EvalAI's answer processing (`vqa_eval`); binary RL form: match with the majority answer |
| `choice` | ScienceQA, MMLU-Pro | 1 if the option letter it names (`choice_letter`) is the answer's |
| `math` | Geometry3K | 1 if EasyR1's grader (`mathruler`) finds it equivalent to an answer |
| `number` | CLEVR | 1 if its first number is within `tolerance` (relative) of an answer's, after normalisation |
| `yes_no` | POPE | 1 if it says the answer as POPE reads it (`said_yes_no`: a word `No`/`no`/`not` in the first sentence is no), where saying neither earns nothing |

A custom reward is any function `fn(prediction: str, sample: Sample) -> float` named by
`module.path:function` (importable) or `path/to/file.py:function` (as EasyR1's
`reward_function`); `load_reward` checks it exists and takes those two arguments.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lite_cpt.tasks.base import Sample, exact_match, normalize_text, numeric_match
from lite_cpt.tasks.choice import CHOICE_INSTRUCTION
from lite_cpt.tasks.letters import choice_letter
from lite_cpt.tasks.mathqa import Geometry3KTask, math_equivalent
from lite_cpt.tasks.real import SHORT_ANSWER
from lite_cpt.tasks.vqa import normalize_vqa_answer, normalized_exact_match, said_yes_no, vqa_accuracy

#: Answer normalisations a recipe can pick (`normalize`) for the `exact` and `number` metrics.
NORMALIZERS: dict[str, Callable[[str], str]] = {
    "vqa": normalize_vqa_answer,  # EvalAI's answer processing: punctuation, articles, number words, contractions
    "text": normalize_text,  # lower case, punctuation to spaces, articles dropped
    "lower": lambda text: " ".join(text.lower().split()),
    "none": str.strip,
}

#: Relative tolerance of the `number` metric unless the recipe sets one (CLEVR's).
NUMBER_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ScoreOptions:
    """The recipe's scoring options of one task."""

    normalize: str = "vqa"
    tolerance: float = NUMBER_TOLERANCE


def gold(sample: Sample) -> list[str]:
    return sample.answers or [sample.answer]


def _exact(prediction: str, sample: Sample, options: ScoreOptions) -> float:
    return exact_match(prediction, gold(sample), NORMALIZERS[options.normalize])


def _vqa_accuracy(prediction: str, sample: Sample, options: ScoreOptions) -> float:
    return vqa_accuracy(prediction, gold(sample))


def _majority_match(prediction: str, sample: Sample, options: ScoreOptions) -> float:
    return normalized_exact_match(prediction, [sample.answer])


def _choice(prediction: str, sample: Sample, options: ScoreOptions) -> float:
    return 1.0 if choice_letter(prediction, sample.choices) == sample.answer else 0.0


def _math(prediction: str, sample: Sample, options: ScoreOptions) -> float:
    return 1.0 if any(math_equivalent(prediction, answer) for answer in gold(sample)) else 0.0


def _number(prediction: str, sample: Sample, options: ScoreOptions) -> float:
    said = NORMALIZERS[options.normalize](prediction)
    return max(numeric_match(said, answer, rel_tol=options.tolerance) for answer in gold(sample))


def _yes_no(prediction: str, sample: Sample, options: ScoreOptions) -> float:
    return 1.0 if said_yes_no(prediction) == sample.answer.strip().lower() else 0.0


Scorer = Callable[[str, Sample, ScoreOptions], float]


@dataclass(frozen=True)
class Metric:
    """A registered metric: its score, the instruction a prompt asks for by default, the binary
    RL form where it is not "full credit" (`rl_reward: binary`), and which options it reads."""

    score: Scorer
    instruction: str
    binary: Scorer | None = None
    options: tuple[str, ...] = ()


METRICS: dict[str, Metric] = {
    "exact": Metric(_exact, SHORT_ANSWER, options=("normalize",)),
    "vqa_accuracy": Metric(_vqa_accuracy, SHORT_ANSWER, binary=_majority_match),
    "choice": Metric(_choice, CHOICE_INSTRUCTION),
    "math": Metric(_math, Geometry3KTask.answer_instruction),
    "number": Metric(_number, "Answer with a number.", options=("normalize", "tolerance")),
    "yes_no": Metric(_yes_no, "Answer yes or no."),
}


# ---------------------------------------------------------------------------------------------
# Custom rewards by import path

RewardFunction = Callable[[str, Sample], Any]
_FILE_MODULES: dict[Path, Any] = {}


def load_reward(path: str) -> RewardFunction:
    """The function `path` names (`package.module:function` or `file.py:function`); raises
    ValueError saying what is wrong (format, module, attribute, signature) and how to fix it."""
    module_name, _, attribute = path.rpartition(":")
    if not module_name or not attribute:
        raise ValueError(f"reward {path!r} must be `package.module:function` or `path/to/file.py:function`")
    module = _reward_module(module_name)
    function = getattr(module, attribute, None)
    if function is None:
        public = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_"))
        shown = ", ".join(public[:10]) + (", ..." if len(public) > 10 else "")
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r} (its functions: {shown or 'none'})")
    if not callable(function):
        raise ValueError(f"{path} is not a function (it is a {type(function).__name__})")
    try:
        inspect.signature(function).bind("prediction", Sample(id="", question="", answer=""))
    except TypeError:
        raise ValueError(f"{path} must take (prediction, sample) and return a float; its signature is "
                         f"{attribute}{inspect.signature(function)}") from None
    except ValueError:  # a builtin without an inspectable signature: trust it
        pass
    return function


def _reward_module(name: str) -> Any:
    if name.endswith(".py"):
        return _module_from_file(Path(name))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and (name == error.name or name.startswith(error.name + ".")):
            raise ValueError(f"module {name!r} not found: install it or add its directory to PYTHONPATH "
                             f"(or give a file: path/to/file.py:function)") from None
        raise ValueError(f"importing module {name!r} failed: {error}") from None
    except Exception as error:  # noqa: BLE001 - any import-time failure of the user's module
        raise ValueError(f"importing module {name!r} failed: {type(error).__name__}: {error}") from None


def _module_from_file(path: Path) -> Any:
    resolved = path.expanduser().resolve()
    if not resolved.is_file():
        raise ValueError(f"reward file {path} not found (relative paths start at {Path.cwd()})")
    if resolved not in _FILE_MODULES:
        name = f"lite_cpt_reward_{len(_FILE_MODULES)}_{resolved.stem}"
        spec = importlib.util.spec_from_file_location(name, resolved)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # noqa: BLE001 - any failure of the user's file
            del sys.modules[name]
            raise ValueError(f"running reward file {path} failed: {type(error).__name__}: {error}") from None
        _FILE_MODULES[resolved] = module
    return _FILE_MODULES[resolved]
