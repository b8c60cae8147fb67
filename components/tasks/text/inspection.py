"""What selection checks of a text checkpoint's tokenizer before any compute."""

from __future__ import annotations

from pathlib import Path

from tuneops.components.checkpoint_inspection import CandidateUnusable, first_line

VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model")
# Fetched with a hub checkpoint, beside its config and weights.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
    "spiece.model", "sentencepiece.bpe.model", "tokenizer.model", "special_tokens_map.json",
    "added_tokens.json",
)
# Some tokenizers report "no limit" as a huge sentinel (int(1e30)); such a value is not a length.
_NO_LIMIT = 1_000_000


def inspect_tokenizer(directory: Path, config, names: list[str]) -> int | None:
    """Check the tokenizer belongs to the model; return the longest input in tokens (None: unknown).

    Raises CandidateUnusable with the reason when there is no usable tokenizer.
    """
    from transformers import AutoTokenizer

    # transformers 5 builds a tokenizer of special tokens alone when the vocabulary files are
    # missing, so their presence is checked here rather than trusted to from_pretrained.
    if not any(name in VOCABULARY_FILES or name.endswith(".model") for name in names):
        raise CandidateUnusable(
            f"no tokenizer: none of {', '.join(VOCABULARY_FILES)} or a sentencepiece *.model in {directory}"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    except Exception as error:
        raise CandidateUnusable(f"no usable tokenizer ({first_line(error)})") from None
    embedding_rows = getattr(config, "vocab_size", None)
    if isinstance(embedding_rows, int) and len(tokenizer) > embedding_rows:
        raise CandidateUnusable(
            f"tokenizer has {len(tokenizer)} tokens but the model embeds only {embedding_rows}: they do not belong together"
        )
    return _max_sequence_length(config, tokenizer)


def _max_sequence_length(config, tokenizer) -> int | None:
    limits = []
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _NO_LIMIT:
        limits.append(tokenizer_limit)
    return min(limits) if limits else None
