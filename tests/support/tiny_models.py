"""Tiny random causal LMs saved as local checkpoints, for tests.

`save_tiny_model(arch, out_dir)` builds a randomly initialised model of the given architecture from its
transformers config (2 layers, hidden size 32, MLP intermediate size 64, or 128 for BLOOM whose MLP is fixed
at 4 x hidden), trains a tiny byte-level BPE tokenizer on a few multilingual sentences, and saves both into
`out_dir` exactly as `save_pretrained` would for a hub checkpoint, so
`precompute.model.load.load_checkpoint(str(out_dir))` goes through the same code path as
`bigscience/bloom-560m-intermediate@global_stepN`.

Nothing is downloaded. Building one takes well under a second on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch

#: Architectures `save_tiny_model` can build (OLMo variants only where the installed transformers has them).
TINY_ARCHS: tuple[str, ...]

N_LAYERS = 2
HIDDEN = 32
INTERMEDIATE = 64
N_HEADS = 2
MAX_POSITIONS = 128

# A few real sentences in several scripts, so the byte-level BPE learns some merges (and Chinese/Japanese/
# Cyrillic text is still tokenised byte by byte where no merge applies: there is no unknown token).
_CORPUS = [
    "The earthquake shook the old house on Monday.",
    "El terremoto sacudió la casa vieja el lunes.",
    "Das Erdbeben erschütterte am Montag das alte Haus.",
    "Le tremblement de terre a secoué la vieille maison lundi.",
    "Землетрясение потрясло старый дом в понедельник.",
    "地震在星期一摇动了老房子。",
    "月曜日に地震が古い家を揺らした。",
    "Maanjäristys ravisteli vanhaa taloa maanantaina.",
    "Joy and happiness filled the house in March.",
    "La alegría llenó la casa en marzo.",
]

BOS = "<s>"
EOS = "</s>"
PAD = "<pad>"


def build_tiny_tokenizer(vocab_size: int = 320, with_pad: bool = False):
    """A fast (Rust) byte-level BPE tokenizer with offsets, wrapped in `PreTrainedTokenizerFast`.

    By default it has BOS/EOS but no pad token, like GPT-2 and Pythia, so the loader's pad fallback is exercised.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [BOS, EOS] + ([PAD] if with_pad else [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    kwargs = {"bos_token": BOS, "eos_token": EOS}
    if with_pad:
        kwargs["pad_token"] = PAD
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def _configs(vocab: int, bos: int, eos: int) -> dict:
    import transformers as tf

    common_ids = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": None}
    llama_like = dict(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=1,  # grouped-query attention, as in Mistral/Qwen2
        max_position_embeddings=MAX_POSITIONS,
        hidden_act="silu",
        tie_word_embeddings=False,
        **common_ids,
    )
    builders = {
        "gpt2": lambda: tf.GPT2Config(
            vocab_size=vocab,
            n_positions=MAX_POSITIONS,
            n_embd=HIDDEN,
            n_layer=N_LAYERS,
            n_head=N_HEADS,
            n_inner=INTERMEDIATE,
            activation_function="gelu_new",
            **common_ids,
        ),
        # BLOOM's MLP width is hard-wired to 4 x hidden size.
        "bloom": lambda: tf.BloomConfig(
            vocab_size=vocab,
            hidden_size=HIDDEN,
            n_layer=N_LAYERS,
            n_head=N_HEADS,
            **common_ids,
        ),
        "gpt_neox": lambda: tf.GPTNeoXConfig(
            vocab_size=vocab,
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=N_LAYERS,
            num_attention_heads=N_HEADS,
            max_position_embeddings=MAX_POSITIONS,
            hidden_act="gelu",
            use_parallel_residual=True,
            **common_ids,
        ),
        "llama": lambda: tf.LlamaConfig(**llama_like),
        "mistral": lambda: tf.MistralConfig(**llama_like),
        "qwen2": lambda: tf.Qwen2Config(**llama_like),
        "xglm": lambda: tf.XGLMConfig(
            vocab_size=vocab,
            d_model=HIDDEN,
            ffn_dim=INTERMEDIATE,
            num_layers=N_LAYERS,
            attention_heads=N_HEADS,
            max_position_embeddings=MAX_POSITIONS,
            activation_function="gelu",
            decoder_start_token_id=eos,
            **common_ids,
        ),
        "opt": lambda: tf.OPTConfig(
            vocab_size=vocab,
            hidden_size=HIDDEN,
            ffn_dim=INTERMEDIATE,
            num_hidden_layers=N_LAYERS,
            num_attention_heads=N_HEADS,
            max_position_embeddings=MAX_POSITIONS,
            word_embed_proj_dim=HIDDEN,
            activation_function="relu",
            do_layer_norm_before=True,
            **common_ids,
        ),
    }
    if hasattr(tf, "OlmoConfig"):
        builders["olmo"] = lambda: tf.OlmoConfig(**llama_like)
    if hasattr(tf, "Olmo2Config"):
        builders["olmo2"] = lambda: tf.Olmo2Config(**llama_like)
    return builders


def _available_archs() -> tuple[str, ...]:
    import transformers as tf

    archs = ["gpt2", "bloom", "gpt_neox", "llama", "mistral", "qwen2", "xglm", "opt"]
    if hasattr(tf, "OlmoConfig"):
        archs.append("olmo")
    if hasattr(tf, "Olmo2Config"):
        archs.append("olmo2")
    return tuple(archs)


TINY_ARCHS = _available_archs()


def tiny_config(arch: str, vocab_size: int, bos_token_id: int = 0, eos_token_id: int = 1):
    """The transformers config `save_tiny_model` uses for `arch` (see `TINY_ARCHS`)."""
    builders = _configs(vocab_size, bos_token_id, eos_token_id)
    if arch not in builders:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(sorted(builders))}")
    return builders[arch]()


def intermediate_size(arch: str) -> int:
    """The MLP width (neurons per layer) of the tiny model of `arch`."""
    return 4 * HIDDEN if arch == "bloom" else INTERMEDIATE


def save_tiny_model(arch: str, out_dir: Path, *, seed: int = 0, with_pad: bool = False) -> Path:
    """Build a tiny random `arch` causal LM plus a fast tokenizer and save both to `out_dir`; return `out_dir`.

    The result looks like any hub checkpoint saved with `save_pretrained` (config.json, model.safetensors,
    tokenizer.json, tokenizer_config.json, ...). Weights are seeded, so the same call gives the same model.
    """
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(with_pad=with_pad)
    config = tiny_config(
        arch,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if with_pad:
        config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # Random init leaves biases and norm weights at 0/1; perturb every parameter a little so that a
    # recomputation that skipped a bias or a norm scale would not match by accident.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def add_start_token(model_dir: Path, token: str = "</s>") -> Path:
    """Make a saved tiny tokenizer prepend ``token`` to every text, as XGLM's tokenizer prepends ``</s>``."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{token} $A", special_tokens=[(token, tok.convert_tokens_to_ids(token))]
    )
    tok.save_pretrained(model_dir)
    return model_dir
