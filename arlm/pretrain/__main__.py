"""``python -m arlm.pretrain``: pretrain Arlow from local text files (see :mod:`arlm.pretrain.trainer`)."""

from arlm.pretrain.trainer import main

main()
