"""Extraction throughput on a model of BLOOM-560m's shape: crossling's `extract` vs the bare forward pass.

    .venv/bin/python benchmarks/bench_extract.py                                  # CPU, float32, 128 contexts
    .venv/bin/python benchmarks/bench_extract.py --device cuda --dtype bfloat16   # GPU, 6,480 contexts

The model is `BloomModel` built from a config of BLOOM-560m's shape (24 layers, d = 1,024, 16 heads, 4,096
MLP units per layer, vocabulary 250,880; random weights, seed 0), so nothing is downloaded. The inputs are
real contexts of the built-in concept set (BLOOM's six training languages among its twelve, sampled with a
fixed seed), tokenized by a byte-level BPE trained here on the concept set (BLOOM's own tokenizer is not
available offline; the mean context length is printed).

Both sides run the same token-budget batches (sorted by length, ``--batch-tokens`` padded tokens each):
  bare     ``model(input_ids, attention_mask)`` on pre-built batches: the forward pass alone;
  extract  ``precompute.extract.extract``: batch building, hooks on every MLP down projection, pooling
           (mean, span mean, fraction active per neuron; residual mean and one sampled token per layer) and
           the copy of the pooled rows to the host, batch by batch.
Reported: tokens/s of each (real tokens, padding excluded), extract's overhead (extract time / bare time - 1;
crossling's goal: <= 15 %), and each as a fraction of the FLOP-bound rate = peak FLOP/s / FLOPs per token,
with FLOPs per token = 2 x (parameters of the transformer blocks; the embedding lookup costs none and
extraction runs no LM head) + 4 x layers x d x mean context length (attention scores and values). The peak is
measured in the same run: the best of a few large square matmuls in the benchmark's dtype (on CPU, with the
same threads), so the fraction says how close the forward pass gets to what this device does on dense matmul.
Results are printed and written as JSON to benchmarks/out/bench_extract-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from precompute.extract import extract, token_budget_batches, tokenize_contexts
from precompute.inputs.concepts import DEFAULT_CONCEPT_SET, load_concept_set
from precompute.model import LoadedModel, ModelLayout, resolve_device, resolve_dtype

BLOOM_560M = dict(vocab_size=250_880, hidden_size=1024, n_layer=24, n_head=16)
BLOOM_LANGS = ["ar", "en", "es", "fr", "hi", "zh"]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} torch threads"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_matmul_flops(device: torch.device, dtype: torch.dtype, seconds: float = 3.0) -> float:
    """Best FLOP/s of large square matmuls in ``dtype`` on ``device`` (the device's practical peak)."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    sync(device)
    best, spent = 0.0, 0.0
    while spent < seconds:
        start = time.perf_counter()
        for _ in range(4 if device.type == "cuda" else 1):
            a @ b
        sync(device)
        dt = time.perf_counter() - start
        spent += dt
        best = max(best, (4 if device.type == "cuda" else 1) * 2 * n**3 / dt)
    return best


def random_model(cls, config, device: torch.device, dtype: torch.dtype):
    """``cls(config)`` on ``device`` with weights ~ N(0, 0.02), layer norms 1, biases 0 (seed 0), in eval mode.

    transformers' own initialisation is skipped (it is slow on a CPU); the weights are drawn directly.
    """
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import no_init_weights

    with torch.device(device), no_init_weights():
        model = cls(config)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif "layernorm" in name or "ln_" in name:
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)
    model.tie_weights()  # BLOOM's LM head shares the embedding matrix
    return model.to(dtype).eval().requires_grad_(False)


