"""Pretrain ``ArlowForCausalLM`` from scratch with the Hugging Face ``Trainer``.

Data streams from local ``.txt`` / ``.jsonl`` files (:class:`PackedTextDataset`, an
``IterableDataset``): documents are tokenized on the fly, joined with ``eos_token`` and cut into
blocks of ``block_size`` tokens. Gradient checkpointing is on, nothing is reported to a remote
service unless ``--report-to`` says so, and a tiny configuration runs on a CPU::

    python -m arlm.pretrain --train-files data/*.txt --output-dir runs/arlow \
        --vocab-size 512 --hidden-size 64 --num-hidden-layers 2 --num-attention-heads 4 \
        --block-size 64 --batch-size 8 --max-steps 100
"""

import argparse
import json
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch.utils.data import IterableDataset, get_worker_info
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

from arlm.hf.configuration_arlow import ArlowConfig
from arlm.hf.modeling_arlow import ArlowForCausalLM
from arlm.pretrain.text_files import PathLike, check_text_files, iter_documents
from arlm.pretrain.tokenizer import train_arlow_tokenizer


class PackedTextDataset(IterableDataset):
    """Blocks ``{"input_ids", "labels"}`` of ``block_size`` tokens packed from a document stream.

    Each document is followed by ``eos_token_id``; the last incomplete block of a pass is dropped.
    With several dataloader workers, worker ``i`` of ``n`` reads documents ``i, i + n, ...``.
    """

    def __init__(
        self,
        files: Sequence[PathLike],
        tokenizer: PreTrainedTokenizerBase,
        block_size: int,
        text_field: str = "text",
    ):
        if block_size < 2:
            raise ValueError(f"block_size must be at least 2, got {block_size}")
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs an eos_token to separate packed documents")
        self.files = check_text_files(files)
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.text_field = text_field

    def check_holds_a_block(self) -> None:
        """Raise ``ValueError`` if the files hold fewer tokens than one block (the stream would be
        empty and training would never take a step). Reads only until one block is found."""
        tokens, documents = 0, 0
        for document in iter_documents(self.files, self.text_field):
            tokens += len(self.tokenizer.encode(document, add_special_tokens=False)) + 1
            documents += 1
            if tokens >= self.block_size:
                return
        raise ValueError(
            f"the training files ({', '.join(str(f) for f in self.files)}) hold {tokens} tokens in {documents} "
            f"documents (end-of-text tokens included), fewer than one block of block_size={self.block_size}. "
            f"Fix: lower --block-size to at most {max(tokens, 2)}, or give more text"
        )

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        worker = get_worker_info()
        rank, world = (0, 1) if worker is None else (worker.id, worker.num_workers)
        buffer: List[int] = []
        for index, document in enumerate(iter_documents(self.files, self.text_field)):
            if index % world != rank:
                continue
            buffer.extend(self.tokenizer.encode(document, add_special_tokens=False))
            buffer.append(self.tokenizer.eos_token_id)
            while len(buffer) >= self.block_size:
                block = torch.tensor(buffer[: self.block_size], dtype=torch.long)
                del buffer[: self.block_size]
                yield {"input_ids": block, "labels": block.clone()}


