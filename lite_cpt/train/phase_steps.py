"""The names of the steps a phase is made of (no torch: arms declare theirs when a recipe is
validated)."""

#: The steps a training or evaluation phase is made of, as the memory planner and the
#: out-of-memory explainer name them.
PHASES = ("sft_step", "rollout", "logprob_pass", "grpo_step", "evaluation")
