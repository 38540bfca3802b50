"""Where a generated or counted token sequence starts: the tokens a tokenizer puts before a text, else BOS, else
EOS. Steering generates from these, and the run's checks count a prompt with them, so both share one rule."""

from __future__ import annotations

from typing import Any

#: Why a tokenizer gives nothing to start from (no start, BOS or EOS token, and an empty prompt).
NO_START_TOKEN = "the tokenizer has no start, BOS or EOS token: give a non-empty prompt"


def prepended_ids(tokenizer: Any) -> list[int]:
    """The token ids the tokenizer itself puts before a text (e.g. XGLM ``[</s>]``, Llama ``[<s>]``; GPT-2 ``[]``).

    Found by tokenizing one probe text with and without special tokens: what comes before the plain ids.
    """
    for probe in ("a", "hello", "x y"):
        plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
        full = list(tokenizer(probe)["input_ids"])
        if not plain:
            continue
        for at in range(len(full) - len(plain) + 1):
            if full[at : at + len(plain)] == plain:
                return full[:at]
    return []


def start_ids(tokenizer: Any) -> list[int]:
    """The start of every generated sequence: the prepended token(s), else BOS, else EOS (never doubled)."""
    ids = prepended_ids(tokenizer)
    if ids:
        return ids
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [int(start)] if start is not None else []


def sequence_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The start token(s) followed by the prompt's own tokens (no special tokens added a second time); empty
    where the tokenizer has no start token and the prompt is empty."""
    return start_ids(tokenizer) + (list(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else [])
