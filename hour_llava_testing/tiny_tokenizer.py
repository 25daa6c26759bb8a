"""A small Qwen2-style byte-level BPE tokenizer for tests and demos: trained offline in milliseconds, with Qwen's
special tokens and pre-tokenizer splits, so prompts tokenize the way the real models' do (at a smaller vocabulary)."""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
# Qwen2's pre-tokenizer: letters, single digits, punctuation runs (with trailing newlines), newline runs, spaces.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CORPUS = [
    "system You are a helpful assistant. user assistant",
    "The video lasts for 12.50 seconds, and 128 frames are uniformly sampled from it.",
    "Please answer the following questions related to this video.",
    "What colour is the square? Which shape appears after the red scene? How many times does it appear?",
    "A. red B. green C. blue D. yellow. Answer with the option's letter from the given choices directly.",
    "The man is cooking pasta in a kitchen, then he walks to the door and opens it.",
] * 20


def build_tokenizer(vocab_size: int = 400, corpus: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Train the tokenizer on `corpus` (default: `CORPUS`, generic prompts) up to `vocab_size` tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS if corpus is None else corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
        model_max_length=1_000_000,
        padding_side="left",
    )
