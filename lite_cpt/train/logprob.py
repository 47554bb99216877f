"""Per-token log-probabilities of answer tokens, without ever building full logits.

The model's decoder runs up to its last hidden state; only the positions that predict an answer
token are gathered, and `fused_linear_logprob` computes log p(token) from those hidden states
and the lm_head weight chunk by chunk over the vocabulary. The lm_head module itself is never
called, so the [tokens x vocab] logits matrix (GBs at a 152k vocabulary) never exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lite_cpt.train.batching import IGNORE_INDEX
from lite_cpt.device_policy import kernel_backend
from lite_cpt.families import family_of_model
from lite_cpt.kernels import fused_linear_logprob


def unwrap(model):
    """The transformers model under a peft wrapper (LoRA layers stay injected in it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_and_head(model):
    """(decoder, lm_head) as the model's family adapter finds them."""
    return family_of_model(unwrap(model)).decoder_and_head(model)


@dataclass
class TokenLogprobs:
    logp: torch.Tensor  # [B, T-1] log p of labels[:, 1:], 0 where ignored
    mask: torch.Tensor  # [B, T-1] 1.0 on scored positions
    entropy: torch.Tensor | None = None


def token_logprobs(model, batch: dict, labels: torch.Tensor, *, temperature: float = 1.0,
                   return_entropy: bool = False, logprob_chunk: int | None = None) -> TokenLogprobs:
    """log p(labels[t+1] | tokens ≤ t) at every labelled position (shifted like a causal LM loss);
    `logprob_chunk` vocab rows per chunk of the fused kernel (None = its default)."""
    decoder, head = decoder_and_head(model)
    hidden = decoder(**batch, use_cache=False).last_hidden_state  # [B, T, H]
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    selected = hidden[:, :-1][mask]  # [N, H]: only the positions that predict answer tokens
    out = fused_linear_logprob(
        selected, head.weight, targets[mask], temperature=temperature, return_entropy=return_entropy,
        chunk_size=logprob_chunk, _backend=kernel_backend(selected),  # no Triton below compute capability 8.0
    )
    logp_sel, entropy_sel = out if return_entropy else (out, None)
    logp = hidden.new_zeros(targets.shape, dtype=torch.float32).masked_scatter(mask, logp_sel.float())
    entropy = None
    if entropy_sel is not None:
        entropy = hidden.new_zeros(targets.shape, dtype=torch.float32).masked_scatter(mask, entropy_sel.float())
    return TokenLogprobs(logp=logp, mask=mask.float(), entropy=entropy)
