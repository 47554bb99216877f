"""Which prompt an arm is evaluated with: the one it trained with, or one shared by every arm.

`evaluation.prompt` (recipe-wide) and `arms[].eval_prompt` (per arm, over it) take

    trained  the prompt format the arm trained with (the default): an SFT arm trains on direct
             answers, so it is evaluated with the direct-answer prompt; an RL arm with its
             `rft.cot` (the chain-of-thought prompt in the paper's protocol)
    cot      the chain-of-thought prompt for every arm
    direct   the direct-answer prompt for every arm

The paper evaluates each model as it was trained; one shared prompt puts the mismatch on one arm
only (an SFT model asked for a chain of thought it never saw), which is the ablation
`recipes/ablations/shared_eval_prompt.yaml`.

Row 0 (the base model) is evaluated once per prompt format the arms use, each in its own files:
an arm's matrix starts from the base row of its own format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lite_cpt.recipe import Recipe
    from lite_cpt.recipe_run import ArmConfig

#: Row-0 files of the direct-answer format keep the names of evaluation.cot's old default (off).
_BASE_FILES = {False: ("base_scores.json", "base_predictions.jsonl.gz"),
               True: ("base_scores_cot.json", "base_predictions_cot.jsonl.gz")}


def trained_cot(arm: ArmConfig) -> bool:
    """Whether the arm trains with the chain-of-thought prompt: RL arms with `rft.cot`; SFT-based
    arms train on direct answers."""
    from lite_cpt.arms import ARMS

    method = ARMS[arm.method]
    return method.kind == "rl" and arm.rft.cot


def arm_eval_cot(recipe: Recipe, arm: ArmConfig) -> bool:
    """Whether `arm` is evaluated with the chain-of-thought prompt (see the module docstring)."""
    mode = arm.eval_prompt or recipe.evaluation.prompt
    if mode == "trained":
        return trained_cot(arm)
    return mode == "cot"


def recipe_eval_cots(recipe: Recipe) -> list[bool]:
    """The prompt formats the recipe's arms are evaluated with (True = chain of thought), each once."""
    return sorted({arm_eval_cot(recipe, arm) for arm in recipe.arms}, reverse=True)


def shared_eval_cot(recipe: Recipe) -> bool:
    """The prompt of an evaluation that belongs to no arm (`lite-cpt eval`, calibration): the
    recipe's shared one, or with `trained` the chain of thought when any arm is evaluated with it."""
    if recipe.evaluation.prompt != "trained":
        return recipe.evaluation.prompt == "cot"
    return True in recipe_eval_cots(recipe)


def base_files(cot: bool) -> tuple[str, str]:
    """(scores, predictions) file names of row 0 in the given prompt format."""
    return _BASE_FILES[bool(cot)]
