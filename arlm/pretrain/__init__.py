"""Pretraining Arlow from scratch on local text files with the Hugging Face ``Trainer``.

:mod:`~arlm.pretrain.text_files` reads documents from ``.txt`` / ``.jsonl`` files;
:mod:`~arlm.pretrain.tokenizer` holds ``ArlowTokenizerFast`` and the byte-level BPE trainer;
:mod:`~arlm.pretrain.trainer` packs documents into blocks and runs the ``Trainer``
(``python -m arlm.pretrain``). None of it ships in an export's code (:mod:`arlm.hf` does).
"""
