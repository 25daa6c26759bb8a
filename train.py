"""Train Hour-LLaVA, one stage per command, on TRL's SFTTrainer (`hour_llava_training.cli`; console script
`hour-llava-train`). `python train.py --help` lists every flag."""

import sys

from hour_llava_training.cli import main

if __name__ == "__main__":
    sys.exit(main())
