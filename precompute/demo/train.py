"""Train the embedded demo model: a tiny GPT-2-architecture multilingual causal LM, on CPU, in minutes.

The run is a real (if very small) pre-training trajectory, saved as ordinary Hugging Face checkpoints that
the rest of crossling loads like any other model (``AutoModelForCausalLM.from_pretrained(path)``,
``AutoTokenizer.from_pretrained(path)``):

``out_dir/``
    ``training_config.json``  the settings (compared on re-runs: same settings -> training is skipped),
                              the corpus statistics and sha256, the results (initial/final losses), versions.
    ``training_log.json``     the loss of every optimiser step.
    ``.crossling-demo``       what the demo wrote here (folders by name, files by sha256): the only things a later
                              run with other settings removes or replaces; anything else refuses it.
    ``MODEL_CARD.md``         `DEMO_MODEL_CARD` plus the measured numbers of this run.
    ``step_000016/`` ...      one checkpoint per entry of ``checkpoint_steps``: ``config.json``,
                              ``model.safetensors``, the tokenizer files and ``crossling_checkpoint.json``
                              (``{"step", "tokens_seen", "train_loss", "eval_loss"}``).

Data: `precompute.demo.corpus.build_corpus` (CLDR text from babel, 12 languages, balanced, parallel by
record). Lines are shuffled across languages and records with the seed, so a training context holds lines
of several languages and parallel lines are never adjacent. Each line is ``<s> text </s>``; lines are packed
whole into blocks of ``n_ctx`` tokens (a block always starts at a line's ``<s>``, the tail is padding that
the loss ignores), so position 0 is always ``<s>``, as it is when crossling feeds a sentence or generates
from the beginning-of-sequence token. 2 % of the records (in all their languages) are held out for the
evaluation loss.

The tokenizer is a byte-level BPE trained with `tokenizers` on the training lines, wrapped as a
`transformers.PreTrainedTokenizerFast`; it prepends ``<s>`` when ``add_special_tokens=True`` (the default)
and returns character offsets (``return_offsets_mapping=True``) for every script, Chinese and Arabic included
(a token that is only a space gets an empty span; the byte pieces of one multi-byte character all point at
that character). Its ``model_max_length`` is the model's context (``n_ctx``, 64 for the demo).

Everything is seeded; on CPU with a fixed thread count the run is bit-for-bit repeatable.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from precompute.demo.corpus import (
    CORPUS_VERSION,
    DEMO_LANGUAGES,
    build_corpus,
    corpus_sha256,
    corpus_stats,
)
from precompute.text import listed

__all__ = [
    "DEFAULT_SPEC",
    "DEFAULT_STEPS",
    "DEMO_MODEL_CARD",
    "TINY_SPEC",
    "DemoCheckpoint",
    "DemoFolderError",
    "DemoSpec",
    "count_parameters",
    "default_checkpoint_steps",
    "load_demo_checkpoints",
    "tiny_test_model",
    "train_demo_model",
]

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
CONFIG_FILE = "training_config.json"
CHECKPOINT_FILE = "crossling_checkpoint.json"
LOG_FILE = "training_log.json"
CARD_FILE = "MODEL_CARD.md"
#: Bumped whenever the training recipe changes in a way the settings below do not capture.
RECIPE_VERSION = 2


@dataclass(frozen=True)
class DemoSpec:
    """Model size, data size and optimiser settings of a demo run (everything but steps and seed)."""

    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_inner: int = 512
    n_ctx: int = 64
    vocab_size: int = 4000
    n_lines_per_lang: int = 3000
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_frac: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_frac: float = 0.02
    max_eval_blocks: int = 64


#: The demo's settings: 1.31 M parameters, 3,000 lines per language (~2.4 MB of text in 12 languages).
DEFAULT_SPEC = DemoSpec()
#: A model small enough for unit tests (trains in seconds).
TINY_SPEC = DemoSpec(
    n_layer=2,
    n_embd=32,
    n_head=2,
    n_inner=64,
    n_ctx=48,
    vocab_size=500,
    n_lines_per_lang=60,
    batch_size=8,
    lr=1e-2,
    warmup_frac=0.1,
    max_eval_blocks=8,
)
#: Optimiser steps of the demo run.
DEFAULT_STEPS = 1024


@dataclass(frozen=True)
class DemoCheckpoint:
    """One saved checkpoint of a demo run (a directory that `transformers` loads)."""

    name: str
    path: Path
    step: int
    tokens_seen: int
    train_loss: float
    eval_loss: float | None = None


def default_checkpoint_steps(steps: int, first: int = 16) -> list[int]:
    """Dense early, sparse late, like real pre-training schedules: powers of two from ``first`` up to a quarter
    of the run, then evenly spaced (every largest-power-of-two) up to and including ``steps``.

    ``default_checkpoint_steps(1024) == [16, 32, 64, 128, 256, 512, 768, 1024]``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    out: list[int] = []
    p = max(1, first)
    while p <= max(steps // 4, 1) and p < steps:
        out.append(p)
        p *= 2
    interval = out[-1] if out else steps
    s = (out[-1] if out else 0) + interval
    while s < steps:
        out.append(s)
        s += interval
    out.append(steps)
    return sorted(set(out))


def count_parameters(spec: DemoSpec = DEFAULT_SPEC) -> int:
    """Trainable parameters of `GPT2LMHeadModel` for ``spec`` (input and output embeddings are tied)."""
    d, i, v, c, n = spec.n_embd, spec.n_inner, spec.vocab_size, spec.n_ctx, spec.n_layer
    per_layer = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * i + i) + (i * d + d)
    return v * d + c * d + n * per_layer + 2 * d


