"""Shared-prefix scoring passes: each prompt encoded once for the G answers of its group.

The expanded layout repeats a group's prompt (and runs the vision tower on its images) once per
answer: G·(P + R) tokens. Here one packed row `[prompt, c1, …, cG]` carries P + G·R tokens, and
a mask lets each answer see the prompt and its own past only, so every answer token gets exactly
the hidden state it gets alone (Prefix Grouper, arXiv 2506.05433): attention over [prompt, own
past] is the same set of keys at the same rotary positions, because each answer's positions
continue from the prompt's end (the family's own rope-index function places the prompt; answers
are text). The prompt's gradient is the sum over the G answers that read it, as with G copies.

The first token of every answer is predicted by the prompt's last position, shared by the group;
so targets are gathered through an explicit index into the packed hidden states rather than the
shifted labels of the expanded layout. Log-probs come back as [answers, longest answer].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lite_cpt.train.batching import Prompt, encode_prompts, tokenizer_of
from lite_cpt.kernels import fused_linear_logprob
from lite_cpt.train.logprob import TokenLogprobs, decoder_and_head, unwrap
from lite_cpt.train.phase import Knobs, pack_by_tokens


@dataclass
class PromptGroup:
    """One packed row's content: a prompt and the answers (rollout rows) that share it."""

    prompt: dict  # the prompt encoded alone: [1, P] token tensors and its image tensors
    completions: list[list[int]]
    rows: list[int]

    @property
    def prompt_length(self) -> int:
        return int(self.prompt["input_ids"].shape[1])

    @property
    def length(self) -> int:
        return self.prompt_length + sum(len(c) for c in self.completions)


@dataclass
class PackedBatch:
    """Packed rows and where each answer token's prediction lives in them."""

    inputs: dict  # input_ids [B, T], mm_token_type_ids, image tensors, position_ids
    segments: torch.Tensor  # [B, T] 0 prompt, g + 1 answer g, -1 padding
    predict_index: torch.Tensor  # [A, L] flat index into [B*T] of the state predicting each target
    targets: torch.Tensor  # [A, L]
    mask: torch.Tensor  # [A, L] bool, True on real answer tokens
    rows: list[int]  # the rollout row of each of the A answers

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> "PackedBatch":
        inputs = {k: (v.to(device, dtype) if dtype is not None and v.is_floating_point() else v.to(device))
                  for k, v in self.inputs.items()}
        return PackedBatch(inputs, self.segments.to(device), self.predict_index.to(device),
                           self.targets.to(device), self.mask.to(device), self.rows)


def encode_groups(processor, prompts: list[Prompt], completions: list[list[int]], rows: list[int],
                  max_prompt_tokens: int | None) -> list[PromptGroup]:
    """Consecutive rows with the same prompt object become one group, its prompt encoded once."""
    groups: list[PromptGroup] = []
    last = None
    for prompt, completion, row in zip(prompts, completions, rows):
        if prompt is not last:
            groups.append(PromptGroup(encode_prompts(processor, [prompt], max_prompt_tokens), [], []))
            last = prompt
        groups[-1].completions.append(list(completion))
        groups[-1].rows.append(row)
    return groups


def split_group(group: PromptGroup, limit) -> list[PromptGroup]:
    """The group cut into parts that each repeat the prompt: a new part starts when `limit(part
    length after adding the next answer, answers in it)` is False (a part has one answer at least)."""
    parts: list[PromptGroup] = []
    for completion, row in zip(group.completions, group.rows):
        part = parts[-1] if parts else None
        if part is None or not limit(part.length + len(completion), len(part.completions) + 1):
            part = PromptGroup(group.prompt, [], [])
            parts.append(part)
        part.completions.append(completion)
        part.rows.append(row)
    return parts


def prompt_positions(model, prompt: dict) -> torch.Tensor:
    """Rotary positions of a prompt encoded alone, from the model's own rope-index function:
    [3, 1, P] multimodal positions for a prompt with images, [1, P] for text."""
    inner = unwrap(model).model
    ids = prompt["input_ids"]
    if "image_grid_thw" in prompt and hasattr(inner, "get_rope_index"):
        positions, _ = inner.get_rope_index(ids, mm_token_type_ids=prompt["mm_token_type_ids"],
                                            image_grid_thw=prompt["image_grid_thw"],
                                            attention_mask=torch.ones_like(ids))
        return positions
    return torch.arange(ids.shape[1]).unsqueeze(0)


