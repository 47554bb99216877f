"""The prompt settings every task and general benchmark of a recipe takes (see tasks.prompts)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator


#: `evaluation.prompt` and `arms[].eval_prompt`: which prompt an arm is evaluated with (what each
#: value means: lite_cpt.run.eval_prompt, which decides it for a run).
EvalPrompt = Literal["trained", "cot", "direct"]


class PromptFields(BaseModel):
    """Prompt templates of a built-in task or benchmark (a custom one has custom.prompt / cot_prompt)."""

    prompt: str | None = Field(
        None, description="Direct-answer prompt template: `{question}` (with its option lines) and "
        "`{instruction}` (the task's answer-form instruction); literal braces as {{ }}. None = the question, "
        "then the instruction.",
    )
    cot_prompt: str | None = Field(
        None, description="Chain-of-thought prompt template (same placeholders), e.g. EasyR1's R1-V prompt; "
        "None = `prompt` (or the task's own) followed by the <think>/<answer> request.",
    )
    cot_format: Literal["answer_tag", "boxed"] = Field(
        "answer_tag", description="What the CoT prompt asks for, which the format reward checks and the "
        "answer is read from: answer_tag = <think>…</think><answer>…</answer> (EasyR1's r1v reward), boxed = "
        "<think>…</think> then \\boxed{…} (EasyR1's math reward).",
    )

    @field_validator("prompt", "cot_prompt")
    @classmethod
    def _template(cls, template: str | None) -> str | None:
        from lite_cpt.tasks.prompts import check_template

        return check_template(template)