def _model_card(spec: DemoSpec = DEFAULT_SPEC, steps: int = DEFAULT_STEPS) -> str:
    n_langs = len(DEMO_LANGUAGES)
    return f"""\
crossling demo model (tiny, CPU-trained; NOT BLOOM)

Architecture: GPT-2 (transformers GPT2LMHeadModel), {spec.n_layer} layers, d_model {spec.n_embd}, \
{spec.n_head} heads, MLP width {spec.n_inner} (GELU; {spec.n_layer * spec.n_inner:,} MLP neurons in all), \
context {spec.n_ctx} tokens, tied embeddings; {count_parameters(spec):,} parameters.
Tokenizer: byte-level BPE with {spec.vocab_size:,} entries, trained locally with `tokenizers` on the corpus.
Corpus: {spec.n_lines_per_lang:,} lines per language in {n_langs} languages ({", ".join(DEMO_LANGUAGES)}), \
generated offline from CLDR data in the `babel` package (formatted dates, times, relative times, units, \
numbers, currencies, lists of territory and language names, month/weekday names). Each line renders one \
language-independent record, and every record appears in every language (balanced, parallel, ~2.4 MB), but \
lines are shuffled across languages and the model is never told which lines are translations. Shared \
anchors across languages: digits, years, amounts, and the same items rendered in each language. The text is \
formulaic: it is CLDR formatting data, not natural prose.
Training: {steps:,} AdamW steps of {spec.batch_size} x {spec.n_ctx}-token blocks (lines packed whole, \
languages interleaved), peak learning rate {spec.lr:g} with warm-up and cosine decay, fixed seeds, on 2 CPU \
cores in a few minutes. Checkpoints at powers of two early and evenly spaced late.
Caveats: this is a demonstration of crossling's pipeline on a real training trajectory, orders of magnitude \
smaller in parameters, data and compute than the paper's models (BLOOM-560m/7b1, a 257M XGLM). It cannot be \
expected to show everything those models show; whether each of the paper's trends appears here is an \
empirical result of this run, not a design target, and the demo was not tuned to produce them.
"""


#: The model card stored with the demo (the measured losses of a run go into ``out_dir/MODEL_CARD.md``).
DEMO_MODEL_CARD: str = _model_card()


# --------------------------------------------------------------------------------------------------------
# tokenizer