def pack_groups(model, processor, groups: list[PromptGroup]) -> PackedBatch:
    """One right-padded row per group: prompt then its answers; the index of the hidden state
    that predicts each answer token (the prompt's last position for the first)."""
    width = max(g.length for g in groups)
    pad_id = tokenizer_of(processor).pad_token_id
    input_ids = torch.full((len(groups), width), pad_id, dtype=torch.long)
    segments = torch.full((len(groups), width), -1, dtype=torch.long)
    token_types = torch.zeros((len(groups), width), dtype=torch.long)
    positions_per_row, index_rows, target_rows, rows = [], [], [], []
    for b, group in enumerate(groups):
        prompt_len = group.prompt_length
        input_ids[b, :prompt_len] = group.prompt["input_ids"][0]
        segments[b, :prompt_len] = 0
        if "mm_token_type_ids" in group.prompt:
            token_types[b, :prompt_len] = group.prompt["mm_token_type_ids"][0]
        prompt_pos = prompt_positions(model, group.prompt)
        pieces, start = [prompt_pos], prompt_len
        for g, completion in enumerate(group.completions):
            n = len(completion)
            input_ids[b, start : start + n] = torch.tensor(completion, dtype=torch.long)
            segments[b, start : start + n] = g + 1
            # Answers are text: their positions continue from the prompt's last one on every axis.
            pieces.append(prompt_pos[..., -1:] + 1 + torch.arange(n))
            predictors = [prompt_len - 1] + list(range(start, start + n - 1))
            index_rows.append(torch.tensor(predictors, dtype=torch.long) + b * width)
            target_rows.append(torch.tensor(completion, dtype=torch.long))
            start += n
        rows.extend(group.rows)
        row_pos = torch.cat(pieces, dim=-1)
        positions_per_row.append(torch.nn.functional.pad(row_pos, (0, width - row_pos.shape[-1])))
    if any(p.dim() == 3 for p in positions_per_row):  # a text-only prompt beside image prompts
        positions_per_row = [p if p.dim() == 3 else p.unsqueeze(0).expand(3, -1, -1) for p in positions_per_row]
    positions = torch.cat(positions_per_row, dim=-2)  # [3, B, T] or [B, T]
    inputs = {"input_ids": input_ids, "position_ids": positions}
    if any("mm_token_type_ids" in g.prompt for g in groups):
        inputs["mm_token_type_ids"] = token_types
    for key in dict.fromkeys(k for g in groups for k in g.prompt if k not in ("input_ids", "attention_mask",
                                                                             "mm_token_type_ids", "token_type_ids")):
        inputs[key] = torch.cat([g.prompt[key] for g in groups if key in g.prompt])
    longest = max(len(t) for t in target_rows)
    predict_index = torch.zeros((len(target_rows), longest), dtype=torch.long)
    targets = torch.zeros((len(target_rows), longest), dtype=torch.long)
    mask = torch.zeros((len(target_rows), longest), dtype=torch.bool)
    for a, (index, target) in enumerate(zip(index_rows, target_rows)):
        predict_index[a, : len(index)] = index
        targets[a, : len(target)] = target
        mask[a, : len(target)] = True
    return PackedBatch(inputs, segments, predict_index, targets, mask, rows)


def shared_prefix_mask(segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, T, T] additive mask: a query sees earlier keys of the prompt and of its own segment;
    a padding query sees itself only (no row of the softmax is empty)."""
    query, key = segments[:, :, None], segments[:, None, :]
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    allowed = causal & (query != -1) & (key != -1) & ((key == 0) | (key == query))
    allowed |= torch.eye(length, dtype=torch.bool, device=segments.device) & (query == -1)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def packed_token_logprobs(model, packed: PackedBatch, *, temperature: float = 1.0, return_entropy: bool = False,
                          logprob_chunk: int | None = None) -> TokenLogprobs:
    """log p of every answer token of `packed` ([answers, longest answer], 0 past each answer's
    end), through the fused kernel on the gathered hidden states only."""
    decoder, head = decoder_and_head(model)
    dtype = next(p for p in decoder.parameters() if p.is_floating_point()).dtype
    mask4d = shared_prefix_mask(packed.segments, dtype)
    hidden = decoder(**packed.inputs, attention_mask=mask4d, use_cache=False).last_hidden_state
    flat = hidden.reshape(-1, hidden.shape[-1])
    selected = flat[packed.predict_index[packed.mask]]
    out = fused_linear_logprob(selected, head.weight, packed.targets[packed.mask], temperature=temperature,
                               return_entropy=return_entropy, chunk_size=logprob_chunk)
    logp_sel, entropy_sel = out if return_entropy else (out, None)
    shape = packed.targets.shape
    logp = flat.new_zeros(shape, dtype=torch.float32).masked_scatter(packed.mask, logp_sel.float())
    entropy = None
    if entropy_sel is not None:
        entropy = flat.new_zeros(shape, dtype=torch.float32).masked_scatter(packed.mask, entropy_sel.float())
    return TokenLogprobs(logp=logp, mask=packed.mask.float(), entropy=entropy)


def packed_micro_batches(groups: list[PromptGroup], knobs: Knobs) -> list[list[PromptGroup]]:
    """Micro-batches of packed rows under `knobs`: with a token budget, rows of at most the budget
    (a group cut where it would exceed it) packed by `pack_by_tokens` over their packed lengths,
    so a prompt counts once; else rows holding `micro_batch_size` answers at most in all."""
    if knobs.micro_batch_tokens is not None:
        budget = knobs.micro_batch_tokens
        units = [part for g in groups for part in split_group(g, lambda length, _: length <= budget)]
        limit = knobs.packed_sequences or max(1, len(units))
        return [[units[i] for i in chunk] for chunk in pack_by_tokens([u.length for u in units], budget, limit)]
    size = max(1, knobs.micro_batch_size)
    units = [part for g in groups for part in split_group(g, lambda _, answers: answers <= size)]
    batches: list[list[PromptGroup]] = []
    for unit in units:
        if batches and sum(len(u.rows) for u in batches[-1]) + len(unit.rows) <= size:
            batches[-1].append(unit)
        else:
            batches.append([unit])
    return batches