def build_trainer(
    train_files: Sequence[PathLike],
    output_dir: PathLike,
    tokenizer: PreTrainedTokenizerBase,
    config: ArlowConfig,
    block_size: int,
    training_args: Dict,
    text_field: str = "text",
) -> Trainer:
    """A ``Trainer`` for a freshly initialised ``ArlowForCausalLM(config)`` on the packed stream.

    ``training_args`` override the defaults below (any ``TrainingArguments`` field).
    """
    if block_size > config.max_position_embeddings:
        raise ValueError(
            f"block_size ({block_size}) exceeds config.max_position_embeddings "
            f"({config.max_position_embeddings})"
        )
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but config.vocab_size is {config.vocab_size}"
        )
    arguments = dict(
        output_dir=str(output_dir),
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        report_to=[],
        learning_rate=1e-3,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.1,
        logging_steps=10,
        save_strategy="no",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    arguments.update(training_args)
    model = ArlowForCausalLM(config)
    dataset = PackedTextDataset(train_files, tokenizer, block_size, text_field)
    dataset.check_holds_a_block()
    return Trainer(
        model=model,
        args=TrainingArguments(**arguments),
        train_dataset=dataset,
        data_collator=default_data_collator,
        processing_class=tokenizer,
    )


def _directory_to_write(text: str) -> str:
    """An argparse ``type``: a path that is or can become a directory (not a file, not under one),
    checked before the tokenizer and the model are built."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is an existing file, not a directory; pass a directory path (new or existing)")
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"{text} cannot be created: {ancestor} is a file; pass a directory path")
    return text


def _int_at_least(least: int):
    """An argparse ``type``: an integer >= ``least`` (argparse names the flag in its error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {least}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be an integer >= {least}, got {value}")
        return value

    return parse


def _number_in(low: float, high: float, low_included: bool, high_included: bool):
    """An argparse ``type``: a number between ``low`` and ``high``, each end included or not."""
    interval = f"{'[' if low_included else '('}{low}, {high}{']' if high_included else ')'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text!r}") from None
        if not (low < value < high or (low_included and value == low) or (high_included and value == high)):
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {value}")
        return value

    return parse


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m arlm.pretrain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_argument_group("data and tokenizer")
    data.add_argument("--train-files", nargs="+", required=True, help=".txt (one document a line) or .jsonl files")
    data.add_argument("--text-field", default="text", help="jsonl field holding the document")
    data.add_argument("--tokenizer", help="directory of a saved tokenizer (default: train a byte-level BPE on --train-files)")
    data.add_argument("--vocab-size", type=_int_at_least(1), default=1024, help="vocabulary of the tokenizer trained when --tokenizer is not given")
    data.add_argument("--block-size", type=_int_at_least(2), default=256)
    model = parser.add_argument_group("model (other ArlowConfig fields: --config-json)")
    model.add_argument("--config-json", help="JSON file of ArlowConfig fields; the flags below fill the rest")
    model.add_argument("--hidden-size", type=_int_at_least(1), default=256)
    model.add_argument("--intermediate-size", type=_int_at_least(1), default=None, help="default: 8/3 * hidden size")
    model.add_argument("--num-hidden-layers", type=_int_at_least(1), default=4)
    model.add_argument("--num-attention-heads", type=_int_at_least(1), default=4)
    model.add_argument("--num-key-value-heads", type=_int_at_least(1), default=None, help="default: --num-attention-heads")
    model.add_argument("--attention-dropout", type=_number_in(0.0, 1.0, low_included=True, high_included=False), default=0.0)
    model.add_argument("--cross-attention", action="store_true", help="build (unused) cross-attention blocks")
    train = parser.add_argument_group("training")
    train.add_argument("--output-dir", required=True, type=_directory_to_write)
    train.add_argument("--batch-size", type=_int_at_least(1), default=8)
    train.add_argument("--max-steps", type=_int_at_least(1), default=1000)
    train.add_argument("--learning-rate", type=_number_in(0.0, 10.0, low_included=False, high_included=True), default=1e-3)
    train.add_argument("--warmup-steps", type=_int_at_least(0), default=0)
    train.add_argument("--logging-steps", type=_int_at_least(1), default=10)
    train.add_argument("--save-steps", type=_int_at_least(0), default=0, help="0: save only the final model")
    train.add_argument("--seed", type=_int_at_least(0), default=0)
    train.add_argument("--report-to", nargs="*", default=[], help="e.g. wandb tensorboard (default: none)")
    train.add_argument("--no-gradient-checkpointing", action="store_true")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase) -> ArlowConfig:
    fields = dict(
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size or -(-8 * args.hidden_size // 3),
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        num_key_value_heads=args.num_key_value_heads or args.num_attention_heads,
        attention_dropout=args.attention_dropout,
        max_position_embeddings=args.block_size,
        cross_attention=args.cross_attention,
    )
    if args.config_json:
        fields.update(json.loads(Path(args.config_json).read_text()))
    fields.update(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return ArlowConfig(**fields)


def main(argv: Optional[Sequence[str]] = None) -> Trainer:
    """Run the command line; returns the trainer (its ``state.log_history`` holds the losses)."""
    args = parse_args(argv)
    if args.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        tokenizer = train_arlow_tokenizer(args.train_files, args.vocab_size, text_field=args.text_field)
    config = config_from_args(args, tokenizer)
    trainer = build_trainer(
        args.train_files,
        args.output_dir,
        tokenizer,
        config,
        args.block_size,
        dict(
            per_device_train_batch_size=args.batch_size,
            max_steps=args.max_steps,
            learning_rate=args.learning_rate,
            warmup_steps=args.warmup_steps,
            logging_steps=args.logging_steps,
            save_strategy="steps" if args.save_steps else "no",
            save_steps=args.save_steps or 500,
            seed=args.seed,
            report_to=args.report_to,
            gradient_checkpointing=not args.no_gradient_checkpointing,
        ),
        text_field=args.text_field,
    )
    trainer.train()
    trainer.save_model(args.output_dir)
    return trainer