def _train_tokenizer(texts: Sequence[str], vocab_size: int, max_length: int):
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, BOS, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    bos_id = tok.token_to_id(BOS)
    eos_id = tok.token_to_id(EOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=True),
            processors.TemplateProcessing(
                single=f"{BOS} $A",
                pair=f"{BOS} $A {EOS} {BOS} $B",
                special_tokens=[(BOS, bos_id), (EOS, eos_id)],
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


# --------------------------------------------------------------------------------------------------------
# data


def _split(corpus, spec: DemoSpec, n_langs: int, seed: int):
    """Hold out whole records (in all their languages); shuffle the lines across languages and records."""
    n_records = len(corpus) // n_langs
    rng = random.Random(f"crossling-demo-split/{seed}")
    n_eval = max(1, round(spec.eval_frac * n_records)) if n_records > 1 else 0
    eval_records = set(rng.sample(range(n_records), n_eval))
    train_lines = [line for i, line in enumerate(corpus) if i // n_langs not in eval_records]
    eval_lines = [line for i, line in enumerate(corpus) if i // n_langs in eval_records]
    rng.shuffle(train_lines)
    rng.shuffle(eval_lines)
    return train_lines, eval_lines


def _pack_all(train_lines, eval_lines, tokenizer, spec: DemoSpec):
    """Pack whole ``<s> line </s>`` sequences into n_ctx blocks (right-padded)."""
    import torch

    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id

    def pack(lines):
        # the raw `tokenizers` object: no special tokens, no "longer than model_max_length" warning
        enc = [e.ids for e in tokenizer.backend_tokenizer.encode_batch([t for _, t in lines], add_special_tokens=False)]
        blocks: list[list[int]] = []
        cur: list[int] = []
        n_truncated = 0
        for ids in enc:
            seq = [bos, *ids, eos]
            if len(seq) > spec.n_ctx:
                seq = seq[: spec.n_ctx]
                n_truncated += 1
            if len(cur) + len(seq) > spec.n_ctx:
                blocks.append(cur + [pad] * (spec.n_ctx - len(cur)))
                cur = []
            cur.extend(seq)
        if cur:
            blocks.append(cur + [pad] * (spec.n_ctx - len(cur)))
        x = torch.tensor(blocks, dtype=torch.long)
        n_tokens = [len(ids) + 2 for ids in enc]
        return x, n_truncated, n_tokens

    train_x, n_trunc, n_tok = pack(train_lines)
    eval_x, _, _ = pack(eval_lines)
    eval_x = eval_x[: spec.max_eval_blocks]
    info = {
        "train_lines": len(train_lines),
        "eval_lines": len(eval_lines),
        "train_blocks": int(train_x.shape[0]),
        "eval_blocks": int(eval_x.shape[0]),
        "train_tokens": int((train_x != pad).sum()),
        "lines_truncated": n_trunc,
        "mean_tokens_per_line": round(sum(n_tok) / max(1, len(n_tok)), 2),
        "block_fill": round(float((train_x != pad).float().mean()), 4),
    }
    tokens_per_lang: dict[str, int] = {}
    for (lang, _), n in zip(train_lines, n_tok, strict=True):
        tokens_per_lang[lang] = tokens_per_lang.get(lang, 0) + n
    info["train_tokens_per_lang"] = tokens_per_lang
    return train_x, eval_x, info


def _labels(x, pad_id: int):
    y = x.clone()
    y[x == pad_id] = -100
    return y


# --------------------------------------------------------------------------------------------------------
# checkpoints on disk


def _settings(spec: DemoSpec, languages, steps: int, checkpoint_steps, seed: int) -> dict:
    return {
        "recipe_version": RECIPE_VERSION,
        "corpus_version": CORPUS_VERSION,
        "languages": list(languages),
        "steps": steps,
        "checkpoint_steps": list(checkpoint_steps),
        "seed": seed,
        "spec": asdict(spec),
    }


def _ckpt_name(step: int) -> str:
    return f"step_{step:06d}"


def _read_checkpoint(path: Path) -> DemoCheckpoint | None:
    meta_path = path / CHECKPOINT_FILE
    if not meta_path.is_file() or not (path / "config.json").is_file():
        return None
    if not any(path.glob("*.safetensors")) and not (path / "pytorch_model.bin").is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        return DemoCheckpoint(
            name=path.name,
            path=path,
            step=int(meta["step"]),
            tokens_seen=int(meta["tokens_seen"]),
            train_loss=float(meta["train_loss"]),
            eval_loss=None if meta.get("eval_loss") is None else float(meta["eval_loss"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def load_demo_checkpoints(out_dir: Path) -> list[DemoCheckpoint]:
    """The complete checkpoints of a finished demo run in ``out_dir``, ordered by step ([] if none)."""
    out_dir = Path(out_dir)
    cfg_path = out_dir / CONFIG_FILE
    if not cfg_path.is_file():
        return []
    try:
        steps = json.loads(cfg_path.read_text())["settings"]["checkpoint_steps"]
    except (ValueError, KeyError, TypeError):
        return []
    found = [_read_checkpoint(out_dir / _ckpt_name(s)) for s in steps]
    if any(c is None for c in found):
        return []
    return sorted(found, key=lambda c: c.step)  # type: ignore[arg-type]


def _existing_run(out_dir: Path, settings: dict) -> list[DemoCheckpoint] | None:
    cfg_path = out_dir / CONFIG_FILE
    if not cfg_path.is_file():
        return None
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError:
        return None
    if cfg.get("settings") != settings or not cfg.get("complete"):
        return None
    return load_demo_checkpoints(out_dir) or None


def _save_checkpoint(out_dir: Path, model, tokenizer, ckpt: DemoCheckpoint) -> None:
    from transformers.utils import logging as hf_logging

    tmp = out_dir / f".{ckpt.name}.tmp"
    _claim_folder(out_dir, tmp.name)
    _claim_folder(out_dir, ckpt.name)
    if tmp.exists():
        shutil.rmtree(tmp)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' per-save "Writing model shards" bar
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    # transformers 5 writes its new class name; the pre-5 name loads in both 4.x and 5.x (where it is an alias)
    tok_cfg_path = tmp / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    if tok_cfg.get("tokenizer_class") == "TokenizersBackend":
        tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n")
    meta = {
        "step": ckpt.step,
        "tokens_seen": ckpt.tokens_seen,
        "train_loss": ckpt.train_loss,
        "eval_loss": ckpt.eval_loss,
    }
    (tmp / CHECKPOINT_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    final = out_dir / ckpt.name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


class DemoFolderError(ValueError):
    """A folder the demo training would have to delete or overwrite something in that it did not write."""


#: The demo's record of what it wrote into a folder: ``{"files": {name: [sha256, ...]}, "folders": [name, ...]}``.
#: Only what is listed here (a file still as it was written, a checkpoint folder) is ever deleted or replaced.
MARKER_FILE = ".crossling-demo"
_MARKER_NOTE = (
    "written by crossling's demo training (precompute demo, or the tests' tiny checkpoints): what it may replace"
)


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def read_marker(folder: Path) -> dict:
    """What the demo recorded writing into ``folder`` (empty lists when it recorded nothing)."""
    try:
        data = json.loads((Path(folder) / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"files": {}, "folders": []}
    files = data.get("files") if isinstance(data, dict) else None
    folders = data.get("folders") if isinstance(data, dict) else None

    def plain(name: object) -> bool:  # a name inside the folder, never a path that leads out of it
        return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name

    return {
        "files": {k: [str(h) for h in v] for k, v in files.items() if plain(k) and isinstance(v, list)}
        if isinstance(files, dict)
        else {},
        "folders": [f for f in folders if plain(f)] if isinstance(folders, list) else [],
    }


def _write_marker(folder: Path, marker: dict) -> None:
    tmp = folder / (MARKER_FILE + ".tmp")
    tmp.write_text(json.dumps({"note": _MARKER_NOTE, **marker}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MARKER_FILE)


def _claim_folder(folder: Path, name: str) -> None:
    """Record, before making it, that the folder ``name`` inside ``folder`` is the demo's."""
    marker = read_marker(folder)
    if name not in marker["folders"]:
        marker["folders"].append(name)
        _write_marker(folder, marker)


def write_owned_file(folder: Path, name: str, text: str) -> None:
    """Write ``folder/name`` (atomically), recording in the marker that the demo wrote exactly this content."""
    data = text.encode("utf-8")
    marker = read_marker(folder)
    hashes = marker["files"].setdefault(name, [])
    digest = _sha256(data)
    if digest not in hashes:
        hashes.append(digest)
        del hashes[:-4]  # the last few versions: one killed between the marker and the rename stays provable
        _write_marker(folder, marker)
    tmp = folder / f".{name}.tmp-{os.getpid()}"
    tmp.write_bytes(data)
    os.replace(tmp, folder / name)


def not_owned(folder: Path, names: Sequence[str]) -> list[str]:
    """The entries among ``names`` in ``folder`` that exist and that the demo cannot prove it wrote (a file
    whose content is not one it recorded, a folder it did not record), as ``name`` or ``name/``."""
    marker = read_marker(folder)
    out = []
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            if name not in marker["folders"]:
                out.append(name + "/")
        elif path.exists() or path.is_symlink():
            hashes = marker["files"].get(name, [])
            try:
                ok = not path.is_symlink() and path.is_file() and _sha256(path.read_bytes()) in hashes
            except OSError:
                ok = False
            if not ok:
                out.append(name)
    return out


def refuse_foreign(folder: Path, names: Sequence[str], what: str) -> None:
    """Raise `DemoFolderError` (one line) when ``folder`` holds any of ``names`` that the demo did not write."""
    foreign = not_owned(folder, names)
    if foreign:
        shown = listed(foreign, 5)
        raise DemoFolderError(
            f"{folder}: holds {shown}, which {what} did not write (not recorded in {MARKER_FILE}, or changed "
            "since) and would have to remove or replace; move them away or choose another folder"
        )


def check_folder(folder: Path) -> None:
    """Refuse (one line) a path that is not a folder the demo can write in."""
    if folder.exists() and not folder.is_dir():
        raise DemoFolderError(f"{folder}: is a file, not a folder; choose a folder for the checkpoints")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoFolderError(f"{folder}: cannot make the folder ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DemoFolderError(f"{folder}: the folder is not writable")


def _run_entries(out_dir: Path, ckpt_steps: Sequence[int]) -> list[str]:
    """Everything a demo run in ``out_dir`` removes or replaces: the earlier run's files and checkpoint folders
    (and their unfinished copies), and the folders this run writes."""
    names = {CONFIG_FILE, LOG_FILE, CARD_FILE}
    for p in out_dir.glob("step_*"):
        if p.name[5:].isdigit():
            names.add(p.name)
    for p in out_dir.glob(".step_*.tmp"):
        names.add(p.name)
    for step in ckpt_steps:
        names.add(_ckpt_name(step))
        names.add(f".{_ckpt_name(step)}.tmp")
    return sorted(names)


def _clear_run(out_dir: Path) -> None:
    """Remove what an earlier demo run left in out_dir: only what its marker proves the demo wrote.

    Callers check first (`refuse_foreign`); whatever the marker does not list is left where it is.
    """
    marker = read_marker(out_dir)
    for name in marker["folders"]:
        path = out_dir / name
        ours = name.startswith("step_") or (name.startswith(".step_") and name.endswith(".tmp"))
        if ours and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
    for name in list(marker["files"]):
        if name in (CONFIG_FILE, LOG_FILE, CARD_FILE) and not not_owned(out_dir, [name]):
            (out_dir / name).unlink(missing_ok=True)
    _write_marker(out_dir, {"files": {}, "folders": []})


# --------------------------------------------------------------------------------------------------------
# training


class _Progress:
    """A rich progress bar with ETA and the running loss, or nothing."""

    def __init__(self, enabled: bool, total: int, description: str):
        self._p = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._p.start()
        self._task = self._p.add_task(description, total=total, loss="-")

    def advance(self, loss: float | None = None) -> None:
        if self._p is not None:
            self._p.update(self._task, advance=1, **({"loss": f"{loss:.3f}"} if loss is not None else {}))

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()


def _evaluate(model, eval_x, pad_id: int) -> float | None:
    import torch

    if eval_x.shape[0] == 0:
        return None
    model.eval()
    with torch.no_grad():
        out = model(input_ids=eval_x, attention_mask=(eval_x != pad_id).long(), labels=_labels(eval_x, pad_id))
    model.train()
    return float(out.loss)


def _lr_at(step: int, steps: int, spec: DemoSpec) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr`` (``step`` counts from 1)."""
    warmup = max(1, round(spec.warmup_frac * steps))
    if step <= warmup:
        return spec.lr * step / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return spec.lr * (spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def train_demo_model(
    out_dir: Path,
    *,
    languages: Sequence[str] = DEMO_LANGUAGES,
    steps: int = DEFAULT_STEPS,
    checkpoint_steps: Sequence[int] | None = None,
    seed: int = 0,
    progress: bool = True,
    spec: DemoSpec = DEFAULT_SPEC,
    num_threads: int | None = 2,
    force: bool = False,
) -> list[DemoCheckpoint]:
    """Train the demo model and save its checkpoints under ``out_dir``; return them ordered by step.

    If ``out_dir`` already holds a complete run with the same settings (``training_config.json``), nothing is
    trained and the saved checkpoints are returned (``force=True`` retrains). A run with other settings, or an
    interrupted one, is replaced, but only what the demo recorded writing (``out_dir/.crossling-demo``: folders by
    name, files by content hash): anything else of the names it uses raises `DemoFolderError`, untouched.
    ``checkpoint_steps`` defaults to `default_checkpoint_steps(steps)`; every entry must lie in ``0..steps`` (0
    saves the random initialisation, with its evaluation loss as ``train_loss``; otherwise ``train_loss`` is the
    mean training loss since the previous checkpoint). ``num_threads`` sets torch's intra-op threads for the run
    (restored after; ``None`` leaves them alone).
    """
    out_dir = Path(out_dir)
    languages = list(languages)
    if not languages:
        raise ValueError("train_demo_model: no languages given")
    if steps < 1:
        raise ValueError(f"train_demo_model: steps must be >= 1, got {steps}")
    ckpt_steps = sorted(set(default_checkpoint_steps(steps) if checkpoint_steps is None else checkpoint_steps))
    if not ckpt_steps or ckpt_steps[0] < 0 or ckpt_steps[-1] > steps:
        raise ValueError(f"train_demo_model: checkpoint_steps must lie in 0..{steps}, got {ckpt_steps}")
    if spec.n_embd % spec.n_head:
        raise ValueError(f"train_demo_model: n_embd {spec.n_embd} is not divisible by n_head {spec.n_head}")
    settings = _settings(spec, languages, steps, ckpt_steps, seed)

    check_folder(out_dir)
    if not force:
        existing = _existing_run(out_dir, settings)
        if existing is not None:
            return existing
    # Only what this module recorded writing is removed or replaced: anything else refuses the run, untouched.
    refuse_foreign(out_dir, _run_entries(out_dir, ckpt_steps), "training the demo model")
    _clear_run(out_dir)

    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    prev_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(max(1, min(num_threads, os.cpu_count() or 1)))
    try:
        t0 = time.perf_counter()
        corpus = build_corpus(languages, spec.n_lines_per_lang, seed)
        t_corpus = time.perf_counter() - t0
        stats = corpus_stats(corpus)
        sha = corpus_sha256(corpus)

        t1 = time.perf_counter()
        n_langs = len(languages)
        n_records = len(corpus) // n_langs
        train_lines, eval_lines = _split(corpus, spec, n_langs, seed)
        tokenizer = _train_tokenizer([t for _, t in train_lines], spec.vocab_size, spec.n_ctx)
        train_x, eval_x, data_info = _pack_all(train_lines, eval_lines, tokenizer, spec)
        t_tok = time.perf_counter() - t1
        pad_id = tokenizer.pad_token_id

        torch.manual_seed(seed)
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=spec.n_ctx,
            n_embd=spec.n_embd,
            n_layer=spec.n_layer,
            n_head=spec.n_head,
            n_inner=spec.n_inner,
            activation_function="gelu_new",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=pad_id,
            tie_word_embeddings=True,
        )
        model = GPT2LMHeadModel(config)
        model.loss_type = "ForCausalLM"  # GPT-2's class name does not map to a loss in transformers 5: say it
        model.generation_config.bos_token_id = tokenizer.bos_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = pad_id
        model.train()
        n_params = sum(p.numel() for p in model.parameters())

        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=spec.lr,
            betas=(0.9, 0.95),
            eps=1e-8,
        )
        gen = torch.Generator().manual_seed(seed)
        initial_eval = _evaluate(model, eval_x, pad_id)

        log: list[dict] = []
        ckpts: list[DemoCheckpoint] = []
        if 0 in ckpt_steps:
            ck0 = DemoCheckpoint(
                name=_ckpt_name(0),
                path=out_dir / _ckpt_name(0),
                step=0,
                tokens_seen=0,
                train_loss=_round(initial_eval) if initial_eval is not None else math.nan,
                eval_loss=_round(initial_eval),
            )
            _save_checkpoint(out_dir, model, tokenizer, ck0)
            ckpts.append(ck0)
        ckpt_set = set(ckpt_steps)
        tokens_seen = 0
        window: list[float] = []
        order = torch.randperm(train_x.shape[0], generator=gen)
        pos = 0
        bar = _Progress(progress, steps, "training demo model")
        t2 = time.perf_counter()
        c2 = time.process_time()
        try:
            for step in range(1, steps + 1):
                if pos + spec.batch_size > order.numel():
                    order = torch.randperm(train_x.shape[0], generator=gen)
                    pos = 0
                idx = order[pos : pos + spec.batch_size]
                pos += spec.batch_size
                x = train_x[idx]
                lr = _lr_at(step, steps, spec)
                for g in opt.param_groups:
                    g["lr"] = lr
                out = model(input_ids=x, attention_mask=(x != pad_id).long(), labels=_labels(x, pad_id))
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
                opt.step()
                loss = float(out.loss.detach())
                tokens_seen += int((x != pad_id).sum())
                window.append(loss)
                log.append({"step": step, "loss": round(loss, 5), "lr": lr, "tokens_seen": tokens_seen})
                bar.advance(loss)
                if step in ckpt_set:
                    ck = DemoCheckpoint(
                        name=_ckpt_name(step),
                        path=out_dir / _ckpt_name(step),
                        step=step,
                        tokens_seen=tokens_seen,
                        train_loss=round(sum(window) / len(window), 5),
                        eval_loss=_round(_evaluate(model, eval_x, pad_id)),
                    )
                    _save_checkpoint(out_dir, model, tokenizer, ck)
                    ckpts.append(ck)
                    window = []
        finally:
            bar.close()
        t_train = time.perf_counter() - t2
        cpu_train = time.process_time() - c2

        first_losses = [r["loss"] for r in log[: min(10, len(log))]]
        results = {
            "n_parameters": n_params,
            "initial_eval_loss": _round(initial_eval),
            "final_eval_loss": ckpts[-1].eval_loss,
            "first_steps_train_loss": round(sum(first_losses) / len(first_losses), 5),
            "final_train_loss": ckpts[-1].train_loss,
            "uniform_loss": round(math.log(len(tokenizer)), 5),
            "tokens_seen": tokens_seen,
            "seconds": {
                "corpus": round(t_corpus, 2),
                "tokenizer_and_packing": round(t_tok, 2),
                "training_incl_checkpoints": round(t_train, 2),
                "training_cpu_time": round(cpu_train, 2),
                "total": round(time.perf_counter() - t0, 2),
            },
            "torch_threads": torch.get_num_threads(),
        }
        card = _model_card(spec, steps)
        cfg = {
            "settings": settings,
            "complete": True,
            "corpus": {"sha256": sha, "per_language": stats, "n_records": n_records},
            "data": data_info,
            "results": results,
            "checkpoints": [
                {
                    "name": c.name,
                    "step": c.step,
                    "tokens_seen": c.tokens_seen,
                    "train_loss": c.train_loss,
                    "eval_loss": c.eval_loss,
                }
                for c in ckpts
            ],
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "model_card": card,
        }
        write_owned_file(out_dir, LOG_FILE, json.dumps(log) + "\n")
        write_owned_file(
            out_dir,
            CARD_FILE,
            card + "\nMeasured in this run: "
            f"{n_params:,} parameters; evaluation loss (held-out records) {results['initial_eval_loss']} at "
            f"initialisation -> {results['final_eval_loss']} at step {steps} (uniform over the vocabulary: "
            f"{results['uniform_loss']}); {tokens_seen:,} training tokens seen; trained in "
            f"{t_train:.0f} s on {torch.get_num_threads()} CPU thread(s).\n",
        )
        write_owned_file(out_dir, CONFIG_FILE, json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
        return ckpts
    finally:
        torch.set_num_threads(prev_threads)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 5)


def tiny_test_model(
    out_dir: Path,
    steps: int = 24,
    *,
    languages: Sequence[str] = DEMO_LANGUAGES,
    seed: int = 0,
    progress: bool = False,
    checkpoint_steps: Sequence[int] | None = None,
    num_threads: int | None = 1,
    force: bool = False,
) -> list[DemoCheckpoint]:
    """A very small demo run for tests (`TINY_SPEC`, ~35 k parameters; seconds on one CPU thread), with
    checkpoints at steps/4, steps/2 and steps unless ``checkpoint_steps`` says otherwise."""
    if checkpoint_steps is None:
        checkpoint_steps = sorted({max(1, steps // 4), max(1, steps // 2), steps})
    return train_demo_model(
        out_dir,
        languages=languages,
        steps=steps,
        checkpoint_steps=checkpoint_steps,
        seed=seed,
        progress=progress,
        spec=TINY_SPEC,
        num_threads=num_threads,
        force=force,
    )
