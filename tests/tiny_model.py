"""A tiny random text classifier saved as tuneops saves a fine-tuned model: the registry, serving
and fault tests package and serve it in seconds, where what they check is not what it predicts."""

from __future__ import annotations

from pathlib import Path

LABELS = ["negative", "neutral", "positive"]


def save_tiny_text_model(directory: Path, hidden_size: int = 32, base_checkpoint: str = "tiny-test-bert") -> Path:
    """A 2-layer BERT of ``hidden_size`` with MiniLM's tokenizer and three LABELS, saved by
    ``Predictor.save`` into ``directory`` (returned). Larger sizes give larger weight files."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tuneops.components.checkpoints import packaged_model_dir
    from tuneops.components.predictor import Predictor
    from tuneops.components.tasks.registry import get_task

    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir("all-MiniLM-L6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=2,
                        num_attention_heads=max(2, hidden_size // 64), intermediate_size=2 * hidden_size,
                        num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                        label2id={label: index for index, label in enumerate(LABELS)})
    Predictor(BertForSequenceClassification(config), tokenizer, LABELS, task=get_task("text-classification"),
              max_length=32).save(directory, extra={"base_checkpoint": base_checkpoint})
    return directory