def build_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE (fast, with offsets) trained on ``texts``; pad = EOS as for BLOOM-style loaders."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    fast.padding_side = "right"
    return fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    parser.add_argument("--contexts", type=int, default=0, help="contexts to run (default: 128 on CPU, 6,480 on CUDA)")
    parser.add_argument(
        "--batch-tokens", type=int, default=0, help="padded tokens per batch (default 2,048 CPU, 16,384 CUDA)"
    )
    parser.add_argument("--vocab", type=int, default=8000, help="BPE vocabulary trained on the concept set")
    parser.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="timed passes of each side, interleaved; the best is kept (default 2 on CPU, 3 on CUDA)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON file (default benchmarks/out/bench_extract-<device>.json)"
    )
    args = parser.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    n_contexts = args.contexts or (6480 if device.type == "cuda" else 128)
    batch_tokens = args.batch_tokens or (16384 if device.type == "cuda" else 2048)
    storage = torch.float16 if dtype in (torch.float16, torch.bfloat16) else torch.float32
    print(f"device: {device} ({device_name(device)}), dtype {str(dtype).replace('torch.', '')}", flush=True)

    # Inputs: real concept-set contexts in BLOOM's languages.
    concept_set = load_concept_set(DEFAULT_CONCEPT_SET).subset(BLOOM_LANGS, None, 0)
    sentences = concept_set.sentences
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(sentences.height, size=min(n_contexts, sentences.height), replace=False))
    sentences = sentences[pick]
    tokenizer = build_tokenizer(concept_set.sentences["text"].to_list(), args.vocab)
    contexts = tokenize_contexts(
        tokenizer,
        sentences["text"].to_list(),
        list(zip(sentences["span_start"].to_list(), sentences["span_end"].to_list())),
        64,
    )
    lengths = contexts.lengths
    n_tokens = int(lengths.sum())

    # The model: BLOOM-560m's shape, random weights.
    from transformers import BloomConfig, BloomForCausalLM

    config = BloomConfig(**BLOOM_560M)
    start = time.perf_counter()
    model = random_model(BloomForCausalLM, config, device, dtype)
    n_params = sum(p.numel() for p in {p.data_ptr(): p for p in model.parameters()}.values())
    n_embed = model.transformer.word_embeddings.weight.numel()
    n_blocks = sum(p.numel() for p in model.transformer.h.parameters())
    print(
        f"model: BLOOM-560m shape, {n_params / 1e6:.0f} M parameters ({n_blocks / 1e6:.0f} M in the 24 blocks, "
        f"{n_embed / 1e6:.0f} M embedding), built in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        n_layers=config.n_layer,
        hidden_size=config.hidden_size,
    )

    batches = token_budget_batches(lengths, batch_tokens)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    print(
        f"inputs: {len(lengths)} contexts, {n_tokens} tokens (mean {lengths.mean():.1f}, max {lengths.max()}), "
        f"{len(batches)} batches of <= {batch_tokens} padded tokens ({padded / n_tokens - 1:.0%} padding)",
        flush=True,
    )

    prebuilt = []
    for batch in batches:
        width = int(lengths[batch].max())
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, idx in enumerate(batch):
            ids[row, : lengths[idx]] = torch.tensor(contexts.input_ids[idx])
            mask[row, : lengths[idx]] = 1
        prebuilt.append((ids.to(device), mask.to(device)))
    base = model.base_model
    layout = ModelLayout.of(model)  # once per checkpoint, as the pipeline builds it

    def bare() -> float:
        sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for ids, mask in prebuilt:
                base(input_ids=ids, attention_mask=mask, use_cache=False)
        sync(device)
        return time.perf_counter() - t0

    def crossling() -> float:
        sync(device)
        t0 = time.perf_counter()
        pooled = extract(loaded, layout, contexts, batch_tokens=batch_tokens, storage_dtype=storage)
        sync(device)
        seconds = time.perf_counter() - t0
        del pooled
        return seconds

    # Warm-up (kernels, allocator, thread pools) on the first batches.
    with torch.inference_mode():
        for ids, mask in prebuilt[:2]:
            base(input_ids=ids, attention_mask=mask, use_cache=False)
    peak_mem = {}
    times = {"bare": [], "extract": []}
    for _ in range(args.repeats or (3 if device.type == "cuda" else 2)):
        for name, fn in (("bare", bare), ("extract", crossling)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times[name].append(fn())
            if device.type == "cuda":
                peak_mem[name] = torch.cuda.max_memory_allocated(device) / 2**20
            print(f"  {name:8s} {times[name][-1]:8.2f} s", flush=True)
    best = {k: min(v) for k, v in times.items()}

    peak = peak_matmul_flops(device, dtype)
    flops_per_token = 2 * n_blocks + 4 * config.n_layer * config.hidden_size * float(lengths.mean())
    bound = peak / flops_per_token
    rate = {k: n_tokens / v for k, v in best.items()}
    overhead = best["extract"] / best["bare"] - 1
    result = {
        "device": str(device),
        "device_name": device_name(device),
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "contexts": len(lengths),
        "tokens": n_tokens,
        "mean_tokens": float(lengths.mean()),
        "batch_tokens": batch_tokens,
        "batches": len(batches),
        "padding_fraction": padded / n_tokens - 1,
        "params_total": n_params,
        "params_blocks": n_blocks,
        "flops_per_token": flops_per_token,
        "peak_matmul_tflops": peak / 1e12,
        "flop_bound_tokens_per_s": bound,
        "seconds": best,
        "tokens_per_s": rate,
        "fraction_of_flop_bound": {k: r / bound for k, r in rate.items()},
        "extract_overhead": overhead,
        "peak_mem_mib": peak_mem or None,
    }
    print(
        f"peak dense matmul ({result['dtype']}): {peak / 1e12:.3f} TFLOP/s -> FLOP-bound rate "
        f"{bound:,.0f} tokens/s at {flops_per_token / 1e9:.3f} GFLOP/token"
    )
    for name in ("bare", "extract"):
        mem = f", peak {peak_mem[name]:,.0f} MiB" if name in peak_mem else ""
        print(f"{name:8s}: {rate[name]:10,.0f} tokens/s  ({rate[name] / bound:6.1%} of FLOP-bound){mem}")
    print(f"extract overhead over the bare forward pass: {overhead:+.1%} (goal <= 15 %)")
    out = args.out or Path(__file__).resolve().parent / "out" / f"bench_extract-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
